"""GGUF weights inside torch models: packed :class:`GGUFLinear` / :class:`GGUFEmbedding` layers. The model-level
helpers (:func:`load_into`, :func:`quantize_model`, :func:`save`, :func:`dequantize_model`) are in ``_model.py``.

The packed ggml blocks live in a plain ``uint8`` buffer named ``weight`` (shape ``(rows, bytes_per_row)``,
no tensor subclass); the ggml type and the logical shape are module attributes, saved as extra state.

Forward paths (inference only; no gradients flow to the packed weight):

* CPU, at most :data:`FUSED_MAX_ROWS` activation rows: the Rust fused kernel (``linear_fused``) decodes
  chunks of 4 weight rows into a per-thread L1 buffer and multiplies them there with every activation row
  (in the activation dtype, widened to f32 inside the kernel); the float weight is never built.
  Accumulation is in f32 in a different order than BLAS, so the result is within
  ``k · 2⁻²⁴ · Σ_l |x_l·w_l|`` of the exact sum (the same bound a BLAS f32 dot product has), then rounded
  once to the activation dtype.
* CPU, more rows: the weight is dequantized by the Rust kernels into the activation dtype (bit-exact: the
  exact f32 value, rounded once to bf16/f16) a tile of rows at a time (:data:`TILE_BYTES`), and ``F.linear``
  multiplies each tile while it is in cache, so every block of output columns is bitwise
  ``F.linear(x, W_exact[rows].to(x.dtype), bias[rows])`` (a layer within one tile: bitwise the whole
  ``F.linear``). The tile buffer is reused across calls (:data:`REUSE_WORKSPACE`, :func:`release_workspace`);
  no float copy of a whole weight is kept.
* CUDA, types of ``fastquant.gguf.triton.TYPES`` (when triton is importable, :data:`USE_TRITON`): the fused
  Triton kernels on the packed blocks (within the same bound as the CPU fused kernel; see docs/gguf.md);
  ``fused=False`` and ``dequantize_weight`` dequantize exactly with Triton, then ``F.linear``.
* CUDA, other types: the weight is dequantized on the GPU with torch integer/float ops in ggml's operation order in f32
  (bit-exact with the CPU kernels), cast once to the activation dtype, then ``F.linear``. Types with a GPU
  decoder: :data:`GPU_TYPES`. Other types are dequantized by the Rust kernels on the CPU and copied to the
  GPU (a warning says so once per type).

All three are ``torch.library`` custom ops with fake implementations, so ``torch.compile(fullgraph=True)``
traces them without graph breaks. Plain eager CPU calls (no gradient asked for, not compiling) call the same
implementations directly, which skips the custom-op dispatch (tens of microseconds per call).
"""

from __future__ import annotations

import threading
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _core
from ._dequant import _type_info, dequantize as _dequantize_blocks
from . import _lora  # LoRA/peft: the autograd path in GGUFLinear.forward; registers with peft lazily

__all__ = [
    "FUSED_MAX_ROWS",
    "GPU_TYPES",
    "GGUFEmbedding",
    "GGUFLinear",
    "release_workspace",
]

#: CPU forwards with at most this many activation rows use the fused (tile-wise) kernel.
FUSED_MAX_ROWS = 16

#: ggml types dequantized on CUDA devices with torch ops (others: Rust on the CPU, then copied).
GPU_TYPES = frozenset(
    {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"}
)

# ggml types stored as plain floats (loaded into ordinary parameters by load_into)
_PLAIN_FLOAT = frozenset({"F32", "F16", "BF16", "F64"})
_PLAIN = _PLAIN_FLOAT | {"I8", "I16", "I32", "I64"}


def _info(ggml_type) -> Tuple[int, str, int, int]:
    """(id, name, block_elems, block_bytes) of a dequantizable type."""
    tid, name, be, bb, has_deq = _type_info(ggml_type)
    if not has_deq:
        raise ValueError(f"{name} has no dequantizer; it cannot back a torch layer")
    return tid, name, be, bb


def _threads() -> int:
    return max(1, torch.get_num_threads())


# ---------------------------------------------------------------------------------------------------------
# GPU (or any device) dequantization with torch ops, in ggml's f32 operation order
# ---------------------------------------------------------------------------------------------------------

# IQ4_NL / IQ4_XS codebook, from the Rust core's table (one definition).
_KVALUES_IQ4NL = tuple(_core.KVALUES_IQ4NL)


def _f16(b: torch.Tensor, off: int) -> torch.Tensor:
    """Little-endian f16 at byte ``off`` of every block, as f32 of shape (nb, 1)."""
    return b[:, off : off + 2].contiguous().view(torch.float16).to(torch.float32)


def _u32(b: torch.Tensor, off: int) -> torch.Tensor:
    x = b[:, off : off + 4].to(torch.int64)
    return x[:, 0:1] | (x[:, 1:2] << 8) | (x[:, 2:3] << 16) | (x[:, 3:4] << 24)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(nb, 16) bytes -> (nb, 32) int32: the 16 low nibbles then the 16 high nibbles."""
    q = qs.to(torch.int32)
    return torch.cat([q & 0xF, q >> 4], dim=1)


def _scale_min_k4(s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 8 (scale, min) 6-bit pairs of Q4_K/Q5_K from the 12 packed bytes, each (nb, 8) int32."""
    s = s.to(torch.int32)
    sc = torch.cat([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], dim=1)
    mn = torch.cat([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], dim=1)
    return sc, mn


def _torch_dequant_blocks(b: torch.Tensor, name: str) -> torch.Tensor:
    """Decode blocks ``b`` (uint8, shape (nb, block_bytes), any device) to f32 of shape (nb, block_elems)
    with the exact arithmetic of ggml's reference (each product/sum rounded to f32 in the same order)."""
    nb = b.shape[0]
    f32 = torch.float32
    if name == "F32":
        return b.contiguous().view(f32)
    if name == "F16":
        return b.contiguous().view(torch.float16).to(f32)
    if name == "BF16":
        return b.contiguous().view(torch.bfloat16).to(f32)
    if name == "Q8_0":
        return b[:, 2:34].view(torch.int8).to(f32) * _f16(b, 0)
    if name == "Q4_0":
        return (_nibbles(b[:, 2:18]) - 8).to(f32) * _f16(b, 0)
    if name == "Q4_1":
        return _nibbles(b[:, 4:20]).to(f32) * _f16(b, 0) + _f16(b, 2)
    if name in ("Q5_0", "Q5_1"):
        off = 2 if name == "Q5_0" else 4
        qh = _u32(b, off)
        bits = (qh >> torch.arange(32, device=b.device, dtype=torch.int64)) & 1
        x = _nibbles(b[:, off + 4 : off + 20]) | (bits.to(torch.int32) << 4)
        if name == "Q5_0":
            return (x - 16).to(f32) * _f16(b, 0)
        return x.to(f32) * _f16(b, 0) + _f16(b, 2)
    if name in ("IQ4_NL", "IQ4_XS"):
        kv = torch.tensor(_KVALUES_IQ4NL, dtype=f32, device=b.device)
        if name == "IQ4_NL":
            return _f16(b, 0) * kv[_nibbles(b[:, 2:18]).long()]
        d = _f16(b, 0)
        sh = (b[:, 2:3].to(torch.int32) | (b[:, 3:4].to(torch.int32) << 8)) >> (
            2 * torch.arange(8, device=b.device, dtype=torch.int32)
        )
        sl = b[:, 4:8].to(torch.int32)
        ls = torch.stack([sl & 0xF, sl >> 4], dim=2).reshape(nb, 8) | ((sh & 3) << 4)
        dl = d * (ls - 32).to(f32)  # (nb, 8)
        q = b[:, 8:136].reshape(nb * 8, 16)
        vals = kv[_nibbles(q).long()].reshape(nb, 8, 32)
        return (dl.unsqueeze(2) * vals).reshape(nb, 256)
    if name in ("Q4_K", "Q5_K"):
        d, dmin = _f16(b, 0), _f16(b, 2)
        sc, mn = _scale_min_k4(b[:, 4:16])
        d1 = d * sc.to(f32)  # (nb, 8)
        m1 = dmin * mn.to(f32)
        qoff = 16 if name == "Q4_K" else 48
        qs = b[:, qoff : qoff + 128].to(torch.int32).reshape(nb, 4, 1, 32)
        shift = torch.tensor([0, 4], dtype=torch.int32, device=b.device).reshape(1, 1, 2, 1)
        q = ((qs >> shift) & 0xF).reshape(nb, 8, 32)
        if name == "Q5_K":
            qh = b[:, 16:48].to(torch.int32).reshape(nb, 1, 32)
            hb = (qh >> torch.arange(8, dtype=torch.int32, device=b.device).reshape(1, 8, 1)) & 1
            q = q + 16 * hb
        return (d1.unsqueeze(2) * q.to(f32) - m1.unsqueeze(2)).reshape(nb, 256)
    if name == "Q6_K":
        ql = b[:, 0:128].to(torch.int32).reshape(nb, 2, 2, 32)
        lo = torch.cat([ql & 0xF, ql >> 4], dim=2)  # (nb, 2, 4, 32): k = 0..3
        qh = b[:, 128:192].to(torch.int32).reshape(nb, 2, 1, 32)
        hi = (qh >> (2 * torch.arange(4, dtype=torch.int32, device=b.device)).reshape(1, 1, 4, 1)) & 3
        q = ((lo | (hi << 4)) - 32).reshape(nb, 2, 4, 2, 16)
        s = b[:, 192:208].view(torch.int8).to(f32).reshape(nb, 2, 4, 2, 1)
        d = _f16(b, 208).reshape(nb, 1, 1, 1, 1)
        return ((d * s) * q.to(f32)).reshape(nb, 256)
    raise ValueError(f"no torch decoder for {name}")


_warned_fallback: set = set()

#: On CUDA, use the Triton kernels of :mod:`fastquant.gguf.triton` (exact dequantization; fused linear) for
#: the types they cover, when triton is importable. False: always the torch-op decoders above.
USE_TRITON = True
_triton_mod = None


def _triton_types() -> frozenset:
    """ggml type names the Triton path covers on CUDA (empty when triton cannot be imported)."""
    global _triton_mod
    if _triton_mod is None:
        try:
            from . import triton as tt
            from .triton import _ops  # noqa: F401  (registers fastquant::gguf_triton_*)

            _triton_mod = frozenset(tt.TYPES) if not tt.INTERPRET else frozenset()
        except ImportError:
            _triton_mod = frozenset()
    return _triton_mod if USE_TRITON else frozenset()


@torch.compiler.assume_constant_result
def _use_triton(name: str) -> bool:
    """Whether CUDA forwards of ``name`` take the Triton path. A constant for torch.compile: it is evaluated
    while tracing (which may import triton the first time) instead of being traced."""
    return name in _triton_types()


def _dequant_impl(packed: torch.Tensor, tid: int, n: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Dequantize ``n`` packed rows of ``k`` values to ``dtype`` on ``packed``'s device."""
    _, name, be, bb = _info(tid)
    if packed.device.type == "cpu":
        out = torch.empty((n, k), dtype=dtype)
        _dequantize_blocks(packed, tid, out=out, threads=_threads())
        return out
    if packed.device.type == "cuda" and _use_triton(name):
        return torch.ops.fastquant.gguf_triton_dequantize(packed, tid, n, k, dtype)
    if name in GPU_TYPES:
        blocks = packed.reshape(-1, bb)
        w = _torch_dequant_blocks(blocks, name).reshape(n, k)
        return w if dtype == torch.float32 else w.to(dtype)
    if name not in _warned_fallback:
        _warned_fallback.add(name)
        warnings.warn(
            f"fastquant.gguf: no GPU decoder for {name}; dequantizing on the CPU (Rust) and copying to "
            f"{packed.device.type}",
            RuntimeWarning,
            stacklevel=3,
        )
    out = torch.empty((n, k), dtype=dtype)
    _dequantize_blocks(packed.cpu(), tid, out=out, threads=_threads())
    return out.to(packed.device)


# ---------------------------------------------------------------------------------------------------------
# custom ops (opaque to torch.compile; fake implementations give shapes)
# ---------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastquant::gguf_dequantize", mutates_args=())
def _op_dequantize(packed: torch.Tensor, ggml_type: int, n: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    return _dequant_impl(packed, ggml_type, n, k, dtype)


@_op_dequantize.register_fake
def _(packed, ggml_type, n, k, dtype):
    return packed.new_empty((n, k), dtype=dtype)


_KIND = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _as_kind(t: torch.Tensor) -> np.ndarray:
    """A contiguous CPU tensor as the numpy array the Rust kernels take (halves as their uint16 bits)."""
    return t.numpy() if t.dtype == torch.float32 else t.view(torch.int16).numpy().view(np.uint16)


def _linear_fused_impl(
    x: torch.Tensor, packed: torch.Tensor, ggml_type: int, n: int, k: int, path: str = "auto", w_np=None
) -> torch.Tensor:
    """``x · Wᵀ`` in ``x.dtype`` by the Rust fused kernel: activations in their own dtype, widened to f32 inside
    the kernel, the f32 result rounded once; only the output is allocated. ``w_np``: ``packed`` already viewed
    as a flat uint8 numpy array (layers cache it)."""
    if not (x.is_cpu and packed.is_cpu):
        raise ValueError("the fused GGUF linear kernel runs on the CPU only")
    if x.requires_grad:
        x = x.detach()
    if not x.is_contiguous():
        x = x.contiguous()
    if w_np is None:
        w = packed.detach()
        w_np = (w if w.is_contiguous() else w.contiguous()).numpy().reshape(-1)
    out = x.new_empty((*x.shape[:-1], n))
    _core.linear_fused(_as_kind(x), w_np, ggml_type, n, k, _as_kind(out), _threads(), path, _KIND[x.dtype])
    return out


@torch.library.custom_op("fastquant::gguf_linear_fused", mutates_args=())
def _op_linear_fused(x: torch.Tensor, packed: torch.Tensor, ggml_type: int, n: int, k: int) -> torch.Tensor:
    return _linear_fused_impl(x, packed, ggml_type, n, k)


@_op_linear_fused.register_fake
def _(x, packed, ggml_type, n, k):
    return x.new_empty((*x.shape[:-1], n))


def _eager(x: torch.Tensor) -> bool:
    """Whether a forward may call the kernels directly instead of through the custom ops (which cost tens of
    microseconds of dispatch per call): plain tensors, no graph capture, no gradient asked for."""
    return (
        type(x) is torch.Tensor
        and not (x.requires_grad and torch.is_grad_enabled())
        and not torch.compiler.is_compiling()
    )


_ws = threading.local()


def release_workspace() -> None:
    """Free this thread's reusable tile buffers (see :data:`REUSE_WORKSPACE`)."""
    _ws.bufs = {}


#: Bytes of dequantized weight per tile on the CPU path for more than :data:`FUSED_MAX_ROWS` rows: the weight
#: is dequantized a tile of rows at a time (at least 16 rows), each tile multiplied by ``F.linear`` while it is
#: still in cache. This bounds the float weight memory of a forward, whatever the layer's size. Few large tiles
#: beat many small ones: every tile is one hand-over between the Rust thread pool and torch's (measured on the
#: dev VM under load, 4096x4096 Q4_K at 48 rows: 2 MiB tiles up to 10x slower than 32 MiB ones).
TILE_BYTES = 16 << 20

#: The tile buffer is reused across calls, one per thread and dtype (at most :data:`TILE_BYTES`, or 16 rows
#: when a row is longer than that): a fresh allocation would cost page faults on every call.
#: :func:`release_workspace` frees it.
REUSE_WORKSPACE = True


def _tile_rows(n: int, k: int, itemsize: int) -> int:
    return min(n, max(16, TILE_BYTES // max(1, k * itemsize) // 16 * 16))


def _workspace(numel: int, dtype: torch.dtype) -> torch.Tensor:
    if not REUSE_WORKSPACE:
        return torch.empty(numel, dtype=dtype)
    bufs = getattr(_ws, "bufs", None)
    if bufs is None:
        bufs = _ws.bufs = {}
    b = bufs.get(dtype)
    if b is None or b.numel() < numel:
        b = bufs[dtype] = torch.empty(numel, dtype=dtype)
    return b[:numel]


def _linear_tiled_impl(
    x: torch.Tensor, packed: torch.Tensor, ggml_type: int, n: int, k: int, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """CPU ``F.linear`` on the exactly dequantized weight, a tile of rows at a time: each output column block
    is bitwise ``F.linear(x, W_exact[j0:j1].to(x.dtype), b[j0:j1])``; a layer that fits one tile is bitwise
    ``F.linear(x, W_exact.to(x.dtype), b)``."""
    dtype = x.dtype
    b = None if bias is None else bias.to(dtype)
    rows = _tile_rows(n, k, x.element_size())
    w = packed.detach()
    w_np = (w if w.is_contiguous() else w.contiguous()).numpy().reshape(n, -1)
    buf = _workspace(rows * k, dtype)
    kind, threads = _KIND[dtype], _threads()
    if rows >= n:
        t = buf.view(n, k)
        _core.dequantize_into(w_np.reshape(-1), ggml_type, _as_kind(t), kind, threads)
        return F.linear(x, t, b)
    x2 = x.reshape(-1, k)
    out = x2.new_empty((x2.shape[0], n))
    for j0 in range(0, n, rows):
        j1 = min(n, j0 + rows)
        t = buf[: (j1 - j0) * k].view(j1 - j0, k)
        _core.dequantize_into(w_np[j0:j1].reshape(-1), ggml_type, _as_kind(t), kind, threads)
        out[:, j0:j1] = F.linear(x2, t, None if b is None else b[j0:j1])
    return out.reshape(*x.shape[:-1], n)


@torch.library.custom_op("fastquant::gguf_linear", mutates_args=())
def _op_linear(
    x: torch.Tensor, packed: torch.Tensor, ggml_type: int, n: int, k: int, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """F.linear(x, W_exact.to(x.dtype), bias) with W dequantized a tile at a time (CPU) or whole (elsewhere)."""
    if packed.device.type == "cpu" and x.device.type == "cpu":
        return _linear_tiled_impl(x, packed, ggml_type, n, k, bias)
    w = _dequant_impl(packed, ggml_type, n, k, x.dtype)
    return F.linear(x, w, None if bias is None else bias.to(x.dtype))


@_op_linear.register_fake
def _(x, packed, ggml_type, n, k, bias):
    return x.new_empty((*x.shape[:-1], n))


@torch.library.custom_op("fastquant::gguf_embedding", mutates_args=())
def _op_embedding(
    ids: torch.Tensor, packed: torch.Tensor, ggml_type: int, n: int, k: int, dtype: torch.dtype
) -> torch.Tensor:
    flat = ids.reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= n):
        raise IndexError(f"index out of range for a GGUF embedding of {n} rows")
    rows = packed.index_select(0, flat.to(packed.device)).contiguous()
    return _dequant_impl(rows, ggml_type, flat.numel(), k, dtype).reshape(*ids.shape, k)


@_op_embedding.register_fake
def _(ids, packed, ggml_type, n, k, dtype):
    return packed.new_empty((*ids.shape, k), dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------------------


class _GGUFPacked(nn.Module):
    """Shared state handling: the ``weight`` uint8 buffer of shape (rows, bytes_per_row), the ggml type and
    the logical (rows, cols) shape, kept in the state dict as extra state."""

    weight: torch.Tensor

    def _init_packed(self, rows: int, cols: int, ggml_type, device=None):
        tid, name, be, bb = _info(ggml_type)
        if cols % be:
            raise ValueError(f"{name}: rows of {cols} values are not a whole number of {be}-element blocks")
        self.ggml_type = name
        self._type_id = tid
        self._rows, self._cols = int(rows), int(cols)
        self.register_buffer("weight", torch.zeros((rows, cols // be * bb), dtype=torch.uint8, device=device))

    def _packed_numpy(self) -> np.ndarray:
        """The CPU packed buffer as a flat uint8 numpy view, cached while ``weight`` is the same tensor (a view
        shares its memory, so in-place writes to the buffer are seen)."""
        w = self.weight
        c = self.__dict__.get("_np_cache")
        if c is None or c[0] is not w:
            t = w.detach()
            c = self.__dict__["_np_cache"] = (w, (t if t.is_contiguous() else t.contiguous()).numpy().reshape(-1))
        return c[1]

    @property
    def row_bytes(self) -> int:
        return self.weight.shape[1]

    def set_packed(self, data, ggml_type=None, copy: bool = True) -> None:
        """Replace the packed blocks (bytes / uint8 numpy array / uint8 tensor of whole rows), optionally
        changing the ggml type. The buffer stays on its current device. ``copy=False`` lets a uint8 tensor
        already on that device become the buffer itself."""
        # Work out the new type locally: the layer changes only once the data has been checked.
        tid, name, be, bb = _info(self._type_id if ggml_type is None else ggml_type)
        if self._cols % be:
            raise ValueError(f"{name}: rows of {self._cols} values are not whole {be}-element blocks")
        rb = self._cols // be * bb
        if isinstance(data, (bytes, bytearray, memoryview)):
            t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            copy = False
        elif isinstance(data, np.ndarray):
            t = torch.from_numpy(np.array(data, dtype=np.uint8, copy=True).reshape(-1))
            copy = False
        elif not isinstance(data, torch.Tensor):
            raise TypeError(
                f"packed data must be bytes, a uint8 numpy array or a uint8 tensor, got {type(data).__name__}"
            )
        else:
            t = data.detach()
            if t.dtype != torch.uint8:
                raise TypeError(f"packed data must be uint8, got {t.dtype}")
        if t.numel() != self._rows * rb:
            raise ValueError(
                f"{name}: packed data is {t.numel()} bytes, expected {self._rows * rb} "
                f"({self._rows} rows of {self._cols} values)"
            )
        dev = self.weight.device if self.weight.device.type != "meta" else t.device
        self.weight = t.reshape(self._rows, rb).to(dev, copy=copy)
        self.ggml_type, self._type_id = name, tid

    def dequantize_weight(self, dtype=torch.float32) -> torch.Tensor:
        """The exact dequantized weight, shape (rows, cols), in ``dtype`` (f32/f16/bf16), on the buffer's device."""
        return _dequant_impl(self.weight, self._type_id, self._rows, self._cols, dtype)

    @property
    def packed_nbytes(self) -> int:
        return self.weight.numel()

    # -- state dict -------------------------------------------------------------------------------------
    def get_extra_state(self):
        return {"ggml_type": self.ggml_type, "shape": [self._rows, self._cols]}

    def set_extra_state(self, state):
        rows, cols = (int(s) for s in state["shape"])
        if (rows, cols) != (self._rows, self._cols):
            raise ValueError(
                f"GGUF layer has logical shape {(self._rows, self._cols)}, the state dict has {(rows, cols)}"
            )
        tid, name, be, bb = _info(state["ggml_type"])
        if self._cols % be or tuple(self.weight.shape) != (self._rows, self._cols // be * bb):
            raise ValueError(
                f"GGUF layer: the state dict's type {name} does not fit its packed weight of shape "
                f"{tuple(self.weight.shape)} for {self._rows}x{self._cols} values"
            )
        self.ggml_type, self._type_id = name, tid

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # The incoming type may differ from ours (so may the packed row width): adopt it before the
        # buffer is copied, so torch's shape check compares against the right width.
        extra = state_dict.get(prefix + "_extra_state")
        w = state_dict.get(prefix + "weight")
        if extra is not None and w is not None:
            try:
                tid, name, be, bb = _info(extra["ggml_type"])
                if tuple(int(s) for s in extra["shape"]) == (self._rows, self._cols) and tuple(w.shape) == (
                    self._rows,
                    self._cols // be * bb,
                ):
                    if tuple(w.shape) != tuple(self.weight.shape):
                        self.weight = torch.empty(tuple(w.shape), dtype=torch.uint8, device=self.weight.device)
            except (KeyError, TypeError, ValueError):
                pass  # reported by set_extra_state / the shape check below
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


_ACT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class GGUFLinear(_GGUFPacked):
    """``nn.Linear`` with a ggml-packed weight. ``forward(x)`` = ``x · Wᵀ + b`` in ``x.dtype``
    (float32/float16/bfloat16). See the module docstring for the CPU fused, CPU exact and CUDA paths."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, ggml_type="Q8_0", device=None, dtype=None
    ):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._init_packed(out_features, in_features, ggml_type, device)
        if bias:
            self.bias = nn.Parameter(
                torch.zeros(out_features, device=device, dtype=dtype or torch.float32), requires_grad=False
            )
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, ggml_type) -> "GGUFLinear":
        """Quantize ``linear.weight`` with the Rust quantizers (see ``fastquant.gguf.quantize`` for the types)."""
        from ._dequant import quantize

        w = linear.weight.detach()
        m = cls(linear.in_features, linear.out_features, bias=False, ggml_type=ggml_type, device=w.device)
        m.set_packed(quantize(w.to("cpu", torch.float32), m.ggml_type))
        m.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return m

    @classmethod
    def from_packed(
        cls, data, ggml_type, out_features: int, in_features: int, bias: Optional[torch.Tensor] = None, device=None
    ) -> "GGUFLinear":
        m = cls(in_features, out_features, bias=False, ggml_type=ggml_type, device=device)
        m.set_packed(data)
        if bias is not None:
            m.bias = nn.Parameter(bias.detach().to(device or bias.device), requires_grad=False)
        return m

    def forward(self, x: torch.Tensor, fused: Optional[bool] = None) -> torch.Tensor:
        """``fused``: force (True) or forbid (False) the CPU fused kernel; default: fused for at most
        :data:`FUSED_MAX_ROWS` rows on the CPU."""
        if x.dtype not in _ACT_DTYPES:
            raise TypeError(f"GGUFLinear computes in float32, float16 or bfloat16; got input of dtype {x.dtype}")
        if torch.is_grad_enabled() and (x.requires_grad or (self.bias is not None and self.bias.requires_grad)):
            # training (e.g. LoRA): gradients w.r.t. x and the bias; the blocks stay frozen (see _lora.py)
            return _lora.packed_linear_with_grad(self, x, fused)
        k, n = self.in_features, self.out_features
        if x.device.type == "cuda" and fused is not False and _use_triton(self.ggml_type):
            return torch.ops.fastquant.gguf_triton_linear(x, self.weight, self._type_id, n, k, self.bias)
        if fused is None:
            fused = x.is_cpu and x.numel() <= FUSED_MAX_ROWS * k
        if fused:
            if x.is_cpu and self.weight.is_cpu and _eager(x):
                # Direct call (no custom-op dispatch): a few microseconds of fixed cost per forward.
                y = _linear_fused_impl(x, self.weight, self._type_id, n, k, w_np=self._packed_numpy())
            else:
                y = torch.ops.fastquant.gguf_linear_fused(x, self.weight, self._type_id, n, k)
            if self.bias is not None:
                y = y + self.bias.to(y.dtype)
            return y
        if x.is_cpu:
            if self.weight.is_cpu and _eager(x):
                return _linear_tiled_impl(x, self.weight, self._type_id, n, k, self.bias)
            return torch.ops.fastquant.gguf_linear(x, self.weight, self._type_id, n, k, self.bias)
        w = torch.ops.fastquant.gguf_dequantize(self.weight, self._type_id, n, k, x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, ggml_type={self.ggml_type}"


class GGUFEmbedding(_GGUFPacked):
    """``nn.Embedding`` with a ggml-packed table; a lookup dequantizes only the rows it reads. The output
    dtype follows the module's float dtype (``.to(torch.bfloat16)``, ``.half()`` change it; default f32)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        ggml_type="Q8_0",
        padding_idx: Optional[int] = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.padding_idx = padding_idx
        self._init_packed(num_embeddings, embedding_dim, ggml_type, device)
        # An empty float buffer that follows .to(dtype)/.half(): it carries the output dtype.
        self.register_buffer(
            "_dtype_probe", torch.empty(0, dtype=dtype or torch.float32, device=device), persistent=False
        )

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype_probe.dtype

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, ggml_type) -> "GGUFEmbedding":
        from ._dequant import quantize

        w = emb.weight.detach()
        m = cls(emb.num_embeddings, emb.embedding_dim, ggml_type, emb.padding_idx, device=w.device, dtype=w.dtype)
        m.set_packed(quantize(w.to("cpu", torch.float32), m.ggml_type))
        return m

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastquant.gguf_embedding(
            ids, self.weight, self._type_id, self.num_embeddings, self.embedding_dim, self.dtype
        )

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}, ggml_type={self.ggml_type}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
