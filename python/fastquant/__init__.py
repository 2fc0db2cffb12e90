"""fastquant: fast, strict model quantization with a Rust core."""
from . import _core

__version__ = _core.__version__
