"""`fastquant.load_quantized(model, path)`: a quantized transformers/diffusers folder into a model the caller built.

The same engine as `from_pretrained` (`_load.check_plan` / `load_into_model`); the differences are that the model
exists already, so everything is first checked on a meta-device copy of it (the caller's model is changed only
once the folder is known to fit), and that non-persistent buffers left on the meta device are computed by the
model class's own `__init__` (transformers/diffusers models, rebuilt from `model.config` on the meta device).
"""

from __future__ import annotations

import copy
import os

from ..quantizers import DiffusersAutoQuantizer
from ..quantizers._utils import require, set_model_quantized
from ._files import WEIGHT_NAMES, Checkpoint, read_json, resolve_folder

__all__ = ["load_quantized_into"]


def _library_of_instance(model):
    for cls in type(model).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ == "PreTrainedModel" and module.startswith("transformers"):
            return "transformers"
        if cls.__name__ == "ModelMixin" and module.startswith("diffusers"):
            return "diffusers"
    return None


def _meta_clone(model):
    """A copy of `model` whose parameters and buffers are meta tensors (nothing is copied)."""
    import torch

    memo = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in memo:
            continue
        empty = torch.empty_like(t, device="meta")
        if isinstance(t, torch.nn.Parameter):
            empty = torch.nn.Parameter(empty, requires_grad=t.requires_grad)
        memo[id(t)] = empty
    return copy.deepcopy(model, memo)


def _meta_nonpersistent(model):
    out = []
    for mod_name, module in model.named_modules():
        for b in getattr(module, "_non_persistent_buffers_set", ()):
            buf = module._buffers.get(b)
            if buf is not None and buf.device.type == "meta":
                out.append((mod_name, b))
    return out


def _fresh_buffers(model, lib):
    """The model's buffers as its class's __init__ computes them (parameters on meta)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        if lib == "transformers":
            fresh = type(model)(model.config)
        else:
            fresh = type(model).from_config(dict(model.config))
    return dict(fresh.named_buffers())


def _device_of(model, device):
    import torch

    if device is not None:
        return str(torch.device(device) if not isinstance(device, int) else torch.device("cuda", device))
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type != "meta":
            return str(t.device)
    return "cpu"


def load_quantized_into(model, path, *, device=None):
    require("torch", "fastquant.load_quantized")
    require("safetensors", "fastquant.load_quantized")
    import torch

    from . import _load

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load_quantized: model must be a torch.nn.Module, got {type(model).__name__}")
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError("load_quantized: this model is already quantized (model.hf_quantizer is set)")
    folder = resolve_folder(path)
    config_path = os.path.join(folder, "config.json")
    config_dict = read_json(config_path, "config")
    q = config_dict.get("quantization_config")
    if not isinstance(q, dict):
        raise ValueError(
            f"{config_path}: no 'quantization_config' object; the folder is not quantized (load float folders "
            "with fastquant.from_pretrained)"
        )
    try:
        cfg = DiffusersAutoQuantizer.from_dict(_load.library_dict(q, config_path))
    except (ValueError, TypeError) as e:
        raise type(e)(f"{config_path}: quantization_config: {e}") from None
    _load.check_method(cfg, True, config_path)
    lib = _library_of_instance(model)
    ckpt = Checkpoint(folder, WEIGHT_NAMES[lib or "transformers"])
    np_meta = _meta_nonpersistent(model)
    if np_meta and lib is None:
        names = [f"{m}.{b}" if m else b for m, b in np_meta]
        raise ValueError(
            f"load_quantized: the model's non-persistent buffers {names[:4]} are on the meta device; checkpoints do "
            f"not hold them and fastquant cannot compute them for a {type(model).__name__}. Build the model with "
            "accelerate.init_empty_weights() (buffers stay real) or on the CPU"
        )
    skip = None
    if _load._config_skip(cfg) is None:
        skip = _load._default_skip(model, lib or "")
    dev = _device_of(model, device)
    device_map = {"": dev}
    tied = _load._tied_keys(model, lib or "")

    def make_quantizer():
        quantizer = DiffusersAutoQuantizer.from_config(cfg, pre_quantized=True, modules_to_not_convert=skip or [])
        quantizer.validate_environment(device_map=device_map, torch_dtype=None)
        return quantizer

    # dry run on a meta copy: the caller's model is changed only if the folder fits it
    clone = _meta_clone(model)
    probe = make_quantizer()
    keep = getattr(model, "_keep_in_fp32_modules", None)
    probe.preprocess_model(clone, device_map=device_map, keep_in_fp32_modules=keep)
    _load.check_plan(clone, ckpt, probe, pre_quantized=True, tied=tied)
    del clone, probe
    fresh = _fresh_buffers(model, lib) if np_meta else {}

    quantizer = make_quantizer()
    quantizer.preprocess_model(model, device_map=device_map, keep_in_fp32_modules=keep)
    model, _ = _load.load_into_model(
        model, ckpt, quantizer, pre_quantized=True, dtype=None, device_map=device_map, tied=tied
    )
    ckpt.close()
    if lib == "transformers" and hasattr(model, "tie_weights"):
        model.tie_weights()
    quantizer.postprocess_model(model)
    for mod_name, b in np_meta:
        full = f"{mod_name}.{b}" if mod_name else b
        model.get_submodule(mod_name)._buffers[b] = fresh[full].to(dev)
    _load._materialize_leftovers(model, device_map, set())
    set_model_quantized(model, quantizer)
    return model
