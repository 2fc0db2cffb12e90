"""`device_map` for `fastquant.from_pretrained`, through accelerate: resolving "auto" with `infer_auto_device_map`,
looking up each tensor's device, writing disk-offloaded weights with `offload_weight`, and attaching accelerate's
hooks with `dispatch_model` so offloaded modules load their weights at forward time.

Quantized layers are never sent to disk: accelerate's offload stores plain tensors, and a quantized layer rebuilt
from them would be unquantized or wrong. A device map that puts one there is a ValueError naming the modules.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["resolve_device_map", "device_for", "disk_check", "dispatch"]

_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _norm_device(value, where: str):
    import torch

    if isinstance(value, bool):
        raise ValueError(f"device_map{where}: {value!r} is not a device")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"device_map{where}: {value} is not a device index")
        return value
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, str):
        if value == "disk":
            return value
        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError(
                f"device_map{where}: {value!r} is not a device (expected 'cpu', 'cuda:0', 0, 'disk')"
            ) from None
        return value
    raise ValueError(f"device_map{where}: {value!r} is not a device")


def resolve_device_map(model, device_map, max_memory, quantizer, dtype) -> Optional[dict]:
    """A dict module name -> device, or None (everything on the CPU, no hooks)."""
    import torch

    if device_map is None:
        if max_memory is not None:
            raise ValueError("max_memory is used with device_map='auto' (or 'balanced'/'sequential'); pass one")
        return None
    if isinstance(device_map, str) and device_map in _STRATEGIES:
        from accelerate import infer_auto_device_map
        from accelerate.utils import get_balanced_memory, get_max_memory

        no_split = getattr(model, "_no_split_modules", None) or []
        target = quantizer.adjust_target_dtype(dtype) if quantizer is not None else dtype
        special = quantizer.get_special_dtypes_update(model, dtype) if quantizer is not None else None
        mm = get_max_memory(dict(max_memory) if max_memory is not None else None)
        if device_map != "sequential" and torch.cuda.device_count() > 1:
            mm = get_balanced_memory(
                model,
                max_memory=mm,
                no_split_module_classes=no_split,
                dtype=target,
                special_dtypes=special,
                low_zero=device_map == "balanced_low_0",
            )
        if quantizer is not None:
            mm = quantizer.adjust_max_memory(mm)
        dm = infer_auto_device_map(
            model, max_memory=mm, no_split_module_classes=no_split, dtype=target, special_dtypes=special
        )
        return {k: _norm_device(v, f"[{k!r}]") for k, v in dm.items()}
    if isinstance(device_map, dict):
        modules = dict(model.named_modules())
        out = {}
        for key, value in device_map.items():
            if not isinstance(key, str) or (key and key not in modules):
                if isinstance(key, str) and key not in modules and _is_tensor_name(model, key):
                    pass
                else:
                    raise ValueError(f"device_map: {key!r} is not a module of {type(model).__name__}")
            out[key] = _norm_device(value, f"[{key!r}]")
        missing = [n for n, _ in model.named_parameters() if _lookup(out, n) is None]
        if missing:
            raise ValueError(f"device_map does not place every parameter; missing e.g. {missing[:4]}")
        return out
    return {"": _norm_device(device_map, "")}


def _is_tensor_name(model, key: str) -> bool:
    mod, _, attr = key.rpartition(".")
    try:
        m = model.get_submodule(mod) if mod else model
    except AttributeError:
        return False
    return attr in m._parameters or attr in m._buffers


def _lookup(device_map: dict, name: str):
    best, best_len = None, -1
    for key, value in device_map.items():
        if key == "" or name == key or name.startswith(key + "."):
            if len(key) > best_len:
                best, best_len = value, len(key)
    return best


def device_for(device_map: Optional[dict], key: str):
    """The device of tensor `key` ("cpu" without a map)."""
    if not device_map:
        return "cpu"
    found = _lookup(device_map, key)
    if found is None:
        return "cpu"
    return f"cuda:{found}" if isinstance(found, int) else found


def disk_check(device_map: Optional[dict], plan, quantizer, offload_folder) -> Optional[dict]:
    """Refuse quantized layers mapped to disk; return an empty offload index when something goes to disk."""
    if not device_map or "disk" not in device_map.values():
        return None
    bad = [m for m in plan.quantized_modules if device_for(device_map, m + ".weight") == "disk"]
    if bad:
        method = quantizer.quantization_config.quant_method if quantizer is not None else "?"
        raise ValueError(
            f"device_map sends {len(bad)} quantized layer(s) to 'disk' ({bad[:4]}); {method} quantized layers "
            "cannot be offloaded to disk. Give the CPU more max_memory, map those modules to 'cpu', or keep them "
            "in float with modules_to_not_convert."
        )
    return {}


def dispatch(model, device_map: Optional[dict], offload_folder, offload_index) -> None:
    """Attach accelerate's hooks when the map uses several devices or the disk."""
    if not device_map:
        return
    devices = set(device_map.values())
    if len(devices) <= 1 and "disk" not in devices:
        return
    from accelerate import dispatch_model
    from accelerate.utils import save_offload_index

    kwargs = {}
    if offload_index is not None:
        save_offload_index(offload_index, offload_folder)
        kwargs = {"offload_dir": offload_folder, "offload_index": offload_index}
    skip = getattr(model, "_skip_keys_device_placement", None)
    dispatch_model(model, device_map=device_map, skip_keys=skip, **kwargs)
