"""Dispatch: from a config dict or object to the backend's quantizer.

The parsing, validation and the method rule run in Rust (`fastquant._core`); this module holds the run-time
registry (built-in and user-registered backends) and builds the quantizer object.
"""

from __future__ import annotations

from .. import _json
import os
import warnings
from typing import Any, Dict, Optional

from .. import _core
from .._core import (
    BitsAndBytesConfig,
    GGUFQuantizationConfig,
    NVIDIAModelOptConfig,
    QuantoConfig,
    TorchAoConfig,
)
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

#: method key -> quantizer class
AUTO_QUANTIZER_MAPPING: Dict[str, type] = {
    "bitsandbytes_4bit": BnB4BitDiffusersQuantizer,
    "bitsandbytes_8bit": BnB8BitDiffusersQuantizer,
    "gguf": GGUFQuantizer,
    "quanto": QuantoQuantizer,
    "torchao": TorchAoHfQuantizer,
    "modelopt": NVIDIAModelOptQuantizer,
}

#: method key -> config class
AUTO_QUANTIZATION_CONFIG_MAPPING: Dict[str, type] = {
    "bitsandbytes_4bit": BitsAndBytesConfig,
    "bitsandbytes_8bit": BitsAndBytesConfig,
    "gguf": GGUFQuantizationConfig,
    "quanto": QuantoConfig,
    "torchao": TorchAoConfig,
    "modelopt": NVIDIAModelOptConfig,
}

# Keep the Python table and the Rust registry in step (a wrong edit fails at import, not at dispatch).
assert [(k, c, q) for k, c, q in _core.builtin_methods()] == [
    (k, AUTO_QUANTIZATION_CONFIG_MAPPING[k].__name__, AUTO_QUANTIZER_MAPPING[k].__name__)
    for k in AUTO_QUANTIZER_MAPPING
]

# User-registered config classes -> their method key.
_REGISTERED_CONFIG_KEYS: Dict[type, str] = {}

_config_from_dict = _core.config_from_dict
_config_from_json = _core.config_from_json


def _available() -> list:
    return sorted(set(AUTO_QUANTIZER_MAPPING) & set(AUTO_QUANTIZATION_CONFIG_MAPPING))


def _method_key(config: Any) -> str:
    try:
        return config._method_key
    except AttributeError:
        pass
    key = _REGISTERED_CONFIG_KEYS.get(type(config))
    if key is not None:
        return key
    if isinstance(config, QuantizationConfigMixin):
        qm = getattr(config, "quant_method", None)
        if qm is not None:
            return str(getattr(qm, "value", qm))
        raise ValueError(f"{type(config).__name__} has no quant_method; cannot tell which quantizer it is for")
    raise TypeError(
        "quantization_config: expected a dict or a quantization config object "
        f"(BitsAndBytesConfig, GGUFQuantizationConfig, ...), got {type(config).__name__}"
    )


class DiffusersAutoQuantizer:
    """Picks the config class and quantizer for a quantization config (diffusers-compatible API)."""

    @classmethod
    def from_dict(cls, quantization_config_dict: dict):
        """Validate a config dict and return the config object of its method.

        `load_in_4bit` / `load_in_8bit` pick bitsandbytes 4-/8-bit and win over `quant_method`."""
        result = _config_from_dict(quantization_config_dict)
        if result.__class__ is not str:
            return result
        target = AUTO_QUANTIZATION_CONFIG_MAPPING.get(result)
        if target is None:
            raise _core.unknown_method_error(result, _available())
        return target.from_dict(quantization_config_dict)

    @classmethod
    def from_json_string(cls, text: str):
        """Like `from_dict`, from the JSON text of a config."""
        result = _config_from_json(text)
        if result.__class__ is not str:
            return result
        return cls.from_dict(_json.loads(text, "quantization config"))

    #: `from_config(quantization_config, **kwargs)`: return the quantizer for a config dict or object.
    #: Keyword arguments: `pre_quantized` (bool, default True) and `modules_to_not_convert` (list of module
    #: names, put before the config's own skip list). Anything else is a TypeError. Runs in Rust; configs of
    #: user-registered methods go through `_slow_from_config`.
    from_config = classmethod(_core.auto_from_config)

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
        model_cfg = quantization_config_from_model
        if isinstance(model_cfg, dict):
            model_cfg = cls.from_dict(model_cfg)
        args_cfg = quantization_config_from_args
        if args_cfg is not None:
            if isinstance(args_cfg, dict):
                args_cfg = cls.from_dict(args_cfg)
            _core.check_mergeable(_method_key(model_cfg), _method_key(args_cfg))
            if args_cfg != model_cfg:
                warnings.warn(
                    "The quantization_config passed in differs from the one stored with the model; the model's "
                    f"config is used: {model_cfg!r}",
                    UserWarning,
                    stacklevel=2,
                )
        return model_cfg


AutoQuantizer = DiffusersAutoQuantizer


def _slow_from_config(quantization_config, kwargs):
    """from_config for configs the Rust core does not know (user-registered methods)."""
    if isinstance(quantization_config, dict):
        quantization_config = DiffusersAutoQuantizer.from_dict(quantization_config)
    key = _method_key(quantization_config)
    target = AUTO_QUANTIZER_MAPPING.get(key)
    if target is None:
        raise _core.unknown_method_error(key, _available())
    return target(quantization_config, **kwargs)


_core._set_registry(AUTO_QUANTIZER_MAPPING, list(AUTO_QUANTIZER_MAPPING.values()), _slow_from_config)


def register_quantization_config(method: str):
    """Class decorator: register a config class (a `QuantizationConfigMixin` subclass) under `method`."""
    if not isinstance(method, str) or not method:
        raise TypeError(f"register_quantization_config: method must be a non-empty str, got {method!r}")

    def register(config_cls):
        if method in AUTO_QUANTIZATION_CONFIG_MAPPING:
            raise ValueError(f"a config is already registered for quant_method {method!r}")
        if not _is_config_class(config_cls):
            raise TypeError(
                f"register_quantization_config({method!r}): {config_cls!r} must be a subclass of QuantizationConfigMixin"
            )
        AUTO_QUANTIZATION_CONFIG_MAPPING[method] = config_cls
        _REGISTERED_CONFIG_KEYS[config_cls] = method
        return config_cls

    return register


def register_quantizer(method: str):
    """Class decorator: register a quantizer class (a `DiffusersQuantizer` subclass) under `method`."""
    if not isinstance(method, str) or not method:
        raise TypeError(f"register_quantizer: method must be a non-empty str, got {method!r}")

    def register(quantizer_cls):
        if method in AUTO_QUANTIZER_MAPPING:
            raise ValueError(f"a quantizer is already registered for quant_method {method!r}")
        if not (isinstance(quantizer_cls, type) and issubclass(quantizer_cls, DiffusersQuantizer)):
            raise TypeError(
                f"register_quantizer({method!r}): {quantizer_cls!r} must be a subclass of DiffusersQuantizer"
            )
        AUTO_QUANTIZER_MAPPING[method] = quantizer_cls
        return quantizer_cls

    return register
