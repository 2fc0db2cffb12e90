//! The GGUF writer: version 3, little-endian, laid out the way ggml's reader requires (each tensor's
//! offset is the running sum of the padded sizes before it; data padded with zeros to the alignment,
//! the last tensor included). Everything is validated before the first byte is written.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::error::{GgufError, Result};
use super::metadata::{OwnedValue, ValueType};
use super::reader::{DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_DIMS, MAX_TENSOR_NAME};
use crate::quants::GgmlType;

/// A tensor to write: its packed bytes and GGUF-order dims (`ne[0]` fastest varying).
#[derive(Debug, Clone)]
pub struct TensorSpec<'a> {
    pub name: String,
    pub ggml_type: GgmlType,
    pub ne: Vec<u64>,
    pub data: &'a [u8],
}

/// Check everything; return the alignment to use.
fn validate(kvs: &[(String, OwnedValue)], tensors: &[TensorSpec<'_>]) -> Result<u64> {
    let mut keys = HashSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for (key, v) in kvs {
        let field = format!("metadata key '{key}'");
        if key.is_empty() {
            return Err(GgufError::invalid_input("metadata", "a key is empty"));
        }
        if !keys.insert(key.as_str()) {
            return Err(GgufError::invalid_input(field, "duplicate key"));
        }
        if let OwnedValue::ScalarArray { elem_type, bytes } = v {
            match elem_type.fixed_size() {
                Some(sz) if bytes.len() % sz == 0 => {}
                Some(sz) => {
                    return Err(GgufError::invalid_input(
                        field,
                        format!("{} bytes is not a whole number of {}-byte elements", bytes.len(), sz),
                    ))
                }
                None => {
                    return Err(GgufError::invalid_input(
                        field,
                        format!("array of {} cannot be given as packed bytes", elem_type.name()),
                    ))
                }
            }
        }
        if key == "general.alignment" {
            match v {
                OwnedValue::U32(a) if *a != 0 && a.is_power_of_two() && *a as u64 <= MAX_ALIGNMENT => {
                    alignment = *a as u64
                }
                OwnedValue::U32(a) => {
                    return Err(GgufError::invalid_input(
                        field,
                        format!("alignment {a} must be a power of two between 1 and {MAX_ALIGNMENT}"),
                    ))
                }
                other => {
                    return Err(GgufError::invalid_input(
                        field,
                        format!("alignment must be a u32, got {}", other.value_type().name()),
                    ))
                }
            }
        }
    }
    let mut names = HashSet::new();
    for t in tensors {
        let field = format!("tensor '{}'", t.name);
        if t.name.len() > MAX_TENSOR_NAME {
            return Err(GgufError::invalid_input(
                field,
                format!("name is {} bytes long; ggml allows at most {MAX_TENSOR_NAME}", t.name.len()),
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err(GgufError::invalid_input(field, "duplicate tensor name"));
        }
        if t.ne.len() > MAX_DIMS {
            return Err(GgufError::invalid_input(
                field,
                format!("{} dimensions; GGUF allows at most {MAX_DIMS}", t.ne.len()),
            ));
        }
        let mut n: u64 = 1;
        for &d in &t.ne {
            if d == 0 || d > i64::MAX as u64 {
                return Err(GgufError::invalid_input(field, format!("dimension {d} is out of range")));
            }
            n = n
                .checked_mul(d)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| GgufError::invalid_input(field.clone(), "element count overflows an int64"))?;
        }
        let blck = t.ggml_type.block_elems() as u64;
        if t.ne.first().copied().unwrap_or(1) % blck != 0 {
            return Err(GgufError::invalid_input(
                field,
                format!(
                    "ne[0] = {} (the last numpy dimension) is not a multiple of the {} block size {blck}",
                    t.ne.first().copied().unwrap_or(1),
                    t.ggml_type.name()
                ),
            ));
        }
        let need =
            t.ggml_type.bytes_for(n).ok_or_else(|| GgufError::invalid_input(field.clone(), "byte size overflows"))?;
        if t.data.len() as u64 != need {
            return Err(GgufError::invalid_input(
                field,
                format!(
                    "{} {} elements take {need} bytes but {} bytes were given",
                    n,
                    t.ggml_type.name(),
                    t.data.len()
                ),
            ));
        }
    }
    Ok(alignment)
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
    let alignment = validate(kvs, tensors)?;
    let (mut header, _) = build_header(kvs, tensors, alignment);
    let io = |e: std::io::Error| GgufError::io("writing GGUF", &e);
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

/// Write a complete GGUF file to `path` (via a temporary file in the same directory, renamed into place,
/// so a failed write never leaves a half-written file under the final name).
pub fn write_file(path: impl AsRef<Path>, kvs: &[(String, OwnedValue)], tensors: &[TensorSpec<'_>]) -> Result<u64> {
    let path = path.as_ref();
    validate(kvs, tensors)?;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let ctx = |e: std::io::Error| GgufError::io(format!("{}", path.display()), &e);
    let result = (|| {
        let f = File::create(&tmp).map_err(ctx)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let n = write_to(&mut w, kvs, tensors)?;
        let f = w.into_inner().map_err(|e| ctx(e.into_error()))?;
        f.sync_all().ok();
        drop(f);
        std::fs::rename(&tmp, path).map_err(ctx)?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
