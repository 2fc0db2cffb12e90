"""Checkpoint layouts: which checkpoint tensors make each model tensor, per backend, as transformers and diffusers
write them.

A *plan* lists, for every tensor the model needs, where it comes from: a plain checkpoint tensor (`plain`), a float
tensor that the quantizer quantizes as it arrives (`quantize`), or a pre-quantized tensor built from several
checkpoint entries:

- bitsandbytes 4-bit: `<m>.weight` (packed) plus `<m>.weight.absmax`, `.quant_map`, `.quant_state.bitsandbytes__nf4`
  (and `nested_*` with double quantization);
- bitsandbytes 8-bit: `<m>.weight` (int8) plus `<m>.SCB` (and `<m>.weight_format`);
- torchao: `<m>._weight_<part>` plain tensors plus the tensor subclass description in the safetensors metadata under
  `<m>.weight` (torchao's `flatten_tensor_state_dict` layout);
- optimum-quanto (diffusers): `<m>.weight._data`, `<m>.weight._scale` (int4: `._data._data`, `._shift`), the
  layer's `input_scale` / `output_scale`: the frozen QLinear's own state keys.

The plan is made from the checkpoint headers and the meta-device model, before any tensor is read, so a folder that
does not fit the model is refused before anything is changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = ["Item", "Plan", "make_plan", "prepare_prequantized"]


@dataclass
class Item:
    key: str  # the model's state key
    kind: str  # "plain" | "quantize" | "bnb4" | "bnb8" | "torchao" | "quanto"
    source: Optional[str]  # the main checkpoint key (None for torchao: the parts are in `extras`)
    extras: List[str] = field(default_factory=list)  # further checkpoint keys this tensor is built from


@dataclass
class Plan:
    items: List[Item]
    missing: List[str]  # model keys with no checkpoint tensor (tied weights are resolved by the caller)
    unexpected: List[str]  # checkpoint keys nothing uses
    quantized_modules: List[str]  # modules whose weights end up quantized


def _method(quantizer) -> Optional[str]:
    if quantizer is None:
        return None
    name = type(quantizer).__name__
    return {
        "BnB4BitDiffusersQuantizer": "bnb4",
        "BnB8BitDiffusersQuantizer": "bnb8",
        "TorchAoHfQuantizer": "torchao",
        "QuantoQuantizer": "quanto",
        "NVIDIAModelOptQuantizer": "modelopt",
        "GGUFQuantizer": "gguf",
    }.get(name, "other")


def prepare_prequantized(model, quantizer) -> None:
    """Before a pre-quantized optimum-quanto checkpoint is read: swap `nn.Linear` for frozen `QLinear` layers on the
    meta device, as diffusers does, so that the model's state keys are the checkpoint's (`weight._data`, ...)."""
    if _method(quantizer) != "quanto":
        return
    import torch
    from accelerate import init_empty_weights
    from optimum.quanto import QLinear, freeze

    from ..quantizers._utils import iter_modules, set_submodule

    qtype = quantizer._qtype()
    targets = [
        (n, m) for n, m in iter_modules(model, torch.nn.Linear, quantizer.skip_modules) if type(m) is torch.nn.Linear
    ]
    for name, linear in targets:
        with init_empty_weights():
            q = QLinear(
                in_features=linear.in_features,
                out_features=linear.out_features,
                bias=linear.bias is not None,
                dtype=linear.weight.dtype,
                weights=qtype,
            )
        q.source_cls = type(linear)
        q.requires_grad_(False)
        q.training = linear.training
        freeze(q)
        set_submodule(model, name, q)


def _bnb4_check(ckpt, key, module, extras):
    if not any(".quant_state.bitsandbytes__" in e for e in extras):
        raise ValueError(
            f"{ckpt.where(key)}: a bitsandbytes 4-bit weight needs '{key}.quant_state.bitsandbytes__nf4' (or __fp4) "
            "beside it; the checkpoint has none"
        )
    stored = ckpt.nbytes(key)
    want = module.in_features * module.out_features
    if stored * 2 != want:
        raise ValueError(
            f"{ckpt.where(key)}: {stored} bytes of packed 4-bit weights, the model's {module.in_features}x"
            f"{module.out_features} layer needs {(want + 1) // 2}"
        )


def _bnb8_check(ckpt, key, module, scb):
    if scb not in ckpt:
        raise ValueError(f"{ckpt.where(key)}: a bitsandbytes 8-bit weight needs '{scb}' (row scales); it is missing")
    if ckpt.dtype_name(key) != "I8":
        raise ValueError(f"{ckpt.where(key)}: bitsandbytes 8-bit weights are int8, got {ckpt.dtype_name(key)}")
    if ckpt.shape(key) != (module.out_features, module.in_features):
        raise ValueError(
            f"{ckpt.where(key)}: shape {ckpt.shape(key)}, the model expects {(module.out_features, module.in_features)}"
        )


def _torchao_meta(ckpt, key) -> dict:
    text = ckpt.metadata.get(key)
    if text is None:
        raise ValueError(
            f"{ckpt.folder}: torchao tensor parts for {key!r} are in the checkpoint but its safetensors metadata has "
            f"no '{key}' entry describing the tensor type"
        )
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{ckpt.folder}: the safetensors metadata entry {key!r} is not valid JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("_tensor_data_names"), list):
        raise ValueError(f"{ckpt.folder}: the safetensors metadata entry {key!r} is not a torchao tensor description")
    return meta


def make_plan(model, ckpt, quantizer, pre_quantized: bool, expected_keys: List[str]) -> Plan:
    """Match the model's state keys (`expected_keys`, non-persistent buffers left out) to checkpoint tensors."""
    import torch

    from ..quantizers._tensors import module_and_attr

    method = _method(quantizer) if pre_quantized else None
    items: List[Item] = []
    missing: List[str] = []
    used = set()
    qmods: List[str] = []
    bnb4 = bnb8 = qlinear = None
    if method in ("bnb4", "bnb8"):
        import bitsandbytes as bnb

        bnb4, bnb8 = bnb.nn.Linear4bit, bnb.nn.Linear8bitLt
    if method == "quanto" or (quantizer is not None and _method(quantizer) == "quanto"):
        from optimum.quanto.nn import QModuleMixin as qlinear

    for key in expected_keys:
        mod_name, _, attr = key.rpartition(".")
        try:
            module, _ = module_and_attr(model, key)
        except AttributeError:
            module = None
        if method == "quanto" and qlinear is not None:
            # frozen QLinear: state keys such as "<m>.weight._data" name tensors inside the weight
            owner = _quanto_owner(model, key, qlinear)
            if owner is not None:
                if key not in ckpt:
                    missing.append(key)
                    continue
                items.append(Item(key, "quanto" if ".weight." in key[len(owner) :] else "plain", key))
                used.add(key)
                if owner not in qmods:
                    qmods.append(owner)
                continue
        if key in ckpt:
            used.add(key)
            if method == "bnb4" and attr == "weight" and isinstance(module, bnb4):
                extras = ckpt.with_prefix(key + ".")
                _bnb4_check(ckpt, key, module, extras)
                used.update(extras)
                items.append(Item(key, "bnb4", key, extras))
                qmods.append(mod_name)
            elif method == "bnb8" and attr == "weight" and isinstance(module, bnb8):
                scb = (mod_name + "." if mod_name else "") + "SCB"
                _bnb8_check(ckpt, key, module, scb)
                extras = [scb] + [k for k in [(mod_name + "." if mod_name else "") + "weight_format"] if k in ckpt]
                used.update(extras)
                items.append(Item(key, "bnb8", key, extras))
                qmods.append(mod_name)
            elif (
                not pre_quantized
                and quantizer is not None
                and attr == "weight"
                and quantizer.check_if_quantized_param(model, None, key, {})
            ):
                items.append(Item(key, "quantize", key))
                qmods.append(mod_name)
            else:
                items.append(Item(key, "plain", key))
            continue
        if method == "torchao" and isinstance(module, torch.nn.Module):
            prefix = (mod_name + "." if mod_name else "") + "_" + attr + "_"
            parts = ckpt.with_prefix(prefix)
            if parts:
                meta = _torchao_meta(ckpt, key)
                names = [prefix + n for n in meta["_tensor_data_names"]]
                absent = [n for n in names if n not in ckpt]
                if absent:
                    raise ValueError(f"{ckpt.folder}: torchao tensor {key!r} lacks its part(s) {absent}")
                used.update(parts)
                items.append(Item(key, "torchao", None, names))
                qmods.append(mod_name)
                continue
        missing.append(key)
    unexpected = [k for k in ckpt.keys() if k not in used]
    return Plan(items, missing, unexpected, qmods)


def _quanto_owner(model, key: str, qmodule_cls) -> Optional[str]:
    """The name of the quanto module that owns state key `key` (None if not under one)."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:i])
        try:
            m = model.get_submodule(name)
        except AttributeError:
            continue
        return name if isinstance(m, qmodule_cls) else None
    return None


def set_nested(model, key: str, value) -> None:
    """Set the tensor at dotted path `key`, where the path may go into a tensor subclass
    ("blocks.0.to_q.weight._data._data"), as diffusers does for quanto's frozen weights."""
    import torch

    path, _, leaf = key.rpartition(".")
    obj = model
    for part in path.split(".") if path else []:
        obj = getattr(obj, part)
    if isinstance(obj, torch.nn.Module):
        from ..quantizers._tensors import set_tensor

        set_tensor(model, key, value)
        return
    old = getattr(obj, leaf, None)
    if isinstance(old, torch.Tensor) and tuple(old.shape) != tuple(value.shape):
        raise ValueError(
            f"{key}: the checkpoint holds shape {tuple(value.shape)}, the model expects {tuple(old.shape)}"
        )
    setattr(obj, leaf, value)


def build_torchao(key: str, parts: Dict[str, object], meta_text: str):
    """The torchao tensor subclass for model key `key` from its flattened parts."""
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    result, leftover = unflatten_tensor_state_dict(dict(parts), {"tensor_names": json.dumps([key]), key: meta_text})
    value = result.get(key)
    if value is None or leftover:
        raise ValueError(f"torchao: could not rebuild {key!r} from {sorted(parts)}")
    return value
