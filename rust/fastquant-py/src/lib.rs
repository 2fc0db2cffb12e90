//! Thin PyO3 bindings: conversion between Python objects and `fastquant_core` types, and error mapping.
//! No quantization logic lives here.

use pyo3::prelude::*;

mod config;
mod dispatch;
mod gguf;
mod quants;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    config::register(m)?;
    dispatch::register(m)?;
    gguf::register(m)?;
    quants::register(m)?;
    Ok(())
}
