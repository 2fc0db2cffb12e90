"""Quantizers and dispatch."""

from .auto import (
    AUTO_QUANTIZATION_CONFIG_MAPPING,
    AUTO_QUANTIZER_MAPPING,
    AutoQuantizer,
    DiffusersAutoQuantizer,
    register_quantization_config,
    register_quantizer,
)
from .base import DiffusersQuantizer
from .bnb import BnB4BitDiffusersQuantizer, BnB8BitDiffusersQuantizer
from .gguf import GGUFQuantizer
from .modelopt import NVIDIAModelOptQuantizer
from .quanto import QuantoQuantizer
from .torchao import TorchAoHfQuantizer

__all__ = [
    "AUTO_QUANTIZATION_CONFIG_MAPPING",
    "AUTO_QUANTIZER_MAPPING",
    "AutoQuantizer",
    "DiffusersAutoQuantizer",
    "DiffusersQuantizer",
    "register_quantization_config",
    "register_quantizer",
    "BnB4BitDiffusersQuantizer",
    "BnB8BitDiffusersQuantizer",
    "GGUFQuantizer",
    "NVIDIAModelOptQuantizer",
    "QuantoQuantizer",
    "TorchAoHfQuantizer",
]
