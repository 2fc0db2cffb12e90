//! The hardened, zero-copy GGUF reader.
//!
//! The header, metadata and tensor infos are read into memory (with `read`, never through a mapping, so a
//! file truncated while it is open cannot fault a metadata access) and parsed with a bounds-checked
//! cursor. Every count and length read from the file is compared with the bytes that are left before
//! anything is sliced, walked or allocated, and all size arithmetic is checked, so a hostile file costs at
//! most one pass over its own bytes. A key records where its value is; arrays record element type, count
//! and byte range, and string arrays get an offset table only when an element is indexed. Tensor data is
//! read from a read-only mapping of the file.
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
use std::path::Path;
use std::sync::OnceLock;

use memmap2::Mmap;

use super::error::{count, short_name, GgufError, Result};
use super::head::{read_head, Head};
use super::metadata::{ArrayView, MetaValue, StrRef, ValueType, MAX_ARRAY_DEPTH};
use crate::quants::GgmlDType;

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
    /// The length of the file `buf` begins: every check is made against it. When it is longer than `buf`,
    /// a read past `buf`'s end stops with a `need_more` error (the caller reads more and parses again).
    end: usize,
}

type Field<'f> = &'f dyn Fn() -> String;

impl<'a> Cursor<'a> {
    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos, end: buf.len() }
    }

    fn with_len(buf: &'a [u8], pos: usize, end: usize) -> Self {
        Cursor { buf, pos, end: end.max(buf.len()) }
    }

    fn left(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    fn fixed<const N: usize>(&mut self, field: Field, what: &str) -> Result<[u8; N]> {
        if N > self.left() {
            return Err(GgufError::malformed(
                self.pos as u64,
                field(),
                format!("file ends inside {what} (needs {N} bytes, {} left)", self.left()),
            ));
        }
        let Some(b) = self.buf.get(self.pos..).and_then(|s| s.get(..N)) else {
            return Err(GgufError::need_more((self.pos + N) as u64));
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
        let Some(s) = self.buf.get(self.pos..self.pos + n as usize) else {
            return Err(GgufError::need_more((self.pos + n as usize) as u64));
        };
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
            None if elem_type == ValueType::String => match walk_strings(self.buf, start, self.end, n) {
                Walk::Done(end) => self.pos = end,
                Walk::NeedMore(upto) => return Err(GgufError::need_more(upto)),
                Walk::Bad => {
                    // Walk again, slowly, for the exact error.
                    for i in 0..n {
                        let f = || format!("{}: array element #{i}", field());
                        self.string(&f, "string length")?;
                    }
                }
            },
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

/// How [`walk_strings`] ended.
enum Walk {
    /// The array ends here.
    Done(usize),
    /// The bytes of `buf` run out before the array ends; the file is probably needed up to here (an estimate
    /// from the strings walked so far, never less than what the next read needs).
    NeedMore(u64),
    /// The array does not fit in the file: walk it with [`Cursor::string`] for the exact error.
    Bad,
}

/// Find the end of `n` length-prefixed strings starting at `pos`, checking every length against `end` (the
/// file's length). The hot loop of opening a file with a big vocabulary, so it builds no error context.
fn walk_strings(buf: &[u8], pos: usize, end: usize, n: u64) -> Walk {
    let have = buf.len().min(end);
    let mut p = pos;
    for i in 0..n {
        let need = if end - p.min(end) < 8 {
            return Walk::Bad;
        } else if let Some(b) = buf.get(p..p + 8) {
            let len = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            if len > (end - p - 8) as u64 {
                return Walk::Bad;
            }
            let next = p + 8 + len as usize;
            if next <= have {
                p = next;
                continue;
            }
            next
        } else {
            p + 8
        };
        // Past the bytes read so far: guess where the array ends from the average length so far.
        let avg = ((p - pos) as u64 / i.max(1)).max(8);
        let guess = (p as u64).saturating_add((n - i).saturating_mul(avg + avg / 8));
        return Walk::NeedMore(guess.max(need as u64));
    }
    Walk::Done(p)
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
        format!("metadata key #{index} '{}'", short_name(&self.key))
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
    pub ggml_type: Option<GgmlDType>,
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
    /// Where the tensor infos end: everything before it is header, metadata and infos.
    pub infos_end: u64,
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
    parse_prefix(buf, buf.len())
}

/// Parse a file of `file_len` bytes of which `buf` holds the first `buf.len()`. Every check is made against
/// `file_len`, so the result and the errors are those of a parse of the whole file; a parse that needs bytes
/// past the end of `buf` stops with an internal `need_more` error (see [`GgufFile::open`]).
pub(crate) fn parse_prefix(buf: &[u8], file_len: usize) -> Result<Parsed> {
    parse_resuming(buf, file_len, &mut Progress::default())
}

/// The metadata records a [`parse_resuming`] has read so far and where the next one starts: a parse that
/// stopped for more bytes resumes from here instead of from the start.
#[derive(Default)]
pub(crate) struct Progress {
    kvs: Vec<KvEntry>,
    key_index: HashMap<Box<str>, usize>,
    /// Where record `kvs.len()` starts (0: not past the header yet).
    pos: usize,
}

/// [`parse_prefix`], keeping the records read in `progress` (which must come from earlier calls on
/// prefixes of the same file, or be empty).
pub(crate) fn parse_resuming(buf: &[u8], file_len: usize, progress: &mut Progress) -> Result<Parsed> {
    let mut c = Cursor::with_len(buf, 0, file_len);
    let (version, n_tensors, n_kv) = parse_header(&mut c)?;
    if progress.pos > 0 {
        c.pos = progress.pos;
    }
    parse_metadata(&mut c, n_kv, progress)?;
    let alignment = read_alignment(buf, &progress.kvs, &progress.key_index)?;
    let (mut tensors, tensor_index, offset_pos) = parse_tensor_infos(&mut c, n_tensors)?;
    let infos_end = c.pos as u64;
    if c.pos > buf.len() {
        // The last record was an array skipped over without reading: it must be in `buf` too.
        return Err(GgufError::need_more(infos_end));
    }
    let data_offset = data_section_start(infos_end, n_tensors, alignment, file_len as u64)?;
    place_tensors(&mut tensors, &offset_pos, data_offset, alignment, file_len as u64)?;
    check_overlaps(&tensors, &offset_pos)?;
    let (kvs, key_index) = (std::mem::take(&mut progress.kvs), std::mem::take(&mut progress.key_index));
    progress.pos = 0;
    Ok(Parsed { version, alignment, data_offset, infos_end, kvs, key_index, tensors, tensor_index })
}

/// Magic, version and the two counts, with the counts checked against the bytes that follow.
fn parse_header(c: &mut Cursor<'_>) -> Result<(u32, u64, u64)> {
    let hdr = || "header".to_string();
    if c.end < 4 {
        return Err(GgufError::malformed(
            0,
            "header",
            format!("file is {} bytes long; a GGUF file starts with the 4-byte magic 'GGUF'", c.end),
        ));
    }
    check_magic(c.fixed(&hdr, "magic")?)?;
    let version = c.u32(&hdr, "version")?;
    check_version(version)?;
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
    Ok((version, n_tensors, n_kv))
}

fn check_magic(magic: [u8; 4]) -> Result<()> {
    if magic == MAGIC {
        return Ok(());
    }
    let msg = if magic == *b"FUGG" {
        "magic is 'FUGG' (byte-reversed 'GGUF'): a big-endian file? only little-endian GGUF files are supported"
            .to_string()
    } else {
        format!("bad magic {:?} (expected \"GGUF\"): not a GGUF file", String::from_utf8_lossy(&magic))
    };
    Err(GgufError::malformed(0, "header: magic", msg))
}

fn check_version(version: u32) -> Result<()> {
    let msg = match version {
        2 | 3 => return Ok(()),
        1 => "GGUF version 1 is obsolete and not supported (versions 2 and 3 are)".to_string(),
        v if v & 0xFFFF == 0 && matches!(v.swap_bytes(), 1..=3) => format!(
            "version field is {v:#010x}, i.e. {} byte-swapped: a big-endian GGUF file; only little-endian files are supported",
            v.swap_bytes()
        ),
        v => format!("unsupported GGUF version {v} (versions 2 and 3 are supported)"),
    };
    Err(GgufError::malformed(4, "header: version", msg))
}

/// The `n_kv` metadata records (in file order, and an index from key to entry), from the first one
/// `progress` does not have yet. Capacities are capped: the count comes from the file, and records are only
/// real once they have been read.
fn parse_metadata(c: &mut Cursor<'_>, n_kv: u64, progress: &mut Progress) -> Result<()> {
    if progress.pos == 0 {
        let cap = (n_kv as usize).min(MAX_PREALLOC);
        *progress = Progress { kvs: Vec::with_capacity(cap), key_index: HashMap::with_capacity(cap), pos: c.pos };
    }
    for i in progress.kvs.len()..n_kv as usize {
        let e = parse_kv_record(c, i, &progress.kvs, &progress.key_index)?;
        progress.key_index.insert(e.key.clone(), i);
        progress.kvs.push(e);
        progress.pos = c.pos;
    }
    Ok(())
}

/// Metadata record #`i`: a non-empty, UTF-8, not yet seen key, a value type and a fully validated value.
fn parse_kv_record(
    c: &mut Cursor<'_>,
    i: usize,
    kvs: &[KvEntry],
    key_index: &HashMap<Box<str>, usize>,
) -> Result<KvEntry> {
    let at = c.pos;
    let f0 = || format!("metadata key #{i}");
    let key = c.string(&f0, "key length")?;
    if key.bytes.is_empty() {
        return Err(GgufError::malformed(at as u64, f0(), "key is empty"));
    }
    let key = std::str::from_utf8(key.bytes)
        .map_err(|e| GgufError::malformed(at as u64, f0(), format!("key is not valid UTF-8 ({e})")))?;
    let f = || format!("metadata key #{i} '{}'", short_name(key));
    if let Some(&j) = key_index.get(key) {
        return Err(GgufError::malformed(
            at as u64,
            f(),
            format!("duplicate key (first defined by record #{j} at offset {})", kvs[j].offset),
        ));
    }
    let value_type = c.value_type(&f, "value type")?;
    let value_pos = c.pos;
    let array = match c.read_value(value_type, 0, &f)? {
        MetaValue::Array(a) => Some(ArrayHeader { elem_type: a.elem_type, count: a.count, start: a.start, end: a.end }),
        _ => None,
    };
    Ok(KvEntry { key: key.into(), offset: at as u64, value_type, value_pos, array, str_index: OnceLock::new() })
}

/// `general.alignment` when present (a u32 power of two up to [`MAX_ALIGNMENT`]), else the default.
fn read_alignment(buf: &[u8], kvs: &[KvEntry], key_index: &HashMap<Box<str>, usize>) -> Result<u64> {
    let Some(&i) = key_index.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let e = &kvs[i];
    let field = e.field(i);
    if e.value_type != ValueType::U32 {
        return Err(GgufError::malformed(e.offset, field, format!("alignment must be a u32, found {}", e.type_name())));
    }
    // The value was read by the cursor, so its 4 bytes are in `buf`.
    let a = u32::from_le_bytes(buf[e.value_pos..e.value_pos + 4].try_into().expect("4 bytes"));
    if a == 0 || !a.is_power_of_two() || a as u64 > MAX_ALIGNMENT {
        return Err(GgufError::malformed(
            e.value_pos as u64,
            field,
            format!("alignment {a} must be a power of two between 1 and {MAX_ALIGNMENT}"),
        ));
    }
    Ok(a as u64)
}

type TensorInfos = (Vec<TensorInfo>, HashMap<Box<str>, usize>, Vec<u64>);

/// The `n_tensors` tensor-info records, plus where each one's data offset field is (for messages).
fn parse_tensor_infos(c: &mut Cursor<'_>, n_tensors: u64) -> Result<TensorInfos> {
    let cap = (n_tensors as usize).min(MAX_PREALLOC);
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(cap);
    let mut tensor_index: HashMap<Box<str>, usize> = HashMap::with_capacity(cap);
    let mut offset_pos: Vec<u64> = Vec::with_capacity(cap);
    for i in 0..n_tensors as usize {
        let (t, o_at) = parse_tensor_info(c, i, &tensors, &tensor_index)?;
        tensor_index.insert(t.name.clone(), i);
        offset_pos.push(o_at);
        tensors.push(t);
    }
    Ok((tensors, tensor_index, offset_pos))
}

/// Tensor-info record #`i` and the offset of its data-offset field.
fn parse_tensor_info(
    c: &mut Cursor<'_>,
    i: usize,
    tensors: &[TensorInfo],
    tensor_index: &HashMap<Box<str>, usize>,
) -> Result<(TensorInfo, u64)> {
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
    let (n_dims, ne, n_elements) = read_dims(c, &f)?;
    let t_at = c.pos as u64;
    let type_id = c.u32(&f, "type")?;
    let o_at = c.pos as u64;
    let offset = c.u64(&f, "data offset")?;
    let ggml_type = GgmlDType::from_id(type_id);
    let nbytes = match ggml_type {
        None => None,
        Some(t) => Some(tensor_nbytes(t, &ne, n_elements, t_at, &f)?),
    };
    let info = TensorInfo {
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
    };
    Ok((info, o_at))
}

/// n_dims (at most [`MAX_DIMS`]), the dims (each in 1..2^63) and their product (fits in an i64).
fn read_dims(c: &mut Cursor<'_>, f: Field) -> Result<(u32, Vec<u64>, u64)> {
    let nd_at = c.pos;
    let n_dims = c.u32(f, "n_dims")?;
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
        let v = c.u64(f, "dims")?;
        if v > i64::MAX as u64 {
            return Err(GgufError::malformed(d_at, f(), format!("ne[{d}] = {v} is negative as an int64")));
        }
        if v == 0 {
            return Err(GgufError::malformed(d_at, f(), format!("ne[{d}] is 0; every dimension must be at least 1")));
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
    Ok((n_dims, ne, n_elements))
}

/// Bytes of a tensor of a known type: `ne[0]` a whole number of blocks, the size an i64.
fn tensor_nbytes(t: GgmlDType, ne: &[u64], n_elements: u64, t_at: u64, f: Field) -> Result<u64> {
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
        Some(b) if b <= i64::MAX as u64 => Ok(b),
        _ => Err(GgufError::malformed(
            t_at,
            f(),
            format!("byte size of {n_elements} {} elements overflows an int64", t.name()),
        )),
    }
}

/// Where the data section starts: after the infos, padded to the alignment (when there are tensors).
fn data_section_start(infos_end: u64, n_tensors: u64, alignment: u64, file_len: u64) -> Result<u64> {
    if n_tensors == 0 {
        return Ok(infos_end);
    }
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
    Ok(d)
}

/// Each tensor's absolute offset: its relative offset aligned, its bytes inside the file.
fn place_tensors(
    tensors: &mut [TensorInfo],
    offset_pos: &[u64],
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<()> {
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
    Ok(())
}

/// No two tensors' bytes overlap: sorted by start, each ends before the next one starts.
fn check_overlaps(tensors: &[TensorInfo], offset_pos: &[u64]) -> Result<()> {
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
    Ok(())
}

/// `EISDIR` and `EINVAL` (the same numbers on Linux and macOS).
pub(crate) const EISDIR: i32 = 21;
pub(crate) const EINVAL: i32 = 22;
/// `EIO`, for I/O failures the OS gave no number for (e.g. a file that shrank while it was read).
pub const EIO: i32 = 5;

/// An open GGUF file: the parsed layout, the bytes of the header, metadata and tensor infos (read into
/// memory when the file is opened, so no metadata access can fault however the file changes later), and a
/// read-only mapping of the file for the tensor data. Cheap to share behind an `Arc`.
pub struct GgufFile {
    /// From `open`: the file's first `infos_end` bytes. From `from_bytes`: the whole file.
    head: Head,
    /// From `open`, when a tensor has data: the whole file, mapped.
    map: Option<Mmap>,
    /// From `open`: the file (its current size is checked before tensor data is handed out) and its path.
    file: Option<(File, String)>,
    len: u64,
    parsed: Parsed,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("len", &self.len)
            .field("version", &self.parsed.version)
            .field("n_kv", &self.parsed.kvs.len())
            .field("n_tensors", &self.parsed.tensors.len())
            .finish()
    }
}

/// Open `path` for reading if it is a regular file. On Unix it is opened with `O_NONBLOCK`, so a FIFO (or a
/// device) cannot block the open; it is then refused by its type. Returns the file and its size.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    let ctx = || path.display().to_string();
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| GgufError::io(ctx(), &e))?;
    let md = file.metadata().map_err(|e| GgufError::io(ctx(), &e))?;
    if md.is_dir() {
        return Err(GgufError::os(ctx(), EISDIR, "is a directory, not a GGUF file"));
    }
    if !md.is_file() {
        return Err(GgufError::os(
            ctx(),
            EINVAL,
            format!("is not a regular file ({}); only regular files are read", file_kind(&md)),
        ));
    }
    Ok((file, md.len()))
}

fn file_kind(md: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = md.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    let _ = md;
    "not a plain file"
}

impl GgufFile {
    /// Open and parse `path` (a regular file). The header, metadata and tensor infos are read into memory;
    /// tensor data stays in a read-only mapping.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let (file, len) = open_regular(path)?;
        let (head, parsed) = read_head(&file, len, &name)?;
        let map = if parsed.tensors.iter().any(|t| t.nbytes.unwrap_or(0) > 0) {
            // SAFETY: the mapping is read-only and owned by this object; we never write through it. It is a
            // shared mapping (MAP_SHARED): another process rewriting the file changes what we read (every read
            // is bounds-checked, so that cannot go out of bounds). Only tensor data is read from it (metadata
            // was copied above), and `tensor_data` checks the file's current size first; a file truncated
            // after that while a view of it is in use still makes reads past the new end fault (SIGBUS), as
            // with every mmap-based reader (safetensors, llama.cpp). fastquant's own writer replaces files by
            // rename, which is safe.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(name.clone(), &e))?)
        } else {
            None
        };
        Ok(GgufFile { head, map, file: Some((file, name)), len, parsed })
    }

    /// Parse an in-memory file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        let parsed = parse(&bytes)?;
        let len = bytes.len() as u64;
        Ok(GgufFile { head: Head::from_vec(bytes), map: None, file: None, len, parsed })
    }

    /// The bytes tensor data lives in: the mapping (from `open`) or the in-memory file (`from_bytes`).
    pub fn bytes(&self) -> &[u8] {
        match &self.map {
            Some(m) => m,
            None => self.head.as_slice(),
        }
    }

    /// Size of the file when it was opened.
    pub fn file_size(&self) -> u64 {
        self.len
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

    /// The value of a record (arrays stay lazy; they read from the in-memory copy of the metadata).
    pub fn value<'a>(&'a self, e: &'a KvEntry) -> Result<MetaValue<'a>> {
        // `e` must be one of this file's entries: its offsets (and its lazily built string index) describe
        // this file's bytes only.
        if !self.parsed.kvs.iter().any(|k| std::ptr::eq(k, e)) {
            return Err(GgufError::malformed(0, "metadata", "this KvEntry belongs to another GGUF file"));
        }
        let buf: &'a [u8] = self.head.as_slice();
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
        Cursor::at(buf, e.value_pos).read_value(e.value_type, 0, &|| format!("metadata key '{}'", short_name(key)))
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

    /// The packed bytes of a tensor (zero copy). Refused for type ids ggml no longer defines, and (for an
    /// opened file) when the file is now shorter than the tensor's end.
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<&[u8]> {
        let Some(nbytes) = t.nbytes else {
            return Err(GgufError::unsupported(
                Some(t.info_offset),
                format!("tensor '{}'", t.name),
                format!("type id {} is not a ggml type this reader knows; its data cannot be read", t.type_id),
            ));
        };
        let end = t.abs_offset.saturating_add(nbytes);
        if let Some((file, path)) = &self.file {
            let now = file.metadata().map_err(|e| GgufError::io(path.clone(), &e))?.len();
            if end > now {
                return Err(GgufError::os(
                    path.clone(),
                    EIO,
                    format!(
                        "tensor '{}': its data [{}, {end}) is past the end of the file, which is now {now} bytes \
                         ({} when opened): the file was truncated or rewritten in place",
                        t.name, t.abs_offset, self.len
                    ),
                ));
            }
        }
        let s = t.abs_offset as usize;
        self.bytes().get(s..s.saturating_add(nbytes as usize)).ok_or_else(|| {
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
