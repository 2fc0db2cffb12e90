"""Hugging Face checkpoint folders in and out: the layouts that transformers and diffusers read and write.

`from_pretrained` (module `_load`) builds a transformers or diffusers model from a local folder, quantizing on
load or reading a pre-quantized checkpoint; `save_pretrained` (module `_save`) writes a quantized model in the
libraries' own layout. Both import torch and the backends only when called.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the lazy names, for type checkers (nothing here runs)
    from ._load import from_pretrained
    from ._save import save_pretrained

__all__ = ["from_pretrained", "save_pretrained"]

_LAZY = {"from_pretrained": "._load", "save_pretrained": "._save"}


if not TYPE_CHECKING:
    # Hidden from type checkers, so that a misspelt name is an error there rather than Any.
    def __getattr__(name):
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'fastquant.hf' has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value
