"""Quantization config classes.

The five built-in classes (`BitsAndBytesConfig`, `GGUFQuantizationConfig`, `QuantoConfig`, `TorchAoConfig`,
`NVIDIAModelOptConfig`) are implemented in Rust: they are immutable values, validated when built, compared by
every field, and round-trip losslessly through `to_dict()` / `from_dict()` and `to_json_string()` /
`from_json_string()`. `QuantizationConfigMixin` is the base for configs that users register themselves.
"""

from __future__ import annotations

import abc
import copy
import enum
import json
from typing import Any

from . import _core
from ._core import (
    BitsAndBytesConfig,
    GGUFQuantizationConfig,
    NVIDIAModelOptConfig,
    QuantoConfig,
    TorchAoConfig,
)

__all__ = [
    "QuantizationMethod",
    "QuantizationConfigMixin",
    "BitsAndBytesConfig",
    "GGUFQuantizationConfig",
    "QuantoConfig",
    "TorchAoConfig",
    "NVIDIAModelOptConfig",
]


class QuantizationMethod(str, enum.Enum):
    """The `quant_method` values of the built-in config classes (a `str` enum, as in diffusers)."""

    BITS_AND_BYTES = "bitsandbytes"
    GGUF = "gguf"
    TORCHAO = "torchao"
    QUANTO = "quanto"
    MODELOPT = "modelopt"

    def __str__(self) -> str:  # print the value, not "QuantizationMethod.GGUF"
        return self.value


_core._set_method_enum(QuantizationMethod)


class QuantizationConfigMixin(metaclass=abc.ABCMeta):
    """Base class for user-defined configs registered with `register_quantization_config`.

    The built-in configs count as subclasses (``isinstance(BitsAndBytesConfig(load_in_4bit=True),
    QuantizationConfigMixin)`` is True). A subclass stores its fields as instance attributes; the defaults
    below give it value semantics over all of them.
    """

    quant_method: Any = None

    @classmethod
    def from_dict(cls, config_dict: dict, return_unused_kwargs: bool = False, **kwargs):
        if not isinstance(config_dict, dict):
            raise TypeError(f"{cls.__name__}.from_dict: expected a dict, got {type(config_dict).__name__}")
        merged = {k: v for k, v in config_dict.items() if k != "quant_method"}
        merged.update(kwargs)
        config = cls(**copy.deepcopy(merged))
        return (config, {}) if return_unused_kwargs else config

    def to_dict(self) -> dict:
        out = copy.deepcopy(self.__dict__)
        qm = getattr(self, "quant_method", None)
        if qm is not None:
            out["quant_method"] = str(qm.value if isinstance(qm, enum.Enum) else qm)
        return out

    def to_json_string(self, use_diff: bool = True, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, default=str) + "\n"

    def to_json_file(self, json_file_path, use_diff: bool = True) -> None:
        with open(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string(use_diff))

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({fields})"


_BUILTIN_CONFIGS = (BitsAndBytesConfig, GGUFQuantizationConfig, QuantoConfig, TorchAoConfig, NVIDIAModelOptConfig)


def _to_transformers(self, *, modules_to_not_convert=None):
    """transformers' own config object for this config (`transformers.BitsAndBytesConfig`, `TorchAoConfig`,
    `QuantoConfig`), for `transformers` `from_pretrained(quantization_config=...)`; see docs/saving.md."""
    from .hf._configs import to_transformers

    return to_transformers(self, modules_to_not_convert=modules_to_not_convert)


def _to_diffusers(self, *, modules_to_not_convert=None):
    """diffusers' own config object for this config, for diffusers `from_pretrained(quantization_config=...)` and
    `PipelineQuantizationConfig(quant_mapping=...)`; see docs/saving.md."""
    from .hf._configs import to_diffusers

    return to_diffusers(self, modules_to_not_convert=modules_to_not_convert)


def _from_library(cls, config):
    """This class's config for a transformers or diffusers quantization config object (or a fastquant one)."""
    from .hf._configs import from_library, is_library_config

    out = from_library(config) if is_library_config(config) else config
    if not isinstance(out, cls):
        raise TypeError(f"{cls.__name__}.from_library: got a {type(out).__name__} config, not a {cls.__name__}")
    return out


# The Rust classes cannot inherit from a Python class; register them so that isinstance/issubclass see them.
# The conversions to and from the libraries' config classes are Python methods added to them (lazy imports).
for _cls in _BUILTIN_CONFIGS:
    QuantizationConfigMixin.register(_cls)
    _cls.to_transformers = _to_transformers
    _cls.to_diffusers = _to_diffusers
    _cls.from_library = classmethod(_from_library)
del _cls


def _is_config_class(cls) -> bool:
    """True for the built-in config classes and subclasses of QuantizationConfigMixin."""
    return isinstance(cls, type) and issubclass(cls, QuantizationConfigMixin)
