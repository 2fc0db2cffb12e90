"""Type stubs for the Rust extension `fastquant._core`."""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np

_DType = Any  # a torch.dtype (or its name when torch is not installed)
_C = TypeVar("_C", bound="_ConfigBase")

__version__: str

class _ConfigBase:
    @property
    def quant_method(self) -> Any: ...
    @property
    def _method_key(self) -> str: ...
    @property
    def _skip_modules(self) -> Optional[List[str]]: ...
    @classmethod
    def from_dict(
        cls: Type[_C], config_dict: Mapping[str, Any], return_unused_kwargs: bool = ..., **kwargs: Any
    ) -> _C: ...
    @classmethod
    def from_json_string(cls: Type[_C], text: str) -> _C: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_json_string(self, use_diff: bool = ..., indent: Optional[int] = ...) -> str: ...
    def to_json_file(self, json_file_path: Any, use_diff: bool = ...) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...

class BitsAndBytesConfig(_ConfigBase):
    load_in_8bit: bool
    load_in_4bit: bool
    llm_int8_threshold: float
    llm_int8_skip_modules: Optional[List[str]]
    llm_int8_enable_fp32_cpu_offload: bool
    llm_int8_has_fp16_weight: bool
    bnb_4bit_compute_dtype: _DType
    bnb_4bit_quant_type: str
    bnb_4bit_use_double_quant: bool
    bnb_4bit_quant_storage: _DType
    def __init__(
        self,
        load_in_8bit: bool = ...,
        load_in_4bit: bool = ...,
        llm_int8_threshold: float = ...,
        llm_int8_skip_modules: Optional[Sequence[str]] = ...,
        llm_int8_enable_fp32_cpu_offload: bool = ...,
        llm_int8_has_fp16_weight: bool = ...,
        bnb_4bit_compute_dtype: Union[_DType, str, None] = ...,
        bnb_4bit_quant_type: str = ...,
        bnb_4bit_use_double_quant: bool = ...,
        bnb_4bit_quant_storage: Union[_DType, str, None] = ...,
        **kwargs: Any,
    ) -> None: ...
    def is_quantizable(self) -> bool: ...
    def quantization_method(self) -> str: ...

class GGUFQuantizationConfig(_ConfigBase):
    compute_dtype: _DType
    pre_quantized: bool
    modules_to_not_convert: Optional[List[str]]
    def __init__(
        self,
        compute_dtype: Union[_DType, str, None] = ...,
        modules_to_not_convert: Optional[Sequence[str]] = ...,
        **kwargs: Any,
    ) -> None: ...

class QuantoConfig(_ConfigBase):
    weights_dtype: str
    modules_to_not_convert: Optional[List[str]]
    def __init__(
        self, weights_dtype: str = ..., modules_to_not_convert: Optional[Sequence[str]] = ..., **kwargs: Any
    ) -> None: ...

class TorchAoConfig(_ConfigBase):
    quant_type: Union[str, Dict[str, Any]]
    quant_type_kwargs: Dict[str, Any]
    modules_to_not_convert: Optional[List[str]]
    @property
    def quant_type_name(self) -> str: ...
    def __init__(
        self, quant_type: Any, modules_to_not_convert: Optional[Sequence[str]] = ..., **kwargs: Any
    ) -> None: ...
    def _resolved_quant_type(self) -> Dict[str, Any]: ...

class NVIDIAModelOptConfig(_ConfigBase):
    quant_type: str
    modules_to_not_convert: Optional[List[str]]
    weight_only: bool
    channel_quantize: Optional[int]
    block_quantize: Optional[int]
    scale_channel_quantize: Optional[int]
    scale_block_quantize: Optional[int]
    algorithm: str
    forward_loop: Optional[Callable[[Any], Any]]
    modelopt_config: Optional[Dict[Any, Any]]
    disable_conv_quantization: bool
    def __init__(
        self,
        quant_type: str,
        modules_to_not_convert: Optional[Sequence[str]] = ...,
        weight_only: bool = ...,
        channel_quantize: Optional[int] = ...,
        block_quantize: Optional[int] = ...,
        scale_channel_quantize: Optional[int] = ...,
        scale_block_quantize: Optional[int] = ...,
        algorithm: str = ...,
        forward_loop: Optional[Callable[[Any], Any]] = ...,
        modelopt_config: Optional[Dict[Any, Any]] = ...,
        disable_conv_quantization: bool = ...,
        **kwargs: Any,
    ) -> None: ...

# The dispatcher (fastquant_core::registry) and its run-time registry
def config_from_dict(config_dict: Mapping[str, Any]) -> Any: ...
def config_from_json(text: str) -> Any: ...
def auto_from_config(cls: Any, quantization_config: Any, **kwargs: Any) -> Any: ...
def quantizer_init(quantizer: Any, quantization_config: Any, kwargs: Optional[Dict[str, Any]] = ...) -> None: ...
def method_key(config: Any) -> str: ...
def check_mergeable(model_key: str, args_key: str) -> None: ...
def registry_add(kind: str, key: str, cls: type, replace: bool = ...) -> None: ...
def registry_remove(kind: str, key: str) -> Optional[type]: ...
def registry_items(kind: str) -> List[Tuple[str, type]]: ...
def _set_method_enum(enum_type: Any) -> None: ...
def _set_registry(builtin_quantizers: List[type], mixin: type) -> None: ...

# GGUF block formats
def ggml_type_info(key: Any) -> Tuple[int, str, int, int, bool]: ...
def dequantize_into(
    data: Any, ggml_type: int, out: Any, kind: str, threads: Optional[int] = ..., path: str = ..., stores: str = ...
) -> None: ...
def quantize(src: np.ndarray, ggml_type: int, threads: Optional[int] = ...) -> np.ndarray: ...
def simd_path() -> str: ...

#: The IQ4_NL / IQ4_XS codebook (16 signed values), as the core defines it.
KVALUES_IQ4NL: List[int]
#: The MXFP4 / NVFP4 E2M1 code values, doubled (16 signed values), as the core defines them.
KVALUES_FP4: List[int]

def linear_fused(
    x: np.ndarray, w: np.ndarray, ggml_type: int, n: int, k: int, out: np.ndarray, threads: Optional[int] = ...
) -> None: ...
