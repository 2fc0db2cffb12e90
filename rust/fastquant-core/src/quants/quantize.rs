//! Quantizers (placeholder, filled in below).
use super::GgmlType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantizeError {
    #[error("{ty}: {len} values is not a whole number of {block}-element blocks")]
    PartialBlock { ty: GgmlType, len: usize, block: usize },
    #[error("{ty}: output buffer is {got} bytes, expected {expected}")]
    OutputLength { ty: GgmlType, expected: usize, got: usize },
    #[error("quantization to {ty} is not implemented")]
    Unsupported { ty: GgmlType },
}

pub fn quantize_into(ty: GgmlType, _src: &[f32], _dst: &mut [u8]) -> Result<(), QuantizeError> {
    Err(QuantizeError::Unsupported { ty })
}

pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantizeError> {
    let _ = src;
    Err(QuantizeError::Unsupported { ty })
}
