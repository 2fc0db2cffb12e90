"""GGUF quantizer: weights that arrive packed in a `.gguf` file, kept packed in torch layers.

The packed layers and the loader live in `fastquant.gguf` (`load_into`); the hooks here delegate to it."""

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

    def validate_environment(self, *args, **kwargs):
        super().validate_environment(*args, **kwargs)
        if not self.pre_quantized:
            raise ValueError(
                "GGUF loads pre-quantized weights only; to quantize a float model to GGUF use fastquant.gguf"
            )

    def update_torch_dtype(self, torch_dtype):
        return self.compute_dtype if torch_dtype is None else torch_dtype

    def load_gguf(self, model, path, **kwargs):
        """Load the packed weights of the `.gguf` file at `path` into `model` (fastquant.gguf.load_into), with this
        quantizer's compute dtype and skip list."""
        kwargs.setdefault("dtype", self.compute_dtype)
        kwargs.setdefault("modules_to_not_convert", list(self.skip_modules))
        from ..gguf import load_into

        return load_into(model, path, **kwargs)

    def _dequantize(self, model):
        """Packed GGUF layers back to plain `nn.Linear`/`nn.Embedding`, holding the exact dequantized weights in
        the config's compute dtype."""
        from ..gguf import dequantize_model

        return dequantize_model(model, self.compute_dtype)

    @property
    def is_serializable(self):
        return False

    @property
    def is_trainable(self):
        return False

    @property
    def is_compileable(self):
        return True
