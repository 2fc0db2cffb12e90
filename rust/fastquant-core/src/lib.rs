//! fastquant-core: the Python-free heart of fastquant.
//!
//! * [`config`] — quantization-config schema, parsing and validation (diffusers-compatible dicts).
//! * [`registry`] — the method registry and dispatch rules (the bitsandbytes flag rule, method lookup).
//! * [`gguf`] — the GGUF container: a hardened zero-copy reader and a writer.
//! * [`quants`] — ggml block formats: dequantization (scalar reference + SIMD) and quantization.
//!
//! Nothing here depends on PyO3; the `fastquant-py` crate is a thin binding on top.

pub mod config;
pub mod ggml_compute;
pub mod gguf;
pub mod json;
pub mod quants;
pub mod registry;
pub mod value;
