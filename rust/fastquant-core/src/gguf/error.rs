//! The one error type of the GGUF container. A malformed file is always reported with the byte offset
//! where the problem was found and the field being read, e.g.
//! `offset 24: metadata key #3 'general.name': string length 2^40 exceeds the 12 bytes left in the file`.

use std::fmt;

/// What went wrong, which decides the Python exception the binding raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file breaks the format or one of our safety limits (Python: `GGUFError`, a `ValueError`).
    Malformed,
    /// The file is well formed but asks for something this reader refuses to do, e.g. reading the data
    /// of a tensor whose type id ggml no longer defines (Python: `GGUFError`).
    Unsupported,
    /// Opening, mapping or writing the file failed (Python: `OSError`).
    Io,
    /// A key or tensor name that is not in the file (Python: `KeyError`).
    NotFound,
    /// The writer was handed something it cannot write (Python: `ValueError`).
    InvalidInput,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufError {
    pub kind: ErrorKind,
    /// Byte offset in the file where the offending field starts, when there is one.
    pub offset: Option<u64>,
    /// The field, e.g. `metadata key #3 'general.name'` or `tensor #7 'blk.0.attn_q.weight': dims`.
    pub field: String,
    pub message: String,
    /// For `Io` errors: the OS error kind (so the binding can raise `FileNotFoundError`).
    pub io_kind: Option<std::io::ErrorKind>,
    /// For `Io` errors: the OS error number, when the OS gave one (Python: `OSError.errno`).
    pub errno: Option<i32>,
    /// For `Io` errors: the path involved (Python: `OSError.filename`); `field` holds it too, for messages.
    pub path: Option<String>,
    /// Internal to the reader: a parse of a file prefix needs the file read up to this offset. Never set on
    /// an error that leaves the crate.
    pub(crate) need_more: Option<u64>,
}

impl GgufError {
    pub fn malformed(offset: u64, field: impl Into<String>, message: impl Into<String>) -> Self {
        GgufError {
            kind: ErrorKind::Malformed,
            offset: Some(offset),
            field: field.into(),
            message: message.into(),
            io_kind: None,
            errno: None,
            path: None,
            need_more: None,
        }
    }

    pub fn unsupported(offset: Option<u64>, field: impl Into<String>, message: impl Into<String>) -> Self {
        GgufError {
            kind: ErrorKind::Unsupported,
            offset,
            field: field.into(),
            message: message.into(),
            io_kind: None,
            errno: None,
            path: None,
            need_more: None,
        }
    }

    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        GgufError {
            kind: ErrorKind::NotFound,
            offset: None,
            field: field.into(),
            message: message.into(),
            io_kind: None,
            errno: None,
            path: None,
            need_more: None,
        }
    }

    pub fn invalid_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        GgufError {
            kind: ErrorKind::InvalidInput,
            offset: None,
            field: field.into(),
            message: message.into(),
            io_kind: None,
            errno: None,
            path: None,
            need_more: None,
        }
    }

    /// An I/O failure on `path` (which becomes the field, so every message names the file).
    pub fn io(path: impl Into<String>, e: &std::io::Error) -> Self {
        let path = path.into();
        GgufError {
            kind: ErrorKind::Io,
            offset: None,
            field: path.clone(),
            message: e.to_string(),
            io_kind: Some(e.kind()),
            errno: e.raw_os_error(),
            path: Some(path),
            need_more: None,
        }
    }

    /// An I/O failure on `path` with an OS error number and our own message (e.g. "is a directory").
    pub fn os(path: impl Into<String>, errno: i32, message: impl Into<String>) -> Self {
        let e = std::io::Error::from_raw_os_error(errno);
        let mut err = GgufError::io(path, &e);
        err.message = message.into();
        err
    }

    /// The reader needs the file's bytes up to `upto` (a parse of a prefix ran past its end).
    pub(crate) fn need_more(upto: u64) -> Self {
        let mut e = GgufError::malformed(upto, "", "internal: more of the file is needed");
        e.need_more = Some(upto);
        e
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(o) = self.offset {
            write!(f, "offset {o}: ")?;
        }
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for GgufError {}

pub type Result<T> = std::result::Result<T, GgufError>;

/// A count for messages: large powers of two as `2^k` (how attack files are usually built), else decimal.
pub(crate) fn count(n: u64) -> String {
    if n >= (1 << 20) && n.is_power_of_two() {
        format!("2^{}", n.trailing_zeros())
    } else {
        n.to_string()
    }
}

/// A key or name as quoted in messages: whole up to 80 bytes, else its first 64 characters and a marker
/// saying how long it is (a file can hold a 10 MB key; an error message should not).
pub fn short_name(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= 80 {
        return std::borrow::Cow::Borrowed(s);
    }
    let cut: String = s.chars().take(64).collect();
    std::borrow::Cow::Owned(format!("{cut}…({} bytes)", s.len()))
}
