"""torchao quantizer."""
from __future__ import annotations

from .._core import TorchAoConfig
from .base import DiffusersQuantizer

__all__ = ["TorchAoHfQuantizer"]


class TorchAoHfQuantizer(DiffusersQuantizer):
    """Applies a torchao `AOBaseConfig` to each Linear layer (`torchao.quantize_`)."""

    config_class = TorchAoConfig
    required_packages = ["torch", "torchao"]
