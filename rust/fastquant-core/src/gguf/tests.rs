//! Reader/writer unit tests: round trips, one negative test per rule, truncation at every byte and a
//! random-mutation fuzz loop (runs in `cargo test`; the libFuzzer target lives in `fuzz/`).

use super::*;
use crate::quants::{GgmlDType, ALL_TYPES};

/// Little byte-level builder for hand-made (often broken) files.
#[derive(Default, Clone)]
struct B(Vec<u8>);

impl B {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> B {
        let mut b = B(b"GGUF".to_vec());
        b.u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn s(&mut self, v: &str) -> &mut Self {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.s(k).u32(4).u32(v)
    }
    /// tensor info: name, dims, type, offset
    fn ti(&mut self, name: &str, ne: &[u64], ty: u32, off: u64) -> &mut Self {
        self.s(name).u32(ne.len() as u32);
        for &d in ne {
            self.u64(d);
        }
        self.u32(ty).u64(off)
    }
    fn pad(&mut self, a: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(a) {
            self.0.push(0);
        }
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

fn err_of(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e) => e,
    }
}

fn expect_err(bytes: Vec<u8>, needle: &str) -> GgufError {
    let e = err_of(bytes);
    assert_eq!(e.kind, ErrorKind::Malformed, "{e}");
    assert!(e.offset.is_some(), "{e}");
    assert!(e.to_string().contains(needle), "error {e:?} does not mention {needle:?}");
    e
}

pub(crate) fn sample_kvs() -> Vec<(String, OwnedValue)> {
    use OwnedValue::*;
    vec![
        ("general.architecture".into(), Str("llama".into())),
        ("general.alignment".into(), U32(64)),
        ("t.u8".into(), U8(200)),
        ("t.i8".into(), I8(-100)),
        ("t.u16".into(), U16(60000)),
        ("t.i16".into(), I16(-30000)),
        ("t.u32".into(), U32(4_000_000_000)),
        ("t.i32".into(), I32(-2_000_000_000)),
        ("t.f32".into(), F32(1.5)),
        ("t.bool".into(), Bool(true)),
        ("t.str".into(), Str("héllo".into())),
        ("t.u64".into(), U64(u64::MAX)),
        ("t.i64".into(), I64(i64::MIN)),
        ("t.f64".into(), F64(-2.25)),
        ("t.arr_str".into(), StrArray(vec!["<pad>".into(), "".into(), "<eos>".into(), "word".into()])),
        (
            "t.arr_i32".into(),
            ScalarArray {
                elem_type: ValueType::I32,
                bytes: [1i32, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        ),
        ("t.arr_empty".into(), ScalarArray { elem_type: ValueType::F32, bytes: vec![] }),
    ]
}

pub(crate) fn sample_file() -> Vec<u8> {
    let a: Vec<u8> = (0..4 * 8 * 2).map(|i| i as u8).collect(); // F32 [2, 8]
    let b: Vec<u8> = (0..34 * 2).map(|i| (i * 7) as u8).collect(); // Q8_0 [64]
    let c: Vec<u8> = vec![1, 2, 3]; // I8 [3]
    let tensors = vec![
        TensorSpec { name: "a".into(), ggml_type: GgmlDType::F32, ne: vec![8, 2], data: &a },
        TensorSpec { name: "blk.0.q".into(), ggml_type: GgmlDType::Q8_0, ne: vec![64], data: &b },
        TensorSpec { name: "c".into(), ggml_type: GgmlDType::I8, ne: vec![3], data: &c },
    ];
    to_bytes(&sample_kvs(), &tensors).unwrap()
}

#[test]
fn writer_reader_round_trip() {
    let bytes = sample_file();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.file_size() % 64, 0);
    assert_eq!(f.metadata().len(), sample_kvs().len());
    for (k, v) in sample_kvs() {
        let got = f.get(&k).unwrap().unwrap();
        assert_eq!(got.value_type(), v.value_type(), "{k}");
        match (&v, got) {
            (OwnedValue::U8(a), MetaValue::U8(b)) => assert_eq!(*a, b),
            (OwnedValue::I8(a), MetaValue::I8(b)) => assert_eq!(*a, b),
            (OwnedValue::U16(a), MetaValue::U16(b)) => assert_eq!(*a, b),
            (OwnedValue::I16(a), MetaValue::I16(b)) => assert_eq!(*a, b),
            (OwnedValue::U32(a), MetaValue::U32(b)) => assert_eq!(*a, b),
            (OwnedValue::I32(a), MetaValue::I32(b)) => assert_eq!(*a, b),
            (OwnedValue::F32(a), MetaValue::F32(b)) => assert_eq!(*a, b),
            (OwnedValue::Bool(a), MetaValue::Bool(b)) => assert_eq!(*a, b),
            (OwnedValue::Str(a), MetaValue::Str(b)) => {
                assert_eq!(a.as_str(), b.to_str("").unwrap())
            }
            (OwnedValue::U64(a), MetaValue::U64(b)) => assert_eq!(*a, b),
            (OwnedValue::I64(a), MetaValue::I64(b)) => assert_eq!(*a, b),
            (OwnedValue::F64(a), MetaValue::F64(b)) => assert_eq!(*a, b),
            (OwnedValue::StrArray(a), MetaValue::Array(b)) => {
                assert_eq!(b.elem_type, ValueType::String);
                let got: Vec<String> = b.iter().map(|x| x.unwrap().as_str("").unwrap().unwrap().to_string()).collect();
                assert_eq!(&got, a);
                // indexed access (builds the offset table)
                for (i, s) in a.iter().enumerate() {
                    assert_eq!(b.get(i as u64).unwrap().unwrap().as_str("").unwrap().unwrap(), s);
                }
                assert!(b.get(a.len() as u64).is_none());
            }
            (OwnedValue::ScalarArray { elem_type, bytes }, MetaValue::Array(b)) => {
                assert_eq!(b.elem_type, *elem_type);
                assert_eq!(b.raw_elements().unwrap(), &bytes[..]);
            }
            (a, b) => panic!("{k}: {a:?} vs {b:?}"),
        }
    }
    let t = f.tensor("a").unwrap();
    assert_eq!(t.shape(), vec![2, 8]);
    assert_eq!(t.nbytes, Some(64));
    assert_eq!(f.tensor_data(t).unwrap(), &(0..64).map(|i| i as u8).collect::<Vec<_>>()[..]);
    let q = f.tensor("blk.0.q").unwrap();
    assert_eq!(q.ggml_type, Some(GgmlDType::Q8_0));
    assert_eq!(q.offset, 64);
    assert_eq!(f.tensor_data(q).unwrap().len(), 68);
    assert_eq!(f.tensor_data_by_name("c").unwrap(), &[1, 2, 3]);
    assert_eq!(f.tensor_data_by_name("zzz").unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn every_type_round_trips() {
    let mut datas = Vec::new();
    for t in ALL_TYPES {
        let (be, bb) = t.block_geometry();
        datas.push((t, vec![be as u64 * 2, 3], vec![0xA5u8; bb * 6]));
    }
    let specs: Vec<TensorSpec> = datas
        .iter()
        .map(|(t, ne, d)| TensorSpec { name: format!("t.{}", t.name()), ggml_type: *t, ne: ne.clone(), data: d })
        .collect();
    let f = GgufFile::from_bytes(to_bytes(&[], &specs).unwrap()).unwrap();
    assert_eq!(f.tensors().len(), ALL_TYPES.len());
    for (t, ne, d) in &datas {
        let info = f.tensor(&format!("t.{}", t.name())).unwrap();
        assert_eq!(info.ggml_type, Some(*t));
        assert_eq!(&info.ne, ne);
        assert_eq!(f.tensor_data(info).unwrap(), &d[..]);
        assert_eq!(info.abs_offset % 32, 0);
    }
}

#[test]
fn zero_tensor_file_has_no_padding() {
    let mut b = B::header(3, 0, 1);
    b.s("general.name").u32(8).s("x");
    let f = GgufFile::from_bytes(b.bytes()).unwrap();
    assert_eq!(f.data_offset(), b.0.len() as u64);
    assert_eq!(f.tensors().len(), 0);
}

#[test]
fn version_2_accepted() {
    let mut b = B::header(2, 0, 1);
    b.kv_u32("a", 1);
    assert_eq!(GgufFile::from_bytes(b.bytes()).unwrap().version(), 2);
}

#[test]
fn header_errors() {
    expect_err(vec![], "0 bytes long");
    expect_err(b"GGU".to_vec(), "3 bytes long");
    expect_err(b"GGUF".to_vec(), "file ends inside version");
    let mut b = B::header(3, 0, 0);
    b.0[..4].copy_from_slice(b"FUGG");
    expect_err(b.bytes(), "big-endian");
    b.0[..4].copy_from_slice(b"GGML");
    expect_err(b.bytes(), "bad magic");
    expect_err(B::header(0, 0, 0).bytes(), "unsupported GGUF version 0");
    expect_err(B::header(1, 0, 0).bytes(), "version 1 is obsolete");
    expect_err(B::header(4, 0, 0).bytes(), "unsupported GGUF version 4");
    expect_err(B::header(0x0300_0000, 0, 0).bytes(), "big-endian");
    expect_err(B::header(0x0200_0000, 0, 0).bytes(), "big-endian");
    // a whole big-endian header
    let mut be = b"GGUF".to_vec();
    be.extend_from_slice(&3u32.to_be_bytes());
    be.extend_from_slice(&0u64.to_be_bytes());
    be.extend_from_slice(&1u64.to_be_bytes());
    expect_err(be, "big-endian");
    expect_err(B::header(3, u64::MAX, 0).bytes(), "negative");
    expect_err(B::header(3, 0, u64::MAX).bytes(), "negative");
    expect_err(B::header(3, 1 << 40, 0).bytes(), "tensor count 2^40");
    expect_err(B::header(3, 0, 1 << 40).bytes(), "metadata key/value count 2^40");
    let mut b = B::header(3, 1, 1);
    b.zeros(30);
    expect_err(b.bytes(), "cannot fit");
    let e = expect_err(B::header(3, 0, 0).bytes()[..20].to_vec(), "metadata key/value count");
    assert_eq!(e.offset, Some(16));
}

#[test]
fn metadata_errors() {
    // empty key
    let mut b = B::header(3, 0, 1);
    b.s("").u32(0).u8(1);
    expect_err(b.bytes(), "key is empty");
    // duplicate key
    let mut b = B::header(3, 0, 2);
    b.kv_u32("a.b", 1).kv_u32("a.b", 2);
    expect_err(b.bytes(), "duplicate key");
    // bad value type
    for bad in [13u32, 0xFFFF_FFFF, 1 << 31] {
        let mut b = B::header(3, 0, 1);
        b.s("k").u32(bad).u64(0);
        expect_err(b.bytes(), "is not a GGUF value type");
    }
    // bad array element type
    let mut b = B::header(3, 0, 1);
    b.s("k").u32(9).u32(77).u64(0);
    expect_err(b.bytes(), "array element type 77");
    // key length beyond the file
    let mut b = B::header(3, 0, 1);
    b.u64(1 << 40).zeros(12);
    let e = expect_err(b.bytes(), "key length 2^40 exceeds the 12 bytes left");
    assert_eq!(e.offset, Some(24));
    // string length beyond the file, with the key named
    let mut b = B::header(3, 0, 1);
    b.s("general.name").u32(8).u64(1 << 40).zeros(4);
    let e = expect_err(b.bytes(), "metadata key #0 'general.name': string length 2^40 exceeds the 4 bytes left");
    assert_eq!(e.offset, Some(24 + 8 + 12 + 4));
    // negative string length
    let mut b = B::header(3, 0, 1);
    b.s("k").u32(8).u64(u64::MAX);
    expect_err(b.bytes(), "string length");
    // key not UTF-8
    let mut b = B::header(3, 0, 1);
    b.u64(2).u8(0xff).u8(0xfe).u32(0).u8(0);
    expect_err(b.bytes(), "not valid UTF-8");
    // truncated scalar
    let mut b = B::header(3, 0, 1);
    b.s("k").u32(10).u32(0);
    expect_err(b.bytes(), "file ends inside a u64 value");
}

#[test]
fn array_errors_and_limits() {
    for (elem, n) in [(0u32, 1u64 << 63), (8, 1 << 63), (9, u64::MAX), (12, 1 << 61), (4, 5)] {
        let mut b = B::header(3, 0, 1);
        b.s("k").u32(9).u32(elem).u64(n).zeros(16);
        expect_err(b.bytes(), "array length");
    }
    // string element running past the end
    let mut b = B::header(3, 0, 1);
    b.s("tok").u32(9).u32(8).u64(3).s("a").s("b").u64(1000).zeros(3);
    expect_err(b.bytes(), "array element #2: string length 1000");
    // nested arrays: accepted up to MAX_ARRAY_DEPTH
    let nest = |depth: u32| {
        let mut b = B::header(3, 0, 1);
        b.s("n").u32(9);
        for _ in 0..depth - 1 {
            b.u32(9).u64(1);
        }
        b.u32(5).u64(2).u32(7).u32(8);
        b.bytes()
    };
    let f = GgufFile::from_bytes(nest(2)).unwrap();
    let MetaValue::Array(outer) = f.get("n").unwrap().unwrap() else { panic!() };
    assert_eq!((outer.elem_type, outer.count), (ValueType::Array, 1));
    let MetaValue::Array(inner) = outer.get(0).unwrap().unwrap() else { panic!() };
    assert_eq!(inner.raw_elements().unwrap(), &[7, 0, 0, 0, 8, 0, 0, 0]);
    GgufFile::from_bytes(nest(MAX_ARRAY_DEPTH)).unwrap();
    expect_err(nest(MAX_ARRAY_DEPTH + 1), "nested more than");
    expect_err(nest(10_000), "nested more than");
}

#[test]
fn huge_array_in_tiny_file_rejected_fast() {
    // gguf-py 0.19 hangs on this (llama.cpp PR #27188): a u8 array claiming 2^63 elements. The smallest
    // such file (header + 1-byte key + type + element type + count) is 49 bytes.
    let mut b = B::header(3, 0, 1);
    b.s("a").u32(9).u32(0).u64(1 << 63);
    assert_eq!(b.0.len(), 49);
    let t = std::time::Instant::now();
    let e = expect_err(b.bytes(), "array length 2^63");
    assert!(t.elapsed() < std::time::Duration::from_millis(50), "{:?}", t.elapsed());
    assert_eq!(e.offset, Some(24 + 9 + 4 + 4));
}

#[test]
fn alignment_errors() {
    for a in [0u32, 13, 3, 1 << 21, u32::MAX] {
        let mut b = B::header(3, 0, 1);
        b.kv_u32("general.alignment", a);
        expect_err(b.bytes(), "must be a power of two");
    }
    let mut b = B::header(3, 0, 1);
    b.s("general.alignment").u32(5).u32(32);
    expect_err(b.bytes(), "alignment must be a u32, found i32");
    let mut b = B::header(3, 0, 1);
    b.s("general.alignment").u32(9).u32(4).u64(1).u32(32);
    expect_err(b.bytes(), "alignment must be a u32, found array[u32]");
    // alignment 1 is fine
    let mut b = B::header(3, 1, 1);
    b.kv_u32("general.alignment", 1).ti("x", &[3], 24, 0).zeros(3);
    let f = GgufFile::from_bytes(b.bytes()).unwrap();
    assert_eq!(f.alignment(), 1);
    assert_eq!(f.tensor_data_by_name("x").unwrap().len(), 3);
}

/// A file with one F32 tensor of the given dims, data of `data` bytes.
fn one_tensor(name: &str, ne: &[u64], ty: u32, off: u64, data: usize) -> Vec<u8> {
    let mut b = B::header(3, 1, 0);
    b.ti(name, ne, ty, off).pad(32).zeros(data);
    b.bytes()
}

#[test]
fn tensor_info_errors() {
    assert!(GgufFile::from_bytes(one_tensor(&"n".repeat(63), &[4], 0, 0, 16)).is_ok());
    expect_err(one_tensor(&"n".repeat(64), &[4], 0, 0, 16), "name is 64 bytes long");
    let mut b = B::header(3, 2, 0);
    b.ti("w", &[1], 0, 0).ti("w", &[1], 0, 32).pad(32).zeros(64);
    expect_err(b.bytes(), "duplicate tensor name");
    expect_err(one_tensor("w", &[1, 1, 1, 1, 1], 0, 0, 4), "n_dims 5 exceeds");
    let mut b = B::header(3, 1, 0);
    b.s("w").u32(u32::MAX).zeros(64);
    expect_err(b.bytes(), "n_dims 4294967295");
    expect_err(one_tensor("w", &[4, 0], 0, 0, 16), "ne[1] is 0");
    expect_err(one_tensor("w", &[u64::MAX], 0, 0, 16), "negative");
    expect_err(one_tensor("w", &[1 << 62], 0, 0, 16), "overflows an int64");
    expect_err(one_tensor("w", &[1 << 40, 1 << 40], 0, 0, 16), "element count overflows");
    // 2^62 elements fit an int64 but 2^62 * 4 bytes do not
    expect_err(one_tensor("w", &[1 << 31, 1 << 31], 0, 0, 16), "byte size");
    // huge but representable: data outside the file
    expect_err(one_tensor("w", &[1 << 20, 1 << 20], 0, 0, 16), "outside");
    // not a whole number of blocks
    expect_err(one_tensor("w", &[33], 2, 0, 64), "not a multiple of the Q4_0 block size 32");
    // bad type ids: listed, data refused
    for id in [4u32, 5, 31, 36, 43, 1000, u32::MAX] {
        let f = GgufFile::from_bytes(one_tensor("w", &[4], id, 0, 16)).unwrap();
        let t = &f.tensors()[0];
        assert_eq!((t.type_id, t.ggml_type, t.nbytes), (id, None, None));
        assert_eq!(t.type_name(), format!("type#{id}"));
        let e = f.tensor_data(t).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.to_string().contains(&format!("type id {id}")));
    }
    // tensor info truncated
    let mut b = B::header(3, 1, 0);
    b.s("w").u32(2).u64(4).zeros(4);
    expect_err(b.bytes(), "file ends inside dims");
}

#[test]
fn tensor_offset_errors() {
    expect_err(one_tensor("w", &[4], 0, 8, 64), "not a multiple of the alignment 32");
    expect_err(one_tensor("w", &[4], 0, 32, 16), "outside");
    expect_err(one_tensor("w", &[4], 0, u64::MAX - 31, 16), "outside");
    expect_err(one_tensor("w", &[4], 0, 0, 15), "outside");
    // data section starting past the end of the file
    let mut b = B::header(3, 1, 0);
    b.ti("w", &[1], 1000, 0);
    expect_err(b.bytes(), "data section would start");
    // overlapping
    let mut b = B::header(3, 2, 0);
    b.ti("a", &[16], 0, 0).ti("b", &[16], 0, 32).pad(32).zeros(128);
    expect_err(b.bytes(), "overlaps tensor #0 'a'");
    let mut b = B::header(3, 2, 0);
    b.ti("a", &[8], 0, 32).ti("b", &[8], 0, 32).pad(32).zeros(128);
    expect_err(b.bytes(), "overlaps");
    // out of order but disjoint is fine (the spec only asks for alignment)
    let mut b = B::header(3, 2, 0);
    b.ti("a", &[8], 0, 32).ti("b", &[8], 0, 0).pad(32).zeros(64);
    let f = GgufFile::from_bytes(b.bytes()).unwrap();
    assert_eq!(f.tensor("b").unwrap().abs_offset + 32, f.tensor("a").unwrap().abs_offset);
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let full = sample_file();
    // The last tensor's padding is not needed by the reader, so cut inside the data proper.
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let needed = f.tensors().iter().map(|t| t.abs_offset + t.nbytes.unwrap()).max().unwrap() as usize;
    for cut in 0..needed {
        let e = err_of(full[..cut].to_vec());
        assert_eq!(e.kind, ErrorKind::Malformed, "cut {cut}: {e}");
    }
    for cut in needed..=full.len() {
        GgufFile::from_bytes(full[..cut].to_vec()).unwrap();
    }
}

#[test]
fn writer_refuses_bad_input() {
    use OwnedValue::*;
    let d = [0u8; 16];
    let t = |name: &str, ne: Vec<u64>, ty: GgmlDType| TensorSpec { name: name.into(), ggml_type: ty, ne, data: &d };
    type Case<'a> = (Vec<(String, OwnedValue)>, Vec<TensorSpec<'a>>);
    let bad: Vec<Case> = vec![
        (vec![("".into(), U8(1))], vec![]),
        (vec![("a".into(), U8(1)), ("a".into(), U8(2))], vec![]),
        (vec![("general.alignment".into(), U32(12))], vec![]),
        (vec![("general.alignment".into(), I32(32))], vec![]),
        (vec![("x".into(), ScalarArray { elem_type: ValueType::U32, bytes: vec![1, 2, 3] })], vec![]),
        (vec![("x".into(), ScalarArray { elem_type: ValueType::String, bytes: vec![] })], vec![]),
        (vec![], vec![t(&"n".repeat(64), vec![4], GgmlDType::F32)]),
        (vec![], vec![t("a", vec![4], GgmlDType::F32), t("a", vec![4], GgmlDType::F32)]),
        (vec![], vec![t("a", vec![1, 1, 1, 1, 4], GgmlDType::F32)]),
        (vec![], vec![t("a", vec![0, 4], GgmlDType::F32)]),
        (vec![], vec![t("a", vec![5], GgmlDType::F32)]),
        (vec![], vec![t("a", vec![16], GgmlDType::Q8_0)]),
    ];
    for (kvs, ts) in bad {
        let e = to_bytes(&kvs, &ts).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Random-mutation fuzzing (libFuzzer-free; the cargo-fuzz target in `fuzz/` runs the same `exercise`).

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Parse and touch everything a user could touch; must never panic.
pub(crate) fn exercise(bytes: &[u8]) {
    let Ok(f) = GgufFile::from_bytes(bytes.to_vec()) else {
        return;
    };
    for e in f.metadata() {
        let _ = e.type_name();
        if let Ok(v) = f.value(e) {
            touch(v, 0);
            if let MetaValue::Array(a) = v {
                for i in [0, a.len() / 2, a.len().saturating_sub(1), a.len()] {
                    let _ = a.get(i);
                }
            }
        }
    }
    for t in f.tensors() {
        let _ = t.shape();
        if let Ok(d) = f.tensor_data(t) {
            assert_eq!(d.len() as u64, t.nbytes.unwrap());
        }
    }
}

fn touch(v: MetaValue<'_>, depth: u32) {
    assert!(depth <= MAX_ARRAY_DEPTH);
    match v {
        MetaValue::Str(s) => {
            let _ = s.to_str("");
        }
        MetaValue::Array(a) => {
            let mut n = 0u64;
            for x in a.iter() {
                touch(x.expect("validated at open"), depth + 1);
                n += 1;
            }
            assert_eq!(n, a.len());
        }
        _ => {}
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let interesting: [u64; 12] = [0, 1, 2, 3, 4, 5, 9, 63, 64, 1 << 31, 1 << 63, u64::MAX];
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            break;
        }
        match rng.below(7) {
            0 => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let n = rng.below(v.len() + 1);
                v.truncate(n);
            }
            3 => {
                // a big or interesting little-endian integer at a random place
                let x = interesting[rng.below(interesting.len())];
                let w = [1usize, 2, 4, 8][rng.below(4)];
                let i = rng.below(v.len());
                for (k, b) in x.to_le_bytes()[..w].iter().enumerate() {
                    if let Some(slot) = v.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            4 => {
                // splice from another seed
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a);
                    let at = rng.below(v.len());
                    v.splice(at..at, other[a..b].iter().copied());
                }
            }
            5 => {
                // delete a range
                let a = rng.below(v.len());
                let b = (a + rng.below(16)).min(v.len());
                v.drain(a..b);
            }
            _ => {
                // duplicate a range
                let a = rng.below(v.len());
                let b = (a + rng.below(32)).min(v.len());
                let chunk: Vec<u8> = v[a..b].to_vec();
                let at = rng.below(v.len());
                v.splice(at..at, chunk);
            }
        }
    }
    v
}

pub(crate) fn seed_files() -> Vec<Vec<u8>> {
    let mut seeds = vec![sample_file()];
    // nested array + string array + every scalar, no tensors
    let mut b = B::header(3, 0, 3);
    b.s("n").u32(9).u32(9).u64(2).u32(8).u64(1).s("x").u32(0).u64(2).u8(1).u8(2);
    b.s("s").u32(9).u32(8).u64(2).s("ab").s("c");
    b.s("general.alignment").u32(4).u32(8);
    seeds.push(b.bytes());
    let mut b = B::header(2, 2, 1);
    b.kv_u32("general.alignment", 16).ti("a", &[32, 2], 8, 0).ti("b", &[4], 1000, 80).pad(16).zeros(96);
    seeds.push(b.bytes());
    seeds
}

#[test]
fn mutation_fuzz_never_panics() {
    let iters: usize = std::env::var("FASTQUANT_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seeds = seed_files();
    for s in &seeds {
        assert!(GgufFile::from_bytes(s.clone()).is_ok());
        exercise(s);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut ok = 0usize;
    for _ in 0..iters {
        let s = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, s, &seeds);
        if GgufFile::from_bytes(m.clone()).is_ok() {
            ok += 1;
        }
        exercise(&m);
    }
    // the mutations should not all be trivially rejected
    assert!(ok > 0, "no mutated file parsed");
}
