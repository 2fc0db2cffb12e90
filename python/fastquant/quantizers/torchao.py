"""torchao quantizer: any serialized torchao `AOBaseConfig` (and the legacy string shorthands, which the config
expands to one), applied to each `nn.Linear` with `torchao.quantization.quantize_`."""

from __future__ import annotations

from .._core import TorchAoConfig
from ._utils import iter_modules, matches_skip, progress, require, restore_linear
from .base import DiffusersQuantizer

__all__ = ["TorchAoHfQuantizer"]

#: torchao config classes whose quantized weights support training (as diffusers lists them).
_TRAINABLE = {
    "Int8WeightOnlyConfig",
    "Int8DynamicActivationInt8WeightConfig",
    "Int8StaticActivationInt8WeightConfig",
    "Float8WeightOnlyConfig",
    "Float8DynamicActivationFloat8WeightConfig",
}


def _cuda_requirement(name: str, data: dict):
    """Why config class `name` cannot run on the CPU with the installed torchao (None when it can).
    Checked here because torchao either asserts deep inside or, for some configs, silently leaves layers alone."""
    if name.startswith(("Float8DynamicActivation", "Float8StaticActivation")):
        return "float8 activation quantization needs a CUDA GPU with compute capability >= 8.9 (or MI300 / XPU)"
    if name == "Int4WeightOnlyConfig":
        return (
            "Int4WeightOnlyConfig packs weights for CUDA kernels (its 'plain'/'preshuffled' formats need the mslk "
            "package, 'tile_packed_to_4d' needs tinygemm on CUDA); on the CPU use "
            "IntxWeightOnlyConfig(weight_dtype=torch.int4) instead"
        )
    if name in ("Float8DynamicActivationInt4WeightConfig",):
        return f"{name} needs CUDA kernels"
    return None


class TorchAoHfQuantizer(DiffusersQuantizer):
    """Applies a torchao `AOBaseConfig` to each Linear layer (`torchao.quantize_`)."""

    config_class = TorchAoConfig
    required_packages = ["torch", "torchao"]

    # ---- the torchao config object (built lazily, cached per quantizer) -----------------------------------------

    def ao_config(self):
        cached = self.__dict__.get("_ao_config")
        if cached is not None:
            return cached
        require("torchao", "torchao quantization")
        from torchao.core.config import config_from_dict

        data = self.quantization_config._resolved_quant_type()
        try:
            obj = config_from_dict(data)
        except Exception as e:
            import torchao

            raise ValueError(
                f"TorchAoConfig: torchao {torchao.__version__} cannot build {data.get('_type')!r} from "
                f"{data!r}: {type(e).__name__}: {e}"
            ) from e
        self.__dict__["_ao_config"] = obj
        return obj

    def validate_environment(self, *args, **kwargs):
        super().validate_environment(*args, **kwargs)
        import torch

        cfg = self.ao_config()
        name = type(cfg).__name__
        device_map = kwargs.get("device_map")
        devices = set()
        if isinstance(device_map, dict):
            devices = {str(v).split(":")[0] if not isinstance(v, int) else "cuda" for v in device_map.values()}
        elif device_map is not None:
            devices = {str(device_map).split(":")[0]}
        if self.pre_quantized and devices & {"cpu", "disk"} and len(devices) > 1:
            raise ValueError("torchao: a pre-quantized model cannot be offloaded to cpu/disk with a device_map")
        on_cpu = "cpu" in devices or (not devices and not torch.cuda.is_available())
        why = _cuda_requirement(name, {})
        if why and (on_cpu or not torch.cuda.is_available()):
            raise RuntimeError(f"torchao {name} cannot run here: {why}")
        if why and name.startswith("Float8") and torch.cuda.is_available():
            if torch.cuda.get_device_capability() < (8, 9):
                raise RuntimeError(f"torchao {name}: {why}; this GPU is {torch.cuda.get_device_name()}")

    def update_torch_dtype(self, torch_dtype):
        if torch_dtype is None:
            import torch

            torch_dtype = torch.bfloat16
        return torch_dtype

    def adjust_target_dtype(self, target_dtype):
        import torch

        name = self.quantization_config.quant_type_name
        if name.startswith(("Int4", "Intx", "UIntx")):
            try:
                from accelerate.utils import CustomDtype

                return CustomDtype.INT4
            except ImportError:
                return torch.int8
        if name.startswith("Int8"):
            return torch.int8
        if name.startswith("Float8"):
            return torch.float8_e4m3fn
        return target_dtype

    # ---- quantization -------------------------------------------------------------------------------------------

    def _quantize_layer(self, layer) -> None:
        from torchao.quantization import quantize_

        quantize_(layer, self.ao_config(), filter_fn=lambda m, fqn: fqn == "")

    @staticmethod
    def _is_quantized_weight(w) -> bool:
        import torch

        return isinstance(w, torch.Tensor) and type(w) not in (torch.Tensor, torch.nn.Parameter)

    def _process_model_after_weight_loading(self, model, **kwargs):
        import torch

        if self.pre_quantized:
            return model
        targets = [
            (n, m)
            for n, m in iter_modules(model, torch.nn.Linear, self.skip_modules)
            if m.weight.device.type != "meta" and not self._is_quantized_weight(m.weight)
        ]
        left = []
        for name, layer in progress(targets, total=len(targets), desc="torchao", min_items=8):
            self._quantize_layer(layer)
            if not self._is_quantized_weight(layer.weight):
                left.append(name)
        if left:
            import warnings

            warnings.warn(
                f"torchao {self.quantization_config.quant_type_name} left {len(left)} Linear layer(s) unquantized "
                f"(shapes it does not support, e.g. not divisible by the group size): {left[:8]}",
                UserWarning,
                stacklevel=3,
            )
        return model

    def check_if_quantized_param(self, model, param_value, param_name, state_dict, **kwargs):
        import torch
        from ._tensors import module_and_attr

        try:
            module, attr = module_and_attr(model, param_name)
        except AttributeError:
            return False
        if attr != "weight" or not isinstance(module, torch.nn.Linear):
            return False
        if self.pre_quantized:
            return self._is_quantized_weight(param_value)
        return not matches_skip(param_name.rpartition(".")[0], self.skip_modules)

    def create_quantized_param(
        self, model, param_value, param_name, target_device, state_dict=None, unexpected_keys=None, **kwargs
    ):
        import torch
        from ._tensors import module_and_attr

        module, _ = module_and_attr(model, param_name)
        module.weight = torch.nn.Parameter(param_value.to(target_device), requires_grad=False)
        if not self.pre_quantized:
            self._quantize_layer(module)

    def quantized_modules(self, model):
        import torch

        return [
            n
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and self._is_quantized_weight(m.weight)
        ]

    def _dequantize(self, model):
        for name in self.quantized_modules(model):
            layer = model.get_submodule(name)
            weight = _dense_weight(layer)
            restore_linear(model, name, layer, weight)
        return model

    # ---- capabilities and serialization -------------------------------------------------------------------------

    @property
    def is_serializable(self):
        return True

    @property
    def is_trainable(self):
        return self.quantization_config.quant_type_name in _TRAINABLE

    @property
    def is_compileable(self):
        return True

    @property
    def supports_parallel_loading(self):
        return not self.pre_quantized

    def get_state_dict_and_metadata(self, state_dict, safe_serialization=False):
        """safetensors cannot hold torchao's tensor subclasses: flatten them into plain tensors plus metadata
        (torchao's own `flatten_tensor_state_dict`)."""
        if not safe_serialization:
            return state_dict, {}
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        tensors, metadata = flatten_tensor_state_dict(state_dict)
        return tensors, metadata

    def load_quantized_state_dict(self, model, state_dict, metadata=None, device=None):
        if metadata:
            from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

            state_dict, leftover = unflatten_tensor_state_dict(dict(state_dict), dict(metadata))
            if leftover:
                raise ValueError(f"torchao: tensors left over after unflattening: {sorted(leftover)[:8]}")
        return super().load_quantized_state_dict(model, state_dict, metadata, device)


def _dense_weight(layer):
    """The float weight of a torchao-quantized Linear layer.

    Most torchao tensors implement `dequantize()`; some packed layouts (e.g. Int4TilePackedTo4dTensor on CUDA in
    torchao 0.18) do not, but every one supports the linear op it was made for. For those, the weight is
    recovered as linear(I, W) = W^T, in the layer's compute dtype (exact for weight-only layouts: each output is
    one dequantized weight times 1)."""
    import torch
    import torch.nn.functional as F

    w = layer.weight
    try:
        return w.dequantize()
    except NotImplementedError:
        eye = torch.eye(layer.in_features, dtype=w.dtype, device=w.device)
        return F.linear(eye, w).t().contiguous()
