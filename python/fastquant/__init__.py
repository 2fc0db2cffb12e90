"""fastquant: fast, strict model quantization for the Hugging Face / PyTorch ecosystem, with a Rust core.

`import fastquant` imports neither torch nor any backend package; they load when first needed.
"""

from typing import TYPE_CHECKING

from . import _core
from .errors import ConfigError, ConfigTypeError
from .quantization_config import (
    BitsAndBytesConfig,
    GGUFQuantizationConfig,
    NVIDIAModelOptConfig,
    QuantizationConfigMixin,
    QuantizationMethod,
    QuantoConfig,
    TorchAoConfig,
)
from .quantizers import (
    AUTO_QUANTIZATION_CONFIG_MAPPING,
    AUTO_QUANTIZER_MAPPING,
    AutoQuantizer,
    BnB4BitDiffusersQuantizer,
    BnB8BitDiffusersQuantizer,
    DiffusersAutoQuantizer,
    DiffusersQuantizer,
    GGUFQuantizer,
    NVIDIAModelOptQuantizer,
    QuantoQuantizer,
    TorchAoHfQuantizer,
    register_quantization_config,
    register_quantizer,
)

if TYPE_CHECKING:
    # The names that load on first use (see `_LAZY` and `__getattr__` below), spelled out for type checkers;
    # nothing here runs.
    from . import gguf as gguf
    from .api import dequantize, load_quantized, quantize, save_quantized
    from .hf._load import from_pretrained
    from .hf._save import save_pretrained
    from .quantizers._utils import BackendImportError

__version__ = _core.__version__

__all__ = [
    "__version__",
    "ConfigError",
    "ConfigTypeError",
    "QuantizationMethod",
    "QuantizationConfigMixin",
    "BitsAndBytesConfig",
    "GGUFQuantizationConfig",
    "QuantoConfig",
    "TorchAoConfig",
    "NVIDIAModelOptConfig",
    "DiffusersAutoQuantizer",
    "AutoQuantizer",
    "AUTO_QUANTIZER_MAPPING",
    "AUTO_QUANTIZATION_CONFIG_MAPPING",
    "register_quantization_config",
    "register_quantizer",
    "DiffusersQuantizer",
    "BnB4BitDiffusersQuantizer",
    "BnB8BitDiffusersQuantizer",
    "GGUFQuantizer",
    "QuantoQuantizer",
    "TorchAoHfQuantizer",
    "NVIDIAModelOptQuantizer",
    "quantize",
    "save_quantized",
    "load_quantized",
    "dequantize",
    "from_pretrained",
    "save_pretrained",
    "BackendImportError",
]

# High-level functions load on first use (they import torch and the backend packages only when called).
_LAZY = {
    "quantize": ("api", "quantize"),
    "save_quantized": ("api", "save_quantized"),
    "load_quantized": ("api", "load_quantized"),
    "dequantize": ("api", "dequantize"),
    "from_pretrained": ("hf", "from_pretrained"),
    "save_pretrained": ("hf", "save_pretrained"),
    "BackendImportError": ("quantizers._utils", "BackendImportError"),
}


if not TYPE_CHECKING:
    # Hidden from type checkers, so that a misspelt name is an error there rather than Any.
    def __getattr__(name):
        # Submodules that pull in numpy/torch load on first use.
        if name == "gguf":
            import importlib

            return importlib.import_module(".gguf", __name__)
        target = _LAZY.get(name)
        if target is not None:
            import importlib

            value = getattr(importlib.import_module("." + target[0], __name__), target[1])
            globals()[name] = value
            return value
        raise AttributeError(f"module 'fastquant' has no attribute {name!r}")
