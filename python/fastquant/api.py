"""High-level API: quantize a torch model in place, save it, load it back.

    model = fastquant.quantize(model, {"quant_method": "torchao", "quant_type": "int8wo"})
    fastquant.save_pretrained(model, "out/")   # save_quantized is the same function

Each goes through the quantizer's hooks (`validate_environment`, `preprocess_model`, `check_if_quantized_param` /
`create_quantized_param`, `postprocess_model`), the same ones a diffusers-style loader calls. Backend packages are
imported only when their backend is used.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from .hf._save import save_pretrained
from .quantizers import DiffusersAutoQuantizer
from .quantizers._utils import require, set_model_quantized

__all__ = ["quantize", "save_quantized", "load_quantized", "dequantize"]

_FORMAT = "fastquant-quantized/1"
_WEIGHTS = "model.safetensors"
_CONFIG = "quantization_config.json"


def _to_config(config):
    """A dict, a fastquant config or a transformers/diffusers config object -> fastquant's config object."""
    if isinstance(config, dict):
        return DiffusersAutoQuantizer.from_dict(config)
    from .quantizers.auto import _from_library_config

    return _from_library_config(config)


def _model_device(model):
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    import torch

    return torch.device("cpu")


def _model_dtype(model):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def quantize(model, config, *, modules_to_not_convert: Optional[Sequence[str]] = None, device=None):
    """Quantize `model` in place with `config` (a config object or dict) and return it.

    `modules_to_not_convert`: module names (full dotted paths, ancestors, or single components) to keep in float,
    in addition to the config's own skip list. `device`: move the model there first (bitsandbytes and torchao
    quantize on the device the weights are on). Records `model.hf_quantizer`, `model.is_quantized`,
    `model.quantization_method` and, when the model has a config, `model.config.quantization_config`."""
    require("torch", "fastquant.quantize")
    config = _to_config(config)
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError("this model is already quantized (model.hf_quantizer is set); dequantize it first")
    kwargs: dict = {"pre_quantized": False}
    if modules_to_not_convert is not None:
        # Passed as given: the quantizer rejects a bare str (it would otherwise be read letter by letter).
        kwargs["modules_to_not_convert"] = modules_to_not_convert
    quantizer = DiffusersAutoQuantizer.from_config(config, **kwargs)
    if device is not None:
        model.to(device)
    dev = _model_device(model)
    device_map = {"": str(dev)}
    quantizer.validate_environment(device_map=device_map, torch_dtype=_model_dtype(model))
    quantizer.preprocess_model(
        model, device_map=device_map, keep_in_fp32_modules=getattr(model, "_keep_in_fp32_modules", None)
    )
    quantizer.postprocess_model(model)
    set_model_quantized(model, quantizer)
    return model


def dequantize(model):
    """Undo `quantize`: plain layers with the dequantized weights, no quantization attributes left."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        raise ValueError("this model is not quantized (no model.hf_quantizer)")
    return quantizer.dequantize(model)


# One folder format: `save_quantized` is `save_pretrained` (transformers/diffusers layout, written atomically).
save_quantized = save_pretrained


def load_quantized(model, path, *, device=None):
    """Load a folder written by `save_quantized` into `model`, a float model of the same architecture (real or on
    the meta device); returns it quantized, with the same outputs as the model that was saved."""
    require("safetensors", "fastquant.load_quantized")
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = os.fspath(path)
    with open(os.path.join(path, _CONFIG), encoding="utf-8") as f:
        record = json.load(f)
    if record.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a folder written by fastquant.save_quantized (format {record.get('format')!r})")
    config = DiffusersAutoQuantizer.from_dict(record["quantization_config"])
    quantizer = DiffusersAutoQuantizer.from_config(
        config, pre_quantized=True, modules_to_not_convert=list(record["modules_to_not_convert"])
    )
    weights = os.path.join(path, _WEIGHTS)
    with safe_open(weights, framework="pt") as f:
        metadata = dict(f.metadata() or {})
    dev = device if device is not None else _model_device(model)
    if getattr(dev, "type", dev) == "meta" or str(dev) == "meta":
        dev = "cpu"
    state_dict = load_file(weights, device=str(dev))
    device_map = {"": str(dev)}
    quantizer.validate_environment(device_map=device_map, torch_dtype=_model_dtype(model))
    quantizer.preprocess_model(model, device_map=device_map, keep_in_fp32_modules=record.get("keep_in_fp32_modules"))
    meta = {**metadata, **(record.get("extras") or {}), "_folder": path}
    model = quantizer.load_quantized_state_dict(model, state_dict, meta, device=dev) or model
    quantizer.postprocess_model(model)
    set_model_quantized(model, quantizer)
    return model
