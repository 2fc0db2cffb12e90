"""Triton kernels for packed GGUF weights: exact dequantization and fused ``x · Wᵀ`` on the packed blocks.

>>> from fastquant.gguf import triton as gt
>>> w = gt.dequantize(blocks_cuda, "Q4_K", (4096, 4096), torch.bfloat16)   # bit-exact with the Rust kernels
>>> y = gt.linear(x_cuda, blocks_cuda, "Q4_K", (4096, 4096), bias=None)     # fused, f32 accumulation

On a machine with a CUDA device the kernels are compiled and take CUDA tensors. Without one (or with
``TRITON_INTERPRET=1`` set when this package is first imported) they run under Triton's interpreter on CPU
tensors: slow, but the same kernel code, which is how the tests check them everywhere. See docs/gguf.md
("Triton kernels") for the types, the exactness contract, the accumulation bound and the autotuning cache.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ._dequant import TYPES
from ._jit import INTERPRET

__all__ = ["INTERPRET", "SMALL_BATCH_ROWS", "TYPES", "dequantize", "linear", "supports"]

#: ``linear`` with at most this many activation rows uses the register (GEMV-style) kernel; more rows use
#: the tiled tensor-core kernel.
SMALL_BATCH_ROWS = 16

_OUT_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


_BY_ID = {v[0]: k for k, v in TYPES.items()}


def _name(ggml_type) -> str:
    # covered types are resolved in plain Python (traceable by torch.compile); others by the Rust table,
    # which also raises the errors for unknown names and ids
    if isinstance(ggml_type, str) and ggml_type.upper() in TYPES:
        return ggml_type.upper()
    value = getattr(ggml_type, "value", ggml_type)
    if isinstance(value, int) and not isinstance(value, bool) and value in _BY_ID:
        return _BY_ID[value]
    from .._dequant import _type_info

    return _type_info(ggml_type)[1]


def supports(ggml_type) -> bool:
    """Whether the Triton kernels decode ``ggml_type`` (a name, an id or a gguf-py enum member)."""
    try:
        return _name(ggml_type) in TYPES
    except (TypeError, ValueError):
        return False


def _check_device(t: torch.Tensor, what: str) -> None:
    if INTERPRET:
        if t.device.type != "cpu":
            raise ValueError(
                f"{what} is on {t.device}, but the Triton kernels were built for the interpreter (CPU tensors): "
                "no CUDA device was visible, or TRITON_INTERPRET=1 was set, when fastquant.gguf.triton was imported"
            )
    elif t.device.type != "cuda":
        raise ValueError(f"{what} must be a CUDA tensor (got {t.device}); the Triton kernels are compiled for CUDA")


def _geometry(blocks: torch.Tensor, ggml_type, shape: Sequence[int]) -> Tuple[str, int, int, int, int]:
    """(name, rows, cols, elems per block, bytes per block) after checking the packed data."""
    name = _name(ggml_type)
    if name not in TYPES:
        raise ValueError(f"no Triton decoder for {name}; supported: {', '.join(TYPES)}")
    if not isinstance(blocks, torch.Tensor) or blocks.dtype != torch.uint8:
        raise TypeError("blocks must be a uint8 torch tensor of raw ggml blocks")
    _check_device(blocks, "blocks")
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if len(shape) == 0 or any(s < 0 for s in shape):
        raise ValueError(f"shape {shape} must have at least one dimension and no negative ones")
    cols = shape[-1]
    rows = 1
    for s in shape[:-1]:
        rows *= s
    _, be, bb, _ = TYPES[name]
    if cols % be:
        raise ValueError(f"{name}: rows of {cols} values are not a whole number of {be}-element blocks")
    want = rows * (cols // be) * bb
    if blocks.numel() != want:
        raise ValueError(f"{name}: blocks hold {blocks.numel()} bytes, expected {want} for shape {shape}")
    return name, rows, cols, be, bb


def dequantize(blocks: torch.Tensor, ggml_type, shape: Sequence[int], dtype: torch.dtype = torch.float32):
    """Decode ``blocks`` (uint8, whole ggml blocks) to a ``shape`` tensor of ``dtype`` (f32/f16/bf16) on the
    blocks' device: bit-exact with ``fastquant.gguf.dequantize`` (f16/bf16: the exact f32 value rounded once
    to nearest-even; NaN stays NaN)."""
    from . import _ops  # noqa: F401  (registers the custom ops)

    name, rows, cols, be, bb = _geometry(blocks, ggml_type, shape)
    if dtype not in _OUT_CODES:
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    tid = TYPES[name][0]
    out = torch.ops.fastquant.gguf_triton_dequantize(blocks.reshape(-1), tid, rows, cols, dtype)
    return out.reshape(tuple(int(s) for s in shape) if not isinstance(shape, int) else (int(shape),))


def linear(x: torch.Tensor, blocks: torch.Tensor, ggml_type, shape: Sequence[int], bias: Optional[torch.Tensor] = None):
    """``x · Wᵀ + bias`` in ``x.dtype`` for the packed weight ``W`` of logical shape ``(out, in)``.

    At most :data:`SMALL_BATCH_ROWS` rows: the packed blocks are read once and decoded in registers (the
    exact f32 weight), products and sums in f32. More rows: tiles of ``W`` decoded and rounded to the
    activation dtype (the exact ``W.to(x.dtype)``; f32 activations keep f32 and use full-precision dots) feed
    ``tl.dot`` with an f32 accumulator. Either way the f32 sum is within ``k·2⁻²⁴·Σ|x·w|`` of the exact one;
    the bias is added in f32 and the result rounded once to ``x.dtype``.
    """
    from . import _ops  # noqa: F401

    name, rows, cols, be, bb = _geometry(blocks, ggml_type, shape)
    if len(tuple(shape)) != 2:
        raise ValueError(f"shape must be (out_features, in_features), got {tuple(shape)}")
    if not isinstance(x, torch.Tensor) or x.dtype not in _OUT_CODES:
        raise TypeError("x must be a float32, float16 or bfloat16 tensor")
    _check_device(x, "x")
    if x.shape[-1] != cols:
        raise ValueError(f"x has {x.shape[-1]} features, the weight expects {cols}")
    if bias is not None and (bias.shape != (rows,)):
        raise ValueError(f"bias must have shape ({rows},), got {tuple(bias.shape)}")
    return torch.ops.fastquant.gguf_triton_linear(x, blocks, TYPES[name][0], rows, cols, bias)
