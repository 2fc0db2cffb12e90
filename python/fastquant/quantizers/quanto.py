"""optimum-quanto quantizer."""
from __future__ import annotations

from .._core import QuantoConfig
from .base import DiffusersQuantizer

__all__ = ["QuantoQuantizer"]


class QuantoQuantizer(DiffusersQuantizer):
    """Swaps `nn.Linear` for `optimum.quanto.QLinear` with float8/int8/int4/int2 weights, then freezes."""

    config_class = QuantoConfig
    required_packages = ["torch", "optimum-quanto"]
