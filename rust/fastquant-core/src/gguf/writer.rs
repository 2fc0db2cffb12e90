//! The GGUF writer: version 3, little-endian, laid out the way ggml's reader requires (each tensor's
//! offset is the running sum of the padded sizes before it; data padded with zeros to the alignment,
//! the last tensor included). Everything is validated before the first byte is written.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::error::{short_name, GgufError, Result};
use super::metadata::{OwnedValue, ValueType};
use super::reader::{DEFAULT_ALIGNMENT, EISDIR, MAGIC, MAX_ALIGNMENT, MAX_DIMS, MAX_TENSOR_NAME};
use crate::quants::GgmlDType;

/// A tensor to write: its packed bytes and GGUF-order dims (`ne[0]` fastest varying).
#[derive(Debug, Clone)]
pub struct TensorSpec<'a> {
    pub name: String,
    pub ggml_type: GgmlDType,
    pub ne: Vec<u64>,
    pub data: &'a [u8],
}

/// Check everything; return the alignment to use.
fn validate(kvs: &[(String, OwnedValue)], tensors: &[TensorSpec<'_>]) -> Result<u64> {
    let alignment = validate_metadata(kvs)?;
    let mut names = HashSet::new();
    for t in tensors {
        let field = format!("tensor '{}'", short_name(&t.name));
        if !names.insert(t.name.as_str()) {
            return Err(GgufError::invalid_input(field, "duplicate tensor name"));
        }
        validate_tensor(t, &field)?;
    }
    Ok(alignment)
}

/// Keys non-empty and unique, packed arrays whole, `general.alignment` valid; returns the alignment.
fn validate_metadata(kvs: &[(String, OwnedValue)]) -> Result<u64> {
    let mut keys = HashSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for (key, v) in kvs {
        let field = format!("metadata key '{}'", short_name(key));
        if key.is_empty() {
            return Err(GgufError::invalid_input("metadata", "a key is empty"));
        }
        if !keys.insert(key.as_str()) {
            return Err(GgufError::invalid_input(field, "duplicate key"));
        }
        if let OwnedValue::ScalarArray { elem_type, bytes } = v {
            validate_packed_array(*elem_type, bytes.len(), &field)?;
        }
        if key == "general.alignment" {
            alignment = validate_alignment(v, &field)?;
        }
    }
    Ok(alignment)
}

fn validate_packed_array(elem_type: ValueType, n_bytes: usize, field: &str) -> Result<()> {
    match elem_type.fixed_size() {
        Some(sz) if n_bytes.is_multiple_of(sz) => Ok(()),
        Some(sz) => {
            Err(GgufError::invalid_input(field, format!("{n_bytes} bytes is not a whole number of {sz}-byte elements")))
        }
        None => Err(GgufError::invalid_input(
            field,
            format!("array of {} cannot be given as packed bytes", elem_type.name()),
        )),
    }
}

fn validate_alignment(v: &OwnedValue, field: &str) -> Result<u64> {
    match v {
        OwnedValue::U32(a) if *a != 0 && a.is_power_of_two() && *a as u64 <= MAX_ALIGNMENT => Ok(*a as u64),
        OwnedValue::U32(a) => Err(GgufError::invalid_input(
            field,
            format!("alignment {a} must be a power of two between 1 and {MAX_ALIGNMENT}"),
        )),
        other => {
            Err(GgufError::invalid_input(field, format!("alignment must be a u32, got {}", other.value_type().name())))
        }
    }
}

/// Name length, dims (count, range, element count), block multiple and the byte size of the data.
fn validate_tensor(t: &TensorSpec<'_>, field: &str) -> Result<()> {
    if t.name.len() > MAX_TENSOR_NAME {
        return Err(GgufError::invalid_input(
            field,
            format!("name is {} bytes long; ggml allows at most {MAX_TENSOR_NAME}", t.name.len()),
        ));
    }
    let n = element_count(&t.ne, field)?;
    let blck = t.ggml_type.block_elems() as u64;
    let ne0 = t.ne.first().copied().unwrap_or(1);
    if ne0 % blck != 0 {
        return Err(GgufError::invalid_input(
            field,
            format!(
                "ne[0] = {ne0} (the last numpy dimension) is not a multiple of the {} block size {blck}",
                t.ggml_type.name()
            ),
        ));
    }
    let need = t.ggml_type.bytes_for(n).ok_or_else(|| GgufError::invalid_input(field, "byte size overflows"))?;
    if t.data.len() as u64 != need {
        return Err(GgufError::invalid_input(
            field,
            format!("{n} {} elements take {need} bytes but {} bytes were given", t.ggml_type.name(), t.data.len()),
        ));
    }
    Ok(())
}

/// The product of the dims (at most [`MAX_DIMS`], each in 1..2^63), which must fit in an i64.
fn element_count(ne: &[u64], field: &str) -> Result<u64> {
    if ne.len() > MAX_DIMS {
        return Err(GgufError::invalid_input(
            field,
            format!("{} dimensions; GGUF allows at most {MAX_DIMS}", ne.len()),
        ));
    }
    let mut n: u64 = 1;
    for &d in ne {
        if d == 0 || d > i64::MAX as u64 {
            return Err(GgufError::invalid_input(field, format!("dimension {d} is out of range")));
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| GgufError::invalid_input(field, "element count overflows an int64"))?;
    }
    Ok(n)
}

fn pad_len(x: u64, a: u64) -> u64 {
    (a - x % a) % a
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_value(out: &mut Vec<u8>, v: &OwnedValue) {
    use OwnedValue::*;
    match v {
        U8(x) => out.push(*x),
        I8(x) => out.push(*x as u8),
        U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Bool(x) => out.push(*x as u8),
        Str(s) => put_str(out, s.as_bytes()),
        U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        StrArray(items) => {
            out.extend_from_slice(&(ValueType::String as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                put_str(out, s.as_bytes());
            }
        }
        ScalarArray { elem_type, bytes } => {
            let sz = elem_type.fixed_size().unwrap_or(1) as u64;
            out.extend_from_slice(&(*elem_type as u32).to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u64 / sz).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// Header, metadata and tensor infos (unpadded), plus the alignment and each tensor's relative offset.
fn build_header(kvs: &[(String, OwnedValue)], tensors: &[TensorSpec<'_>], alignment: u64) -> (Vec<u8>, Vec<u64>) {
    let mut h = Vec::with_capacity(4096);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut h, k.as_bytes());
        h.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
        put_value(&mut h, v);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut off = 0u64;
    for t in tensors {
        put_str(&mut h, t.name.as_bytes());
        h.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        h.extend_from_slice(&off.to_le_bytes());
        offsets.push(off);
        let n = t.data.len() as u64;
        off += n + pad_len(n, alignment);
    }
    (h, offsets)
}

/// Write a complete GGUF file to `out`; returns the number of bytes written.
pub fn write_to<W: Write>(out: &mut W, kvs: &[(String, OwnedValue)], tensors: &[TensorSpec<'_>]) -> Result<u64> {
    write_to_named(out, kvs, tensors, "writing GGUF")
}

/// [`write_to`], with I/O errors naming `name` (the path being written).
fn write_to_named<W: Write>(
    out: &mut W,
    kvs: &[(String, OwnedValue)],
    tensors: &[TensorSpec<'_>],
    name: &str,
) -> Result<u64> {
    let alignment = validate(kvs, tensors)?;
    let (mut header, _) = build_header(kvs, tensors, alignment);
    let io = |e: std::io::Error| GgufError::io(name, &e);
    if !tensors.is_empty() {
        let p = pad_len(header.len() as u64, alignment);
        header.resize(header.len() + p as usize, 0);
    }
    out.write_all(&header).map_err(io)?;
    let mut written = header.len() as u64;
    let zeros = vec![0u8; alignment as usize];
    for t in tensors {
        out.write_all(t.data).map_err(io)?;
        let p = pad_len(t.data.len() as u64, alignment) as usize;
        out.write_all(&zeros[..p]).map_err(io)?;
        written += (t.data.len() + p) as u64;
    }
    out.flush().map_err(io)?;
    Ok(written)
}

/// Encode a complete GGUF file in memory.
pub fn to_bytes(kvs: &[(String, OwnedValue)], tensors: &[TensorSpec<'_>]) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    write_to(&mut v, kvs, tensors)?;
    Ok(v)
}

/// Write a complete GGUF file to `path`, crash-safely: the new content goes to a temporary file in the same
/// directory (created exclusively, so nothing planted in the directory can redirect the write: on Linux an
/// unnamed `O_TMPFILE`, elsewhere a new file under an unpredictable name), which is flushed to disk, given
/// the mode of the file it replaces, and renamed over `path`; the directory is then synced. A failure at
/// any point leaves the old file untouched and removes the temporary file; a crash leaves the old file or
/// the complete new one, never a mix. Every error names `path`.
pub fn write_file(path: impl AsRef<Path>, kvs: &[(String, OwnedValue)], tensors: &[TensorSpec<'_>]) -> Result<u64> {
    let path = path.as_ref();
    validate(kvs, tensors)?;
    let name = path.display().to_string();
    let ctx = |e: std::io::Error| GgufError::io(name.clone(), &e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| GgufError::os(name.clone(), EISDIR, "names no file (it ends in '..' or '/')"))?;
    // The mode of the file being replaced (a symlink at `path` is replaced itself, like `mv`).
    let old_mode = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Err(GgufError::os(name.clone(), EISDIR, "is a directory")),
        Ok(m) if m.file_type().is_file() => Some(m.permissions()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ctx(e)),
    };
    let mut tmp = TempFile::create(&dir, file_name).map_err(ctx)?;
    let result = (|| {
        let f = tmp.file.as_ref().expect("open until persisted");
        if let Some(p) = &old_mode {
            f.set_permissions(p.clone()).map_err(ctx)?;
        }
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let n = write_to_named(&mut w, kvs, tensors, &name)?;
        w.into_inner().map_err(|e| ctx(e.into_error()))?;
        f.sync_all().map_err(ctx)?;
        tmp.persist(path).map_err(ctx)?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(ctx)?;
        Ok(n)
    })();
    drop(tmp); // removes the temporary file unless it was renamed into place
    result
}

/// The temporary file of [`write_file`]: removed on drop unless [`TempFile::persist`] renamed it.
struct TempFile {
    file: Option<File>,
    dir: PathBuf,
    /// Its name in `dir`, once it has one (an `O_TMPFILE` gets one only when persisted).
    named: Option<PathBuf>,
    base: std::ffi::OsString,
}

impl TempFile {
    fn create(dir: &Path, base: &std::ffi::OsStr) -> std::io::Result<TempFile> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // An unnamed file in `dir`: nothing to plant, nothing to clean up after a crash. It is given a
            // name through /proc/self/fd, so that must be there.
            let r = if !Path::new("/proc/self/fd").is_dir() {
                Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
            } else {
                std::fs::OpenOptions::new().write(true).custom_flags(libc::O_TMPFILE).mode(0o666).open(dir)
            };
            match r {
                Ok(file) => {
                    return Ok(TempFile { file: Some(file), dir: dir.to_path_buf(), named: None, base: base.into() })
                }
                // Filesystems without O_TMPFILE say EOPNOTSUPP (or EISDIR on old kernels): use a named file.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)) => {}
                Err(e) => return Err(e),
            }
        }
        let (file, p) = create_named_temp(dir, base)?;
        Ok(TempFile { file: Some(file), dir: dir.to_path_buf(), named: Some(p), base: base.into() })
    }

    /// Rename (or, for an unnamed file, link and rename) the file to `target`.
    fn persist(&mut self, target: &Path) -> std::io::Result<()> {
        if self.named.is_none() {
            self.link_unnamed()?;
        }
        let p = self.named.as_ref().expect("named above");
        std::fs::rename(p, target)?;
        self.named = None;
        self.file = None;
        Ok(())
    }

    /// Give an `O_TMPFILE` a fresh unpredictable name in its directory (`linkat` refuses existing names).
    #[cfg(target_os = "linux")]
    fn link_unnamed(&mut self) -> std::io::Result<()> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::io::AsRawFd;
        let fd = self.file.as_ref().expect("open").as_raw_fd();
        let proc_path = CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
        for _ in 0..16 {
            let p = self.dir.join(temp_name(&self.base));
            let c = CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
            // SAFETY: both paths are valid NUL-terminated C strings that outlive the call.
            let r = unsafe {
                libc::linkat(libc::AT_FDCWD, proc_path.as_ptr(), libc::AT_FDCWD, c.as_ptr(), libc::AT_SYMLINK_FOLLOW)
            };
            if r == 0 {
                self.named = Some(p);
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temporary name"))
    }

    #[cfg(not(target_os = "linux"))]
    fn link_unnamed(&mut self) -> std::io::Result<()> {
        unreachable!("only Linux creates unnamed temporary files")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file = None;
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `.<base>.<16 random hex digits>.tmp`: hidden, unpredictable, and tied to the file it replaces.
fn temp_name(base: &std::ffi::OsStr) -> std::ffi::OsString {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded from the OS's random source once per thread, then incremented; mixing in
    // the time and the process id makes every call's name different and unguessable from outside.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    let mut n = std::ffi::OsString::from(".");
    n.push(base);
    n.push(format!(".{:016x}.tmp", h.finish()));
    n
}

/// A new file under an unpredictable name in `dir`, created exclusively (`O_CREAT | O_EXCL`: an existing
/// file or symlink of that name is never opened or followed; another name is tried).
fn create_named_temp(dir: &Path, base: &std::ffi::OsStr) -> std::io::Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..16 {
        let p = dir.join(temp_name(base));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((f, p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temporary name")))
}

#[cfg(test)]
pub(crate) fn tests_temp_name(base: &std::ffi::OsStr) -> std::ffi::OsString {
    temp_name(base)
}

#[cfg(test)]
pub(crate) fn tests_create_named_temp(dir: &Path, base: &std::ffi::OsStr) -> std::io::Result<(File, PathBuf)> {
    create_named_temp(dir, base)
}
