"""NVIDIA ModelOpt quantizer."""
from __future__ import annotations

from .._core import NVIDIAModelOptConfig
from .base import DiffusersQuantizer

__all__ = ["NVIDIAModelOptQuantizer"]


class NVIDIAModelOptQuantizer(DiffusersQuantizer):
    """Quantizes with nvidia-modelopt (`mtq.quantize` with a calibration `forward_loop`)."""

    config_class = NVIDIAModelOptConfig
    required_packages = ["torch", "nvidia-modelopt"]
