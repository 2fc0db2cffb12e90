"""Dispatch: from a config dict or object to the backend's quantizer.

The dispatcher lives in the Rust core (`fastquant_core::registry`, reached through `fastquant._core`): the rule
that picks the method, the built-in method table, the run-time registry of user methods and the "unknown
method" errors. This module gives it the diffusers-compatible Python face: `DiffusersAutoQuantizer`, the two
mappings (live views of the core's registry) and the registration decorators.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import MutableMapping
from typing import Iterator, Optional

from .. import _core, _json
from ..quantization_config import QuantizationConfigMixin, _is_config_class
from .base import DiffusersQuantizer
from .bnb import BnB4BitDiffusersQuantizer, BnB8BitDiffusersQuantizer
from .gguf import GGUFQuantizer
from .modelopt import NVIDIAModelOptQuantizer
from .quanto import QuantoQuantizer
from .torchao import TorchAoHfQuantizer

__all__ = [
    "AUTO_QUANTIZER_MAPPING",
    "AUTO_QUANTIZATION_CONFIG_MAPPING",
    "DiffusersAutoQuantizer",
    "AutoQuantizer",
    "register_quantization_config",
    "register_quantizer",
]

# The built-in quantizer classes; the core matches them to its built-in method table by class name.
_core._set_registry(
    [
        BnB4BitDiffusersQuantizer,
        BnB8BitDiffusersQuantizer,
        GGUFQuantizer,
        QuantoQuantizer,
        TorchAoHfQuantizer,
        NVIDIAModelOptQuantizer,
    ],
    QuantizationConfigMixin,
)


class _RegistryView(MutableMapping):
    """A live view of one side of the core's method registry (method key -> class). Assigning registers or
    replaces a class, deleting removes it; the built-in config classes cannot be removed."""

    __slots__ = ("_kind",)

    def __init__(self, kind: str):
        self._kind = kind

    def _items(self):
        return _core.registry_items(self._kind)

    def __getitem__(self, key):
        for k, cls in self._items():
            if k == key:
                return cls
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self._items()])

    def __len__(self) -> int:
        return len(self._items())

    def __contains__(self, key) -> bool:
        return any(k == key for k, _ in self._items())

    def __setitem__(self, key, cls) -> None:
        _core.registry_add(self._kind, key, cls, replace=True)

    def __delitem__(self, key) -> None:
        if _core.registry_remove(self._kind, key) is None:
            raise KeyError(key)

    def __repr__(self) -> str:
        return repr(dict(self._items()))


#: method key -> quantizer class (a live view of the core's registry)
AUTO_QUANTIZER_MAPPING = _RegistryView("quantizer")

#: method key -> config class (a live view of the core's registry)
AUTO_QUANTIZATION_CONFIG_MAPPING = _RegistryView("config")


class DiffusersAutoQuantizer:
    """Picks the config class and quantizer for a quantization config (diffusers-compatible API)."""

    @classmethod
    def from_dict(cls, quantization_config_dict: dict):
        """Validate a config dict and return the config object of its method (built-in or registered).

        `load_in_4bit` / `load_in_8bit` pick bitsandbytes 4-/8-bit and win over `quant_method`."""
        return _core.config_from_dict(quantization_config_dict)

    @classmethod
    def from_json_string(cls, text: str):
        """Like `from_dict`, from the JSON text of a config (parsed once)."""
        return _core.config_from_json(text)

    #: `from_config(quantization_config, **kwargs)`: return the quantizer for a config dict or object.
    #: Keyword arguments: `pre_quantized` (bool, default True) and `modules_to_not_convert` (list of module
    #: names, put before the config's own skip list). Anything else is a TypeError. Runs in Rust, registered
    #: methods included. A transformers/diffusers config object is converted to fastquant's first.
    @classmethod
    def from_config(cls, quantization_config, **kwargs):
        return _core.auto_from_config(cls, _from_library_config(quantization_config), **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder: Optional[str] = None, **kwargs):
        """Read `quantization_config` from a local model folder's `config.json` and return its quantizer."""
        folder = os.fspath(pretrained_model_name_or_path)
        if subfolder:
            folder = os.path.join(folder, subfolder)
        path = os.path.join(folder, "config.json") if os.path.isdir(folder) else folder
        config = _json.load(path)
        q = config.get("quantization_config") if isinstance(config, dict) else None
        if q is None:
            raise ValueError(f"{path}: no 'quantization_config' in this config; the model is not quantized")
        return cls.from_config(q, **kwargs)

    @classmethod
    def merge_quantization_configs(cls, quantization_config_from_model, quantization_config_from_args=None):
        """Combine the checkpoint's config with one passed by the user: the checkpoint's wins (with a warning
        when they differ); configs of different methods are a ValueError."""
        model_cfg = _from_library_config(quantization_config_from_model)
        if isinstance(model_cfg, dict):
            model_cfg = cls.from_dict(model_cfg)
        args_cfg = _from_library_config(quantization_config_from_args)
        if args_cfg is not None:
            if isinstance(args_cfg, dict):
                args_cfg = cls.from_dict(args_cfg)
            _core.check_mergeable(_core.method_key(model_cfg), _core.method_key(args_cfg))
            if args_cfg != model_cfg:
                warnings.warn(
                    "The quantization_config passed in differs from the one stored with the model; the model's "
                    f"config is used: {model_cfg!r}",
                    UserWarning,
                    stacklevel=2,
                )
        return model_cfg


AutoQuantizer = DiffusersAutoQuantizer


def _from_library_config(config):
    """A transformers/diffusers config object -> fastquant's (anything else is returned as it is)."""
    module = type(config).__module__ or ""
    if module.startswith(("transformers.", "diffusers.")):
        from ..hf._configs import from_library

        return from_library(config)
    return config


def register_quantization_config(method: str):
    """Class decorator: register a config class (a `QuantizationConfigMixin` subclass) under `method`."""
    if not isinstance(method, str) or not method:
        raise TypeError(f"register_quantization_config: method must be a non-empty str, got {method!r}")

    def register(config_cls):
        if not _is_config_class(config_cls):
            raise TypeError(
                f"register_quantization_config({method!r}): {config_cls!r} must be a subclass of QuantizationConfigMixin"
            )
        _core.registry_add("config", method, config_cls)  # a key that has a config already: ValueError
        return config_cls

    return register


def register_quantizer(method: str):
    """Class decorator: register a quantizer class (a `DiffusersQuantizer` subclass) under `method`."""
    if not isinstance(method, str) or not method:
        raise TypeError(f"register_quantizer: method must be a non-empty str, got {method!r}")

    def register(quantizer_cls):
        if not (isinstance(quantizer_cls, type) and issubclass(quantizer_cls, DiffusersQuantizer)):
            raise TypeError(
                f"register_quantizer({method!r}): {quantizer_cls!r} must be a subclass of DiffusersQuantizer"
            )
        _core.registry_add("quantizer", method, quantizer_cls)  # a key that has a quantizer already: ValueError
        return quantizer_cls

    return register
