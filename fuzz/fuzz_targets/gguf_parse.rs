//! Parse arbitrary bytes as GGUF and touch everything a user can reach (every metadata value, every array
//! element, indexed string-array access, every tensor's data). Must never panic, hang or over-allocate.
//!
//! cargo +nightly fuzz run gguf_parse fuzz/corpus/gguf_parse fuzz/seeds -- -max_len=65536 -rss_limit_mb=512
#![no_main]

use fastquant_core::gguf::{GgufFile, MetaValue, MAX_ARRAY_DEPTH};
use libfuzzer_sys::fuzz_target;

fn touch(v: MetaValue<'_>, depth: u32) {
    assert!(depth <= MAX_ARRAY_DEPTH);
    match v {
        MetaValue::Str(s) => {
            let _ = s.to_str("");
        }
        MetaValue::Array(a) => {
            let mut n = 0u64;
            for x in a.iter() {
                touch(x.expect("arrays are validated at open"), depth + 1);
                n += 1;
            }
            assert_eq!(n, a.len());
            for i in [0, a.len() / 2, a.len().saturating_sub(1), a.len()] {
                if let Some(r) = a.get(i) {
                    r.expect("validated at open");
                }
            }
            if let Some(raw) = a.raw_elements() {
                assert_eq!(raw.len() as u64, a.len() * a.elem_type.fixed_size().unwrap() as u64);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else { return };
    for e in f.metadata() {
        let _ = e.type_name();
        touch(f.value(e).expect("values are validated at open"), 0);
    }
    let len = f.file_size();
    for t in f.tensors() {
        let _ = t.shape();
        assert!(t.abs_offset <= len);
        match f.tensor_data(t) {
            Ok(d) => assert_eq!(d.len() as u64, t.nbytes.unwrap()),
            Err(_) => assert!(t.ggml_type.is_none()),
        }
    }
});
