"""Helpers shared by the backend quantizers: lazy imports with clear errors, skip-list matching, module-tree walks,
progress bars and model bookkeeping.

Nothing here imports torch at module import time (the quantizer modules are imported by `import fastquant`).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from .. import _core
from typing import Iterable, Iterator, Optional, Sequence, Tuple

__all__ = [
    "BackendImportError",
    "require",
    "check_version",
    "matches_skip",
    "iter_modules",
    "set_submodule",
    "progress",
    "set_model_quantized",
    "clear_model_quantized",
]

#: pip package -> (import name, the version range fastquant works with)
BACKEND_PACKAGES = {
    "torch": ("torch", ">=2.4"),
    "bitsandbytes": ("bitsandbytes", ">=0.46,<0.51"),
    "torchao": ("torchao", ">=0.15,<0.19"),
    "optimum-quanto": ("optimum.quanto", ">=0.2.5,<0.3"),
    "nvidia-modelopt": ("modelopt.torch.quantization", ">=0.44,<0.48"),
    "safetensors": ("safetensors", ">=0.4"),
}


class BackendImportError(ImportError):
    """A backend's package is missing, broken, or outside the supported versions (older or newer). The message
    names the pip package and the versions that work."""

    def __init__(self, package: str, version_range: str, reason: str, what: str = ""):
        self.package = package
        self.version_range = version_range
        for_what = f" for {what}" if what else ""
        super().__init__(
            f"{package} is needed{for_what} but {reason}. fastquant works with {package}{version_range}: "
            f"pip install '{package}{version_range}'"
        )


def _installed_version(package: str, import_name: str) -> Optional[str]:
    """The installed version of pip `package` (its distribution metadata, else the module's `__version__`)."""
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return getattr(sys.modules.get(import_name.split(".")[0]), "__version__", None)


def check_version(package: str, version_range: str, installed: Optional[str], what: str = "") -> None:
    """Raise BackendImportError unless `installed` lies in `version_range` (a PEP 440 specifier set such as
    ">=0.46,<0.51"). Both bounds are checked: an older and a newer release are each refused, with the reason.
    Pre-releases and local builds count by their release ('2.15.0+cu128' is 2.15.0). An unknown or unparsable
    installed version is not refused (nothing can be said about it)."""
    if not installed:
        return
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        version = Version(installed)
    except InvalidVersion:
        return
    spec = SpecifierSet(version_range)
    if spec.contains(version, prereleases=True):
        return
    lower = [s for s in spec if s.operator in (">=", ">", "==", "~=")]
    too_old = any(not s.contains(version, prereleases=True) for s in lower)
    side = "older than" if too_old else "newer than"
    raise BackendImportError(
        package, version_range, f"version {installed} is installed ({side} the supported range)", what
    )


def require(package: str, what: str = ""):
    """Import and return the module of pip `package` (a key of BACKEND_PACKAGES).

    Raises BackendImportError when it is not installed, fails to import, or its version lies outside the range
    fastquant works with (older or newer)."""
    import_name, version_range = BACKEND_PACKAGES[package]
    try:
        module = importlib.import_module(import_name)
    except ModuleNotFoundError as e:
        raise BackendImportError(package, version_range, "it is not installed", what) from e
    except Exception as e:  # a broken install: say so rather than a deep traceback
        raise BackendImportError(
            package, version_range, f"importing {import_name!r} failed ({type(e).__name__}: {e})", what
        ) from e
    check_version(package, version_range, _installed_version(package, import_name), what)
    return module


def matches_skip(name: str, skip: Sequence[str]) -> bool:
    """Whether the module at dotted path `name` is covered by an entry of `skip`.

    An entry matches when its dotted components appear as a contiguous run of `name`'s components: the full path
    ("blocks.0.attn.to_q"), an ancestor ("blocks.0" covers everything below it), a single component anywhere
    ("to_q", "proj_out") or a dotted tail ("attn.to_q"). Plain substrings do not match ("to_q" does not cover "to_qkv")."""
    if not skip or not name:
        return False
    parts = name.split(".")
    n = len(parts)
    for entry in skip:
        if not entry:
            continue
        if entry == name:
            return True
        want = entry.split(".")
        k = len(want)
        if k > n:
            continue
        for i in range(n - k + 1):
            if parts[i : i + k] == want:
                return True
    return False


def iter_modules(model, types, skip: Sequence[str]) -> Iterator[Tuple[str, object]]:
    """(full name, module) for every module of one of `types` not covered by `skip`, parents before children.
    The list is taken up front, so modules may be replaced while iterating."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, types) and not matches_skip(name, skip)]
    return iter(found)


def set_submodule(model, name: str, new) -> None:
    """Replace the submodule at dotted path `name` with `new`."""
    if not name:
        raise ValueError(
            f"the model itself is a {type(model).__name__}; quantization replaces submodules, so wrap it in a "
            "container (e.g. nn.Sequential(layer))"
        )
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def restore_linear(model, name: str, layer, weight) -> None:
    """Put a plain `nn.Linear` at `name` holding the dense `weight` (not copied) and `layer`'s bias (in the weight's
    dtype), both without gradients. Used by every backend's `dequantize`."""
    import torch

    out = torch.nn.Linear(
        layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta", dtype=weight.dtype
    )
    out.weight = torch.nn.Parameter(weight, requires_grad=False)
    if layer.bias is not None:
        out.bias = torch.nn.Parameter(layer.bias.data.to(weight.dtype), requires_grad=False)
    set_submodule(model, name, out)


def progress(items: Iterable, total: Optional[int] = None, desc: str = "", min_items: int = 1):
    """Wrap `items` in a tqdm bar. tqdm's `disable=None` hides it when stderr is not a terminal, so logs and CI
    stay clean; without tqdm installed the items are returned as they are."""
    if total is not None and total < min_items:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc=desc, disable=None, leave=False, unit="layer")


def ensure_ninja_on_path() -> bool:
    """torch builds C++ extensions (quanto's int4/int2 kernels) with `ninja` found on PATH. When a virtualenv is used
    without being activated, its `ninja` is installed but not on PATH: add the interpreter's bin folder then.
    Returns whether ninja can be found."""
    if shutil.which("ninja"):
        return True
    bindir = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(bindir, "ninja")):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# model bookkeeping (what `quantize` records and `dequantize` removes)

_MODEL_ATTRS = (
    "hf_quantizer",
    "is_quantized",
    "quantization_method",
    "_pre_quantization_dtype",
    "save_pretrained",
    "is_loaded_in_4bit",
    "is_loaded_in_8bit",
)


def _config_set(config, key: str, value) -> None:
    if config is None:
        return
    if hasattr(config, "_internal_dict") or type(config).__name__ == "FrozenDict":
        return  # handled through register_to_config by the caller
    if isinstance(config, dict):
        config[key] = value
    else:
        setattr(config, key, value)


def set_model_quantized(model, quantizer) -> None:
    """Record the quantizer on the model (and its config, when it has one), as diffusers' loaders do."""
    cfg = quantizer.quantization_config
    model.hf_quantizer = quantizer
    model.is_quantized = True
    model.quantization_method = cfg.quant_method
    if _core.method_key(cfg) in ("bitsandbytes_4bit", "bitsandbytes_8bit"):
        # the flags transformers' and diffusers' bnb loaders set; peft picks its bitsandbytes LoRA layers by them
        for flag, value in (("is_loaded_in_4bit", cfg.load_in_4bit), ("is_loaded_in_8bit", cfg.load_in_8bit)):
            try:
                setattr(model, flag, bool(value))
            except AttributeError:  # a read-only property on the model class
                pass
    if hasattr(model, "register_to_config") and hasattr(model, "_internal_dict"):
        model.register_to_config(quantization_config=cfg)  # diffusers ConfigMixin
    elif getattr(model, "config", None) is not None:
        _config_set(model.config, "quantization_config", cfg)
    # transformers/diffusers models: model.save_pretrained(dir) becomes fastquant.save_pretrained (theirs cannot
    # save a model that carries fastquant's quantizer).
    from ..hf._save import install_save_pretrained

    install_save_pretrained(model)


def clear_model_quantized(model) -> None:
    """Remove every trace of quantization from the model and its config."""
    for attr in _MODEL_ATTRS:
        # `is_quantized` may be a class attribute (diffusers' ModelMixin has none; transformers' has a property).
        if attr in getattr(model, "__dict__", {}):
            delattr(model, attr)
    internal = getattr(model, "_internal_dict", None)
    if internal is not None and ("quantization_config" in internal or "_pre_quantization_dtype" in internal):
        rest = {k: v for k, v in internal.items() if k not in ("quantization_config", "_pre_quantization_dtype")}
        model._internal_dict = type(internal)(rest)
    config = getattr(model, "config", None)
    if config is None or config is internal:
        return
    for key in ("quantization_config", "_pre_quantization_dtype"):
        if isinstance(config, dict):
            if key in config:
                try:
                    del config[key]
                except Exception:
                    pass
        elif key in getattr(config, "__dict__", {}):
            delattr(config, key)
