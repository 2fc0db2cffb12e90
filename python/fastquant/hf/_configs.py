"""fastquant's config objects <-> the config objects of transformers and diffusers.

`to_transformers(cfg)` / `to_diffusers(cfg)` build the library's own config class with the same meaning (torchao's
quant type as a torchao `AOBaseConfig` object, which the libraries serialize in torchao's own form);
`from_library(obj)` goes the other way. Both refuse what the other side cannot express, naming the field.

Why a conversion and not duck typing: transformers' `AutoHfQuantizer.from_config` checks
`isinstance(config, transformers.BitsAndBytesConfig)` and diffusers' `PipelineQuantizationConfig` checks
`isinstance` against both libraries' config classes, so no other object can stand in for theirs; pass
`cfg.to_transformers()` / `cfg.to_diffusers()` there.
"""

from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["to_transformers", "to_diffusers", "from_library", "is_library_config", "ao_config_object"]


def _skip(cfg, skip: Optional[Sequence[str]], field: str):
    if skip is not None:
        return list(skip)
    value = getattr(cfg, field, None)
    return list(value) if value is not None else None


def ao_config_object(cfg):
    """The torchao `AOBaseConfig` object a fastquant `TorchAoConfig` stands for."""
    from ..quantizers._utils import require

    require("torchao", "converting a TorchAoConfig")
    from torchao.core.config import config_from_dict

    data = cfg._resolved_quant_type()
    try:
        return config_from_dict(data)
    except Exception as e:
        raise ValueError(f"TorchAoConfig.quant_type: torchao cannot build {data.get('_type')!r}: {e}") from e


def _bnb_kwargs(cfg, skip):
    d = cfg.to_dict()
    d.pop("quant_method", None)
    d["llm_int8_skip_modules"] = _skip(cfg, skip, "llm_int8_skip_modules")
    return d


def to_transformers(cfg, *, modules_to_not_convert: Optional[Sequence[str]] = None):
    """transformers' config object for fastquant config `cfg` (bitsandbytes, torchao, quanto).

    `modules_to_not_convert` replaces the config's own skip list when given (full module names)."""
    import transformers

    method = str(cfg.quant_method)
    if method == "bitsandbytes":
        return transformers.BitsAndBytesConfig(**_bnb_kwargs(cfg, modules_to_not_convert))
    if method == "torchao":
        return transformers.TorchAoConfig(
            ao_config_object(cfg), modules_to_not_convert=_skip(cfg, modules_to_not_convert, "modules_to_not_convert")
        )
    if method == "quanto":
        return transformers.QuantoConfig(
            weights=cfg.weights_dtype,
            modules_to_not_convert=_skip(cfg, modules_to_not_convert, "modules_to_not_convert"),
        )
    raise ValueError(
        f"{type(cfg).__name__}: transformers {transformers.__version__} has no {method!r} quantization config "
        "(it supports bitsandbytes, torchao and quanto among fastquant's methods); use cfg.to_diffusers() for "
        "diffusers models"
    )


def to_diffusers(cfg, *, modules_to_not_convert: Optional[Sequence[str]] = None):
    """diffusers' config object for fastquant config `cfg` (bitsandbytes, torchao, quanto, gguf, modelopt)."""
    import diffusers

    method = str(cfg.quant_method)
    skip = _skip(cfg, modules_to_not_convert, "modules_to_not_convert") if method != "bitsandbytes" else None
    if method == "bitsandbytes":
        return diffusers.BitsAndBytesConfig(**_bnb_kwargs(cfg, modules_to_not_convert))
    if method == "torchao":
        return diffusers.TorchAoConfig(ao_config_object(cfg), modules_to_not_convert=skip)
    if method == "quanto":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # diffusers marks QuantoConfig deprecated
            return diffusers.QuantoConfig(weights_dtype=cfg.weights_dtype, modules_to_not_convert=skip)
    if method == "gguf":
        return diffusers.GGUFQuantizationConfig(compute_dtype=cfg.compute_dtype)
    if method == "modelopt":
        from ..quantizers.modelopt import build_modelopt_config

        d = cfg.to_dict()
        d.pop("quant_method", None)
        d["modules_to_not_convert"] = skip
        # diffusers builds modelopt's config in the pre-0.44 {pattern: cfg} form, which current modelopt rejects;
        # hand it the one fastquant builds for the installed modelopt.
        d["modelopt_config"] = build_modelopt_config(cfg, skip or ())
        d.pop("forward_loop", None)
        return diffusers.NVIDIAModelOptConfig(**d, forward_loop=cfg.forward_loop)
    raise ValueError(f"{type(cfg).__name__}: no diffusers config for quant_method {method!r}")


def is_library_config(obj) -> bool:
    """Whether `obj` is a transformers or diffusers quantization config object."""
    module = type(obj).__module__ or ""
    return (module.startswith(("transformers.", "diffusers."))) and hasattr(obj, "to_dict")


def from_library(obj):
    """fastquant's config object for a transformers or diffusers quantization config object."""
    from ..quantizers.auto import DiffusersAutoQuantizer

    if not is_library_config(obj):
        raise TypeError(f"expected a transformers or diffusers quantization config, got {type(obj).__name__}")
    where = f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}"
    d = obj.to_dict()
    method = str(getattr(d.get("quant_method"), "value", d.get("quant_method")))
    d["quant_method"] = method
    for private in ("_load_in_4bit", "_load_in_8bit"):
        d.pop(private, None)
    if method == "quanto" and "weights" in d:  # transformers' field names
        if d.pop("activations", None) is not None:
            raise ValueError(f"{where}.activations: fastquant quantizes quanto weights only; expected None")
        d["weights_dtype"] = d.pop("weights")
    if method == "torchao":
        for flag in ("include_input_output_embeddings", "untie_embedding_weights"):
            if d.pop(flag, False):
                raise ValueError(f"{where}.{flag}: not supported by fastquant's torchao quantizer; expected False")
        qt = d.get("quant_type")
        if isinstance(qt, dict) and set(qt) == {"default"}:
            d["quant_type"] = qt["default"]
    if method == "modelopt":
        d.pop("forward_loop", None)
        d.pop("modelopt_config", None)  # rebuilt from the fields (diffusers' own form is the pre-0.44 one)
        cfg = DiffusersAutoQuantizer.from_dict(d)
        loop = getattr(obj, "forward_loop", None)
        return type(cfg).from_dict({**cfg.to_dict(), "forward_loop": loop}) if loop is not None else cfg
    try:
        return DiffusersAutoQuantizer.from_dict(d)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from e
