"""``torch.library`` custom ops around the Triton launches, with fake implementations, so that
``torch.compile(fullgraph=True)`` traces layers using them as single opaque nodes."""

from __future__ import annotations

from typing import Optional

import torch
import triton

from ._dequant import TYPES, dequant_kernel
from ._jit import launch_options

BY_ID = {v[0]: (k, *v[1:]) for k, v in TYPES.items()}
_OUT_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def tables_for(tid: int, device: torch.device):
    from ._tables import table

    tabs = BY_ID[tid][3]
    if tabs is None:
        t = table("fp4", device)  # a valid pointer; these types read no table
        return t, t
    return table(tabs[0], device), table(tabs[1], device)


def dequantize_impl(packed: torch.Tensor, tid: int, n: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    name, be, bb, _ = BY_ID[tid]
    packed = packed.contiguous()
    out = torch.empty((n, k), dtype=dtype, device=packed.device)
    n_blocks = n * k // be
    if n_blocks == 0:
        return out
    per_prog = max(1, 1024 // be)
    tab, tab2 = tables_for(tid, packed.device)
    dst = out.view(torch.int16) if dtype == torch.bfloat16 else out
    grid = (triton.cdiv(n_blocks, per_prog),)
    dequant_kernel[grid](packed, dst, n_blocks, tab, tab2, tid, be, per_prog, _OUT_CODES[dtype], **launch_options())
    return out


@torch.library.custom_op("fastquant::gguf_triton_dequantize", mutates_args=())
def _op_dequantize(packed: torch.Tensor, ggml_type: int, n: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    return dequantize_impl(packed, ggml_type, n, k, dtype)


@_op_dequantize.register_fake
def _(packed, ggml_type, n, k, dtype):
    return packed.new_empty((n, k), dtype=dtype)


@torch.library.custom_op("fastquant::gguf_triton_linear", mutates_args=())
def _op_linear(
    x: torch.Tensor, packed: torch.Tensor, ggml_type: int, n: int, k: int, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    from ._linear import linear_impl

    return linear_impl(x, packed, ggml_type, n, k, bias)


@_op_linear.register_fake
def _(x, packed, ggml_type, n, k, bias):
    return x.new_empty((*x.shape[:-1], n))
