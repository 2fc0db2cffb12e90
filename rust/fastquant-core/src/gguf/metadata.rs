//! Metadata values: the 13 GGUF value types, borrowed views of values inside a mapped file (kept lazy:
//! an array is an element type, a count and a byte range until someone asks for its elements), and owned
//! values for the writer.

use std::sync::OnceLock;

use super::error::{GgufError, Result};
use super::reader::Cursor;

/// Deepest nesting of arrays the reader accepts (an array of arrays of scalars has depth 2). The spec
/// allows nested arrays, ggml rejects them and gguf-py recurses without limit; we accept a few levels so
/// that files gguf-py wrote can be read, and stop there so that nesting cannot exhaust the stack.
pub const MAX_ARRAY_DEPTH: u32 = 4;

/// A metadata value type as stored on disk (a u32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Short name used by the Python API and the inspector: `u8 i8 u16 i16 u32 i32 f32 bool str array u64 i64 f64`.
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "str",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    pub fn from_name(name: &str) -> Option<ValueType> {
        use ValueType::*;
        Some(match name {
            "u8" | "uint8" => U8,
            "i8" | "int8" => I8,
            "u16" | "uint16" => U16,
            "i16" | "int16" => I16,
            "u32" | "uint32" => U32,
            "i32" | "int32" => I32,
            "f32" | "float32" => F32,
            "bool" => Bool,
            "str" | "string" => String,
            "array" => Array,
            "u64" | "uint64" => U64,
            "i64" | "int64" => I64,
            "f64" | "float64" => F64,
            _ => return None,
        })
    }

    /// Byte size of a fixed-size value, `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The fewest bytes one value of this type can occupy (8 for a string's length, 12 for an array's
    /// element type and count). Used to reject counts before walking or allocating.
    pub fn min_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }
}

/// A value borrowed from a mapped file.
#[derive(Debug, Clone, Copy)]
pub enum MetaValue<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    /// ggml treats any non-zero byte as true; so do we (the spec says only 0 and 1 are valid).
    Bool(bool),
    /// Raw bytes; meant to be UTF-8 (see [`MetaValue::as_str`]).
    Str(StrRef<'a>),
    Array(ArrayView<'a>),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A string inside the file: its bytes and the offset of its length prefix (for error messages).
#[derive(Debug, Clone, Copy)]
pub struct StrRef<'a> {
    pub bytes: &'a [u8],
    pub offset: u64,
}

impl<'a> StrRef<'a> {
    pub fn to_str(&self, field: &str) -> Result<&'a str> {
        std::str::from_utf8(self.bytes)
            .map_err(|e| GgufError::malformed(self.offset, field, format!("string is not valid UTF-8 ({e})")))
    }
}

impl<'a> MetaValue<'a> {
    pub fn value_type(&self) -> ValueType {
        use MetaValue::*;
        match self {
            U8(_) => ValueType::U8,
            I8(_) => ValueType::I8,
            U16(_) => ValueType::U16,
            I16(_) => ValueType::I16,
            U32(_) => ValueType::U32,
            I32(_) => ValueType::I32,
            F32(_) => ValueType::F32,
            Bool(_) => ValueType::Bool,
            Str(_) => ValueType::String,
            Array(_) => ValueType::Array,
            U64(_) => ValueType::U64,
            I64(_) => ValueType::I64,
            F64(_) => ValueType::F64,
        }
    }

    /// Integer value as i128 (every integer type fits), `None` for other types.
    pub fn as_int(&self) -> Option<i128> {
        use MetaValue::*;
        Some(match *self {
            U8(v) => v as i128,
            I8(v) => v as i128,
            U16(v) => v as i128,
            I16(v) => v as i128,
            U32(v) => v as i128,
            I32(v) => v as i128,
            U64(v) => v as i128,
            I64(v) => v as i128,
            _ => return None,
        })
    }

    /// A string value, checked to be UTF-8.
    pub fn as_str(&self, field: &str) -> Option<Result<&'a str>> {
        match self {
            MetaValue::Str(s) => Some(s.to_str(field)),
            _ => None,
        }
    }
}

/// An array inside the file. Elements are decoded only when asked for. Fixed-size element arrays are one
/// bounds-checked byte slice (`raw_elements`); string arrays get an offset table the first time an element
/// is indexed (iteration needs none).
#[derive(Debug, Clone, Copy)]
pub struct ArrayView<'a> {
    pub elem_type: ValueType,
    pub count: u64,
    /// The whole file.
    pub(crate) buf: &'a [u8],
    /// Offset of the first element and one past the last element (validated at open).
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Lazily built start offsets of string elements (top-level string arrays only).
    pub(crate) index: Option<&'a OnceLock<Box<[usize]>>>,
    pub(crate) depth: u32,
}

impl<'a> ArrayView<'a> {
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Offset of the first element in the file.
    pub fn offset(&self) -> u64 {
        self.start as u64
    }

    /// The packed little-endian elements of a fixed-size element array (zero copy), else `None`.
    pub fn raw_elements(&self) -> Option<&'a [u8]> {
        self.elem_type.fixed_size().and_then(|_| self.buf.get(self.start..self.end))
    }

    /// Iterate over the elements in order.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter { arr: *self, cur: Cursor::at(self.buf, self.start), left: self.count }
    }

    /// Element `i`, `None` when out of range.
    pub fn get(&self, i: u64) -> Option<Result<MetaValue<'a>>> {
        if i >= self.count {
            return None;
        }
        if let Some(sz) = self.elem_type.fixed_size() {
            let at = self.start + (i as usize) * sz; // i < count and count*sz was checked at open
            let mut c = Cursor::at(self.buf, at);
            return Some(c.read_value(self.elem_type, self.depth + 1, &|| "array element".into()));
        }
        if self.elem_type == ValueType::String {
            if let Some(cell) = self.index {
                let table = cell.get_or_init(|| self.build_string_index());
                if let Some(&at) = table.get(i as usize) {
                    let mut c = Cursor::at(self.buf, at);
                    return Some(c.read_value(ValueType::String, self.depth + 1, &|| "array element".into()));
                }
            }
        }
        // Nested arrays (rare) and strings without a table: walk.
        self.iter().nth(i as usize)
    }

    fn build_string_index(&self) -> Box<[usize]> {
        // count strings were walked at open, each taking at least 8 bytes, so this allocation is bounded
        // by the file size.
        let mut out = Vec::with_capacity(self.count as usize);
        let mut pos = self.start;
        for _ in 0..self.count {
            out.push(pos);
            let len = self.buf.get(pos..pos + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).unwrap_or(0);
            pos = pos.saturating_add(8).saturating_add(len as usize);
        }
        out.into_boxed_slice()
    }
}

pub struct ArrayIter<'a> {
    arr: ArrayView<'a>,
    cur: Cursor<'a>,
    left: u64,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Result<MetaValue<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = self.cur.read_value(self.arr.elem_type, self.arr.depth + 1, &|| "array element".into());
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// An owned value for the writer. Nested arrays are not representable: ggml rejects them, and the writer
/// only produces files ggml accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array of strings.
    StrArray(Vec<String>),
    /// An array of fixed-size elements, given as their packed little-endian bytes.
    ScalarArray {
        elem_type: ValueType,
        bytes: Vec<u8>,
    },
}

impl OwnedValue {
    pub fn value_type(&self) -> ValueType {
        use OwnedValue::*;
        match self {
            U8(_) => ValueType::U8,
            I8(_) => ValueType::I8,
            U16(_) => ValueType::U16,
            I16(_) => ValueType::I16,
            U32(_) => ValueType::U32,
            I32(_) => ValueType::I32,
            F32(_) => ValueType::F32,
            Bool(_) => ValueType::Bool,
            Str(_) => ValueType::String,
            U64(_) => ValueType::U64,
            I64(_) => ValueType::I64,
            F64(_) => ValueType::F64,
            StrArray(_) | ScalarArray { .. } => ValueType::Array,
        }
    }
}
