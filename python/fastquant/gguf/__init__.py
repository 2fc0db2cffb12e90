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
    "GGUFEmbedding",
    "GGUFError",
    "GGUFFile",
    "GGUFLinear",
    "GGUFLoraLinear",
    "LoadResult",
    "MergeReport",
    "QuantizeResult",
    "TensorInfo",
    "Value",
    "dequantize",
    "dequantize_model",
    "disable_peft",
    "enable_peft",
    "load_into",
    "load_state_dict",
    "merge_lora",
    "merge_report",
    "open",
    "peft_mapping",
    "quantize",
    "quantize_model",
    "save",
    "write",
]


_LAYER_NAMES = frozenset(
    {
        "GGUFLinear",
        "GGUFEmbedding",
        "LoadResult",
        "QuantizeResult",
        "load_into",
        "quantize_model",
        "save",
        "dequantize_model",
        "FUSED_MAX_ROWS",
        "GPU_TYPES",
        "release_workspace",
    }
)


# LoRA (peft) on packed layers: torch on first use; peft only for GGUFLoraLinear / enable_peft / peft_mapping
_LORA_NAMES = frozenset({"MergeReport", "disable_peft", "enable_peft", "merge_lora", "merge_report", "peft_mapping"})


def __getattr__(name):
    # dequantize/quantize need numpy; load them on first use so `import fastquant.gguf` stays light.
    if name in ("dequantize", "quantize"):
        from . import _dequant

        return getattr(_dequant, name)
    if name in _LAYER_NAMES:
        # torch layers and model helpers: torch is imported only when one of these is first used.
        from . import _layers

        return getattr(_layers, name)
    if name in _LORA_NAMES:
        from . import _layers, _lora  # noqa: F401  (the layers register the ops the LoRA code calls)

        return getattr(_lora, name)
    if name == "GGUFLoraLinear":
        from . import _layers, _peft_layer  # noqa: F401

        return _peft_layer.GGUFLoraLinear
    raise AttributeError(f"module 'fastquant.gguf' has no attribute {name!r}")
