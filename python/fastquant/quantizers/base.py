"""`DiffusersQuantizer`: the base of every quantizer (the hook protocol loaders call)."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

__all__ = ["DiffusersQuantizer"]


def _check_module_list(value: Any, what: str) -> Optional[List[str]]:
    """A fresh list of module names from None / list / tuple of str; anything else is a TypeError."""
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"{what}: expected a list of module names, got the str {value!r}; write [{value!r}]")
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what}: expected a list of str or None, got {value!r} ({type(value).__name__})")
    out = list(value)
    for i, name in enumerate(out):
        if not isinstance(name, str):
            raise TypeError(f"{what}[{i}]: expected a str (a module name), got {name!r} ({type(name).__name__})")
    return out


def _union(first: Optional[Sequence[str]], second: Optional[Sequence[str]]) -> List[str]:
    out: List[str] = []
    for names in (first, second):
        if names:
            for n in names:
                if n not in out:
                    out.append(n)
    return out


class DiffusersQuantizer:
    """Base quantizer. Built by `DiffusersAutoQuantizer.from_config(config, pre_quantized=..., modules_to_not_convert=...)`.

    Attributes:
        quantization_config: the (immutable) config.
        pre_quantized: whether the weights being loaded are already quantized.
        modules_to_not_convert: a list owned by this quantizer: the `modules_to_not_convert` passed in, then the
            config's own skip list. Neither the caller's list nor the config is ever modified.
        required_packages: pip package names the backend needs at quantization time.
    """

    #: Whether the method can only load pre-quantized weights (needs calibration to quantize).
    requires_calibration: bool = False
    #: Whether the method can only load pre-quantized weights (GGUF).
    requires_pre_quantized: bool = False
    required_packages: List[str] = []
    use_keep_in_fp32_modules: bool = True

    #: The config class this quantizer accepts (set by subclasses).
    config_class: Any = None

    def __init__(self, quantization_config, **kwargs):
        pre_quantized = kwargs.pop("pre_quantized", True)
        modules = kwargs.pop("modules_to_not_convert", None)
        if kwargs:
            names = ", ".join(sorted(kwargs))
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {names}; "
                "accepted: pre_quantized, modules_to_not_convert"
            )
        cc = self.config_class
        if cc is not None and not isinstance(quantization_config, cc):
            raise TypeError(
                f"{type(self).__name__} needs a {cc.__name__}, got {type(quantization_config).__name__}"
            )
        if pre_quantized.__class__ is not bool:
            raise TypeError(f"pre_quantized: expected a bool, got {pre_quantized!r} ({type(pre_quantized).__name__})")
        if not pre_quantized and (self.requires_calibration or self.requires_pre_quantized):
            raise ValueError(
                f"{type(self).__name__} loads pre-quantized weights only; pre_quantized=False is not supported"
            )
        self.quantization_config = quantization_config
        self.pre_quantized = pre_quantized
        self.modules_to_not_convert = _union(
            _check_module_list(modules, "modules_to_not_convert"),
            getattr(quantization_config, "_skip_modules", None),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(quantization_config={self.quantization_config!r}, "
            f"pre_quantized={self.pre_quantized}, modules_to_not_convert={self.modules_to_not_convert!r})"
        )
