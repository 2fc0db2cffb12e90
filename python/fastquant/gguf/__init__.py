"""GGUF files: a hardened zero-copy reader, a writer, torch loading, and ggml block (de)quantization.

>>> import fastquant.gguf as fg
>>> with fg.open("model.gguf") as f:
...     f.metadata["general.architecture"], len(f.tensors)
...     w = f.get_tensor("token_embd.weight", dtype=torch.float32)

See ``docs/gguf.md``. Every malformed file raises :class:`GGUFError` (a ``ValueError``) naming the byte
offset and the field.
"""

from typing import TYPE_CHECKING

from .._core import GGUFError
from ._file import GGUFFile, TensorInfo
from ._split import GGUFSplitFile, load_state_dict
from ._split import open_gguf as open  # noqa: A001 - plain files and split sets alike
from ._writer import Value, write

__all__ = [
    "GGUFEmbedding",
    "GGUFError",
    "GGUFFile",
    "GGUFLinear",
    "GGUFLoraLinear",
    "GGUFScaledEmbedding",
    "GGUFSplitFile",
    "LoadResult",
    "MergeReport",
    "QuantizeResult",
    "SingleFileInfo",
    "TensorInfo",
    "Value",
    "dequantize",
    "dequantize_model",
    "disable_peft",
    "enable_peft",
    "from_pretrained",
    "from_single_file",
    "load_into",
    "load_state_dict",
    "merge_lora",
    "merge_report",
    "open",
    "peft_mapping",
    "quantize",
    "quantize_model",
    "save",
    "save_llama_cpp",
    "tokenizer",
    "write",
]

if TYPE_CHECKING:
    # The names that load on first use (see `__getattr__` below), spelled out for type checkers; nothing here runs.
    from ._dequant import dequantize, quantize
    from ._export import save_llama_cpp
    from ._hf import from_pretrained
    from ._layers import FUSED_MAX_ROWS as FUSED_MAX_ROWS
    from ._layers import GPU_TYPES as GPU_TYPES
    from ._layers import GGUFEmbedding, GGUFLinear
    from ._layers import release_workspace as release_workspace
    from ._lora import MergeReport, disable_peft, enable_peft, merge_lora, merge_report, peft_mapping
    from ._model import (
        GGUFScaledEmbedding,
        LoadResult,
        QuantizeResult,
        dequantize_model,
        load_into,
        quantize_model,
        save,
    )
    from ._peft_layer import GGUFLoraLinear
    from ._tokenizer import tokenizer

_LAYER_NAMES = frozenset({"GGUFLinear", "GGUFEmbedding", "FUSED_MAX_ROWS", "GPU_TYPES", "release_workspace"})
_MODEL_NAMES = frozenset(
    {"GGUFScaledEmbedding", "LoadResult", "QuantizeResult", "load_into", "quantize_model", "save", "dequantize_model"}
)
# name -> module: the transformers/diffusers entry points (each imports its library on first use)
_LAZY = {
    "from_pretrained": "_hf",
    "tokenizer": "_tokenizer",
    "save_llama_cpp": "_export",
    "from_single_file": "_single_file",
    "SingleFileInfo": "_single_file",
}


# LoRA (peft) on packed layers: torch on first use; peft only for GGUFLoraLinear / enable_peft / peft_mapping
_LORA_NAMES = frozenset({"MergeReport", "disable_peft", "enable_peft", "merge_lora", "merge_report", "peft_mapping"})


if not TYPE_CHECKING:
    # Hidden from type checkers, so that a misspelt name is an error there rather than Any.
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
        if name in _MODEL_NAMES:
            from . import _model

            return getattr(_model, name)
        if name in _LAZY:
            import importlib

            return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        raise AttributeError(f"module 'fastquant.gguf' has no attribute {name!r}")
