"""GGUF files: a hardened zero-copy reader, a writer, torch loading, and ggml block (de)quantization.

>>> import fastquant.gguf as fg
>>> with fg.open("model.gguf") as f:
...     f.metadata["general.architecture"], len(f.tensors)
...     w = f.get_tensor("token_embd.weight", dtype=torch.float32)

See ``docs/gguf.md``. Every malformed file raises :class:`GGUFError` (a ``ValueError``) naming the byte
offset and the field.
"""
from .._core import GGUFError
from ._file import GGUFFile, TensorInfo, load_state_dict, open
from ._writer import Value, write

__all__ = [
    "GGUFError",
    "GGUFFile",
    "TensorInfo",
    "Value",
    "dequantize",
    "load_state_dict",
    "open",
    "quantize",
    "write",
]


def __getattr__(name):
    # dequantize/quantize need numpy; load them on first use so `import fastquant.gguf` stays light.
    if name in ("dequantize", "quantize"):
        from . import _dequant

        return getattr(_dequant, name)
    raise AttributeError(f"module 'fastquant.gguf' has no attribute {name!r}")
