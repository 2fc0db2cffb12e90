"""ggml type facts needed on the Python side (the table itself lives in Rust)."""

from .. import _core

#: name -> (id, elements per block, bytes per block)
GGML_TYPES = _core._ggml_types()

#: ggml types read directly as a numpy dtype (no dequantization), by numpy dtype string.
PLAIN_NUMPY = {
    "F32": "<f4",
    "F16": "<f2",
    "F64": "<f8",
    "I8": "i1",
    "I16": "<i2",
    "I32": "<i4",
    "I64": "<i8",
    # numpy has no bfloat16: read the bits, reinterpret in torch.
    "BF16": "<i2",
}
