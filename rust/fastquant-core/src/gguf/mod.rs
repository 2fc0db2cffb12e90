//! GGUF container: a hardened zero-copy reader and a writer (see `docs/gguf.md`).
//!
//! * [`reader`] — [`GgufFile`]: memory-maps and validates a file; metadata and tensor data are borrowed
//!   from the mapping.
//! * [`metadata`] — the 13 value types, lazy views of values ([`MetaValue`], [`ArrayView`]) and owned
//!   values for the writer ([`OwnedValue`]).
//! * [`writer`] — writes version-3 files that ggml and gguf-py accept.
//! * [`error`] — [`GgufError`], which names the byte offset and the field of every problem.

pub mod error;
mod head;
pub mod metadata;
pub mod reader;
pub mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_files;

pub use error::{short_name, ErrorKind, GgufError, Result};
pub use metadata::{ArrayView, MetaValue, OwnedValue, StrRef, ValueType, MAX_ARRAY_DEPTH};
pub use reader::{
    parse, GgufFile, KvEntry, TensorInfo, DEFAULT_ALIGNMENT, EIO, MAGIC, MAX_ALIGNMENT, MAX_DIMS, MAX_TENSOR_NAME,
};
pub use writer::{to_bytes, write_file, write_to, TensorSpec};
