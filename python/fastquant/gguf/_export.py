"""Writing a transformers model the llama.cpp way: tensor names, Q/K row order, per-architecture value transforms
and the ``<arch>.*`` hyper-parameter keys, so that transformers' GGUF loading, gguf-py and llama.cpp read it.

The inverse of every transform is derived from transformers' own tensor processor for the architecture (the one
``from_pretrained(gguf_file=...)`` applies when reading): a processor that reorders rows is undone by the inverse
row order (packed layers' rows of ggml blocks are reordered, never dequantized), one that adds a constant (Gemma's
norm offset) by the opposite constant. Names come from transformers' ``get_gguf_hf_weights_map``, metadata keys
from its ``GGUF_CONFIG_MAPPING``, read backwards.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

import numpy as np
import torch

from ._layers import _GGUFPacked
from ._model import _expected_names, _split

__all__ = ["llama_cpp_architecture", "save_llama_cpp"]

# transformers model_type -> llama.cpp general.architecture
_ARCH = {
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "gemma3_text": "gemma3",
    "mistral": "llama",
    "umt5": "t5",
}

# llama.cpp's general.file_type for the most common tensor type of the file
_FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K": 12}
_FILE_TYPE.update({"Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30, "BF16": 32})

_MOE_FUSED = re.compile(r"(?P<pre>.*)\.mlp\.experts\.gate_up_proj$")


def llama_cpp_architecture(model) -> Optional[str]:
    """The llama.cpp architecture name of a transformers model, or ``None`` when transformers has no GGUF
    table for it (``save`` then writes state-dict names)."""
    from transformers import modeling_gguf_pytorch_utils as mgu

    mt = getattr(model.config, "model_type", None)
    arch = _ARCH.get(mt, mt)
    if mt not in mgu.GGUF_SUPPORTED_ARCHITECTURES and arch not in mgu.GGUF_SUPPORTED_ARCHITECTURES:
        return None
    return arch


def _config_value(config, key):
    if key == "rope_theta":
        rp = getattr(config, "rope_parameters", None) or {}
        return rp.get("rope_theta", getattr(config, "rope_theta", None))
    return getattr(config, key, None)


def _metadata(model, arch: str) -> dict:
    from transformers.integrations import GGUF_CONFIG_MAPPING

    from ._writer import Value

    config = model.config
    table = GGUF_CONFIG_MAPPING.get(config.model_type) or GGUF_CONFIG_MAPPING.get(arch) or {}
    md = {"general.architecture": arch}
    name = "mistral" if config.model_type == "mistral" else (getattr(config, "_name_or_path", "") or arch)
    md["general.name"] = name
    for key, target in table.items():
        if target in (None, -1):
            continue
        v = _config_value(config, target)
        if v is None or isinstance(v, (dict, list, tuple)):
            continue
        if isinstance(v, bool):
            md[f"{arch}.{key}"] = v
        elif isinstance(v, int):
            md[f"{arch}.{key}"] = Value(v, "u32")
        elif isinstance(v, float):
            md[f"{arch}.{key}"] = Value(v, "f32")
        elif isinstance(v, str):
            md[f"{arch}.{key}"] = v
    md.setdefault(f"{arch}.vocab_size", Value(int(config.vocab_size), "u32"))
    md["general.quantization_version"] = Value(2, "u32")
    return md


def _inverse(processor, gname: str, shape, mapping, cache):
    """How to turn the transformers tensor back into the file's: ``("same",)``, ``("rows", perm)`` or
    ``("add", c)``, derived by running transformers' processor on probes; ``None`` when it is none of these."""
    key = (re.sub(r"\d+", "#", gname), tuple(shape))
    if key in cache:
        return cache[key]
    shape = tuple(shape)
    n = shape[0]
    rows = np.broadcast_to(np.arange(n, dtype=np.float32).reshape((n,) + (1,) * (len(shape) - 1)), shape)
    res = processor.process(weights=rows, name=gname, tensor_key_mapping=mapping, parsed_parameters={"tensors": {}})
    out = res.weights
    how = None
    if res.name == gname:
        if out is rows:
            how = ("same",)
        else:
            out = np.asarray(out)
            if out.shape == shape:
                flat = out.reshape(n, -1)
                col = flat[:, 0]
                if np.array_equal(col, rows.reshape(n, -1)[:, 0]):
                    how = ("same",)
                elif np.array_equal(flat[:, -1], col) and np.array_equal(np.sort(col), np.arange(n)):
                    how = ("rows", np.argsort(col.astype(np.int64)))
                else:
                    d = out - rows
                    if np.all(d == d.flat[0]):
                        how = ("add", -float(d.flat[0]))
    cache[key] = how
    return how


def save_llama_cpp(model, path, metadata=None) -> int:
    """Write the transformers ``model`` with llama.cpp's names, row order and metadata; returns the file size.

    Packed layers are written as their blocks (rows reordered where llama.cpp's order differs); float tensors in
    their dtype. A tied output projection is not written (llama.cpp and transformers re-tie it from
    ``token_embd``). ``metadata`` entries are added (and win). Raises ``ValueError`` naming any tensor it cannot
    place. The file holds no tokenizer; llama.cpp's own tools need one."""
    from transformers import modeling_gguf_pytorch_utils as mgu

    from ._writer import write

    arch = llama_cpp_architecture(model)
    if arch is None:
        raise ValueError(f"transformers has no GGUF table for model_type {model.config.model_type!r}")
    processor = mgu.TENSOR_PROCESSORS.get(arch, mgu.TensorProcessor)(config=model.config.to_dict())
    to_hf: Dict[str, str] = mgu.get_gguf_hf_weights_map(model, processor)
    to_gguf: Dict[str, list] = {}
    for g, h in to_hf.items():
        to_gguf.setdefault(h, []).append(g)
    modules = dict(model.named_modules())
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    out_emb = model.get_output_embeddings()
    out_name = next((n for n, m in modules.items() if m is out_emb), None) if out_emb is not None else None
    tensors, unplaced, cache, types = {}, [], {}, {}
    for hf, v in _expected_names(model).items():
        owner, leaf = _split(hf)
        if tied and owner == out_name and leaf == "weight":
            continue
        mod = modules.get(owner)
        m = _MOE_FUSED.match(hf)
        if m and hf in to_gguf:
            # transformers' processor fuses gate and up experts on dim 1 (gate first): split them again
            w = v.detach().cpu()
            half = w.shape[1] // 2
            for g in to_gguf[hf]:
                part = w[:, :half] if "_gate_" in g else w[:, half:]
                tensors[g] = part.contiguous()
            continue
        names = [g for g in to_gguf.get(hf, []) if g.endswith("." + leaf) or g == hf]
        if len(names) != 1:
            unplaced.append(hf)
            continue
        g = names[0]
        if isinstance(mod, _GGUFPacked) and leaf == "weight":
            shape = (mod._rows, mod._cols)
            how = _inverse(processor, g, shape, to_hf, cache)
            data = v.detach().cpu().numpy()
            if how is None or how[0] == "add":
                unplaced.append(f"{hf} (packed, and llama.cpp changes its values)")
                continue
            if how[0] == "rows":
                data = data[how[1]]
            tensors[g] = (np.ascontiguousarray(data).reshape(-1), mod.ggml_type, shape)
            types[mod.ggml_type] = types.get(mod.ggml_type, 0) + data.size
            continue
        t = v.detach().cpu()
        if "ffn_gate_inp_shexp" in g and t.dim() == 2 and t.shape[0] == 1:
            t = t[0]  # transformers' processor adds this dimension
        how = _inverse(processor, g, tuple(t.shape), to_hf, cache) if t.is_floating_point() and t.dim() else ("same",)
        if how is None:
            unplaced.append(f"{hf} (transformers' processor transforms it in a way with no known inverse)")
            continue
        if how[0] == "rows":
            t = t[torch.from_numpy(how[1])]
        elif how[0] == "add":
            t = (t.float() + how[1]).to(t.dtype)
        tensors[g] = t.contiguous()
        name = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}.get(t.dtype)
        if name and t.dim() == 2:
            types[name] = types.get(name, 0) + t.numel()
    if unplaced:
        shown = ", ".join(unplaced[:8]) + (f", … and {len(unplaced) - 8} more" if len(unplaced) > 8 else "")
        raise ValueError(f"save: {len(unplaced)} tensor(s) have no llama.cpp name for {arch!r}: {shown}")
    md = _metadata(model, arch)
    if types:
        from ._writer import Value

        main = max(types, key=types.get)
        if main in _FILE_TYPE:
            md["general.file_type"] = Value(_FILE_TYPE[main], "u32")
    md.update(metadata or {})
    return write(path, tensors, md)
