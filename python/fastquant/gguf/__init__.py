"""GGUF support for fastquant."""
# --- block dequantization / quantization (ggml types) ---
from ._dequant import dequantize, quantize

__all__ = ["dequantize", "quantize"]
