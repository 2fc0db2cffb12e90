"""High-level API: quantize a torch model in place, save it, load it back.

    model = fastquant.quantize(model, {"quant_method": "torchao", "quant_type": "int8wo"})
    fastquant.save_pretrained(model, "out/")   # save_quantized is the same function

Each goes through the quantizer's hooks (`validate_environment`, `preprocess_model`, `check_if_quantized_param` /
`create_quantized_param`, `postprocess_model`), the same ones a diffusers-style loader calls. Backend packages are
imported only when their backend is used.
"""

from __future__ import annotations

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


def _meta_tensors(model):
    return [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]


def _training_flags(model) -> dict:
    return {name: m.training for name, m in model.named_modules()}


def _restore_training_flags(model, flags: dict) -> None:
    """Layers swapped in by a quantizer are new modules (in training mode by default): give each the mode of the
    module it replaced, so an eval() model stays in eval() (bitsandbytes layers compute differently in training)."""
    for name, m in model.named_modules():
        want = flags.get(name)
        if want is None:  # a module the quantizer added below a swapped one: its parent's mode
            parent = name.rpartition(".")[0]
            while parent and parent not in flags:
                parent = parent.rpartition(".")[0]
            want = flags.get(parent, model.training)
        m.training = want


def quantize(model, config, *, modules_to_not_convert: Optional[Sequence[str]] = None, device=None):
    """Quantize `model` in place with `config` (a config object or dict) and return it.

    `modules_to_not_convert`: module names (full dotted paths, ancestors, or single components) to keep in float,
    in addition to the config's own skip list. `device`: move the model there first (bitsandbytes and torchao
    quantize on the device the weights are on). Records `model.hf_quantizer`, `model.is_quantized`,
    `model.quantization_method` and, when the model has a config, `model.config.quantization_config`.
    Swapped layers keep the training mode of the layers they replace.

    The model must hold its weights: a model with tensors on the meta device (built with `init_empty_weights`, or
    with layers offloaded to disk by accelerate) is a ValueError; `fastquant.from_pretrained(...,
    quantization_config=...)` quantizes while it loads instead."""
    require("torch", "fastquant.quantize")
    config = _to_config(config)
    if getattr(model, "hf_quantizer", None) is not None:
        raise ValueError("this model is already quantized (model.hf_quantizer is set); dequantize it first")
    on_meta = _meta_tensors(model)
    if on_meta:
        hooked = any(hasattr(m, "_hf_hook") for m in model.modules())
        raise ValueError(
            f"quantize: {len(on_meta)} tensor(s) of the model are on the meta device (e.g. {on_meta[:3]})"
            + (", offloaded by accelerate hooks" if hooked else "")
            + "; quantization needs the weights. Load the weights first, or quantize while loading with "
            "fastquant.from_pretrained(cls, folder, quantization_config=...)"
        )
    kwargs: dict = {"pre_quantized": False}
    if modules_to_not_convert is not None:
        # Passed as given: the quantizer rejects a bare str (it would otherwise be read letter by letter).
        kwargs["modules_to_not_convert"] = modules_to_not_convert
    quantizer = DiffusersAutoQuantizer.from_config(config, **kwargs)
    if device is not None:
        model.to(device)
    flags = _training_flags(model)
    dev = _model_device(model)
    device_map = {"": str(dev)}
    quantizer.validate_environment(device_map=device_map, torch_dtype=_model_dtype(model))
    quantizer.preprocess_model(
        model, device_map=device_map, keep_in_fp32_modules=getattr(model, "_keep_in_fp32_modules", None)
    )
    quantizer.postprocess_model(model)
    _restore_training_flags(model, flags)
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
    """Load a quantized folder in the transformers/diffusers layout (`config.json` with its `quantization_config`,
    safetensors shards: what `fastquant.save_pretrained` and the libraries' own `save_pretrained` write) into
    `model`, a float model of the same architecture, real or built on the meta device; returns it quantized.

    The folder is checked against the model (names, shapes, dtypes) before the model is changed. Non-persistent
    buffers of a meta-device transformers/diffusers model are computed by the model class's own `__init__`; for
    other models they must not be on the meta device. Swapped layers keep the training mode of the layers they
    replace. To build the model from the folder as well, use `fastquant.from_pretrained(cls, path)`."""
    from .hf._into import load_quantized_into

    flags = _training_flags(model)
    model = load_quantized_into(model, path, device=device)
    _restore_training_flags(model, flags)
    return model
