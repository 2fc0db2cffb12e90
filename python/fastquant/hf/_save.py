"""`save_pretrained`: write a (quantized) transformers or diffusers model in the library's own folder layout.

The library writes the folder itself: for the duration of the call the model carries the library's own quantizer
and config object (built from fastquant's with `to_transformers` / `to_diffusers`, skip list = the Linear layers
left in float), and the model class's own `save_pretrained` runs into a temporary folder. So `config.json`
(with `quantization_config` as the library serializes it), the safetensors shards, their index and the tensor
keys (bitsandbytes `quant_state` / `SCB`, torchao's flattened tensor subclasses) are exactly what the library
writes and reads. The temporary folder then replaces `path` atomically (`_atomic.atomic_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import types
import warnings

from ._atomic import atomic_folder

__all__ = ["save_pretrained", "install_save_pretrained", "library_of"]

#: modelopt's own Hugging Face plugin stores its quantizer state here (torch.save); so does save_pretrained
MODELOPT_STATE = "modelopt_state.pth"

# Entries of a previous save that a new save replaces (not carried over into the new folder).
_STALE = re.compile(
    r"^(?:(?:model|diffusion_pytorch_model|pytorch_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)(?:\.index\.json)?"
    r"|(?:model|diffusion_pytorch_model|pytorch_model)\.(?:safetensors|bin)\.index\.json"
    r"|config\.json|generation_config\.json|quantization_config\.json|modelopt_state\.pth?)$"
)


def _is_stale(name: str) -> bool:
    return _STALE.match(name) is not None


def library_of(model):
    """'transformers' for a `PreTrainedModel`, 'diffusers' for a `ModelMixin`, else None (imports neither)."""
    for cls in type(model).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ == "PreTrainedModel" and module.startswith("transformers."):
            return "transformers"
        if cls.__name__ == "ModelMixin" and module.startswith("diffusers."):
            return "diffusers"
    return None


def _float_linears(model, quantizer):
    """Full names of the Linear layers the quantizer left in float (the skip list the library must apply)."""
    import torch

    quantized = set(quantizer.quantized_modules(model))
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n and n not in quantized]


def _library_quantizer(lib, lib_cfg):
    if lib == "transformers":
        from transformers.quantizers.auto import AutoHfQuantizer

        return AutoHfQuantizer.from_config(lib_cfg, pre_quantized=True)
    from diffusers.quantizers.auto import DiffusersAutoQuantizer

    quantizer = DiffusersAutoQuantizer.from_config(lib_cfg, pre_quantized=True)
    if str(lib_cfg.quant_method.value) == "torchao" and not hasattr(quantizer, "offload"):
        quantizer.offload = False  # set by its validate_environment, which a save does not run; nothing is offloaded
    return quantizer


def _set_config(model, lib, value) -> None:
    if lib == "diffusers":
        model.register_to_config(quantization_config=value)
    else:
        model.config.quantization_config = value


_MISSING = object()


def _get_config(model, lib):
    if lib == "diffusers":
        return dict(model._internal_dict).get("quantization_config", _MISSING)
    return model.config.__dict__.get("quantization_config", _MISSING)


def _put_config(model, lib, value) -> None:
    """Set (or with _MISSING remove) the model config's quantization_config."""
    if value is not _MISSING:
        _set_config(model, lib, value)
    elif lib == "diffusers":
        internal = model._internal_dict
        model._internal_dict = type(internal)({k: v for k, v in internal.items() if k != "quantization_config"})
    else:
        model.config.__dict__.pop("quantization_config", None)


@contextlib.contextmanager
def _as_library_model(model, lib, lib_quantizer, lib_cfg):
    """The model with the library's quantizer and config for the duration (restored afterwards, also on error).
    `lib_cfg` None: no quantizer and no quantization_config (modelopt on transformers, which keeps its state in
    modelopt_state.pth only)."""
    own_quantizer = model.__dict__.get("hf_quantizer", _MISSING)
    own_cfg = _get_config(model, lib)
    if lib_cfg is None:
        model.__dict__.pop("hf_quantizer", None)
        _put_config(model, lib, _MISSING)
    else:
        model.hf_quantizer = lib_quantizer
        _set_config(model, lib, lib_cfg)
    try:
        yield
    finally:
        if own_quantizer is _MISSING:
            model.__dict__.pop("hf_quantizer", None)
        else:
            model.hf_quantizer = own_quantizer
        _put_config(model, lib, own_cfg)


def _modelopt_state(model):
    """modelopt's state for `model`, as modelopt's own Hugging Face plugin saves it (`modelopt_state.pth`).

    fastquant puts plain torch layers back for skipped modules after calibration, so the calibration mode's state
    lacks their (disabled) quantizers, while modelopt's restore converts every layer again: give each mode the
    quantizer entries of the first one, so the restored model matches the saved one."""
    import modelopt.torch.opt as mto

    state = mto.modelopt_state(model)
    first = None
    for _mode, entry in state.get("modelopt_state_dict", []):
        quantizers = entry.get("metadata", {}).get("quantizer_state")
        if quantizers is None:
            continue
        if first is None:
            first = quantizers
        else:
            for key, value in first.items():
                quantizers.setdefault(key, value)
    return state


def _check_serializable(model, quantizer, lib):
    method = str(quantizer.quantization_config.quant_method)
    if not quantizer.is_serializable:
        raise ValueError(f"save_pretrained: {method}-quantized models cannot be saved ({type(quantizer).__name__})")
    if lib == "transformers" and method == "quanto":
        raise ValueError(
            "save_pretrained: transformers cannot load pre-quantized optimum-quanto checkpoints (its quanto "
            "quantizer is not serializable: it would re-initialise the packed weights). Save the float model and "
            "quantize on load instead: from_pretrained(path, quantization_config=QuantoConfig(...))"
        )
    if method == "gguf":
        raise ValueError("save_pretrained: GGUF-quantized models are saved with fastquant.gguf.save")


def _to_oserror(e: Exception, path: str) -> OSError:
    """An OSError (the subclass its errno maps to) naming `path`, for an I/O failure reported another way."""
    code = getattr(e, "errno", None)
    if code is None:
        m = re.search(r"os error (\d+)", str(e))
        code = int(m.group(1)) if m else errno.EIO
    text = getattr(e, "strerror", None) or str(e)
    return OSError(code, f"save_pretrained: writing the folder failed: {type(e).__name__}: {text}", path)


def save_pretrained(model, path, *, max_shard_size="5GB") -> None:
    """Write `model` (a transformers `PreTrainedModel` or diffusers `ModelMixin`, quantized by fastquant or not)
    to folder `path` in the library's own layout, readable by the library's `from_pretrained` and by
    `fastquant.from_pretrained` with the same outputs.

    `max_shard_size`: int bytes or a string such as "5GB"; larger models are split into shards with an index
    json. The folder is replaced atomically: a reader sees the previous save or the new one, never a mix, and a
    crash at any point leaves the previous save in place (docs/saving.md). Files of a previous save that are not
    model files (a tokenizer, a README) are kept. I/O failures raise OSError with `filename` set."""
    lib = library_of(model)
    if lib is None:
        raise TypeError(
            f"save_pretrained: expected a transformers PreTrainedModel or diffusers ModelMixin, got "
            f"{type(model).__name__}; for other torch modules save model.state_dict() with safetensors"
        )
    quantizer = model.__dict__.get("hf_quantizer")
    path = os.path.abspath(os.fspath(path))
    own = quantizer is not None and type(quantizer).__module__.startswith("fastquant.")
    context = contextlib.nullcontext()
    modelopt = own and str(quantizer.quantization_config.quant_method) == "modelopt"
    if own:
        _check_serializable(model, quantizer, lib)
        from ._configs import to_diffusers, to_transformers

        if modelopt and lib == "transformers":
            context = _as_library_model(model, lib, None, None)  # transformers has no modelopt config
        else:
            convert = to_transformers if lib == "transformers" else to_diffusers
            lib_cfg = convert(quantizer.quantization_config, modules_to_not_convert=_float_linears(model, quantizer))
            context = _as_library_model(model, lib, _library_quantizer(lib, lib_cfg), lib_cfg)
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency of both libraries
        SafetensorError = RuntimeError
    try:
        with atomic_folder(path, is_stale=_is_stale) as tmp:
            with context, warnings.catch_warnings():
                # diffusers' modelopt quantizer warns unless modelopt patched save_pretrained; the state is
                # written below, as that patch would.
                warnings.filterwarnings("ignore", message="Not saving weights in modelopt format")
                type(model).save_pretrained(model, tmp, max_shard_size=max_shard_size)
            if modelopt:
                import torch

                torch.save(_modelopt_state(model), os.path.join(tmp, MODELOPT_STATE))
    except SafetensorError as e:
        raise _to_oserror(e, path) from e
    except OSError as e:
        if e.filename is None:
            raise _to_oserror(e, path) from e
        raise


def _model_save_pretrained(self, save_directory, *, max_shard_size="5GB", safe_serialization=True, **kwargs):
    """fastquant-quantized model: `model.save_pretrained(dir)` is `fastquant.save_pretrained(model, dir)`."""
    if (
        safe_serialization is not True
        or kwargs.get("push_to_hub")
        or any(k not in ("is_main_process", "push_to_hub") for k in kwargs)
    ):
        bad = sorted(k for k in kwargs if k != "is_main_process") or ["safe_serialization"]
        raise TypeError(
            f"this model was quantized by fastquant: its save_pretrained is fastquant.save_pretrained(model, path, "
            f"max_shard_size=...), which writes safetensors locally and takes no {', '.join(bad)}"
        )
    if not kwargs.get("is_main_process", True):
        return None
    return save_pretrained(self, save_directory, max_shard_size=max_shard_size)


_model_save_pretrained.__name__ = "save_pretrained"


def install_save_pretrained(model) -> None:
    """Make `model.save_pretrained(dir)` of a fastquant-quantized transformers/diffusers model call
    `fastquant.save_pretrained` (the library's own method cannot save a model carrying fastquant's quantizer).
    An instance attribute (a bound method, rebound by `copy.deepcopy`), removed by `fastquant.dequantize`."""
    if library_of(model) is not None:
        model.__dict__["save_pretrained"] = types.MethodType(_model_save_pretrained, model)
