"""Type stubs for the Rust extension `fastquant._core` (rust/fastquant-py).

Checked against the built extension by `mypy.stubtest` (scripts/lint.sh), with no allowlist: every name, signature
and default here is the binding's.
"""

import os
import sys
from typing import Any, Callable, Dict, Final, List, Literal, Mapping, Optional, Sequence, Tuple, Union, final, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import Self, TypeAlias, disjoint_base

from fastquant.quantization_config import QuantizationConfigMixin, QuantizationMethod
from fastquant.quantizers.base import DiffusersQuantizer

# A torch.dtype when torch can be imported, else the dtype's name ("bfloat16"). Any rather than torch.dtype: torch
# is an optional dependency, and naming it here would make every check of this stub analyse all of torch.
_DType: TypeAlias = Any
# What the config constructors accept for a dtype: a torch.dtype, its name ("bfloat16" or "torch.bfloat16"), or None
# for the default.
_DTypeArg: TypeAlias = Union[_DType, str, None]
# A user's config: a built-in one or an instance of a QuantizationConfigMixin subclass.
_AnyConfig: TypeAlias = Union["_ConfigBase", QuantizationConfigMixin]
# A GGUF metadata value as Python sees it (arrays as lists).
_MetaValue: TypeAlias = Union[int, float, bool, str, List["_MetaValue"]]
# One tensor of a GGUF file: (name, type name, type id, ne, n_elements, nbytes or None, absolute offset).
_TensorInfo: TypeAlias = Tuple[str, str, int, Tuple[int, ...], int, Optional[int], int]
_RegistryKind: TypeAlias = Literal["config", "quantizer"]
_Path: TypeAlias = Literal["auto", "scalar", "avx2", "avx512", "neon"]
_Kind: TypeAlias = Literal["float32", "float16", "bfloat16"]

__version__: str
__all__ = [
    "__version__",
    "BitsAndBytesConfig",
    "GGUFQuantizationConfig",
    "QuantoConfig",
    "TorchAoConfig",
    "NVIDIAModelOptConfig",
    "_set_method_enum",
    "_set_registry",
    "registry_add",
    "registry_remove",
    "registry_items",
    "config_from_dict",
    "config_from_json",
    "method_key",
    "check_mergeable",
    "quantizer_init",
    "auto_from_config",
    "GGUFError",
    "_GGUFReader",
    "_RawBuffer",
    "_write_gguf",
    "_ggml_types",
    "GGUF_MAX_ARRAY_DEPTH",
    "GGUF_MAX_ALIGNMENT",
    "ggml_type_info",
    "dequantize_into",
    "quantize_blocks",
    "simd_path",
    "linear_fused",
    "KVALUES_IQ4NL",
    "KVALUES_FP4",
]

# ---------------------------------------------------------------------------------------------------------------
# Config classes. Not a class at run time: the methods every config class has (a pyo3 class cannot share a base).

class _ConfigBase:
    @property
    def quant_method(self) -> QuantizationMethod: ...
    @property
    def _method_key(self) -> str: ...
    @property
    def _skip_modules(self) -> Optional[List[str]]: ...
    @overload
    @classmethod
    def from_dict(
        cls, config_dict: Dict[str, Any], return_unused_kwargs: Literal[False] = False, **kwargs: Any
    ) -> Self: ...
    @overload
    @classmethod
    def from_dict(
        cls, config_dict: Dict[str, Any], return_unused_kwargs: Literal[True], **kwargs: Any
    ) -> Tuple[Self, Dict[str, Any]]: ...
    @classmethod
    def from_json_string(cls, text: str) -> Self: ...
    @classmethod
    def from_library(cls, config: object) -> Self: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_json_string(self, use_diff: bool = True, indent: Optional[int] = 2) -> str: ...
    def to_json_file(self, json_file_path: Union[str, os.PathLike[str]], use_diff: bool = True) -> None: ...
    # The library's own config object (transformers' / diffusers' classes); Any: both libraries are optional.
    def to_transformers(self, *, modules_to_not_convert: Optional[Sequence[str]] = None) -> Any: ...
    def to_diffusers(self, *, modules_to_not_convert: Optional[Sequence[str]] = None) -> Any: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __copy__(self) -> Self: ...
    def __deepcopy__(self, _memo: object, /) -> Self: ...
    def __dir__(self) -> List[str]: ...

@disjoint_base
class BitsAndBytesConfig(_ConfigBase):
    @property
    def load_in_8bit(self) -> bool: ...
    @property
    def load_in_4bit(self) -> bool: ...
    @property
    def llm_int8_threshold(self) -> float: ...
    @property
    def llm_int8_skip_modules(self) -> Optional[List[str]]: ...
    @property
    def llm_int8_enable_fp32_cpu_offload(self) -> bool: ...
    @property
    def llm_int8_has_fp16_weight(self) -> bool: ...
    @property
    def bnb_4bit_compute_dtype(self) -> _DType: ...
    @property
    def bnb_4bit_quant_type(self) -> str: ...
    @property
    def bnb_4bit_use_double_quant(self) -> bool: ...
    @property
    def bnb_4bit_quant_storage(self) -> _DType: ...
    def __new__(
        cls,
        load_in_8bit: bool = False,
        load_in_4bit: bool = False,
        llm_int8_threshold: float = 6.0,
        llm_int8_skip_modules: Optional[Sequence[str]] = None,
        llm_int8_enable_fp32_cpu_offload: bool = False,
        llm_int8_has_fp16_weight: bool = False,
        bnb_4bit_compute_dtype: _DTypeArg = None,
        bnb_4bit_quant_type: Literal["fp4", "nf4"] = "fp4",
        bnb_4bit_use_double_quant: bool = False,
        bnb_4bit_quant_storage: _DTypeArg = None,
        **kwargs: Any,
    ) -> Self: ...
    def is_quantizable(self) -> bool: ...
    def quantization_method(self) -> Literal["llm_int8", "fp4", "nf4"]: ...

@disjoint_base
class GGUFQuantizationConfig(_ConfigBase):
    @property
    def compute_dtype(self) -> _DType: ...
    @property
    def pre_quantized(self) -> bool: ...
    @property
    def modules_to_not_convert(self) -> Optional[List[str]]: ...
    def __new__(
        cls, compute_dtype: _DTypeArg = None, modules_to_not_convert: Optional[Sequence[str]] = None, **kwargs: Any
    ) -> Self: ...

@disjoint_base
class QuantoConfig(_ConfigBase):
    @property
    def weights_dtype(self) -> str: ...
    @property
    def modules_to_not_convert(self) -> Optional[List[str]]: ...
    def __new__(
        cls,
        weights_dtype: Literal["float8", "int8", "int4", "int2"] = "int8",
        modules_to_not_convert: Optional[Sequence[str]] = None,
        **kwargs: Any,
    ) -> Self: ...

@disjoint_base
class TorchAoConfig(_ConfigBase):
    @property
    def quant_type(self) -> Union[str, Dict[str, Any]]: ...
    @property
    def quant_type_kwargs(self) -> Dict[str, Any]: ...
    @property
    def modules_to_not_convert(self) -> Optional[List[str]]: ...
    @property
    def quant_type_name(self) -> str: ...
    # quant_type: a shorthand ("int8wo"), a serialized AOBaseConfig dict, or a live torchao config object.
    def __new__(
        cls, quant_type: object, modules_to_not_convert: Optional[Sequence[str]] = None, **kwargs: Any
    ) -> Self: ...
    def _resolved_quant_type(self) -> Dict[str, Any]: ...

@disjoint_base
class NVIDIAModelOptConfig(_ConfigBase):
    @property
    def quant_type(self) -> str: ...
    @property
    def modules_to_not_convert(self) -> Optional[List[str]]: ...
    @property
    def weight_only(self) -> bool: ...
    @property
    def channel_quantize(self) -> Optional[int]: ...
    @property
    def block_quantize(self) -> Optional[int]: ...
    @property
    def scale_channel_quantize(self) -> Optional[int]: ...
    @property
    def scale_block_quantize(self) -> Optional[int]: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def forward_loop(self) -> Optional[Callable[[Any], object]]: ...
    @property
    def modelopt_config(self) -> Optional[Dict[Any, Any]]: ...
    @property
    def disable_conv_quantization(self) -> bool: ...
    def __new__(
        cls,
        quant_type: str,
        modules_to_not_convert: Optional[Sequence[str]] = None,
        weight_only: bool = True,
        channel_quantize: Optional[int] = None,
        block_quantize: Optional[int] = None,
        scale_channel_quantize: Optional[int] = None,
        scale_block_quantize: Optional[int] = None,
        algorithm: str = "max",
        forward_loop: Optional[Callable[[Any], object]] = None,
        modelopt_config: Optional[Mapping[Any, Any]] = None,
        disable_conv_quantization: bool = False,
        **kwargs: Any,
    ) -> Self: ...

def _set_method_enum(enum_type: Callable[[str], QuantizationMethod]) -> None: ...

# ---------------------------------------------------------------------------------------------------------------
# The dispatcher (fastquant_core::registry) and its run-time registry

def config_from_dict(config_dict: Dict[str, Any]) -> _AnyConfig: ...
def config_from_json(text: str) -> _AnyConfig: ...
def auto_from_config(
    _cls: object, quantization_config: Union[Dict[str, Any], _AnyConfig], **kwargs: Any
) -> DiffusersQuantizer: ...
def quantizer_init(
    quantizer: DiffusersQuantizer, quantization_config: _AnyConfig, kwargs: Optional[Dict[str, Any]] = None
) -> None: ...
def method_key(config: _AnyConfig) -> str: ...
def check_mergeable(model_key: str, args_key: str) -> None: ...
def registry_add(kind: _RegistryKind, key: str, cls: type, replace: bool = False) -> None: ...
def registry_remove(kind: _RegistryKind, key: str) -> Optional[type]: ...
def registry_items(kind: _RegistryKind) -> List[Tuple[str, type]]: ...
def _set_registry(builtin_quantizers: Sequence[type[DiffusersQuantizer]], mixin: type) -> None: ...

# ---------------------------------------------------------------------------------------------------------------
# GGUF files

class GGUFError(ValueError):
    """A malformed or unsupported GGUF file; `offset` is the byte offset and `field` the field read, when known."""

    offset: Optional[int]
    field: Optional[str]

GGUF_MAX_ARRAY_DEPTH: Final[int]
GGUF_MAX_ALIGNMENT: Final[int]

@final
class _GGUFReader:
    def __new__(cls, path: Union[str, os.PathLike[str]]) -> Self: ...
    @staticmethod
    def from_bytes(data: Sequence[int]) -> _GGUFReader: ...
    @property
    def version(self) -> int: ...
    @property
    def alignment(self) -> int: ...
    @property
    def data_offset(self) -> int: ...
    @property
    def file_size(self) -> int: ...
    def keys(self) -> List[str]: ...
    def value(self, key: str) -> _MetaValue: ...
    def value_type(self, key: str) -> str: ...
    def key_offset(self, key: str) -> int: ...
    def array_info(self, key: str) -> Optional[Tuple[str, int]]: ...
    def array_bytes(self, key: str) -> Optional[bytes]: ...
    def array_item(self, key: str, i: int) -> _MetaValue: ...
    def tensor_infos(self) -> List[_TensorInfo]: ...
    def raw(self, name: str) -> _RawBuffer: ...

@final
class _RawBuffer:
    """Read-only bytes of one tensor (the buffer protocol); keeps the file's mapping alive."""

    def __len__(self) -> int: ...
    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int, /) -> memoryview: ...
        def __release_buffer__(self, buffer: memoryview, /) -> None: ...

def _write_gguf(
    path: Union[str, os.PathLike[str]],
    kvs: Sequence[Tuple[str, str, object]],
    tensors: Sequence[Tuple[str, str, Sequence[int], npt.NDArray[np.uint8]]],
) -> int: ...
def _ggml_types() -> Dict[str, Tuple[int, int, int]]: ...

# ---------------------------------------------------------------------------------------------------------------
# GGUF block formats (`quantize_blocks` packs float32 values into ggml blocks; `fastquant.quantize` quantizes a model)

def ggml_type_info(key: Union[int, str]) -> Tuple[int, str, int, int, bool]: ...
def dequantize_into(
    data: npt.NDArray[np.uint8],
    ggml_type: int,
    out: Union[npt.NDArray[np.float32], npt.NDArray[np.uint16]],
    kind: _Kind,
    threads: Optional[int] = None,
    path: _Path = "auto",
    stores: Literal["auto", "regular", "streaming"] = "auto",
) -> None: ...
def quantize_blocks(
    src: npt.NDArray[np.float32], ggml_type: int, threads: Optional[int] = None
) -> npt.NDArray[np.uint8]: ...
def simd_path() -> Literal["avx512", "avx2", "neon", "scalar"]: ...
def linear_fused(
    x: Union[npt.NDArray[np.float32], npt.NDArray[np.uint16]],
    w: npt.NDArray[np.uint8],
    ggml_type: int,
    n: int,
    k: int,
    out: Union[npt.NDArray[np.float32], npt.NDArray[np.uint16]],
    threads: Optional[int] = None,
    path: _Path = "auto",
    kind: _Kind = "float32",
) -> None: ...

#: The IQ4_NL / IQ4_XS codebook (16 signed values), as the core defines it.
KVALUES_IQ4NL: List[int]
#: The MXFP4 / NVFP4 E2M1 code values, doubled (16 signed values), as the core defines them.
KVALUES_FP4: List[int]
