"""`fastquant.from_pretrained`: a transformers or diffusers model from a local folder, quantized on load or read
from a pre-quantized checkpoint, tensor by tensor.

    model = fastquant.from_pretrained(LlamaForCausalLM, "folder/", quantization_config={"quant_method": "torchao",
                                      "quant_type": "int8wo"})

Steps: read `config.json` (JSON only, depth-checked); find the safetensors checkpoint (one file, or shards and their
index json, with transformers' or diffusers' file names) and read its headers; build the model with its parameters
on the meta device (accelerate's `init_empty_weights`, so buffers are computed by the model's own `__init__`);
swap layers through the quantizer's `preprocess_model`; match every model tensor to checkpoint tensors (see
`_formats`) and check names, shapes and dtypes before anything is read; then read one tensor at a time, quantize it
or place it on its `device_map` device (or write it to the offload folder); finally tie weights, run
`postprocess_model`, dispatch offloaded modules with accelerate's hooks and return the model in `eval()` mode.
The float model never exists in memory: the peak is the quantized model plus about one float tensor.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Optional

from ..quantizers import DiffusersAutoQuantizer
from ..quantizers._utils import matches_skip, require, set_model_quantized
from . import _formats
from ._files import WEIGHT_NAMES, Checkpoint, read_json, resolve_folder

__all__ = ["from_pretrained", "load_into_model"]


# ---------------------------------------------------------------------------------------------------------------
# which library, which class


def _library_of(cls) -> str:
    if not isinstance(cls, type):
        raise TypeError(f"from_pretrained: cls must be a model class, got {type(cls).__name__}")
    root = (cls.__module__ or "").split(".")[0]
    if root == "transformers" or "transformers" in sys.modules and _is_sub(cls, "transformers", "PreTrainedModel"):
        return "transformers"
    if root == "diffusers" or "diffusers" in sys.modules and _is_sub(cls, "diffusers", "ModelMixin"):
        return "diffusers"
    raise TypeError(
        f"from_pretrained: {cls.__name__} is neither a transformers PreTrainedModel nor a diffusers ModelMixin "
        "subclass (nor one of their Auto classes)"
    )


def _is_sub(cls, module: str, name: str) -> bool:
    base = getattr(sys.modules.get(module), name, None)
    return isinstance(base, type) and issubclass(cls, base)


def _resolve_class(cls, lib: str, config_dict: dict, config_path: str):
    """The concrete model class (Auto classes resolved from the config); a class that does not match the config's
    `model_type` / `_class_name` is a ValueError."""
    if lib == "transformers":
        import transformers

        if getattr(cls, "_model_mapping", None) is not None:  # an Auto class
            from transformers import AutoConfig

            model_type = config_dict.get("model_type")
            if not isinstance(model_type, str):
                raise ValueError(f"{config_path}: no 'model_type' string; cannot pick a class for {cls.__name__}")
            try:
                config_class = AutoConfig.for_model(model_type).__class__
            except Exception as e:
                raise ValueError(f"{config_path}: model_type {model_type!r} is unknown to transformers ({e})") from None
            from transformers.models.auto.auto_factory import _get_model_class

            try:
                return _get_model_class(_ConfigProbe(config_class, config_dict), cls._model_mapping)
            except KeyError:
                raise ValueError(
                    f"{config_path}: model_type {model_type!r} has no {cls.__name__} class in transformers"
                ) from None
        if not issubclass(cls, transformers.PreTrainedModel):
            raise TypeError(f"{cls.__name__} is not a transformers PreTrainedModel")
        want = getattr(cls.config_class, "model_type", None)
        got = config_dict.get("model_type")
        if want and got != want:
            raise ValueError(
                f"{config_path}: model_type is {got!r}, but {cls.__name__} expects {want!r}; pass the class that "
                "matches the checkpoint (or an Auto class)"
            )
        return cls
    import diffusers

    name = config_dict.get("_class_name")
    if cls.__name__ == "AutoModel" and not issubclass(cls, diffusers.ModelMixin):
        if not isinstance(name, str) or not isinstance(getattr(diffusers, name, None), type):
            raise ValueError(f"{config_path}: '_class_name' {name!r} is not a diffusers model class")
        resolved = getattr(diffusers, name)
        if not issubclass(resolved, diffusers.ModelMixin):
            raise ValueError(f"{config_path}: '_class_name' {name!r} is not a diffusers model class")
        return resolved
    if not issubclass(cls, diffusers.ModelMixin):
        raise TypeError(f"{cls.__name__} is not a diffusers ModelMixin")
    named = getattr(diffusers, name, None) if isinstance(name, str) else None
    if name is not None and name != cls.__name__ and not (isinstance(named, type) and issubclass(cls, named)):
        raise ValueError(
            f"{config_path}: '_class_name' is {name!r}, but the class passed is {cls.__name__}; pass the class "
            "that matches the checkpoint"
        )
    return cls


class _ConfigProbe:
    """Stands in for a config object when picking an Auto class's model (`type()` and `architectures`)."""

    def __new__(cls, config_class, config_dict):
        probe = config_class.__new__(config_class)
        arch = config_dict.get("architectures")
        probe.__dict__["architectures"] = [a for a in arch if isinstance(a, str)] if isinstance(arch, list) else []
        return probe


# ---------------------------------------------------------------------------------------------------------------
# quantization config


def _to_fastquant_config(config):
    """A fastquant config from a fastquant config, a dict, or a transformers/diffusers config object."""
    from ..quantization_config import QuantizationConfigMixin

    if config is None:
        return None
    if isinstance(config, dict):
        return DiffusersAutoQuantizer.from_dict(config)
    if isinstance(config, QuantizationConfigMixin):
        return config
    try:  # the saver's conversion, when present
        from . import _configs  # noqa: F401

        convert = getattr(_configs, "from_library", None)
    except ImportError:
        convert = None
    if convert is not None:
        return convert(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        data = to_dict()
        if isinstance(data, dict):
            return DiffusersAutoQuantizer.from_dict(library_dict(data, "quantization_config"))
    raise TypeError(
        "quantization_config: expected a fastquant config, a dict, or a transformers/diffusers quantization config, "
        f"got {type(config).__name__}"
    )


#: fields transformers writes that fastquant's configs do not have, and the only value fastquant can honour
_LIBRARY_ONLY = {"torchao": {"include_input_output_embeddings": False, "untie_embedding_weights": False}}


def library_dict(data: dict, where: str) -> dict:
    """A config dict as transformers/diffusers write it, in fastquant's spelling (a new dict)."""
    data = dict(data)
    qm = data.get("quant_method")
    data["quant_method"] = str(getattr(qm, "value", qm))
    for key, honoured in _LIBRARY_ONLY.get(data["quant_method"], {}).items():
        if key in data:
            value = data.pop(key)
            if value not in (None, honoured):
                raise ValueError(f"{where}: {data['quant_method']} {key}={value!r} is not supported by fastquant")
    if data["quant_method"] == "quanto" and "weights" in data and "weights_dtype" not in data:
        # transformers' QuantoConfig names the field `weights` and has activation quantization
        if data.pop("activations", None) is not None:
            raise ValueError(f"{where}: quanto activation quantization is not supported by fastquant")
        data["weights_dtype"] = data.pop("weights")
    return data


def check_method(cfg, pre_quantized: bool, config_path: str) -> None:
    """Methods whose checkpoints are not safetensors folders fastquant reads."""
    method = str(getattr(cfg, "quant_method", None)) if cfg is not None else None
    if method == "gguf":
        raise ValueError(
            f"{config_path}: GGUF weights live in single .gguf files, not in a safetensors folder; load them with "
            "fastquant.gguf (load_into)"
        )
    if method == "modelopt" and pre_quantized:
        raise ValueError(
            f"{config_path}: pre-quantized nvidia-modelopt folders keep the quantizer state in a pickle "
            "(modelopt_state.pth), which fastquant never unpickles from a folder; quantize on load instead"
        )


def _config_skip(cfg):
    for attr in ("llm_int8_skip_modules", "modules_to_not_convert"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return list(value)
    return None


def _default_skip(model, lib: str):
    """transformers' rule: tied weights, the last parameter's module and the output embeddings stay in float."""
    if lib != "transformers":
        return []
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        return sorted(get_keys_to_not_convert(model))
    except Exception:  # older/newer layouts of transformers: the output embeddings at least
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        return [n for n, m in model.named_modules() if out is not None and m is out]


# ---------------------------------------------------------------------------------------------------------------
# dtype and model construction


def _resolve_dtype(torch_dtype, lib: str, config_dict: dict, ckpt: Checkpoint, quantizer):
    import torch

    if isinstance(torch_dtype, str) and torch_dtype != "auto":
        value = getattr(torch, torch_dtype, None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"torch_dtype: {torch_dtype!r} is not a torch dtype")
        torch_dtype = value
    if torch_dtype is not None and torch_dtype != "auto" and not isinstance(torch_dtype, torch.dtype):
        raise TypeError(f"torch_dtype: expected a torch.dtype, 'auto' or None, got {type(torch_dtype).__name__}")
    if lib == "transformers" and torch_dtype in (None, "auto"):
        # transformers loads in the checkpoint's dtype by default (dtype="auto")
        name = config_dict.get("dtype", config_dict.get("torch_dtype"))
        value = getattr(torch, name, None) if isinstance(name, str) else None
        if isinstance(value, torch.dtype) and value.is_floating_point:
            return value
        for key in ckpt.keys():
            if ckpt.is_floating(key):
                return ckpt.torch_dtype(key)
        return torch.float32
    if torch_dtype == "auto":
        torch_dtype = None
    if quantizer is not None:
        torch_dtype = quantizer.update_torch_dtype(torch_dtype)
    return torch_dtype if torch_dtype is not None else torch.float32


class _default_dtype:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        import torch

        self.old = torch.get_default_dtype()
        if self.dtype is not None and self.dtype.is_floating_point:
            torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        import torch

        torch.set_default_dtype(self.old)


def _build_model(cls, lib: str, config_dict: dict, model_kwargs: dict, dtype, config_path: str):
    """The model with its parameters on the meta device and its buffers computed by its own __init__."""
    from accelerate import init_empty_weights

    if lib == "transformers":
        config_dict = {k: v for k, v in config_dict.items() if k != "quantization_config"}
        config, unused = cls.config_class.from_dict(config_dict, return_unused_kwargs=True, **model_kwargs)
        if unused:
            raise TypeError(f"from_pretrained: unexpected keyword argument(s) {sorted(unused)}")
        config.dtype = dtype
        contexts = []
        try:
            from transformers import initialization as tinit

            contexts.append(tinit.no_tie_weights())
        except (ImportError, AttributeError):
            pass
        with init_empty_weights(include_buffers=False), _default_dtype(dtype):
            for c in contexts:
                c.__enter__()
            try:
                model = cls(config)
            finally:
                for c in reversed(contexts):
                    c.__exit__(None, None, None)
        return model
    init = {k: v for k, v in config_dict.items() if k != "quantization_config"}
    with init_empty_weights(include_buffers=False):
        try:
            model = cls.from_config(init, **model_kwargs)
        except TypeError as e:
            raise TypeError(f"{config_path}: cannot build {cls.__name__} from this config: {e}") from None
    return model


def _keep_in_fp32(model, lib: str, dtype, quantizer):
    import torch

    if lib == "transformers":
        names = set()
        if dtype == torch.float16:
            names |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
        if dtype in (torch.float16, torch.bfloat16):
            names |= set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
        return sorted(names)
    names = getattr(model, "_keep_in_fp32_modules", None) or ()
    if quantizer is not None and not quantizer.use_keep_in_fp32_modules:
        return []
    return list(names)


def _non_persistent(model):
    out = set()
    for mod_name, module in model.named_modules():
        for b in getattr(module, "_non_persistent_buffers_set", ()):
            out.add(f"{mod_name}.{b}" if mod_name else b)
    return out


def _tied_keys(model, lib: str):
    if lib != "transformers":
        return set()
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        return set(tied.keys())
    return set()


# ---------------------------------------------------------------------------------------------------------------
# the loading itself


def _check_plain(model, ckpt, item, expected):
    import math

    old = expected[item.key]
    shape = ckpt.shape(item.source)
    if tuple(old.shape) != shape and not (old.dim() == 0 and math.prod(shape) == 1 and len(shape) <= 1):
        raise ValueError(f"{ckpt.where(item.source)}: shape {shape}, the model expects {tuple(old.shape)}")
    if old.is_floating_point() != ckpt.is_floating(item.source) and old.dtype.is_complex is False:
        raise ValueError(
            f"{ckpt.where(item.source)}: dtype {ckpt.dtype_name(item.source)}, the model's tensor is {old.dtype}"
        )


def check_plan(model, ckpt: Checkpoint, quantizer, *, pre_quantized: bool, tied=(), warn: bool = True):
    """Match the model (already through `preprocess_model`) to the checkpoint headers; every mismatch is a
    ValueError naming the file and key. Returns (plan, expected state tensors)."""
    if pre_quantized:
        _formats.prepare_prequantized(model, quantizer)
    non_persistent = _non_persistent(model)
    state = model.state_dict(keep_vars=True)
    expected = {k: v for k, v in state.items() if k not in non_persistent}
    plan = _formats.make_plan(model, ckpt, quantizer, pre_quantized, list(expected))
    missing = [k for k in plan.missing if k not in tied]
    if quantizer is not None and missing:
        missing = quantizer.update_missing_keys(model, missing, "")
    if missing:
        raise ValueError(
            f"{ckpt.folder}: the checkpoint lacks {len(missing)} tensor(s) the model needs: {missing[:8]}"
            + (" (is it quantized with another method?)" if pre_quantized else "")
        )
    for item in plan.items:
        if item.kind in ("plain", "quantize"):
            _check_plain(model, ckpt, item, expected)
    if plan.unexpected and warn:
        warnings.warn(
            f"{ckpt.folder}: {len(plan.unexpected)} checkpoint tensor(s) are not used by "
            f"{type(model).__name__}: {plan.unexpected[:8]}",
            UserWarning,
            stacklevel=4,
        )
    return plan, expected


def load_into_model(
    model,
    ckpt: Checkpoint,
    quantizer,
    *,
    pre_quantized: bool,
    dtype,
    keep_fp32=(),
    device_map=None,
    offload_folder=None,
    tied=(),
):
    """Stream `ckpt` into `model` (already through `preprocess_model`). Everything is checked against the
    checkpoint headers first; returns (model, offload index or None)."""
    import torch

    from ..quantizers._tensors import set_tensor
    from ._offload import device_for, disk_check

    plan, expected = check_plan(model, ckpt, quantizer, pre_quantized=pre_quantized, tied=tied)
    offload_index = disk_check(device_map, plan, quantizer, offload_folder)

    loaded = set()
    since_trim = 0
    for item in plan.items:
        dev = device_for(device_map, item.key)
        if item.kind == "quantize":
            since_trim += ckpt.nbytes(item.source)
        if item.kind == "torchao":
            parts = {k: ckpt.get(k) for k in item.extras}
            value = _formats.build_torchao(item.key, parts, ckpt.metadata[item.key])
            quantizer.create_quantized_param(model, value, item.key, dev)
        elif item.kind in ("bnb4", "bnb8"):
            value = ckpt.get(item.source)
            extras = {k: ckpt.get(k) for k in item.extras}
            quantizer.create_quantized_param(model, value, item.key, dev, state_dict=extras)
        else:
            value = ckpt.get(item.source)
            if value.is_floating_point() and not (pre_quantized and value.dtype == torch.float8_e4m3fn):
                mod_name = item.key.rpartition(".")[0]
                want = torch.float32 if keep_fp32 and matches_skip(mod_name, keep_fp32) else dtype
                if item.kind == "quanto" and item.key.endswith("._data"):
                    want = None
                if want is not None and value.dtype != want:
                    value = value.to(want)
            old = expected[item.key]
            if old.dim() == 0 and value.dim() == 1:
                value = value.reshape(())
            if dev == "disk" and item.kind == "plain" and isinstance(old, torch.nn.Parameter):
                from accelerate.utils import offload_weight

                offload_weight(value, item.key, offload_folder, index=offload_index)
            elif item.kind == "quantize":
                quantizer.create_quantized_param(model, value, item.key, "cpu" if dev == "disk" else dev)
            elif item.kind == "quanto":
                _formats.set_nested(model, item.key, value.to("cpu" if dev == "disk" else dev))
            else:
                set_tensor(model, item.key, value, device="cpu" if dev == "disk" else dev)
        loaded.add(item.key)
        del value
        if since_trim >= _TRIM_EVERY:
            _release_freed_memory()
            since_trim = 0
    _release_freed_memory()
    return model, offload_index


#: bytes of float weights quantized between two returns of freed heap memory to the OS
_TRIM_EVERY = 16 << 20
_TRIM = None


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc's `malloc_trim`).

    Quantizing one float tensor after another frees its temporaries between the quantized tensors that stay; glibc
    keeps such freed chunks below its (dynamic, up to 32 MB) mmap threshold inside the heap, so without this the
    resident size of a streamed load grows towards the float model's size although the memory is free. A no-op
    where glibc is not the allocator."""
    global _TRIM
    if _TRIM is None:
        _TRIM = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                trim = libc.malloc_trim
                trim.argtypes = [ctypes.c_size_t]
                _TRIM = trim
            except (OSError, AttributeError):
                pass
    if _TRIM:
        _TRIM(0)


def _on_meta(t, depth: int = 0) -> bool:
    """Whether tensor `t` holds data on the meta device; for tensor subclasses (quanto's QTensor wraps its data
    and reports the device it was made on), the inner tensors decide."""
    import torch

    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is None or type(t) in (torch.Tensor, torch.nn.Parameter) or depth > 4:
        return t.device.type == "meta"
    try:
        names = flatten()[0]
    except Exception:
        return t.device.type == "meta"
    inner = [getattr(t, n, None) for n in names]
    inner = [x for x in inner if isinstance(x, torch.Tensor)]
    if not inner:
        return t.device.type == "meta"
    return any(_on_meta(x, depth + 1) for x in inner)


def _materialize_leftovers(model, device_map, skip_meta):
    """Buffers the checkpoint does not hold but the model needs off meta: quanto's activation scales (their init
    value is 1) and non-persistent buffers moved to their module's device."""
    import torch

    from ._offload import device_for

    for mod_name, module in model.named_modules():
        for name, buf in list(module._buffers.items()):
            if buf is None:
                continue
            full = f"{mod_name}.{name}" if mod_name else name
            dev = device_for(device_map, full)
            dev = "cpu" if dev in ("disk", None) else dev
            if buf.device.type == "meta":
                if name in ("input_scale", "output_scale"):
                    module._buffers[name] = torch.ones(buf.shape, dtype=buf.dtype, device=dev)
            elif str(buf.device) != str(torch.device(dev)):
                module._buffers[name] = buf.to(dev)
    left = [
        n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if _on_meta(t) and n not in skip_meta
    ]
    if left:
        raise ValueError(f"tensors left on the meta device after loading (not in the checkpoint): {left[:8]}")


def from_pretrained(
    cls,
    path,
    *,
    quantization_config=None,
    subfolder: Optional[str] = None,
    torch_dtype=None,
    device_map=None,
    max_memory=None,
    offload_folder=None,
    modules_to_not_convert=None,
    **model_kwargs,
):
    """Load a transformers `PreTrainedModel` / diffusers `ModelMixin` subclass (or Auto class) `cls` from the local
    folder `path` (a hub-cache snapshot folder works the same).

    - A float checkpoint with `quantization_config` (a fastquant config, a dict, or a transformers/diffusers config
      object) is quantized while it loads; a pre-quantized checkpoint (its config.json has `quantization_config`) is
      read in its backend's layout, its own config winning over the one passed (diffusers' merge rule).
    - `torch_dtype`: the dtype of float tensors; by default transformers models load in the checkpoint's dtype and
      diffusers models in the quantizer's default (float32 without one).
    - `device_map`: "cpu", "auto"/"balanced"/"sequential" (accelerate's `infer_auto_device_map` with `max_memory`),
      or a dict module -> device ("cpu", "cuda:0", 0, "disk"). Modules on "disk" are written to `offload_folder` and
      loaded by accelerate's hooks at forward time; quantized layers cannot go to disk (a ValueError says so).
    - `modules_to_not_convert`: modules kept in float (with transformers models, the output embeddings, tied weights
      and the last module stay in float unless this or the config's own skip list is given).
    - further keyword arguments override config entries (transformers) or `from_config` arguments (diffusers).

    Returns the model in eval() mode, with `model.hf_quantizer` and `config.quantization_config` set when quantized.
    """
    require("torch", "fastquant.from_pretrained")
    require("safetensors", "fastquant.from_pretrained")
    if "dtype" in model_kwargs:  # transformers 5's name for torch_dtype
        if torch_dtype is not None:
            raise TypeError("from_pretrained: pass torch_dtype or dtype, not both")
        torch_dtype = model_kwargs.pop("dtype")
    lib = _library_of(cls)
    folder = resolve_folder(path, subfolder)
    config_path = os.path.join(folder, "config.json")
    config_dict = read_json(config_path, "config")
    cls = _resolve_class(cls, lib, config_dict, config_path)
    ckpt = Checkpoint(folder, WEIGHT_NAMES[lib])
    if modules_to_not_convert is not None and (
        isinstance(modules_to_not_convert, str) or not all(isinstance(m, str) for m in modules_to_not_convert)
    ):
        raise TypeError("modules_to_not_convert: expected a list of module names (str)")

    # quantization config: the checkpoint's own wins
    ckpt_q = config_dict.get("quantization_config")
    user_q = _to_fastquant_config(quantization_config)
    if ckpt_q is not None:
        if not isinstance(ckpt_q, dict):
            raise ValueError(f"{config_path}: 'quantization_config' must be an object")
        ckpt_q = library_dict(ckpt_q, config_path)
        try:
            cfg = DiffusersAutoQuantizer.merge_quantization_configs(ckpt_q, user_q)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{config_path}: quantization_config: {e}") from None
        pre_quantized = True
    else:
        cfg, pre_quantized = user_q, False
    check_method(cfg, pre_quantized, config_path)

    # the quantizer (its skip list needs the model for transformers' defaults), the dtype, the model
    probe_q = DiffusersAutoQuantizer.from_config(cfg, pre_quantized=pre_quantized) if cfg is not None else None
    dtype = _resolve_dtype(torch_dtype, lib, config_dict, ckpt, probe_q)
    model = _build_model(cls, lib, config_dict, dict(model_kwargs), dtype, config_path)
    keep_fp32 = _keep_in_fp32(model, lib, dtype, probe_q)
    quantizer = None
    if cfg is not None:
        skip = list(modules_to_not_convert) if modules_to_not_convert is not None else None
        if skip is None and _config_skip(cfg) is None:
            skip = _default_skip(model, lib)
        quantizer = DiffusersAutoQuantizer.from_config(
            cfg, pre_quantized=pre_quantized, modules_to_not_convert=skip or []
        )

    from ._offload import resolve_device_map

    if quantizer is not None:
        if device_map is None:
            device_map = quantizer.update_device_map(None)
        raw_map = device_map
        quantizer.validate_environment(device_map=_env_map(raw_map), torch_dtype=dtype)
        quantizer.preprocess_model(
            model, device_map=raw_map if isinstance(raw_map, dict) else None, keep_in_fp32_modules=keep_fp32
        )
    dm = resolve_device_map(model, device_map, max_memory, quantizer, dtype)
    if quantizer is not None and dm is not None and dm != device_map:
        quantizer.validate_environment(device_map=dm, torch_dtype=dtype)
    if dm is not None and "disk" in dm.values():
        if offload_folder is None:
            raise ValueError(
                "device_map sends modules to 'disk': pass offload_folder=<a folder for the offloaded weights>"
            )
        os.makedirs(os.fspath(offload_folder), exist_ok=True)
        offload_folder = os.fspath(offload_folder)
    tied = _tied_keys(model, lib)
    model, offload_index = load_into_model(
        model,
        ckpt,
        quantizer,
        pre_quantized=pre_quantized,
        dtype=dtype,
        keep_fp32=keep_fp32,
        device_map=dm,
        offload_folder=offload_folder,
        tied=tied,
    )
    ckpt.close()
    if lib == "transformers" and hasattr(model, "tie_weights"):
        model.tie_weights()
    if quantizer is not None:
        quantizer.postprocess_model(model)
    disk_keys = set(offload_index or {})
    _materialize_leftovers(model, dm, disk_keys)
    if quantizer is not None:
        set_model_quantized(model, quantizer)
    if lib == "transformers":
        model.config.dtype = dtype
    model.eval()
    from ._offload import dispatch

    if dm is not None:
        model.hf_device_map = dict(dm)
    dispatch(model, dm, offload_folder, offload_index)
    return model


def _env_map(device_map):
    if isinstance(device_map, dict) or device_map is None:
        return device_map
    return {"": device_map}
