"""NVIDIA ModelOpt quantizer (fake quantization with calibrated scales, `mtq` of nvidia-modelopt >= 0.44).

The config stores fields only; modelopt's own config (the `quant_cfg` entry list of modelopt >= 0.44) is built
here, when a model is quantized: weight quantizers get the W type, input quantizers the A type when the quant
type is `W_A` and `weight_only` is False (diffusers' meaning of `weight_only`), `block_quantize` +
`channel_quantize` give block scales along that axis, `channel_quantize` alone per-channel scales, neither a
per-tensor scale. Skipped modules (and convolutions with `disable_conv_quantization`) get disabled quantizers and
are put back as the plain torch layers they were after quantization.
"""

from __future__ import annotations

import copy
import os
import pickle

from .._core import NVIDIAModelOptConfig
from ._utils import matches_skip, set_submodule
from .base import DiffusersQuantizer

__all__ = ["NVIDIAModelOptQuantizer", "build_modelopt_config"]

_NUM_BITS = {"FP8": (4, 3), "INT8": 8, "INT4": 4, "NF4": 4, "NVFP4": (2, 1)}
_SCALE_BITS = {"NF4": 8, "NVFP4": (4, 3)}
_CONV = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")


def plain_file_in(folder, name) -> str:
    """`folder/name` for a file name read from the folder's own metadata, refused (ValueError) unless it is a plain
    name inside the folder: a non-empty str with no path separator, not `.`/`..`, no NUL, not absolute."""
    ok = isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
    ok = ok and not any(sep and sep in name for sep in ("/", "\\", os.sep, os.altsep)) and not os.path.isabs(name)
    if not ok:
        shown = repr(name)[:80]
        raise ValueError(
            f"nvidia-modelopt load: the folder's metadata names the state file {shown}; it must be a plain file name "
            "inside the folder (no path separators, no '..')"
        )
    return os.path.join(os.fspath(folder), name)


def _quantizer_cfg(kind: str, cfg, activation: bool) -> dict:
    out = {"num_bits": _NUM_BITS[kind]}
    if cfg.block_quantize is not None and cfg.channel_quantize is not None:
        blocks = {cfg.channel_quantize: cfg.block_quantize}
        if kind == "NVFP4" or activation:
            blocks["type"] = "dynamic"
        if kind in _SCALE_BITS:
            if kind == "NVFP4":
                blocks["scale_bits"] = _SCALE_BITS[kind]
            if cfg.scale_block_quantize is not None and cfg.scale_channel_quantize is not None:
                blocks["scale_bits"] = _SCALE_BITS[kind]
                blocks["scale_block_sizes"] = {cfg.scale_channel_quantize: cfg.scale_block_quantize}
        out["block_sizes"] = blocks
    elif cfg.channel_quantize is not None and not activation:
        out["axis"] = cfg.channel_quantize
    else:
        out["axis"] = None
    return out


def build_modelopt_config(cfg, skip_names=(), model=None) -> dict:
    """modelopt's quantize config for a `NVIDIAModelOptConfig`, with quantizers disabled under `skip_names`."""
    if cfg.modelopt_config is not None:
        config = copy.deepcopy(dict(cfg.modelopt_config))
        entries = config.get("quant_cfg", [])
        if isinstance(entries, dict):  # legacy {pattern: cfg} form; modelopt converts it, keep the order
            entries = [
                {"quantizer_name": k, **({"cfg": v} if "enable" not in v else v)}
                if isinstance(v, dict)
                else {"quantizer_name": k, "cfg": v}
                for k, v in entries.items()
            ]
        entries = list(entries)
        config.setdefault("algorithm", cfg.algorithm)
    else:
        w, _, a = cfg.quant_type.partition("_")
        entries = [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": _quantizer_cfg(w, cfg, activation=False)},
        ]
        if a and not cfg.weight_only:
            entries.append({"quantizer_name": "*input_quantizer", "cfg": _quantizer_cfg(a, cfg, activation=True)})
        config = {"quant_cfg": entries, "algorithm": cfg.algorithm}
    for name in skip_names:
        entries.append({"quantizer_name": f"{name}.*", "enable": False})
    if cfg.disable_conv_quantization:
        for conv in _CONV:
            entries.append({"quantizer_name": "*", "parent_class": f"nn.{conv}", "enable": False})
    config["quant_cfg"] = entries
    return config


class NVIDIAModelOptQuantizer(DiffusersQuantizer):
    """Quantizes with nvidia-modelopt (`mtq.quantize` with a calibration `forward_loop`)."""

    config_class = NVIDIAModelOptConfig
    required_packages = ["torch", "nvidia-modelopt"]

    def _skip_names(self, model):
        """Top-most module names covered by the skip list (their quantizers are disabled)."""
        skip = self.skip_modules
        names = []
        for name, _ in model.named_modules():
            if name and matches_skip(name, skip) and not any(name.startswith(p + ".") for p in names):
                names.append(name)
        return names

    def modelopt_config(self, model=None) -> dict:
        return build_modelopt_config(self.quantization_config, self._skip_names(model) if model is not None else ())

    def validate_environment(self, *args, **kwargs):
        super().validate_environment(*args, **kwargs)
        import torch

        cfg = self.quantization_config
        w, _, a = cfg.quant_type.partition("_")
        device_map = kwargs.get("device_map")
        on_cpu = not torch.cuda.is_available() or (device_map is not None and "cpu" in str(device_map))
        if on_cpu and cfg.modelopt_config is None:
            dynamic = "NVFP4" in (w, a if not cfg.weight_only else "") or (
                a and not cfg.weight_only and cfg.block_quantize is not None
            )
            if dynamic:
                raise RuntimeError(
                    f"nvidia-modelopt: {cfg.quant_type} uses dynamic block quantization, which modelopt runs only "
                    "on CUDA tensors; use FP8, INT8 or INT4 (weights, or weights and per-tensor activations) on the CPU"
                )
        if a and not cfg.weight_only and cfg.forward_loop is None and not self.pre_quantized:
            raise ValueError(
                f"nvidia-modelopt: quant_type {cfg.quant_type!r} with weight_only=False quantizes activations, whose "
                "scales are calibrated: pass forward_loop=callable(model) that runs sample inputs through the model"
            )

    def update_torch_dtype(self, torch_dtype):
        if torch_dtype is None:
            import torch

            torch_dtype = torch.float32
        return torch_dtype

    def adjust_target_dtype(self, target_dtype):
        import torch

        w = self.quantization_config.quant_type.partition("_")[0]
        return torch.float8_e4m3fn if w == "FP8" else torch.int8

    def _process_model_before_weight_loading(self, model, **kwargs):
        if self.pre_quantized:
            return model  # load_quantized_state_dict restores modelopt's saved state
        import modelopt.torch.opt as mto

        mto.apply_mode(model, mode=[("quantize", self.modelopt_config(model))])
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        if self.pre_quantized:
            return model
        import modelopt.torch.opt as mto
        import modelopt.torch.quantization as mtq

        cfg = self.quantization_config
        forward_loop = kwargs.get("forward_loop", cfg.forward_loop)
        mtq.calibrate(model, algorithm=cfg.algorithm, forward_loop=forward_loop)
        self.__dict__["_modelopt_state"] = mto.modelopt_state(model)
        self._unwrap_skipped(model)
        return model

    def _unwrap_skipped(self, model):
        """Modules under the skip list: modelopt converted them too (with disabled quantizers); put plain torch
        layers back, sharing the same weight tensors."""

        for name in self._skip_names(model):
            top = model.get_submodule(name)
            for sub, module in list(top.named_modules()):
                full = f"{name}.{sub}" if sub else name
                plain = self._plain_class(module)
                if plain is None:
                    continue
                if full == name and name == "":
                    continue
                set_submodule(model, full, self._plain_copy(module, plain))

    @staticmethod
    def _plain_copy(module, plain):
        """A `plain` (e.g. nn.Linear) module with `module`'s parameters, buffers and non-quantizer children."""
        import torch

        new = plain.__new__(plain)
        torch.nn.Module.__init__(new)
        skip = {"_parameters", "_buffers", "_modules", "_modelopt_state", "_forward_hooks", "_forward_pre_hooks"}
        for key, value in module.__dict__.items():
            if key not in skip and not key.startswith("_dm_") and not key.startswith("_hp"):
                new.__dict__.setdefault(key, value)
        new._parameters.update(module._parameters)
        new._buffers.update(module._buffers)
        new._modules.update({k: v for k, v in module._modules.items() if not k.endswith("_quantizer")})
        return new

    @staticmethod
    def _plain_class(module):
        """The torch class a modelopt-converted module was made from (None if not converted)."""
        if not hasattr(module, "weight_quantizer") and not hasattr(module, "input_quantizer"):
            return None
        import torch

        for cls in type(module).__mro__:
            if cls.__module__.startswith("torch.nn"):
                return cls
        return torch.nn.Linear

    def quantized_modules(self, model):
        return [n for n, m in model.named_modules() if hasattr(m, "weight_quantizer") or hasattr(m, "input_quantizer")]

    def _dequantize(self, model):
        """Fake quantization keeps float weights: bake the weight quantizer into them and put plain layers back.
        (Activation quantizers, if any, are dropped.)"""
        import torch
        from modelopt.torch.opt.conversion import ModeloptStateManager

        for name in self.quantized_modules(model):
            module = model.get_submodule(name)
            plain = self._plain_class(module)
            wq = getattr(module, "weight_quantizer", None)
            with torch.no_grad():
                weight = wq(module.weight) if wq is not None and wq.is_enabled else module.weight.data
            new = self._plain_copy(module, plain)
            new._parameters["weight"] = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)
            if name:
                set_submodule(model, name, new)
        if ModeloptStateManager.is_converted(model):
            ModeloptStateManager.remove_state(model)
        for m in model.modules():
            m.__dict__.pop("_modelopt_state", None)
        return model

    @property
    def is_serializable(self):
        return True

    @property
    def is_trainable(self):
        return True

    @property
    def is_compileable(self):
        return False

    def save_extras(self, model, folder):
        """modelopt's state (quantizer settings per module) goes to `modelopt_state.pt` (torch.save; it holds
        dtypes and tuples, not JSON); the tensors (`weight`, `*_quantizer._amax`) go to safetensors."""
        import torch

        state = self.__dict__.get("_modelopt_state")
        if state is None:
            import modelopt.torch.opt as mto

            state = mto.modelopt_state(model)
        torch.save(state, os.path.join(folder, "modelopt_state.pt"))
        return {"modelopt_state_file": "modelopt_state.pt"}

    def load_quantized_state_dict(self, model, state_dict, metadata=None, device=None):
        import modelopt.torch.opt as mto
        import torch

        folder = (metadata or {}).get("_folder")
        path = plain_file_in(folder, (metadata or {}).get("modelopt_state_file", "modelopt_state.pt"))
        # The folder may come from anyone: torch's restricted unpickler only (containers, numbers, strings,
        # torch.Size and dtypes, which is all modelopt's state holds); nothing in the file can run code.
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"nvidia-modelopt load: {path} holds objects other than plain data, which fastquant does not unpickle "
                f"(it loads with torch.load(weights_only=True)): {str(e)[:300]}"
            ) from None
        model = mto.restore_from_modelopt_state(model, state)
        result = model.load_state_dict(dict(state_dict), strict=False)
        if result.unexpected_keys or [k for k in result.missing_keys if not k.endswith("_amax")]:
            raise ValueError(
                f"nvidia-modelopt load: missing {result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}"
            )
        if device is not None:
            model.to(device)
        self.__dict__["_modelopt_state"] = state
        self._unwrap_skipped(model)
        return model
