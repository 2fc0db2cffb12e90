//! Quantization-config schema, parsing and validation.
pub mod error;
