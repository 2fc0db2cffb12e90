"""Writing GGUF files: :func:`write` and :class:`Value`."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .. import _core

_SCALAR_TYPES = ("u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "u64", "i64", "f64")
_ALIASES = {
    "uint8": "u8",
    "int8": "i8",
    "uint16": "u16",
    "int16": "i16",
    "uint32": "u32",
    "int32": "i32",
    "float32": "f32",
    "uint64": "u64",
    "int64": "i64",
    "float64": "f64",
    "string": "str",
}
# numpy dtype kind+itemsize -> GGUF value type
_NP_TO_VT = {
    ("u", 1): "u8",
    ("i", 1): "i8",
    ("u", 2): "u16",
    ("i", 2): "i16",
    ("u", 4): "u32",
    ("i", 4): "i32",
    ("f", 4): "f32",
    ("b", 1): "bool",
    ("u", 8): "u64",
    ("i", 8): "i64",
    ("f", 8): "f64",
}
_VT_TO_NP = {v: f"<{k[0]}{k[1]}" if k[0] != "b" else "?" for k, v in _NP_TO_VT.items()}

# numpy dtype name -> ggml type
_NP_TENSOR = {
    "float32": "F32",
    "float16": "F16",
    "float64": "F64",
    "bfloat16": "BF16",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
}
_TORCH_TENSOR = {
    "torch.float32": "F32",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.float64": "F64",
    "torch.int8": "I8",
    "torch.int16": "I16",
    "torch.int32": "I32",
    "torch.int64": "I64",
}


class Value:
    """A metadata value with an explicit GGUF type, e.g. ``Value(7, "u16")``, ``Value([1, 2], "u16")``
    (an array of u16) or ``Value([], "array[str]")``.

    Types: ``u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str`` and ``array[<type>]``."""

    __slots__ = ("value", "type")

    def __init__(self, value, type: str):
        t = str(type).strip().lower()
        inner = t[6:-1] if t.startswith("array[") and t.endswith("]") else None
        base = _ALIASES.get(inner if inner is not None else t, inner if inner is not None else t)
        if base not in _SCALAR_TYPES:
            raise ValueError(
                f"unknown GGUF value type {type!r}; use one of {', '.join(_SCALAR_TYPES)} or array[<type>]"
            )
        if inner is None and _is_sequence(value):
            inner = base
        self.value = value
        self.type = f"array[{base}]" if inner is not None else base

    def __repr__(self):
        return f"Value({self.value!r}, {self.type!r})"


def _is_sequence(x) -> bool:
    return isinstance(x, (list, tuple)) or type(x).__name__ == "ndarray"


def _int_type(values) -> str:
    lo, hi = min(values), max(values)
    if -(2**31) <= lo and hi < 2**31:
        return "i32"
    if -(2**63) <= lo and hi < 2**63:
        return "i64"
    if lo >= 0 and hi < 2**64:
        return "u64"
    raise ValueError(f"integer {lo if lo < -(2**63) else hi} does not fit any GGUF integer type")


def _infer(key, v):
    """(value type, value) for the binding."""
    if isinstance(v, Value):
        t, v = v.type, v.value
        if t.startswith("array[") and type(v).__name__ == "ndarray":
            return t, _np_bytes(v, t[6:-1])
        if t.startswith("array[") and isinstance(v, (bytes, bytearray)) and t != "array[u8]":
            return t, bytes(v)
        if t.startswith("array[") and isinstance(v, (bytes, bytearray)):
            return t, bytes(v)
        return t, v
    if isinstance(v, bool):
        return "bool", v
    if isinstance(v, int):
        return _int_type([v]), v
    if isinstance(v, float):
        if abs(v) != float("inf") and abs(v) > 3.4028234663852886e38:
            raise ValueError(f"metadata key {key!r}: {v!r} overflows f32; store it as Value({v!r}, 'f64')")
        return "f32", v
    if isinstance(v, str):
        return "str", v
    if isinstance(v, (bytes, bytearray)):
        return "array[u8]", bytes(v)
    mod = type(v).__module__
    if mod == "numpy":
        import numpy as np

        if isinstance(v, np.ndarray):
            if v.ndim != 1:
                raise ValueError(f"metadata key {key!r}: only 1-D arrays can be stored, got shape {v.shape}")
            if v.dtype.kind in "US":
                return "array[str]", [str(x) for x in v]
            vt = _NP_TO_VT.get((v.dtype.kind, v.dtype.itemsize))
            if vt is None:
                raise ValueError(f"metadata key {key!r}: numpy dtype {v.dtype} has no GGUF value type")
            return f"array[{vt}]", _np_bytes(v, vt)
        if isinstance(v, np.generic):
            vt = _NP_TO_VT.get((v.dtype.kind, v.dtype.itemsize))
            if vt is None:
                raise ValueError(f"metadata key {key!r}: numpy dtype {v.dtype} has no GGUF value type")
            return vt, v.item()
    if isinstance(v, (list, tuple)):
        if len(v) == 0:
            raise ValueError(
                f"metadata key {key!r}: an empty list needs an explicit element type, e.g. Value([], 'array[i32]')"
            )
        if all(isinstance(x, bool) for x in v):
            return "array[bool]", list(v)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return f"array[{_int_type(v)}]", list(v)
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            return "array[f32]", [float(x) for x in v]
        if all(isinstance(x, str) for x in v):
            return "array[str]", list(v)
        if any(isinstance(x, (list, tuple)) for x in v):
            raise ValueError(f"metadata key {key!r}: nested arrays cannot be written (ggml rejects them)")
        raise ValueError(
            f"metadata key {key!r}: array elements must all be bool, int, float or str; "
            "use Value(list, type) for explicit typing"
        )
    raise TypeError(f"metadata key {key!r}: cannot store a {type(v).__name__} in GGUF metadata")


def _np_bytes(arr, vt):
    import numpy as np

    a = np.asarray(arr)
    if vt == "str":
        return [str(x) for x in a]
    dt = np.dtype(_VT_TO_NP[vt])
    if a.dtype != dt and a.size:
        # Never store a different value than the one given: integers must fit, floats going to an integer
        # type must be whole numbers that fit, and floats going to f32 must not overflow it.
        if dt.kind in "iu":
            if a.dtype.kind == "f":
                if not np.all(np.isfinite(a)) or not np.all(a == np.floor(a)):
                    raise ValueError(f"array values must be whole finite numbers for {vt}")
            elif a.dtype.kind not in "iub":
                raise ValueError(f"cannot store {a.dtype} values as {vt}")
            info = np.iinfo(dt)
            if a.min() < info.min or a.max() > info.max:
                raise ValueError(f"array values out of range for {vt} ({info.min}..{info.max})")
        elif dt == np.float32 and a.dtype.kind == "f":
            finite = a[np.isfinite(a)]
            if finite.size and np.abs(finite).max() > np.finfo(np.float32).max:
                raise ValueError("array values overflow f32; store them as f64")
    if a.dtype != dt:
        a = a.astype(dt)
    return np.ascontiguousarray(a).tobytes()


def _tensor_entry(name, t):
    """(name, ggml type name, ne, 1-D uint8 numpy array)."""
    import numpy as np

    if isinstance(t, tuple):
        if len(t) != 3:
            raise ValueError(f"tensor {name!r}: a packed tensor is (bytes_or_uint8_array, ggml_type, shape)")
        data, gtype, shape = t
        gtype = str(gtype.name if hasattr(gtype, "name") else gtype).upper()
        if isinstance(data, (bytes, bytearray, memoryview)):
            buf = np.frombuffer(data, dtype=np.uint8)
        else:
            buf = np.asarray(data)
            if buf.dtype != np.uint8:
                raise ValueError(f"tensor {name!r}: packed data must be bytes or a uint8 array, got {buf.dtype}")
            buf = np.ascontiguousarray(buf).reshape(-1)
        from ._dequant import _shape

        try:
            ne = list(reversed(_shape(shape)))
        except TypeError as e:
            raise TypeError(f"tensor {name!r}: {e}") from None
        return name, gtype, ne, buf
    mod = type(t).__module__
    if mod.startswith("torch"):
        import torch

        g = _TORCH_TENSOR.get(str(t.dtype))
        if g is None:
            raise ValueError(
                f"tensor {name!r}: torch dtype {t.dtype} cannot be stored without quantization; "
                f"supported: {', '.join(_TORCH_TENSOR)}"
            )
        c = t.detach().to("cpu").contiguous()
        shape = tuple(c.shape)
        if c.dtype == torch.bfloat16:
            c = c.view(torch.int16)
        arr = c.numpy()
    else:
        arr = np.asarray(t)
        g = _NP_TENSOR.get(arr.dtype.name)
        if g is None:
            raise ValueError(
                f"tensor {name!r}: numpy dtype {arr.dtype} cannot be stored; supported: "
                f"{', '.join(_NP_TENSOR)} (or pass packed blocks as (bytes, ggml_type, shape))"
            )
        shape = arr.shape
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
    buf = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    if len(shape) == 0:
        ne = []
    else:
        ne = [int(d) for d in reversed(shape)]
    return name, g, ne, buf


def write(path, tensors=None, metadata=None, *, alignment=None) -> int:
    """Write a GGUF (version 3) file; returns its size in bytes.

    ``tensors``: mapping name -> numpy array / torch tensor (F32, F16, BF16, F64, I8..I64 by dtype) or a
    packed tuple ``(bytes_or_uint8_array, ggml_type, shape)`` with ``shape`` in numpy order.
    ``metadata``: mapping key -> value; Python ``bool/int/float/str`` map to ``bool/i32 (i64, u64 when
    needed)/f32/str``, lists to arrays, numpy scalars and arrays to their own type; use :class:`Value` for
    anything else. ``alignment`` sets ``general.alignment`` (u32, power of two)."""
    kvs = []
    meta = dict(metadata or {})
    if alignment is not None:
        meta["general.alignment"] = Value(int(alignment), "u32")
    for k, v in meta.items():
        if not isinstance(k, str):
            raise TypeError(f"metadata keys must be str, got {k!r}")
        t, val = _infer(k, v)
        kvs.append((k, t, val))
    ts = []
    items = tensors.items() if isinstance(tensors, Mapping) else (tensors or [])
    for name, t in items:
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        ts.append(_tensor_entry(name, t))
    return _core._write_gguf(os.fspath(path), kvs, ts)
