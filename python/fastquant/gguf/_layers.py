"""GGUF weights inside torch models: packed :class:`GGUFLinear` / :class:`GGUFEmbedding` layers. The model-level
helpers (:func:`load_into`, :func:`quantize_model`, :func:`save`, :func:`dequantize_model`) are in ``_model.py``.

The packed ggml blocks live in a plain ``uint8`` buffer named ``weight`` (shape ``(rows, bytes_per_row)``,
no tensor subclass); the ggml type and the logical shape are module attributes, saved as extra state.

Forward paths (inference only; no gradients flow to the packed weight):

* CPU, at most :data:`FUSED_MAX_ROWS` activation rows: the Rust fused kernel (``linear_fused``) dequantizes
  tiles of a few weight rows into a per-thread buffer and multiplies; the float weight is never built.
  Accumulation is in f32 in a different order than BLAS, so the result is within
  ``k · 2⁻²⁴ · Σ_l |x_l·w_l|`` of the exact sum (the same bound a BLAS f32 dot product has), then rounded
  once to the activation dtype.
* CPU, more rows: the whole weight is dequantized by the Rust kernels into the activation dtype (bit-exact:
  the exact f32 value, rounded once to bf16/f16) and ``F.linear`` runs on it, so the result is bitwise
  ``F.linear(x, W_exact.to(x.dtype), bias)``. The dequantized weight goes into a per-thread buffer that is
  reused across calls (:data:`REUSE_WORKSPACE`, :func:`release_workspace`).
* CUDA, types of ``fastquant.gguf.triton.TYPES`` (when triton is importable, :data:`USE_TRITON`): the fused
  Triton kernels on the packed blocks (within the same bound as the CPU fused kernel; see docs/gguf.md);
  ``fused=False`` and ``dequantize_weight`` dequantize exactly with Triton, then ``F.linear``.
* CUDA, other types: the weight is dequantized on the GPU with torch integer/float ops in ggml's operation order in f32
  (bit-exact with the CPU kernels), cast once to the activation dtype, then ``F.linear``. Types with a GPU
  decoder: :data:`GPU_TYPES`. Other types are dequantized by the Rust kernels on the CPU and copied to the
  GPU (a warning says so once per type).

All three are ``torch.library`` custom ops with fake implementations, so ``torch.compile(fullgraph=True)``
traces them without graph breaks.
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

_KVALUES_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


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


def _dequant_impl(packed: torch.Tensor, tid: int, n: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Dequantize ``n`` packed rows of ``k`` values to ``dtype`` on ``packed``'s device."""
    _, name, be, bb = _info(tid)
    if packed.device.type == "cpu":
        out = torch.empty((n, k), dtype=dtype)
        _dequantize_blocks(packed, tid, out=out, threads=_threads())
        return out
    if packed.device.type == "cuda" and name in _triton_types():
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


@torch.library.custom_op("fastquant::gguf_linear_fused", mutates_args=())
def _op_linear_fused(x: torch.Tensor, packed: torch.Tensor, ggml_type: int, n: int, k: int) -> torch.Tensor:
    if x.device.type != "cpu" or packed.device.type != "cpu":
        raise ValueError("the fused GGUF linear kernel runs on the CPU only")
    lead = x.shape[:-1]
    xf = x.detach().reshape(-1, k).to(torch.float32).contiguous()
    out = torch.empty((xf.shape[0], n), dtype=torch.float32)
    _core.linear_fused(
        xf.numpy(), packed.detach().contiguous().numpy().reshape(-1), ggml_type, n, k, out.numpy(), _threads()
    )
    return out.to(x.dtype).reshape(*lead, n)


@_op_linear_fused.register_fake
def _(x, packed, ggml_type, n, k):
    return x.new_empty((*x.shape[:-1], n))


_ws = threading.local()


def release_workspace() -> None:
    """Free this thread's reusable dequantization buffers (see :data:`REUSE_WORKSPACE`)."""
    _ws.bufs = {}


#: The unfused CPU path dequantizes into one reusable buffer per thread and dtype (grown to the largest
#: layer): a fresh multi-MiB allocation costs more in page faults than the dequantization itself. The buffer
#: holds the float weight of the largest layer seen; :func:`release_workspace` frees it.
REUSE_WORKSPACE = True


def _workspace(numel: int, dtype: torch.dtype) -> torch.Tensor:
    bufs = getattr(_ws, "bufs", None)
    if bufs is None:
        bufs = _ws.bufs = {}
    b = bufs.get(dtype)
    if b is None or b.numel() < numel:
        b = bufs[dtype] = torch.empty(numel, dtype=dtype)
    return b[:numel]


@torch.library.custom_op("fastquant::gguf_linear", mutates_args=())
def _op_linear(
    x: torch.Tensor, packed: torch.Tensor, ggml_type: int, n: int, k: int, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """F.linear(x, W_exact.to(x.dtype), bias) with W dequantized into a reusable CPU buffer."""
    dtype = x.dtype
    if REUSE_WORKSPACE and packed.device.type == "cpu":
        w = _workspace(n * k, dtype).view(n, k)
        _dequantize_blocks(packed, ggml_type, out=w, threads=_threads())
    else:
        w = _dequant_impl(packed, ggml_type, n, k, dtype)
    return F.linear(x, w, None if bias is None else bias.to(dtype))


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
        if x.device.type == "cuda" and fused is not False and self.ggml_type in _triton_types():
            return torch.ops.fastquant.gguf_triton_linear(x, self.weight, self._type_id, n, k, self.bias)
        if fused is None:
            fused = x.device.type == "cpu" and x.numel() <= FUSED_MAX_ROWS * k
        if fused:
            y = torch.ops.fastquant.gguf_linear_fused(x, self.weight, self._type_id, n, k)
            if self.bias is not None:
                y = y + self.bias.to(y.dtype)
            return y
        if x.device.type == "cpu":
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
