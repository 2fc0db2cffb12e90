"""``fastquant.gguf.from_pretrained``: a llama.cpp GGUF file as a ready transformers model, weights kept packed.

The steps, each reusing transformers' own GGUF machinery (``transformers.integrations.ggml`` and
``transformers.modeling_gguf_pytorch_utils``):

1. :func:`gguf_config` — the config dict from the metadata through transformers' ``GGUF_CONFIG_MAPPING`` (and
   its per-architecture fix-ups), reading only the keys the table names (the vocabulary is never decoded).
2. :func:`build_empty_model` — the model class transformers' GGUF loading gives, built with its parameters on the
   meta device (accelerate's ``init_empty_weights``; buffers such as RoPE ``inv_freq`` are computed normally).
3. :func:`fill_model` — llama.cpp names mapped by transformers' ``get_gguf_hf_weights_map``; each tensor goes
   through transformers' tensor processor for the architecture. A quantized ``nn.Linear``/``nn.Embedding``
   weight stays packed when the processor only reorders its rows (llama.cpp's Q/K permutation is one): the rows
   of ggml blocks are reordered, never dequantized. Everything else is dequantized (exactly) and processed as
   transformers does. Tied embeddings share one buffer.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from ..quantizers._utils import matches_skip
from ._layers import _PLAIN, GGUFLinear, _GGUFPacked
from ._model import _MAX_LISTED, _listed, _packed_for, _set_module, _set_tensor, _split, _subclass_problem

__all__ = ["build_empty_model", "fill_model", "from_pretrained", "gguf_config"]


def _tf():
    try:
        import transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("fastquant.gguf.from_pretrained needs transformers (pip install transformers)") from e
    from transformers import modeling_gguf_pytorch_utils as mgu

    return mgu


def _value(md, key):
    """A metadata value as transformers' reader gives it: a one-element array becomes its element."""
    v = md[key]
    if isinstance(v, list) and len(v) == 1:
        return v[0]
    return v


# ---------------------------------------------------------------------------------------------------------
# 1. config
# ---------------------------------------------------------------------------------------------------------


def gguf_config(f) -> dict:
    """The transformers config dict for the open GGUF file ``f``, as ``load_gguf_checkpoint`` builds it."""
    mgu = _tf()
    from transformers.integrations import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    md = f.metadata
    if "general.architecture" not in md:
        raise ValueError(f"{f.path}: no general.architecture in the metadata; is this a llama.cpp GGUF model?")
    arch = md["general.architecture"]
    name = md.get("general.name")
    cfg: dict = {}
    updated = arch
    if "llama" in arch and name == "mistral":  # transformers compares the whole name
        updated = "mistral"
    elif "t5" in arch:
        cfg["is_gated_act"] = True
        if name and "umt5" in name.lower():
            updated = "umt5"
            if "t5encoder" in arch:
                cfg["architectures"] = ["UMT5EncoderModel"]
        else:
            if "t5encoder" in arch:
                cfg["architectures"] = ["T5EncoderModel"]
            updated = "t5"
    renames = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2"}
    updated = renames.get(arch, updated)
    supported = set(mgu.GGUF_SUPPORTED_ARCHITECTURES)
    if arch not in supported and updated not in supported:
        raise ValueError(
            f"{f.path}: GGUF architecture {arch!r} is not covered: transformers' GGUF tables have no entry for it "
            f"(covered: {', '.join(sorted(supported))})"
        )
    names = list(f.tensors)
    if "stablelm" in arch:
        cfg["use_qkv_bias"] = any(b in n for n in names for b in ("attn_q.bias", "attn_k.bias", "attn_v.bias"))
        cfg["use_parallel_residual"] = not any("ffn_norm" in n for n in names)
    cfg["tie_word_embeddings"] = "output.weight" not in f.tensors or arch in ("falcon", "bloom")
    for k, v in GGUF_CONFIG_DEFAULTS_MAPPING.get(updated, GGUF_CONFIG_DEFAULTS_MAPPING.get(arch) or {}).items():
        cfg.setdefault(k, v)
    table = GGUF_CONFIG_MAPPING
    for key in md:
        gkey = key.replace(arch, updated)
        prefix, _, rest = gkey.partition(".")
        target = table.get(prefix, {}).get(rest)
        if target is None or target == -1:
            continue
        v = _value(md, key)
        if isinstance(v, str) and arch in v:
            v = v.replace(arch, updated)
        cfg[target] = v
    if cfg.get("model_type") == "gemma3":
        cfg["model_type"] = "gemma3_text"
    if cfg.get("model_type") == "gemma4":
        cfg["model_type"] = "gemma4_text"
        cfg["eos_token_id"] = [1, 106, 50]
    if "vocab_size" not in cfg and "tokenizer.ggml.tokens" in md:
        cfg["vocab_size"] = f.array_info("tokenizer.ggml.tokens")[1]
    return cfg


# ---------------------------------------------------------------------------------------------------------
# 2. the empty model
# ---------------------------------------------------------------------------------------------------------


def _model_class(config):
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    archs = getattr(config, "architectures", None) or []
    if archs and hasattr(transformers, archs[0]):
        return getattr(transformers, archs[0])
    if config.model_type in ("t5", "umt5"):
        return AutoModelForSeq2SeqLM
    return AutoModelForCausalLM


def build_empty_model(config, dtype: torch.dtype, model_class=None):
    """The model with every parameter on the meta device and its buffers computed on the CPU."""
    from accelerate import init_empty_weights

    cls = model_class or _model_class(config)
    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config, dtype=dtype) if hasattr(cls, "from_config") else cls._from_config(config)
    return model


# ---------------------------------------------------------------------------------------------------------
# 3. filling it
# ---------------------------------------------------------------------------------------------------------


def _row_permutation(processor, name, shape, mapping, cache) -> Optional[np.ndarray]:
    """What transformers' processor does to the rows of tensor ``name``: ``None`` when it keeps it as is, an
    index array when it only reorders rows, ``False`` when it does anything else (the tensor is dequantized)."""
    key = (re.sub(r"\d+", "#", name), tuple(shape))
    if key in cache:
        return cache[key]
    n, k = shape
    probe = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None], (n, k))
    res = processor.process(weights=probe, name=name, tensor_key_mapping=mapping, parsed_parameters={"tensors": {}})
    out = res.weights
    if res.name != name:
        perm = False
    elif out is probe:
        perm = None
    else:
        out = np.asarray(out)
        col = out[:, 0] if out.shape == (n, k) else None
        if col is None or not (np.array_equal(out[:, -1], col) and np.array_equal(np.sort(col), probe[:, 0])):
            perm = False
        else:
            perm = col.astype(np.int64)
            if np.array_equal(perm, np.arange(n)):
                perm = None
    cache[key] = perm
    return perm


def _read_blocks(f, name, info, handles) -> torch.Tensor:
    """The packed bytes of tensor ``name`` read into a new uint8 tensor with ``readinto`` (not through the
    memory map: the file's pages then do not count in the process's resident memory next to the copy)."""
    from .._core import GGUFError

    path = f._shard_of(name).path if hasattr(f, "_shard_of") else f.path
    fh = handles.get(path)
    if fh is None:
        fh = handles[path] = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by fill_model
    buf = torch.empty(info.nbytes, dtype=torch.uint8)
    fh.seek(info.offset)
    got = fh.readinto(memoryview(buf.numpy()))
    if got != info.nbytes:
        raise GGUFError(f"{path}: tensor {name!r}: read {got} of {info.nbytes} bytes at offset {info.offset}")
    return buf


def _assign(model, modules, name: str, value: torch.Tensor, dtype) -> None:
    owner, leaf = _split(name)
    cur = getattr(modules[owner] if owner else model, leaf)
    if tuple(value.shape) == (1,) + tuple(cur.shape):
        # transformers' Qwen2-MoE processor adds a leading 1 to ffn_gate_inp_shexp even when llama.cpp's
        # converter already wrote it 2-D (its own loader then fails on the shape): drop the extra dimension
        value = value[0]
    _set_tensor(model, modules, name, value, dtype)


def _tie_output(model, modules, tied_names) -> None:
    """Point the output projection at the input embedding, packed (a shared buffer) or plain."""
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    if emb is None or out is None:
        return
    out_name = next(n for n, m in modules.items() if m is out)
    if isinstance(emb, _GGUFPacked):
        if isinstance(out, _GGUFPacked) and out.weight is emb.weight:
            return
        new = GGUFLinear(emb._cols, emb._rows, bias=False, ggml_type=emb.ggml_type, device="meta")
        new.set_packed(emb.weight, copy=False)
        if getattr(out, "bias", None) is not None:
            new.bias = out.bias
        _set_module(model, out_name, new)
        modules[out_name] = new
    else:
        out.weight = emb.weight
    tied_names.add(f"{out_name}.weight")


def fill_model(model, f, config_dict: dict, *, dtype=torch.float32, dequantize=False, skip=()) -> dict:
    """Load the llama.cpp-named tensors of ``f`` into the meta-device transformers ``model``.

    Returns ``{"packed": [...], "dequantized": [...], "unused": [...]}`` (module / file tensor names)."""
    mgu = _tf()
    arch = f.metadata["general.architecture"]
    processor = mgu.TENSOR_PROCESSORS.get(arch, mgu.TensorProcessor)(config=config_dict)
    mapping: Dict[str, str] = mgu.get_gguf_hf_weights_map(model, processor)
    modules = dict(model.named_modules())
    parsed = {"tensors": {}}
    packed, dequantized, unused = [], [], []
    perm_cache: dict = {}
    handles: dict = {}
    tie = bool(getattr(model.config, "tie_word_embeddings", False))
    out_emb = model.get_output_embeddings()
    out_weight = None
    if tie and out_emb is not None:
        out_weight = next(n for n, m in modules.items() if m is out_emb) + ".weight"
    with torch.no_grad():
        for fname, info in f.tensors.items():
            hf = mapping.get(fname)
            owner, leaf = _split(hf) if hf else ("", "")
            mod = modules.get(owner) if hf else None
            if tie and hf == out_weight:
                unused.append(fname)  # transformers ties the head to the embedding and drops this tensor too
                continue
            quantized = info.ggml_type not in _PLAIN
            if (
                not dequantize
                and quantized
                and leaf == "weight"
                and isinstance(mod, (nn.Linear, nn.Embedding))
                and tuple(mod.weight.shape) == tuple(info.shape)
                and _subclass_problem(mod) is None
                and not (skip and matches_skip(owner, list(skip)))
            ):
                perm = _row_permutation(processor, fname, info.shape, mapping, perm_cache)
                if perm is not False:
                    data = _read_blocks(f, fname, info, handles).view(info.shape[0], -1)
                    if perm is not None:
                        data = data[torch.from_numpy(perm)]
                    new = _packed_for(mod, info.ggml_type, dtype=dtype)
                    new.set_packed(data, copy=False)
                    if isinstance(mod, nn.Linear) and mod.bias is not None:
                        new.bias = mod.bias  # still meta: loaded from its own tensor below (or reported)
                    _set_module(model, owner, new)
                    modules[owner] = new
                    packed.append(owner)
                    continue
            weights = f.get_tensor(fname, dtype=torch.float32).numpy()
            res = processor.process(weights=weights, name=fname, tensor_key_mapping=mapping, parsed_parameters=parsed)
            if res.name is None:
                dequantized.append(fname)  # stored by the processor into parsed["tensors"] (merged MoE experts)
                continue
            if res.name not in mapping:
                unused.append(fname)
                continue
            _assign(model, modules, mapping[res.name], torch.from_numpy(np.ascontiguousarray(res.weights)), dtype)
            if quantized:
                dequantized.append(fname)
        for fh in handles.values():
            fh.close()
        for hf, t in parsed["tensors"].items():
            _assign(model, modules, hf, t, dtype)
        tied = set()
        if tie:
            _tie_output(model, modules, tied)
    _check_complete(model, f.path)
    return {"packed": packed, "dequantized": dequantized, "unused": unused}


def _check_complete(model, path) -> None:
    left = [n for n, p in model.named_parameters(remove_duplicate=False) if p.device.type == "meta"]
    left += [n for n, b in model.named_buffers(remove_duplicate=False) if b.device.type == "meta"]
    if left:
        raise ValueError(
            f"{path}: the file does not provide {len(left)} tensor(s) the model needs: {_listed(left)}"
            + ("" if len(left) <= _MAX_LISTED else "")
        )


def load_llama_cpp_into(model, f, *, dtype=None, modules_to_not_convert=()):
    """:func:`fastquant.gguf.load_into` for a transformers model and a llama.cpp-named file."""
    from ._model import LoadResult

    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.float32)
    res = fill_model(model, f, gguf_config(f), dtype=dtype, skip=list(modules_to_not_convert))
    return LoadResult([], res["unused"], [], res["packed"])


# ---------------------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------------------


def from_pretrained(
    path,
    *,
    torch_dtype: Optional[torch.dtype] = None,
    device=None,
    device_map=None,
    dequantize: bool = False,
    model_class=None,
):
    """A llama.cpp GGUF file (or split set) as the transformers model ``from_pretrained(gguf_file=...)`` gives.

    ``torch_dtype``: dtype of the float parameters and of packed embeddings' output (default float32, as
    transformers). Quantized ``nn.Linear``/``nn.Embedding`` weights stay packed (:class:`GGUFLinear` /
    :class:`GGUFEmbedding`); ``dequantize=True`` gives plain float layers instead. ``device`` moves the model
    there; ``device_map`` ("auto", a device, or accelerate's dict) dispatches it with accelerate.
    ``model_class`` overrides the class (default: the config's ``architectures`` or ``AutoModelForCausalLM``).
    """
    from transformers import AutoConfig

    from ._split import open_gguf

    dtype = torch_dtype or torch.float32
    with open_gguf(path) as f:
        cfg = gguf_config(f)
        config = AutoConfig.for_model(**cfg)
        model = build_empty_model(config, dtype, model_class)
        fill_model(model, f, cfg, dtype=dtype, dequantize=dequantize)
    model.eval()
    if device_map is not None:
        from accelerate import dispatch_model, infer_auto_device_map

        if isinstance(device_map, str) and device_map == "auto":
            device_map = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules)
        elif not isinstance(device_map, dict):
            device_map = {"": device_map}
        model = dispatch_model(model, device_map)
    elif device is not None:
        model.to(device)
    return model
