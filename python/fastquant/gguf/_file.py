"""Reading GGUF files: :func:`open`, :class:`GGUFFile`, :func:`load_state_dict`."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .. import _core
from ._types import PLAIN_NUMPY


class TensorInfo:
    """One tensor as listed in the file (nothing is read)."""

    __slots__ = ("name", "ggml_type", "type_id", "ne", "shape", "n_elements", "nbytes", "offset")

    def __init__(self, name, ggml_type, type_id, ne, n_elements, nbytes, offset):
        self.name = name
        #: ggml type name, e.g. ``"Q4_K"``; ``"type#<id>"`` for ids ggml no longer defines
        self.ggml_type = ggml_type
        #: the type id as stored
        self.type_id = type_id
        #: dims in GGUF order (``ne[0]`` fastest varying)
        self.ne = ne
        #: numpy/torch shape (``ne`` reversed)
        self.shape = ne[::-1]
        self.n_elements = n_elements
        #: bytes of packed data (``None`` for unknown type ids)
        self.nbytes = nbytes
        #: absolute offset of the data in the file
        self.offset = offset

    def __repr__(self):
        return (
            f"TensorInfo(name={self.name!r}, ggml_type={self.ggml_type!r}, shape={self.shape}, "
            f"nbytes={self.nbytes}, offset={self.offset})"
        )

    def __eq__(self, other):
        if not isinstance(other, TensorInfo):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)


class _Metadata(Mapping):
    """Read-only mapping key -> Python value. Values are decoded on first access and cached."""

    __slots__ = ("_file", "_keys", "_keyset", "_cache")

    def __init__(self, file: GGUFFile, keys):
        self._file = file
        self._keys = keys
        self._keyset = None
        self._cache = {}

    def __getitem__(self, key):
        try:
            return self._cache[key]
        except KeyError:
            pass
        if not isinstance(key, str):
            raise KeyError(key)  # metadata keys are strings (so Mapping.get/`in` work for any key)
        v = self._file._reader.value(key)
        self._cache[key] = v
        return v

    def __contains__(self, key):
        ks = self._keyset
        if ks is None:
            ks = self._keyset = frozenset(self._keys)
        return key in ks

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def type_of(self, key) -> str:
        """The stored value type: ``"u32"``, ``"str"``, ``"array[str]"``, ..."""
        return self._file._reader.value_type(key)

    def __repr__(self):
        return f"<GGUF metadata: {len(self._keys)} keys>"


class _Tensors(Mapping):
    """Read-only mapping name -> :class:`TensorInfo`, in file order."""

    __slots__ = ("_d",)

    def __init__(self, infos):
        self._d = {t.name: t for t in infos}

    def __getitem__(self, name):
        return self._d[name]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __contains__(self, name):
        return name in self._d

    def __repr__(self):
        return f"<GGUF tensors: {len(self._d)}>"


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("fastquant.gguf: get_tensor/load_state_dict need torch (pip install torch)") from e
    return torch


class GGUFFile:
    """An open GGUF file. The file is memory-mapped and validated when opened; metadata values are
    decoded lazily; :meth:`raw` returns zero-copy views. Use as a context manager, or call :meth:`close`
    (views returned by :meth:`raw` stay valid after closing: they hold the mapping)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._r = _core._GGUFReader(self.path)
        self._metadata = None
        self._tensors = None

    @classmethod
    def _from_reader(cls, reader, path="<bytes>"):
        self = cls.__new__(cls)
        self.path = path
        self._r = reader
        self._metadata = None
        self._tensors = None
        return self

    @property
    def _reader(self):
        r = self._r
        if r is None:
            raise ValueError("I/O operation on a closed GGUF file")
        return r

    # -- file-level facts -------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._reader.version

    @property
    def alignment(self) -> int:
        return self._reader.alignment

    @property
    def data_offset(self) -> int:
        """Absolute offset of the tensor-data section."""
        return self._reader.data_offset

    @property
    def file_size(self) -> int:
        return self._reader.file_size

    # -- metadata ---------------------------------------------------------------------------------------
    @property
    def metadata(self) -> _Metadata:
        m = self._metadata
        if m is None:
            m = self._metadata = _Metadata(self, self._reader.keys())
        _ = self._reader  # raise if closed
        return m

    def keys(self):
        """Tensor names, in file order, as safetensors' ``safe_open(...).keys()`` lists them:
        ``for name in f.keys(): f.get_tensor(name)``. Metadata keys are ``f.metadata.keys()``."""
        return list(self.tensors)

    def value_type(self, key) -> str:
        """The stored type of a metadata value: ``"u32"``, ``"str"``, ``"array[str]"``, ..."""
        return self._reader.value_type(key)

    def array_info(self, key):
        """``(element type, length)`` of an array value without decoding it; ``None`` for scalars."""
        return self._reader.array_info(key)

    def array_item(self, key, index):
        """One element of an array value (string arrays are indexed lazily, no full decode)."""
        return self._reader.array_item(key, index)

    def array(self, key):
        """A numeric array value as a numpy array (one copy); lists for string/nested arrays."""
        b = self._reader.array_bytes(key)
        if b is None:
            return self.metadata[key]
        import numpy as np

        etype, _ = self._reader.array_info(key)
        dt = {
            "u8": "u1",
            "i8": "i1",
            "u16": "<u2",
            "i16": "<i2",
            "u32": "<u4",
            "i32": "<i4",
            "f32": "<f4",
            "bool": "?",
            "u64": "<u8",
            "i64": "<i8",
            "f64": "<f8",
        }[etype]
        return np.frombuffer(b, dtype=dt)

    # -- tensors ----------------------------------------------------------------------------------------
    @property
    def tensors(self) -> _Tensors:
        t = self._tensors
        if t is None:
            t = self._tensors = _Tensors(TensorInfo(*x) for x in self._reader.tensor_infos())
        _ = self._reader  # raise if closed
        return t

    def raw(self, name):
        """The packed bytes of tensor ``name`` as a read-only 1-D ``numpy.uint8`` array that shares memory
        with the mapped file (no copy) and keeps the mapping alive."""
        import numpy as np

        return np.frombuffer(self._reader.raw(name), dtype=np.uint8)

    def get_tensor(self, name, dtype=None, device=None):
        """Tensor ``name`` as a new ``torch.Tensor`` of shape ``info.shape``.

        F32/F16/BF16/F64 and I8..I64 are read directly; quantized types are dequantized by
        ``fastquant.gguf.dequantize`` (into ``dtype`` directly when it is float32/float16/bfloat16). ``dtype``/``device`` convert the result (the
        conversion reads straight from the mapping: one copy in total)."""
        torch = _torch()
        info = self.tensors[name]
        t = info.ggml_type
        if t in PLAIN_NUMPY:
            import warnings

            import numpy as np

            arr = np.frombuffer(self._reader.raw(name), dtype=PLAIN_NUMPY[t]).reshape(info.shape)
            with warnings.catch_warnings():
                # a read-only view; never written: every path below copies
                warnings.simplefilter("ignore", UserWarning)
                base = torch.from_numpy(arr)
            if t == "BF16":
                base = base.view(torch.bfloat16)
        else:
            from ._dequant import dequantize

            raw = self.raw(name)  # raises GGUFError for unknown type ids
            # Dequantize straight into the requested float dtype (the exact f32 value rounded once), so
            # there is no float32 intermediate for bf16/f16 requests.
            direct = dtype if dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32
            base = torch.empty(info.shape, dtype=direct)
            dequantize(raw, t, info.shape, out=base)
            if (device is None or torch.device(device).type == "cpu") and (dtype is None or dtype == direct):
                return base
        target = base.dtype if dtype is None else dtype
        if device is None or torch.device(device).type == "cpu":
            return base.to(device="cpu", dtype=target, copy=True)
        return base.to(device=device, dtype=target)

    # -- lifetime ---------------------------------------------------------------------------------------
    def close(self):
        self._r = None

    @property
    def closed(self) -> bool:
        return self._r is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self._r is None:
            return f"<GGUFFile {self.path!r} (closed)>"
        return f"<GGUFFile {self.path!r} v{self.version}: {len(self.metadata)} keys, {len(self.tensors)} tensors>"


def open(path) -> GGUFFile:  # noqa: A001 - mirrors builtins.open on purpose
    """Open (memory-map and validate) a GGUF file."""
    return GGUFFile(path)


def load_state_dict(path, dtype=None, device=None) -> dict:
    """All tensors of a GGUF file as ``{name: torch.Tensor}`` (quantized types dequantized when
    ``fastquant.gguf.dequantize`` is available)."""
    with GGUFFile(path) as f:
        return {name: f.get_tensor(name, dtype=dtype, device=device) for name in f.tensors}
