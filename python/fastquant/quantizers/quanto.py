"""optimum-quanto quantizer: `nn.Linear` -> `optimum.quanto.QLinear` with int8/int4/int2/float8 weights, frozen
after quantization (the float weights are replaced by packed quantized tensors)."""

from __future__ import annotations

from .._core import QuantoConfig
from ._utils import ensure_ninja_on_path, iter_modules, progress, restore_linear, set_submodule
from .base import DiffusersQuantizer

__all__ = ["QuantoQuantizer"]

#: weights_dtype -> optimum.quanto qtype attribute
_QTYPES = {"int8": "qint8", "int4": "qint4", "int2": "qint2", "float8": "qfloat8"}


class QuantoQuantizer(DiffusersQuantizer):
    """Swaps `nn.Linear` for `optimum.quanto.QLinear` with float8/int8/int4/int2 weights, then freezes."""

    config_class = QuantoConfig
    required_packages = ["torch", "optimum-quanto"]

    def _qtype(self):
        import optimum.quanto as oq

        return getattr(oq, _QTYPES[self.quantization_config.weights_dtype])

    def validate_environment(self, *args, **kwargs):
        super().validate_environment(*args, **kwargs)
        device_map = kwargs.get("device_map")
        if isinstance(device_map, dict) and len(set(map(str, device_map.values()))) > 1:
            raise ValueError(
                "optimum-quanto: a device_map spreading the model over several devices (multi-GPU or cpu/disk "
                "offload) is not supported"
            )
        if self.quantization_config.weights_dtype in ("int4", "int2") and not ensure_ninja_on_path():
            raise RuntimeError(
                f"optimum-quanto packs {self.quantization_config.weights_dtype} weights with a C++ extension that "
                "torch compiles on first use with ninja, and ninja is not installed: pip install ninja"
            )

    def update_torch_dtype(self, torch_dtype):
        if torch_dtype is None:
            import torch

            torch_dtype = torch.float32
        return torch_dtype

    def adjust_target_dtype(self, target_dtype):
        import torch

        w = self.quantization_config.weights_dtype
        if w == "int8":
            return torch.int8
        if w == "float8":
            return torch.float8_e4m3fn
        try:
            from accelerate.utils import CustomDtype

            return CustomDtype.INT4 if w == "int4" else CustomDtype.INT2
        except ImportError:
            return torch.int8

    def _process_model_before_weight_loading(self, model, **kwargs):
        import torch
        from optimum.quanto.nn import QLinear

        if self.pre_quantized:
            return model  # load_quantized_state_dict rebuilds the layers from the saved quantization map
        qtype = self._qtype()
        targets = [
            (n, m) for n, m in iter_modules(model, torch.nn.Linear, self.skip_modules) if type(m) is torch.nn.Linear
        ]
        for name, linear in targets:
            qlinear = QLinear.from_module(linear, weights=qtype, activations=None)
            qlinear.name = name
            set_submodule(model, name, qlinear)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        from optimum.quanto.nn import QModuleMixin

        targets = [
            m
            for _, m in model.named_modules()
            if isinstance(m, QModuleMixin) and not m.frozen and m.weight.device.type != "meta"
        ]
        for m in progress(targets, total=len(targets), desc="optimum-quanto", min_items=8):
            m.freeze()
        return model

    def check_if_quantized_param(self, model, param_value, param_name, state_dict, **kwargs):
        from optimum.quanto.nn import QModuleMixin
        from ._tensors import module_and_attr

        try:
            module, attr = module_and_attr(model, param_name)
        except AttributeError:
            return False
        return isinstance(module, QModuleMixin) and attr == "weight" and not module.frozen

    def create_quantized_param(
        self, model, param_value, param_name, target_device, state_dict=None, unexpected_keys=None, **kwargs
    ):
        import torch
        from ._tensors import module_and_attr

        module, _ = module_and_attr(model, param_name)
        module.weight = torch.nn.Parameter(param_value.to(target_device))
        module.freeze()

    def update_missing_keys(self, model, missing_keys, prefix):
        from optimum.quanto.nn import QModuleMixin

        qnames = [n for n, m in model.named_modules() if isinstance(m, QModuleMixin)]
        keep = []
        for key in missing_keys:
            owned = any(key.startswith((n + ".", f"{prefix}.{n}.")) for n in qnames)
            if owned and not (key.endswith((".weight", ".bias"))):
                continue  # quanto's scale buffers, filled when the weights are frozen
            keep.append(key)
        return keep

    def quantized_modules(self, model):
        from optimum.quanto.nn import QModuleMixin

        return [n for n, m in model.named_modules() if isinstance(m, QModuleMixin)]

    def _dequantize(self, model):
        import torch

        for name in self.quantized_modules(model):
            layer = model.get_submodule(name)
            w = layer.weight
            weight = w.dequantize() if hasattr(w, "dequantize") and type(w) is not torch.nn.Parameter else w.data
            if not isinstance(layer, torch.nn.Linear):
                raise NotImplementedError(f"{name}: dequantizing {type(layer).__name__} is not supported")
            restore_linear(model, name, layer, weight.detach().clone())
        return model

    @property
    def is_serializable(self):
        return True

    @property
    def is_trainable(self):
        return True

    @property
    def is_compileable(self):
        return True

    def save_extras(self, model, folder):
        """The frozen state dict holds plain tensors (`weight._data`, `weight._scale`, ...); the per-layer qtypes
        are quanto's `quantization_map`, stored beside the config."""
        from optimum.quanto import quantization_map

        return {"quanto_quantization_map": quantization_map(model)}

    def load_quantized_state_dict(self, model, state_dict, metadata=None, device=None):
        """Rebuild the QLinear layers from the saved `quantization_map` and load the packed weights with quanto's
        own `requantize`, then check that every key was used."""
        from .. import _json

        import torch
        from optimum.quanto import requantize

        qmap = (metadata or {}).get("quanto_quantization_map")
        if qmap is None:
            raise ValueError("optimum-quanto load: no quanto_quantization_map saved beside the weights")
        if isinstance(qmap, str):
            qmap = _json.loads(qmap, "quanto_quantization_map")
        # quanto does not check sizes: refuse a checkpoint of another architecture before touching the model.
        bits = {"qint8": 8, "qfloat8": 8, "qfloat8_e4m3fn": 8, "qfloat8_e5m2": 8, "qint4": 4, "qint2": 2}
        for qname, entry in qmap.items():
            layer = model.get_submodule(qname) if qname else model
            data = state_dict.get(f"{qname}.weight._data", state_dict.get(f"{qname}.weight._data._data"))
            wbits = bits.get(str(entry.get("weights")) if isinstance(entry, dict) else "")
            if data is None or wbits is None or not hasattr(layer, "in_features"):
                continue
            saved_bits = data.numel() * data.element_size() * 8
            if saved_bits != layer.out_features * layer.in_features * wbits:
                raise ValueError(
                    f"optimum-quanto load: {qname} was saved with {saved_bits // wbits} weights, the model's layer has "
                    f"{layer.out_features}x{layer.in_features}; the checkpoint is for another architecture"
                )
        requantize(model, dict(state_dict), qmap, device=torch.device(device) if device is not None else None)
        have = set(model.state_dict().keys())
        missing, unexpected = have - set(state_dict), set(state_dict) - have
        if missing or unexpected:
            raise ValueError(f"optimum-quanto load: missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
        return model
