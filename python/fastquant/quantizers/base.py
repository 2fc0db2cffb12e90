"""`DiffusersQuantizer`: the base of every quantizer (the hook protocol loaders call)."""
from __future__ import annotations

from typing import Any, List

from .. import _core

__all__ = ["DiffusersQuantizer"]


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
        # Validation lives in Rust (shared with the dispatcher's fast path): the config must be an instance of
        # `config_class`; only `pre_quantized` (bool) and `modules_to_not_convert` (list of str) are accepted.
        _core.quantizer_init(self, quantization_config, kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(quantization_config={self.quantization_config!r}, "
            f"pre_quantized={self.pre_quantized}, modules_to_not_convert={self.modules_to_not_convert!r})"
        )
