"""`DiffusersQuantizer`: the base of every quantizer (the hook protocol loaders call).

Hook names and call order follow diffusers' `DiffusersQuantizer` (see docs/compatibility.md): a loader calls
`validate_environment` -> `update_torch_dtype` -> `update_device_map` -> `preprocess_model` (module swap on a meta
or real model) -> per tensor `check_if_quantized_param` / `create_quantized_param` -> `postprocess_model`.
`fastquant.quantize` runs the same hooks on a model that already holds its float weights.

Per-instance state is computed lazily: the built-in quantizers are constructed without running `__init__`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .. import _core
from ._utils import clear_model_quantized, matches_skip, require

__all__ = ["DiffusersQuantizer"]


class DiffusersQuantizer:
    """Base quantizer. Built by `DiffusersAutoQuantizer.from_config(config, pre_quantized=..., modules_to_not_convert=...)`.

    Attributes:
        quantization_config: the (immutable) config.
        pre_quantized: whether the weights being loaded are already quantized.
        modules_to_not_convert: a list owned by this quantizer: the `modules_to_not_convert` passed in, then the
            config's own skip list. Neither the caller's list nor the config is ever modified.
        required_packages: pip package names the backend needs at quantization time.
    """

    #: Whether the method can only load pre-quantized weights (needs calibration to quantize).
    requires_calibration: bool = False
    #: Whether the method can only load pre-quantized weights (GGUF).
    requires_pre_quantized: bool = False
    required_packages: List[str] = []
    use_keep_in_fp32_modules: bool = True

    #: The config class this quantizer accepts (set by subclasses).
    config_class: Any = None

    def __init__(self, quantization_config, **kwargs):
        # Validation lives in Rust (shared with the dispatcher's fast path): the config must be an instance of
        # `config_class`; only `pre_quantized` (bool) and `modules_to_not_convert` (list of str) are accepted.
        _core.quantizer_init(self, quantization_config, kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(quantization_config={self.quantization_config!r}, "
            f"pre_quantized={self.pre_quantized}, modules_to_not_convert={self.modules_to_not_convert!r})"
        )

    # ------------------------------------------------------------------------------------------------------------
    # skip list

    @property
    def skip_modules(self) -> List[str]:
        """The effective skip list: `modules_to_not_convert` plus the `keep_in_fp32_modules` given to
        `preprocess_model` (a new list; nothing passed in is modified)."""
        extra = self.__dict__.get("_keep_in_fp32", ())
        out = list(self.modules_to_not_convert)
        out.extend(m for m in extra if m not in out)
        return out

    def _set_keep_in_fp32(self, keep_in_fp32_modules) -> None:
        if keep_in_fp32_modules and self.use_keep_in_fp32_modules:
            self.__dict__["_keep_in_fp32"] = [str(m) for m in keep_in_fp32_modules]

    # ------------------------------------------------------------------------------------------------------------
    # environment, dtype and device map

    def validate_environment(self, *args, **kwargs) -> None:
        """Check that the backend's packages are importable (a `BackendImportError`, an ImportError subclass,
        names the pip package and the versions that work). Subclasses add device checks."""
        what = f"{self.quantization_config.quant_method} quantization"
        for package in self.required_packages:
            require(package, what)

    def update_torch_dtype(self, torch_dtype):
        return torch_dtype

    def update_device_map(self, device_map):
        return device_map

    def adjust_target_dtype(self, target_dtype):
        return target_dtype

    def adjust_max_memory(self, max_memory: Dict[Any, Any]) -> Dict[Any, Any]:
        """Leave 10% headroom on each device for buffers the quantized layers create (a new dict)."""
        return {key: val * 0.90 for key, val in max_memory.items()}

    def get_special_dtypes_update(self, model, torch_dtype) -> Dict[str, Any]:
        """Parameters of skipped modules keep `torch_dtype` when accelerate sizes a device map."""
        skip = self.skip_modules
        return {
            name: torch_dtype for name, _ in model.named_parameters() if matches_skip(name.rpartition(".")[0], skip)
        }

    def update_missing_keys(self, model, missing_keys: List[str], prefix: str) -> List[str]:
        return missing_keys

    def maybe_update_loaded_keys(self, loaded_keys, checkpoint_files=None):
        return loaded_keys

    def maybe_update_state_dict(self, state_dict):
        return state_dict

    def get_cuda_warm_up_factor(self) -> int:
        return 4

    @property
    def supports_parallel_loading(self) -> bool:
        return True

    @property
    def supports_safetensors_serialization(self) -> bool:
        return self.is_serializable

    # ------------------------------------------------------------------------------------------------------------
    # per-tensor loading

    def check_if_quantized_param(self, model, param_value, param_name: str, state_dict, **kwargs) -> bool:
        """Whether `param_name` is materialised by `create_quantized_param` (True) or set as a plain tensor."""
        return False

    def create_quantized_param(
        self, model, param_value, param_name: str, target_device, state_dict=None, unexpected_keys=None, **kwargs
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not create quantized parameters")

    def check_quantized_param_shape(self, *args, **kwargs) -> bool:
        return True

    # ------------------------------------------------------------------------------------------------------------
    # model processing

    def preprocess_model(self, model, device_map=None, keep_in_fp32_modules=None, **kwargs):
        """Mark the model quantized and swap its layers (before weights are loaded, or on a model that holds
        float weights). Returns the model."""
        self._set_keep_in_fp32(keep_in_fp32_modules)
        model.is_quantized = True
        model.quantization_method = self.quantization_config.quant_method
        self._process_model_before_weight_loading(model, device_map=device_map, **kwargs)
        return model

    def postprocess_model(self, model, **kwargs):
        """Finish quantization after the weights are in place (freeze, calibrate, ...). Returns the model."""
        self._process_model_after_weight_loading(model, **kwargs)
        return model

    def _process_model_before_weight_loading(self, model, **kwargs):
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        return model

    def dequantize(self, model):
        """Replace every quantized layer by a plain torch layer holding the dequantized weights, and remove every
        trace of quantization from the model and its config (`hf_quantizer`, `is_quantized`,
        `quantization_method`, `config.quantization_config`). Returns the model."""
        model = self._dequantize(model)
        clear_model_quantized(model)
        return model

    def _dequantize(self, model):
        raise NotImplementedError(
            f"{self.quantization_config.quant_method} quantization cannot be undone (no dequantize)"
        )

    def quantized_modules(self, model) -> List[str]:
        """Names of the modules that hold quantized weights (or quantizers) in `model`."""
        return []

    # ------------------------------------------------------------------------------------------------------------
    # serialization

    @property
    def is_serializable(self) -> bool:
        return False

    @property
    def is_trainable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        return False

    def get_state_dict_and_metadata(self, state_dict, safe_serialization: bool = False) -> Tuple[dict, dict]:
        """The tensors to write and the str->str metadata for the safetensors header."""
        return state_dict, {}

    def save_extras(self, model, folder) -> dict:
        """JSON-serializable data to store beside the config when saving (a backend may also write files into
        `folder`); given back to `load_quantized_state_dict` in `metadata`."""
        return {}

    def load_quantized_state_dict(self, model, state_dict, metadata: Optional[dict] = None, device=None):
        """Put a saved quantized state dict into `model` (already through `preprocess_model`): quantized tensors
        go through `check_if_quantized_param` / `create_quantized_param`, the rest is set as it is. Keys that a
        quantizer consumes as part of a quantized tensor (scales, quant state) are removed from the unexpected list.
        Raises if keys are missing or left over."""
        from ._tensors import load_state_dict_with_hooks

        return load_state_dict_with_hooks(self, model, state_dict, device)
