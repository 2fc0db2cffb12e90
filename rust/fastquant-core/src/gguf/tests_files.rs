//! Tests that need the file system: the reader's open (head read by `read`, regular files only, a file
//! that shrinks under it) and the writer's crash-safe replace (exclusive temporary files, mode kept).

use std::path::PathBuf;

use super::tests::{sample_file, sample_kvs};
use super::*;
use crate::quants::GgmlDType;

/// A fresh empty directory under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "fq-gguf-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entries(d: &Dir) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(&d.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn open_equals_from_bytes_even_past_the_first_read() {
    let d = Dir::new("big-meta");
    // A string array of ~3 MiB: the head is read in several rounds (1 MiB first, then doubled).
    let words: Vec<String> = (0..300_000).map(|i| format!("tok{i}")).collect();
    let mut kvs = sample_kvs();
    kvs.push(("tokenizer.ggml.tokens".into(), OwnedValue::StrArray(words.clone())));
    let data: Vec<u8> = (0..64 * 4).map(|i| i as u8).collect();
    let t = vec![TensorSpec { name: "w".into(), ggml_type: GgmlDType::F32, ne: vec![64], data: &data }];
    let p = d.0.join("m.gguf");
    write_file(&p, &kvs, &t).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let g = GgufFile::from_bytes(std::fs::read(&p).unwrap()).unwrap();
    assert!(f.data_offset() > 3 << 20);
    assert_eq!(f.data_offset(), g.data_offset());
    assert_eq!(f.metadata().len(), g.metadata().len());
    let MetaValue::Array(a) = f.get("tokenizer.ggml.tokens").unwrap().unwrap() else { panic!() };
    assert_eq!(a.len(), 300_000);
    let MetaValue::Str(s) = a.get(299_999).unwrap().unwrap() else { panic!() };
    assert_eq!(s.bytes, b"tok299999");
    assert_eq!(f.tensor_data_by_name("w").unwrap(), &data[..]);
    // Errors of a prefix parse are those of a whole parse: a file cut inside the big array.
    let bytes = std::fs::read(&p).unwrap();
    let cut = d.0.join("cut.gguf");
    std::fs::write(&cut, &bytes[..2 << 20]).unwrap();
    let e1 = GgufFile::open(&cut).unwrap_err();
    let e2 = GgufFile::from_bytes(bytes[..2 << 20].to_vec()).unwrap_err();
    assert_eq!(e1, e2);
    assert!(e1.need_more.is_none());
}

/// A value as text, an array by its elements (its Debug form shows the whole buffer it points into).
fn render(v: MetaValue<'_>) -> String {
    match v {
        MetaValue::Array(a) => a.iter().map(|x| render(x.unwrap())).collect::<Vec<_>>().join(","),
        v => format!("{v:?}"),
    }
}

#[test]
fn open_resumes_where_the_read_ran_out_and_agrees_with_a_whole_parse() {
    // Short strings first, then long ones: the reader's guess of where the array ends is far too small, so
    // the head is read in several rounds, each resuming inside the array; then fixed arrays and more keys.
    let d = Dir::new("resume");
    let mut words: Vec<String> = (0..150_000).map(|i| format!("t{i}")).collect();
    words.extend((0..20_000).map(|i| format!("{i:0>200}")));
    let mut kvs = sample_kvs();
    kvs.push(("tokenizer.ggml.tokens".into(), OwnedValue::StrArray(words)));
    let scores: Vec<u8> = (0..4 * 300_000u32).map(|i| i as u8).collect();
    kvs.push(("tokenizer.ggml.scores".into(), OwnedValue::ScalarArray { elem_type: ValueType::F32, bytes: scores }));
    kvs.push(("z.after".into(), OwnedValue::Str("end".into())));
    let data: Vec<u8> = (0..64 * 4).map(|i| i as u8).collect();
    let t = vec![TensorSpec { name: "w".into(), ggml_type: GgmlDType::F32, ne: vec![64], data: &data }];
    let p = d.0.join("m.gguf");
    write_file(&p, &kvs, &t).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let g = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!((f.data_offset(), f.metadata().len()), (g.data_offset(), g.metadata().len()));
    for (a, b) in f.metadata().iter().zip(g.metadata()) {
        assert_eq!((&a.key, a.offset, a.type_name()), (&b.key, b.offset, b.type_name()));
        assert!(render(f.value(a).unwrap()) == render(g.value(b).unwrap()), "{}", a.key);
    }
    let MetaValue::Array(a) = f.get("tokenizer.ggml.tokens").unwrap().unwrap() else { panic!() };
    let MetaValue::Str(s) = a.get(169_999).unwrap().unwrap() else { panic!() };
    assert_eq!(s.bytes, format!("{:0>200}", 19_999).as_bytes());
    // Cut anywhere (inside a string, a length, the scores, the last key): the error of a whole parse.
    let cuts = [1 << 20, (1 << 20) + 3, 2 << 20, 3 << 20, 4 << 20, 5 << 20, f.data_offset() as usize - 20];
    for cut in cuts {
        let q = d.0.join("cut.gguf");
        std::fs::write(&q, &bytes[..cut]).unwrap();
        let e1 = GgufFile::open(&q).unwrap_err();
        let e2 = GgufFile::from_bytes(bytes[..cut].to_vec()).unwrap_err();
        assert_eq!(e1, e2, "cut at {cut}");
        assert!(e1.need_more.is_none());
    }
}

#[test]
fn metadata_survives_truncation_and_tensor_data_is_refused() {
    let d = Dir::new("shrink");
    let p = d.0.join("s.gguf");
    std::fs::write(&p, sample_file()).unwrap();
    let f = GgufFile::open(&p).unwrap();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(0).unwrap();
    for e in f.metadata() {
        f.value(e).unwrap(); // read from the copy made at open: no fault
    }
    let MetaValue::Array(a) = f.get("t.arr_str").unwrap().unwrap() else { panic!() };
    assert_eq!(a.iter().count(), 4);
    let e = f.tensor_data_by_name("a").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert_eq!(e.errno, Some(reader::EIO));
    assert!(e.to_string().contains("truncated"), "{e}");
    assert!(e.to_string().contains("s.gguf"), "{e}");
}

#[test]
fn only_regular_files_are_opened() {
    let d = Dir::new("kinds");
    let e = GgufFile::open(&d.0).unwrap_err();
    assert_eq!((e.kind, e.errno), (ErrorKind::Io, Some(21)));
    assert!(e.to_string().contains("directory"), "{e}");
    let e = GgufFile::open(d.0.join("missing.gguf")).unwrap_err();
    assert_eq!((e.io_kind, e.errno), (Some(std::io::ErrorKind::NotFound), Some(2)));
    assert_eq!(e.path.as_deref(), Some(d.0.join("missing.gguf").to_str().unwrap()));
    #[cfg(unix)]
    {
        let fifo = d.0.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = GgufFile::open(&fifo).unwrap_err(); // returns at once: no writer is waited for
        assert_eq!(e.errno, Some(22));
        assert!(e.to_string().contains("FIFO"), "{e}");
    }
}

#[cfg(unix)]
#[test]
fn write_file_keeps_mode_and_leaves_no_temporary_files() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::new("mode");
    let p = d.0.join("m.gguf");
    std::fs::write(&p, b"old").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_file(&p, &sample_kvs(), &[]).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(entries(&d), vec!["m.gguf".to_string()]);
    GgufFile::open(&p).unwrap();
    // A failed write (bad input) leaves the old file and nothing else.
    let bad = vec![TensorSpec { name: "x".into(), ggml_type: GgmlDType::F32, ne: vec![4], data: &[0u8; 3] }];
    let before = std::fs::read(&p).unwrap();
    write_file(&p, &sample_kvs(), &bad).unwrap_err();
    assert_eq!(std::fs::read(&p).unwrap(), before);
    assert_eq!(entries(&d), vec!["m.gguf".to_string()]);
    // Errors name the path (a directory that does not exist).
    let e = write_file(d.0.join("nope/x.gguf"), &sample_kvs(), &[]).unwrap_err();
    assert!(e.to_string().contains("nope/x.gguf"), "{e}");
    assert_eq!(e.errno, Some(2));
    // A directory at the target is refused, not replaced.
    std::fs::create_dir(d.0.join("sub")).unwrap();
    let e = write_file(d.0.join("sub"), &sample_kvs(), &[]).unwrap_err();
    assert_eq!(e.errno, Some(21));
}

#[cfg(unix)]
#[test]
fn named_temporary_files_are_exclusive_and_unpredictable() {
    let d = Dir::new("names");
    let victim = d.0.join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    let base = std::ffi::OsStr::new("m.gguf");
    let mut names = std::collections::HashSet::new();
    for _ in 0..64 {
        assert!(names.insert(writer::tests_temp_name(base)));
    }
    for n in names.iter().take(8) {
        assert!(n.to_str().unwrap().starts_with(".m.gguf.") && n.to_str().unwrap().ends_with(".tmp"));
    }
    // create_new never follows a symlink planted at the name it tries.
    let planted = d.0.join("planted");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let r = std::fs::OpenOptions::new().write(true).create_new(true).open(&planted);
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    // Symlinks planted at the old predictable names change nothing.
    let p = d.0.join("m.gguf");
    for n in [format!("m.gguf.tmp-{}", std::process::id()), "m.gguf.tmp".into(), ".m.gguf.tmp".into()] {
        std::os::unix::fs::symlink(&victim, d.0.join(n)).unwrap();
    }
    write_file(&p, &sample_kvs(), &[]).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert!(!std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
    let (f, tp) = writer::tests_create_named_temp(&d.0, base).unwrap();
    drop(f);
    assert!(tp.exists());
}
