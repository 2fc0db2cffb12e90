//! The hardened, zero-copy GGUF reader.
//!
//! The file is memory-mapped and parsed with a bounds-checked cursor. Every count and length read from
//! the file is compared with the bytes that are left before anything is sliced, walked or allocated, and
//! all size arithmetic is checked, so a hostile file costs at most one pass over its own bytes. Metadata
//! stays in the mapping: a key records where its value is; arrays record element type, count and byte
//! range, and string arrays get an offset table only when an element is indexed.
//!
//! Rules (see `docs/gguf.md` for where they differ from ggml and gguf-py):
//! * magic `GGUF`, versions 2 and 3; v1, unknown versions and big-endian files are refused;
//! * keys non-empty, valid UTF-8 and unique; value types 0..=12; arrays nested at most
//!   [`MAX_ARRAY_DEPTH`] deep;
//! * `general.alignment`, when present, is a u32, a power of two and at most [`MAX_ALIGNMENT`];
//! * tensor names are UTF-8, at most [`MAX_TENSOR_NAME`] bytes and unique; n_dims ≤ 4; every dim is in
//!   1..2^63 and the element count fits in an i64; for known types `ne[0]` is a multiple of the block size
//!   and the byte size fits in an i64;
//! * tensor offsets are multiples of the alignment, each tensor's bytes lie inside the file, and no two
//!   tensors overlap. Tensors whose type id ggml no longer defines are listed (raw id kept) but their data
//!   is refused.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::Path;
use std::sync::OnceLock;

use memmap2::Mmap;

use super::error::{count, GgufError, Result};
use super::metadata::{ArrayView, MetaValue, StrRef, ValueType, MAX_ARRAY_DEPTH};
use crate::quants::GgmlType;

/// Most records reserved up front from a count read in the header (more grow as they are read).
const MAX_PREALLOC: usize = 4096;

/// `GGUF` as bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted (1 MiB), so that padding cannot be used to point far away.
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// ggml's `GGML_MAX_NAME - 1`.
pub const MAX_TENSOR_NAME: usize = 63;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// Smallest possible metadata record: key length (8) + 0 key bytes + type (4) + a 1-byte value.
const MIN_KV_BYTES: u64 = 13;
/// Smallest possible tensor-info record: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// A bounds-checked little-endian reader over the whole file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

type Field<'f> = &'f dyn Fn() -> String;

impl<'a> Cursor<'a> {
    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }

    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn fixed<const N: usize>(&mut self, field: Field, what: &str) -> Result<[u8; N]> {
        let Some(b) = self.buf.get(self.pos..).and_then(|s| s.get(..N)) else {
            return Err(GgufError::malformed(
                self.pos as u64,
                field(),
                format!("file ends inside {what} (needs {N} bytes, {} left)", self.left()),
            ));
        };
        self.pos += N;
        Ok(b.try_into().expect("slice of length N"))
    }

    fn u32(&mut self, field: Field, what: &str) -> Result<u32> {
        self.fixed::<4>(field, what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: Field, what: &str) -> Result<u64> {
        self.fixed::<8>(field, what).map(u64::from_le_bytes)
    }

    /// `n` bytes, refused (before any slicing) when fewer are left. `at` is the offset reported.
    fn bytes(&mut self, n: u64, at: usize, field: Field, what: &str) -> Result<&'a [u8]> {
        let left = self.left();
        if n > left as u64 {
            return Err(GgufError::malformed(
                at as u64,
                field(),
                format!("{what} {} exceeds the {left} bytes left in the file", count(n)),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// A length-prefixed string; `what_len` names the length field (`"key length"`). Allocates nothing
    /// unless there is an error: this runs once per vocabulary entry.
    fn string(&mut self, field: Field, what_len: &str) -> Result<StrRef<'a>> {
        let at = self.pos;
        let len = self.u64(field, what_len)?;
        let bytes = self.bytes(len, at, field, what_len)?;
        Ok(StrRef { bytes, offset: at as u64 })
    }

    fn value_type(&mut self, field: Field, what: &str) -> Result<ValueType> {
        let at = self.pos;
        let id = self.u32(field, what)?;
        ValueType::from_id(id).ok_or_else(|| {
            GgufError::malformed(at as u64, field(), format!("{what} {id} is not a GGUF value type (0..=12)"))
        })
    }

    /// Read (and fully validate) one value of type `t` found inside `depth` enclosing arrays. An array is
    /// walked to find its end but its elements are not kept.
    pub(crate) fn read_value(&mut self, t: ValueType, depth: u32, field: Field) -> Result<MetaValue<'a>> {
        use ValueType as T;
        Ok(match t {
            T::U8 => MetaValue::U8(self.fixed::<1>(field, "a u8 value")?[0]),
            T::I8 => MetaValue::I8(self.fixed::<1>(field, "an i8 value")?[0] as i8),
            T::U16 => MetaValue::U16(u16::from_le_bytes(self.fixed(field, "a u16 value")?)),
            T::I16 => MetaValue::I16(i16::from_le_bytes(self.fixed(field, "an i16 value")?)),
            T::U32 => MetaValue::U32(u32::from_le_bytes(self.fixed(field, "a u32 value")?)),
            T::I32 => MetaValue::I32(i32::from_le_bytes(self.fixed(field, "an i32 value")?)),
            T::F32 => MetaValue::F32(f32::from_le_bytes(self.fixed(field, "an f32 value")?)),
            T::Bool => MetaValue::Bool(self.fixed::<1>(field, "a bool value")?[0] != 0),
            T::U64 => MetaValue::U64(u64::from_le_bytes(self.fixed(field, "a u64 value")?)),
            T::I64 => MetaValue::I64(i64::from_le_bytes(self.fixed(field, "an i64 value")?)),
            T::F64 => MetaValue::F64(f64::from_le_bytes(self.fixed(field, "an f64 value")?)),
            T::String => MetaValue::Str(self.string(field, "string length")?),
            T::Array => MetaValue::Array(self.read_array(depth, field)?),
        })
    }

    fn read_array(&mut self, depth: u32, field: Field) -> Result<ArrayView<'a>> {
        let at = self.pos;
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::malformed(
                at as u64,
                field(),
                format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
            ));
        }
        let elem_type = self.value_type(field, "array element type")?;
        let count_at = self.pos;
        let n = self.u64(field, "array length")?;
        // Every element takes at least min_size bytes: refuse impossible counts before walking.
        let min = elem_type.min_size() as u64;
        let left = self.left() as u64;
        if n > left / min {
            return Err(GgufError::malformed(
                count_at as u64,
                field(),
                format!(
                    "array length {} of {} needs at least {} bytes but only {left} are left in the file",
                    count(n),
                    elem_type.name(),
                    n.checked_mul(min).map(count).unwrap_or_else(|| "more than 2^64".into())
                ),
            ));
        }
        let start = self.pos;
        match elem_type.fixed_size() {
            Some(sz) => {
                self.pos += n as usize * sz; // checked just above: n * sz <= left
            }
            None if elem_type == ValueType::String => {
                for i in 0..n {
                    let f = || format!("{}: array element #{i}", field());
                    self.string(&f, "string length")?;
                }
            }
            None => {
                for i in 0..n {
                    let f = || format!("{}: array element #{i}", field());
                    self.read_array(depth + 1, &f)?;
                }
            }
        }
        Ok(ArrayView { elem_type, count: n, buf: self.buf, start, end: self.pos, index: None, depth })
    }
}

/// One metadata record, as found in the file.
#[derive(Debug)]
pub struct KvEntry {
    pub key: Box<str>,
    /// Offset of the record (its key length) in the file.
    pub offset: u64,
    pub value_type: ValueType,
    value_pos: usize,
    array: Option<ArrayHeader>,
    str_index: OnceLock<Box<[usize]>>,
}

#[derive(Debug, Clone, Copy)]
struct ArrayHeader {
    elem_type: ValueType,
    count: u64,
    start: usize,
    end: usize,
}

impl KvEntry {
    /// `"u32"`, `"str"`, `"array[str]"`, `"array[array]"`.
    pub fn type_name(&self) -> String {
        match &self.array {
            Some(a) => format!("array[{}]", a.elem_type.name()),
            None => self.value_type.name().to_string(),
        }
    }

    /// Element type and count for arrays.
    pub fn array_header(&self) -> Option<(ValueType, u64)> {
        self.array.map(|a| (a.elem_type, a.count))
    }

    pub fn field(&self, index: usize) -> String {
        format!("metadata key #{index} '{}'", self.key)
    }
}

/// One tensor-info record.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: Box<str>,
    /// Offset of the record in the file.
    pub info_offset: u64,
    pub n_dims: u32,
    /// `ne[0..n_dims]`, fastest-varying first (GGUF order).
    pub ne: Vec<u64>,
    /// The type id as stored.
    pub type_id: u32,
    /// `None` when ggml no longer defines `type_id`.
    pub ggml_type: Option<GgmlType>,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Absolute offset of the data in the file.
    pub abs_offset: u64,
    pub n_elements: u64,
    /// `None` for unknown types.
    pub nbytes: Option<u64>,
}

impl TensorInfo {
    /// numpy/torch shape: `ne` reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.ne.iter().rev().copied().collect()
    }

    /// The type's name, or `"type#<id>"` for unknown ids.
    pub fn type_name(&self) -> String {
        match self.ggml_type {
            Some(t) => t.name().to_string(),
            None => format!("type#{}", self.type_id),
        }
    }
}

/// Everything the header, metadata and tensor infos say, as offsets into the file.
#[derive(Debug)]
pub struct Parsed {
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset where the data section starts.
    pub data_offset: u64,
    pub kvs: Vec<KvEntry>,
    key_index: HashMap<Box<str>, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<Box<str>, usize>,
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    // a is a power of two
    x.checked_add(a - 1).map(|v| v & !(a - 1))
}

/// Parse and validate a whole GGUF file held in `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed> {
    let file_len = buf.len() as u64;
    let mut c = Cursor::at(buf, 0);
    let hdr = || "header".to_string();
    if buf.len() < 4 {
        return Err(GgufError::malformed(
            0,
            "header",
            format!("file is {} bytes long; a GGUF file starts with the 4-byte magic 'GGUF'", buf.len()),
        ));
    }
    let magic: [u8; 4] = c.fixed(&hdr, "magic")?;
    if magic != MAGIC {
        let msg = if magic == *b"FUGG" {
            "magic is 'FUGG' (byte-reversed 'GGUF'): a big-endian file? only little-endian GGUF files are supported"
                .to_string()
        } else {
            format!("bad magic {:?} (expected \"GGUF\"): not a GGUF file", String::from_utf8_lossy(&magic))
        };
        return Err(GgufError::malformed(0, "header: magic", msg));
    }
    let version = c.u32(&hdr, "version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(GgufError::malformed(
                4,
                "header: version",
                "GGUF version 1 is obsolete and not supported (versions 2 and 3 are)",
            ))
        }
        v if v & 0xFFFF == 0 && matches!(v.swap_bytes(), 1..=3) => {
            return Err(GgufError::malformed(
                4,
                "header: version",
                format!(
                    "version field is {v:#010x}, i.e. {} byte-swapped: a big-endian GGUF file; only little-endian files are supported",
                    v.swap_bytes()
                ),
            ))
        }
        v => {
            return Err(GgufError::malformed(
                4,
                "header: version",
                format!("unsupported GGUF version {v} (versions 2 and 3 are supported)"),
            ))
        }
    }
    let n_tensors = c.u64(&hdr, "tensor count")?;
    let n_kv = c.u64(&hdr, "metadata key/value count")?;
    let left = c.left() as u64;
    for (what, n, min, at) in
        [("tensor count", n_tensors, MIN_TENSOR_INFO_BYTES, 8u64), ("metadata key/value count", n_kv, MIN_KV_BYTES, 16)]
    {
        if n > i64::MAX as u64 {
            return Err(GgufError::malformed(
                at,
                format!("header: {what}"),
                format!("{what} {n} is negative as an int64"),
            ));
        }
        if n > left / min {
            return Err(GgufError::malformed(
                at,
                format!("header: {what}"),
                format!("{what} {} needs at least {min} bytes each but only {left} bytes follow the header", count(n)),
            ));
        }
    }
    if n_kv.saturating_mul(MIN_KV_BYTES).saturating_add(n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES)) > left {
        return Err(GgufError::malformed(
            8,
            "header",
            format!(
                "{n_tensors} tensor infos and {n_kv} metadata records cannot fit in the {left} bytes after the header"
            ),
        ));
    }

    // Metadata.
    // Capacities are capped: the counts come from the file, and records are only real once they have been read.
    let mut kvs: Vec<KvEntry> = Vec::with_capacity((n_kv as usize).min(MAX_PREALLOC));
    let mut key_index: HashMap<Box<str>, usize> = HashMap::with_capacity((n_kv as usize).min(MAX_PREALLOC));
    for i in 0..n_kv as usize {
        let at = c.pos;
        let f0 = || format!("metadata key #{i}");
        let key = c.string(&f0, "key length")?;
        if key.bytes.is_empty() {
            return Err(GgufError::malformed(at as u64, f0(), "key is empty"));
        }
        let key = std::str::from_utf8(key.bytes)
            .map_err(|e| GgufError::malformed(at as u64, f0(), format!("key is not valid UTF-8 ({e})")))?;
        let f = || format!("metadata key #{i} '{key}'");
        if let Some(&j) = key_index.get(key) {
            return Err(GgufError::malformed(
                at as u64,
                f(),
                format!("duplicate key (first defined by record #{j} at offset {})", kvs[j].offset),
            ));
        }
        let value_type = c.value_type(&f, "value type")?;
        let value_pos = c.pos;
        let v = c.read_value(value_type, 0, &f)?;
        let array = match v {
            MetaValue::Array(a) => {
                Some(ArrayHeader { elem_type: a.elem_type, count: a.count, start: a.start, end: a.end })
            }
            _ => None,
        };
        key_index.insert(key.into(), i);
        kvs.push(KvEntry {
            key: key.into(),
            offset: at as u64,
            value_type,
            value_pos,
            array,
            str_index: OnceLock::new(),
        });
    }

    // Alignment.
    let mut alignment = DEFAULT_ALIGNMENT;
    if let Some(&i) = key_index.get("general.alignment") {
        let e = &kvs[i];
        let field = e.field(i);
        if e.value_type != ValueType::U32 {
            return Err(GgufError::malformed(
                e.offset,
                field,
                format!("alignment must be a u32, found {}", e.type_name()),
            ));
        }
        let a = u32::from_le_bytes(buf[e.value_pos..e.value_pos + 4].try_into().expect("4 bytes"));
        if a == 0 || !a.is_power_of_two() || a as u64 > MAX_ALIGNMENT {
            return Err(GgufError::malformed(
                e.value_pos as u64,
                field,
                format!("alignment {a} must be a power of two between 1 and {MAX_ALIGNMENT}"),
            ));
        }
        alignment = a as u64;
    }

    // Tensor infos.
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity((n_tensors as usize).min(MAX_PREALLOC));
    let mut tensor_index: HashMap<Box<str>, usize> = HashMap::with_capacity((n_tensors as usize).min(MAX_PREALLOC));
    let mut offset_pos: Vec<u64> = Vec::with_capacity((n_tensors as usize).min(MAX_PREALLOC));
    for i in 0..n_tensors as usize {
        let at = c.pos;
        let f0 = || format!("tensor #{i}");
        let name = c.string(&f0, "name length")?;
        if name.bytes.len() > MAX_TENSOR_NAME {
            return Err(GgufError::malformed(
                at as u64,
                f0(),
                format!("name is {} bytes long; at most {MAX_TENSOR_NAME} are allowed", name.bytes.len()),
            ));
        }
        let name = std::str::from_utf8(name.bytes)
            .map_err(|e| GgufError::malformed(at as u64, f0(), format!("name is not valid UTF-8 ({e})")))?;
        let f = || format!("tensor #{i} '{name}'");
        if let Some(&j) = tensor_index.get(name) {
            return Err(GgufError::malformed(
                at as u64,
                f(),
                format!("duplicate tensor name (first used by tensor #{j} at offset {})", tensors[j].info_offset),
            ));
        }
        let nd_at = c.pos;
        let n_dims = c.u32(&f, "n_dims")?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::malformed(
                nd_at as u64,
                f(),
                format!("n_dims {n_dims} exceeds the maximum of {MAX_DIMS}"),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for d in 0..n_dims {
            let d_at = c.pos as u64;
            let v = c.u64(&f, "dims")?;
            if v > i64::MAX as u64 {
                return Err(GgufError::malformed(d_at, f(), format!("ne[{d}] = {v} is negative as an int64")));
            }
            if v == 0 {
                return Err(GgufError::malformed(
                    d_at,
                    f(),
                    format!("ne[{d}] is 0; every dimension must be at least 1"),
                ));
            }
            n_elements = match n_elements.checked_mul(v) {
                Some(n) if n <= i64::MAX as u64 => n,
                _ => {
                    return Err(GgufError::malformed(
                        d_at,
                        f(),
                        format!("element count overflows an int64 at ne[{d}] = {v}"),
                    ))
                }
            };
            ne.push(v);
        }
        let t_at = c.pos as u64;
        let type_id = c.u32(&f, "type")?;
        let o_at = c.pos as u64;
        let offset = c.u64(&f, "data offset")?;
        let ggml_type = GgmlType::from_id(type_id);
        let nbytes = match ggml_type {
            None => None,
            Some(t) => {
                let blck = t.block_elems() as u64;
                let ne0 = ne.first().copied().unwrap_or(1);
                if ne0 % blck != 0 {
                    return Err(GgufError::malformed(
                        t_at,
                        f(),
                        format!("ne[0] = {ne0} is not a multiple of the {} block size {blck}", t.name()),
                    ));
                }
                match t.bytes_for(n_elements) {
                    Some(b) if b <= i64::MAX as u64 => Some(b),
                    _ => {
                        return Err(GgufError::malformed(
                            t_at,
                            f(),
                            format!("byte size of {n_elements} {} elements overflows an int64", t.name()),
                        ))
                    }
                }
            }
        };
        tensor_index.insert(name.into(), i);
        offset_pos.push(o_at);
        tensors.push(TensorInfo {
            name: name.into(),
            info_offset: at as u64,
            n_dims,
            ne,
            type_id,
            ggml_type,
            offset,
            abs_offset: 0,
            n_elements,
            nbytes,
        });
    }

    // Data section.
    let infos_end = c.pos as u64;
    let data_offset = if n_tensors > 0 {
        let d = align_up(infos_end, alignment).unwrap_or(u64::MAX);
        if d > file_len {
            return Err(GgufError::malformed(
                infos_end,
                "tensor data",
                format!(
                    "the data section would start at {d} (after padding to {alignment}), past the end of the {file_len}-byte file"
                ),
            ));
        }
        d
    } else {
        infos_end
    };
    for (i, t) in tensors.iter_mut().enumerate() {
        let f = || format!("tensor #{i} '{}'", t.name);
        if t.offset % alignment != 0 {
            return Err(GgufError::malformed(
                offset_pos[i],
                f(),
                format!("data offset {} is not a multiple of the alignment {alignment}", t.offset),
            ));
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.nbytes.unwrap_or(0)));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len => t.abs_offset = s,
            _ => {
                return Err(GgufError::malformed(
                    offset_pos[i],
                    f(),
                    format!(
                        "data [{} + {}, +{} bytes) lies outside the {file_len}-byte file",
                        data_offset,
                        t.offset,
                        t.nbytes.map(|b| b.to_string()).unwrap_or_else(|| "?".into())
                    ),
                ))
            }
        }
    }
    // Overlaps: sort by start; each tensor must end before the next one starts.
    let mut order: Vec<usize> = (0..tensors.len()).filter(|&i| tensors[i].nbytes.unwrap_or(0) > 0).collect();
    order.sort_by_key(|&i| tensors[i].abs_offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        let a_end = a.abs_offset + a.nbytes.unwrap_or(0);
        if a_end > b.abs_offset {
            return Err(GgufError::malformed(
                offset_pos[w[1]],
                format!("tensor #{} '{}'", w[1], b.name),
                format!(
                    "data [{}, {}) overlaps tensor #{} '{}' at [{}, {a_end})",
                    b.abs_offset,
                    b.abs_offset + b.nbytes.unwrap_or(0),
                    w[0],
                    a.name,
                    a.abs_offset
                ),
            ));
        }
    }

    Ok(Parsed { version, alignment, data_offset, kvs, key_index, tensors, tensor_index })
}

/// Where the bytes live.
enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An open GGUF file: the mapping plus the parsed layout. Cheap to share behind an `Arc`; every accessor
/// borrows from the mapping.
pub struct GgufFile {
    backing: Backing,
    parsed: Parsed,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("len", &self.backing.len())
            .field("version", &self.parsed.version)
            .field("n_kv", &self.parsed.kvs.len())
            .field("n_tensors", &self.parsed.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-map and parse `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let ctx = || format!("{}", path.display());
        let file = File::open(path).map_err(|e| GgufError::io(ctx(), &e))?;
        let len = file.metadata().map_err(|e| GgufError::io(ctx(), &e))?.len();
        let backing = if len == 0 {
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: the mapping is read-only and owned by this object; we never write through it. It is a
            // shared mapping (MAP_SHARED): another process rewriting the file changes what we read (every read
            // is bounds-checked, so that cannot go out of bounds), and one truncating it while mapped makes
            // reads past the new end fault (SIGBUS) — as with every mmap-based reader (safetensors,
            // llama.cpp). fastquant's own writer replaces files by rename, which is safe.
            let m = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(ctx(), &e))?;
            Backing::Mmap(m)
        };
        let parsed = parse(&backing)?;
        Ok(GgufFile { backing, parsed })
    }

    /// Parse an in-memory file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        let backing = Backing::Owned(bytes);
        let parsed = parse(&backing)?;
        Ok(GgufFile { backing, parsed })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.backing
    }

    pub fn file_size(&self) -> u64 {
        self.backing.len() as u64
    }

    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    pub fn alignment(&self) -> u64 {
        self.parsed.alignment
    }

    pub fn data_offset(&self) -> u64 {
        self.parsed.data_offset
    }

    pub fn metadata(&self) -> &[KvEntry] {
        &self.parsed.kvs
    }

    pub fn kv_index(&self, key: &str) -> Option<usize> {
        self.parsed.key_index.get(key).copied()
    }

    pub fn kv(&self, key: &str) -> Option<&KvEntry> {
        self.kv_index(key).map(|i| &self.parsed.kvs[i])
    }

    /// The value of a record (arrays stay lazy).
    pub fn value<'a>(&'a self, e: &'a KvEntry) -> Result<MetaValue<'a>> {
        // `e` must be one of this file's entries: its offsets (and its lazily built string index) describe
        // this file's bytes only.
        if !self.parsed.kvs.iter().any(|k| std::ptr::eq(k, e)) {
            return Err(GgufError::malformed(0, "metadata", "this KvEntry belongs to another GGUF file"));
        }
        let buf: &'a [u8] = &self.backing;
        if let Some(a) = e.array {
            return Ok(MetaValue::Array(ArrayView {
                elem_type: a.elem_type,
                count: a.count,
                buf,
                start: a.start,
                end: a.end,
                index: Some(&e.str_index),
                depth: 0,
            }));
        }
        let key = &*e.key;
        Cursor::at(buf, e.value_pos).read_value(e.value_type, 0, &|| format!("metadata key '{key}'"))
    }

    /// The value of `key`, `None` when absent.
    pub fn get(&self, key: &str) -> Option<Result<MetaValue<'_>>> {
        self.kv(key).map(|e| self.value(e))
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.parsed.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.parsed.tensor_index.get(name).map(|&i| &self.parsed.tensors[i])
    }

    /// The packed bytes of a tensor (zero copy). Refused for type ids ggml no longer defines.
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<&[u8]> {
        let Some(nbytes) = t.nbytes else {
            return Err(GgufError::unsupported(
                Some(t.info_offset),
                format!("tensor '{}'", t.name),
                format!("type id {} is not a ggml type this reader knows; its data cannot be read", t.type_id),
            ));
        };
        let s = t.abs_offset as usize;
        self.backing.get(s..s.saturating_add(nbytes as usize)).ok_or_else(|| {
            GgufError::malformed(t.abs_offset, format!("tensor '{}'", t.name), "data lies outside the file")
        })
    }

    /// The packed bytes of the tensor called `name`.
    pub fn tensor_data_by_name(&self, name: &str) -> Result<&[u8]> {
        let t = self
            .tensor(name)
            .ok_or_else(|| GgufError::not_found(format!("tensor '{name}'"), "no tensor of that name in the file"))?;
        self.tensor_data(t)
    }
}
