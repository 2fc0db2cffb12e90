"""Tensor placement helpers (imports torch; used only once a model is being quantized or loaded)."""

from __future__ import annotations

import torch

__all__ = ["set_tensor", "module_and_attr", "load_state_dict_with_hooks", "is_meta"]


def module_and_attr(model, name: str):
    """('blocks.0.fc1.weight') -> (the fc1 module, 'weight')."""
    mod_name, _, attr = name.rpartition(".")
    module = model.get_submodule(mod_name) if mod_name else model
    return module, attr


def set_tensor(model, name: str, value, device=None, dtype=None) -> None:
    """Set parameter or buffer `name` to `value` (moved to `device`, cast to `dtype` when floating point), keeping
    whether it is a parameter or a buffer and its requires_grad."""
    module, attr = module_and_attr(model, name)
    old = module._parameters.get(attr, module._buffers.get(attr))
    if (
        old is not None
        and type(old) in (torch.nn.Parameter, torch.Tensor)
        and type(value) is torch.Tensor
        and tuple(old.shape) != tuple(value.shape)
    ):
        # A plain tensor of another shape means a checkpoint of another architecture: refuse it rather than
        # leave a layer whose weight disagrees with its declared size.
        raise ValueError(
            f"{name}: the checkpoint holds shape {tuple(value.shape)}, the model expects {tuple(old.shape)}"
        )
    if device is not None:
        value = value.to(device)
    if dtype is not None and value.is_floating_point():
        value = value.to(dtype)
    if attr in module._parameters:
        old = module._parameters[attr]
        requires_grad = bool(old.requires_grad) if old is not None else False
        module._parameters[attr] = torch.nn.Parameter(value, requires_grad=requires_grad and value.is_floating_point())
    elif attr in module._buffers:
        module._buffers[attr] = value
    else:
        raise KeyError(f"{name}: the model has no parameter or buffer of that name")


def is_meta(module) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(w, torch.Tensor) and w.device.type == "meta"


def load_state_dict_with_hooks(quantizer, model, state_dict, device=None):
    expected = set(model.state_dict(keep_vars=True).keys())
    unexpected = [k for k in state_dict if k not in expected]
    missing = set(expected)
    for name in list(state_dict.keys()):
        if name not in expected:
            continue
        value = state_dict[name]
        missing.discard(name)
        if quantizer.check_if_quantized_param(model, value, name, state_dict):
            target = device if device is not None else value.device
            quantizer.create_quantized_param(model, value, name, target, state_dict, unexpected_keys=unexpected)
        else:
            set_tensor(model, name, value, device)
    if unexpected:
        raise ValueError(f"unexpected keys in the quantized state dict: {sorted(unexpected)[:10]}")
    if missing:
        raise ValueError(f"keys missing from the quantized state dict: {sorted(missing)[:10]}")
    return model
