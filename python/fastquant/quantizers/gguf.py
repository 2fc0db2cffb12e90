"""GGUF quantizer: weights that arrive packed in a `.gguf` file, kept packed in torch layers."""
from __future__ import annotations

from .._core import GGUFQuantizationConfig
from .base import DiffusersQuantizer

__all__ = ["GGUFQuantizer"]


class GGUFQuantizer(DiffusersQuantizer):
    """Loads pre-quantized GGUF weights (fastquant reads GGUF natively; gguf-py is not needed)."""

    config_class = GGUFQuantizationConfig
    requires_pre_quantized = True
    required_packages = ["torch"]

    @property
    def compute_dtype(self):
        return self.quantization_config.compute_dtype
