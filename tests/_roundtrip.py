"""Serialize a quantized plain torch module through its quantizer's hooks and safetensors bytes, and load it into a
fresh float module the way a loader does (`get_state_dict_and_metadata` / `save_extras` -> safetensors ->
`preprocess_model` / `load_quantized_state_dict` / `postprocess_model`). Folders of transformers and diffusers
models are `fastquant.save_pretrained`'s job (tests/test_hf_save.py); plain modules have no folder format."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load, save

import fastquant as fq
from fastquant.quantizers._utils import set_model_quantized


def roundtrip(model, fresh, folder, device=None):
    q = model.hf_quantizer
    tensors, metadata = q.get_state_dict_and_metadata(model.state_dict(), safe_serialization=True)
    plain = {
        k: (v.detach().as_subclass(torch.Tensor) if type(v) is not torch.Tensor else v.detach()).contiguous()
        for k, v in tensors.items()
    }
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    blob = save({k: v.cpu() for k, v in plain.items()}, metadata=metadata or None)
    extras = q.save_extras(model, str(folder))
    state_dict = load(blob)
    dev = device or next(iter(fresh.parameters())).device
    if str(dev) == "meta":
        dev = "cpu"
    state_dict = {k: v.to(dev) for k, v in state_dict.items()}
    q2 = fq.DiffusersAutoQuantizer.from_config(
        q.quantization_config, pre_quantized=True, modules_to_not_convert=list(q.modules_to_not_convert)
    )
    q2.validate_environment(device_map={"": str(dev)})
    q2.preprocess_model(fresh, device_map={"": str(dev)})
    fresh = (
        q2.load_quantized_state_dict(fresh, state_dict, {**metadata, **extras, "_folder": str(folder)}, device=dev)
        or fresh
    )
    q2.postprocess_model(fresh)
    set_model_quantized(fresh, q2)
    return fresh
