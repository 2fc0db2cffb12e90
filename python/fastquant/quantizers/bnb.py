"""bitsandbytes quantizers (4-bit fp4/nf4 and 8-bit LLM.int8)."""
from __future__ import annotations

from .._core import BitsAndBytesConfig
from .base import DiffusersQuantizer

__all__ = ["BnB4BitDiffusersQuantizer", "BnB8BitDiffusersQuantizer"]


class BnB4BitDiffusersQuantizer(DiffusersQuantizer):
    """Swaps `nn.Linear` for `bitsandbytes.nn.Linear4bit` (fp4/nf4, optional double quantization)."""

    config_class = BitsAndBytesConfig
    required_packages = ["torch", "bitsandbytes"]


class BnB8BitDiffusersQuantizer(DiffusersQuantizer):
    """Swaps `nn.Linear` for `bitsandbytes.nn.Linear8bitLt` (LLM.int8 with outlier threshold)."""

    config_class = BitsAndBytesConfig
    required_packages = ["torch", "bitsandbytes"]
