"""Dequantize / quantize raw ggml blocks (the tensor data of a GGUF file).

``dequantize`` is bit-exact with ggml's reference ``dequantize_row_*`` for every block type (f32 output;
f16/bf16 outputs are that exact f32 value rounded once to nearest-even). ``quantize`` matches gguf-py for the
legacy types and F16/BF16, and ggml's reference quantizer for Q4_K/Q5_K/Q6_K. The work runs in Rust with the
GIL released. torch is only imported when a torch tensor is passed in.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

import numpy as np

from .. import _core

__all__ = ["dequantize", "quantize"]

_KINDS = ("float32", "float16", "bfloat16")
# A fresh output's pages are zeroed by the OS on first write, which leaves them in cache: regular stores are
# faster there than the streaming stores the core uses for large preallocated outputs.
_FRESH_STORES = "regular"
_NP_STORAGE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def _type_info(ggml_type: Any):
    """(id, name, block_elems, block_bytes, has_dequantizer) for a name, an id or a gguf-py enum member."""
    if isinstance(ggml_type, bool):
        raise TypeError("ggml_type must be a type name, an integer id or a GGMLQuantizationType")
    if isinstance(ggml_type, str):
        return _core.ggml_type_info(ggml_type)
    value = getattr(ggml_type, "value", ggml_type)
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        # Floats are refused rather than truncated (8.7 is not a type id).
        raise TypeError(
            f"ggml_type must be a type name, an integer id or a GGMLQuantizationType, not {type(ggml_type).__name__}"
        )
    key = int(value)
    if not 0 <= key < 2**32:
        raise ValueError(f"unknown ggml type id {key}")
    return _core.ggml_type_info(key)


def _dim(d: Any) -> int:
    """One dimension: an integer (Python or numpy), never a float or bool (``4.9`` is not read as 4)."""
    import operator

    if isinstance(d, bool):
        raise TypeError(f"shape dimensions must be integers, got {d!r}")
    try:
        return operator.index(d)
    except TypeError:
        raise TypeError(f"shape dimensions must be integers, got {type(d).__name__} {d!r}") from None


def _shape(shape: Any) -> tuple:
    if isinstance(shape, (str, bytes)):
        raise TypeError(f"shape must be an integer or a sequence of integers, not {type(shape).__name__}")
    try:
        return (_dim(shape),)
    except TypeError:
        pass
    try:
        items = list(shape)
    except TypeError:
        raise TypeError(f"shape must be an integer or a sequence of integers, not {type(shape).__name__}") from None
    return tuple(_dim(d) for d in items)


def _torch():
    return sys.modules.get("torch")


def _is_torch_tensor(x: Any) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def _dtype_kind(dtype: Any) -> str:
    if isinstance(dtype, str):
        name = dtype
    else:
        t = _torch()
        if t is not None and isinstance(dtype, t.dtype):
            name = str(dtype).replace("torch.", "")
        else:
            try:
                name = np.dtype(dtype).name
            except TypeError:
                raise ValueError(f"unsupported dtype {dtype!r}; expected one of {_KINDS}") from None
    name = {"f32": "float32", "f16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}.get(
        name, name
    )
    if name not in _KINDS:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {_KINDS}")
    return name


def _as_u8(data: Any) -> np.ndarray:
    """A flat, C-contiguous uint8 view of the input (no copy unless the input is non-contiguous)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    if _is_torch_tensor(data):
        if data.dtype != _torch().uint8:
            raise TypeError(f"data must be a uint8 tensor of raw blocks, got {data.dtype}")
        if data.device.type != "cpu":
            raise ValueError(f"data must be on the CPU, got device {data.device}")
        return data.detach().contiguous().numpy().reshape(-1)
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"data must be a uint8 array of raw blocks, got dtype {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1)
    raise TypeError(f"data must be bytes, a uint8 numpy array or a uint8 torch tensor, not {type(data).__name__}")


def _out_kind(out: Any) -> str:
    if _is_torch_tensor(out):
        return _dtype_kind(out.dtype)
    if isinstance(out, np.ndarray):
        if out.dtype == np.uint16:
            return "bfloat16"  # bf16 bits in a uint16 array (numpy has no bfloat16)
        return _dtype_kind(out.dtype)
    raise TypeError(f"out must be a numpy array or a torch tensor, not {type(out).__name__}")


def _out_view(out: Any, kind: str) -> np.ndarray:
    """A numpy view sharing `out`'s memory, in the storage dtype the core expects."""
    if _is_torch_tensor(out):
        if out.device.type != "cpu":
            raise ValueError(f"out must be on the CPU, got device {out.device}")
        if not out.is_contiguous():
            raise ValueError("out must be contiguous")
        t = out.detach()
        if kind == "float32":
            return t.numpy()
        return t.view(_torch().int16).numpy().view(np.uint16)
    if not out.flags["C_CONTIGUOUS"]:
        raise ValueError("out must be C-contiguous")
    if not out.flags["WRITEABLE"]:
        raise ValueError("out must be writeable")
    return out if kind == "float32" or out.dtype == np.uint16 else out.view(np.uint16)


def dequantize(
    data: Any,
    ggml_type: Any,
    shape: Optional[Sequence[int]] = None,
    dtype: Any = None,
    out: Any = None,
    threads: Optional[int] = None,
) -> Any:
    """Decode raw ggml blocks to floats.

    data: bytes / uint8 numpy array / uint8 CPU torch tensor holding whole blocks.
    ggml_type: name (``"Q4_K"``), integer id, or gguf-py ``GGMLQuantizationType``.
    shape: result shape (default: flat). Its element count must equal what the data decodes to.
    dtype: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"`` (also numpy/torch dtypes). numpy has no
      bfloat16, so a numpy bf16 result is a uint16 array of bf16 bit patterns.
    out: write into this contiguous numpy array / torch tensor (right dtype and size) and return it.
    threads: worker threads (default: one per core); 1 runs on the calling thread.

    Returns a numpy array, or a torch tensor when ``data`` is a torch tensor.
    """
    tid, name, block_elems, block_bytes, has_deq = _type_info(ggml_type)
    if not has_deq:
        raise ValueError(
            f"{name} has no dequantizer (ggml defines none for it; it is an intermediate format for dot products)"
        )
    src = _as_u8(data)
    n_bytes = src.size
    if n_bytes % block_bytes:
        raise ValueError(
            f"{name}: data is {n_bytes} bytes, expected a whole number of {block_bytes}-byte blocks "
            f"({n_bytes // block_bytes} or {n_bytes // block_bytes + 1} blocks = "
            f"{n_bytes // block_bytes * block_bytes} or {(n_bytes // block_bytes + 1) * block_bytes} bytes)"
        )
    n_elems = n_bytes // block_bytes * block_elems
    if shape is not None:
        shape = _shape(shape)
        count = 1
        for s in shape:
            if s < 0:
                raise ValueError(f"shape {shape} has a negative dimension")
            count *= s
        if count != n_elems:
            raise ValueError(
                f"shape {shape} has {count} elements, expected {n_elems} "
                f"({n_bytes // block_bytes} {name} blocks of {block_elems})"
            )
    if threads is not None and int(threads) < 1:
        raise ValueError("threads must be at least 1")

    if out is not None:
        kind = _out_kind(out)
        if dtype is not None and _dtype_kind(dtype) != kind:
            raise ValueError(f"out has dtype {kind} but dtype={dtype!r} was requested")
        size = out.numel() if _is_torch_tensor(out) else out.size
        if size != n_elems:
            raise ValueError(f"out has {size} elements, expected {n_elems} ({n_bytes // block_bytes} {name} blocks)")
        if shape is not None and tuple(out.shape) != shape:
            raise ValueError(f"out has shape {tuple(out.shape)}, expected {shape}")
        _core.dequantize_into(src, tid, _out_view(out, kind), kind, threads)
        return out

    kind = _dtype_kind(dtype) if dtype is not None else "float32"
    result_shape = shape if shape is not None else (n_elems,)
    if _is_torch_tensor(data):
        torch = _torch()
        res = torch.empty(result_shape, dtype=getattr(torch, kind))
        _core.dequantize_into(src, tid, _out_view(res, kind), kind, threads, stores=_FRESH_STORES)
        return res
    res = np.empty(result_shape, dtype=_NP_STORAGE[kind])
    _core.dequantize_into(
        src, tid, res if kind == "float32" else res.view(np.uint16), kind, threads, stores=_FRESH_STORES
    )
    return res


def quantize(array: Any, ggml_type: Any, threads: Optional[int] = None) -> np.ndarray:
    """Quantize floats to raw ggml blocks (uint8), row by row along the last axis.

    Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (bit-exact with gguf-py's ``gguf.quants.quantize``)
    and Q4_K, Q5_K, Q6_K (ggml's reference quantizer). The last dimension must be a multiple of the block size.
    Returns shape ``(*array.shape[:-1], bytes_per_row)``. ``threads``: worker threads (None: one per core);
    the bytes do not depend on it. One known difference from gguf-py: a Q4_1/Q5_1 block whose minimum (or
    maximum) is a zero present with both signs stores the sign of that zero as numpy's max/min reduction
    happens to leave it, which depends on the CPU numpy runs on; fastquant's choice is fixed.
    """
    tid, name, block_elems, block_bytes, _ = _type_info(ggml_type)
    if array is None:
        raise TypeError("array must be a float array or tensor, not None")
    if _is_torch_tensor(array):
        if array.is_complex():
            raise TypeError(f"cannot quantize a complex tensor ({array.dtype}): its imaginary part would be lost")
        array = array.detach().cpu().float().numpy()
    elif np.iscomplexobj(array):
        raise TypeError("cannot quantize complex values: their imaginary part would be lost")
    # C order and aligned (copies only when the input is not already both).
    a = np.require(np.asarray(array, dtype=np.float32), requirements=["C", "A"])
    if a.ndim == 0:
        a = a.reshape(1)
    if a.shape[-1] % block_elems:
        raise ValueError(f"{name}: rows of {a.shape[-1]} values are not a whole number of {block_elems}-element blocks")
    if threads is not None and int(threads) < 1:
        raise ValueError("threads must be at least 1")
    raw = _core.quantize_blocks(a, tid, None if threads is None else int(threads))
    return raw.reshape((*a.shape[:-1], a.shape[-1] // block_elems * block_bytes))
