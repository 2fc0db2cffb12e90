//! ggml block formats: the type table, dequantization (scalar reference + SIMD) and quantization.

pub mod types;

pub use types::{GgmlType, ALL_TYPES};
