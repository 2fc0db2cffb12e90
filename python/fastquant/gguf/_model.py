"""Model-level GGUF helpers: :func:`load_into`, :func:`quantize_model`, :func:`save`, :func:`dequantize_model`.

The packed layers themselves live in ``_layers.py``. ``load_into`` runs in named steps: map the file's names
(:func:`_map_name`), plan every tensor and check everything that could fail (:func:`_plan`), report
(:func:`_raise_if_bad`), then apply the plan: packed layers (:func:`_apply_packed`, tied aliases through
:func:`_tie_aliases`) and plain tensors (:func:`_apply_plain`). Nothing in the model changes before the plan
is known to be good.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import _core
from ..quantizers._utils import matches_skip
from ._layers import _PLAIN, GGUFEmbedding, GGUFLinear, _GGUFPacked, _info

__all__ = [
    "GGUFScaledEmbedding",
    "LoadResult",
    "QuantizeResult",
    "dequantize_model",
    "load_into",
    "quantize_model",
    "save",
]

#: the longest list of names an error message spells out; the rest are counted
_MAX_LISTED = 8


class LoadResult(NamedTuple):
    """What :func:`load_into` did. ``missing``: model tensors the file did not provide (including
    non-persistent buffers still on the meta device); ``unexpected``: file tensors with no model counterpart;
    ``mismatched``: ``(name, file shape, model shape)``; ``replaced``: module names now holding packed layers."""

    missing: List[str]
    unexpected: List[str]
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]
    replaced: List[str]


class QuantizeResult(NamedTuple):
    """What :func:`quantize_model` did: ``converted`` module names, and ``skipped`` name -> reason."""

    converted: List[str]
    skipped: Dict[str, str]


class GGUFScaledEmbedding(GGUFEmbedding):
    """A :class:`GGUFEmbedding` whose output is multiplied by ``embed_scale`` (cast to the output dtype), as
    transformers' ``*ScaledWordEmbedding`` layers (Gemma 3, …) do: ``embedding(ids) * embed_scale``."""

    def __init__(self, num_embeddings, embedding_dim, ggml_type="Q8_0", padding_idx=None, device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, ggml_type, padding_idx, device=device, dtype=dtype)
        self.register_buffer("embed_scale", torch.tensor(1.0), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.embed_scale.to(self.dtype)


# ---------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------


def _split(name: str) -> Tuple[str, str]:
    i = name.rfind(".")
    return ("", name) if i < 0 else (name[:i], name[i + 1 :])


def _set_tensor(model, modules, name: str, value, dtype, source: str = "the file") -> None:
    """Put ``value`` at the parameter or buffer ``name`` of ``model`` (shape checked; floating tensors cast to
    ``dtype``, others keep their dtype), as a frozen Parameter where a Parameter stood."""
    owner, leaf = _split(name)
    holder = modules[owner] if owner else model
    cur = getattr(holder, leaf)
    if tuple(cur.shape) != tuple(value.shape):
        raise ValueError(f"{name}: {source} gives shape {tuple(value.shape)}, the model has {tuple(cur.shape)}")
    val = value.to(dtype if cur.dtype.is_floating_point else cur.dtype)
    if isinstance(cur, nn.Parameter):
        setattr(holder, leaf, nn.Parameter(val, requires_grad=False))
    else:
        setattr(holder, leaf, val)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise ValueError(
            f"the model itself is a {type(model).__name__}; packed layers replace submodules, so wrap it in a "
            "container (e.g. nn.Sequential(layer))"
        )
    parent, attr = _split(name)
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _expected_names(model: nn.Module) -> Dict[str, torch.Tensor]:
    """State-dict names (params + persistent buffers, no extra state) -> tensor, in state-dict order."""
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if not k.endswith("_extra_state")}


def _listed(names: Sequence[str]) -> str:
    """At most :data:`_MAX_LISTED` names, then how many more: error messages stay short."""
    shown = ", ".join(str(n) for n in names[:_MAX_LISTED])
    return shown + (f", … and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _is_scaled_embedding(mod: nn.Module) -> bool:
    return (
        isinstance(mod, nn.Embedding)
        and type(mod).__name__.endswith("ScaledWordEmbedding")
        and (isinstance(getattr(mod, "embed_scale", None), torch.Tensor))
    )


def _subclass_problem(mod: nn.Module) -> Optional[str]:
    """Why ``mod`` cannot become a packed layer without changing what it computes, or ``None``.

    A subclass of ``nn.Linear``/``nn.Embedding`` that overrides ``forward`` computes something else than the
    plain layer; a packed layer would silently drop it. transformers' scaled word embeddings are the one
    known pattern (output times ``embed_scale``) and become :class:`GGUFScaledEmbedding`."""
    for base in (nn.Linear, nn.Embedding):
        if isinstance(mod, base) and type(mod) is not base and type(mod).forward is not base.forward:
            if base is nn.Embedding and _is_scaled_embedding(mod):
                return None
            return (
                f"{type(mod).__name__} subclasses nn.{base.__name__} with its own forward, which a packed layer "
                "would drop; list the module in modules_to_not_convert to keep it plain"
            )
    return None


def _packed_for(mod: nn.Module, ggml_type: str, *, dtype=None) -> _GGUFPacked:
    """An empty (meta) packed layer standing in for ``mod`` (an nn.Linear or nn.Embedding)."""
    if isinstance(mod, nn.Linear):
        return GGUFLinear(mod.in_features, mod.out_features, bias=False, ggml_type=ggml_type, device="meta")
    w = mod.weight
    dt = dtype if dtype is not None else (w.dtype if w.dtype.is_floating_point else torch.float32)
    dev = w.device if w.device.type != "meta" else torch.device("cpu")
    cls = GGUFScaledEmbedding if _is_scaled_embedding(mod) else GGUFEmbedding
    new = cls(mod.num_embeddings, mod.embedding_dim, ggml_type, mod.padding_idx, device="meta", dtype=dt)
    new._dtype_probe = torch.empty(0, dtype=dt, device=dev)
    if cls is GGUFScaledEmbedding:
        scale = mod.embed_scale
        if scale.device.type == "meta":
            scale = torch.tensor(float(getattr(mod, "scalar_embed_scale", 1.0)))
        new.embed_scale = scale.detach().to(dev)
    return new


# ---------------------------------------------------------------------------------------------------------
# load_into, in steps
# ---------------------------------------------------------------------------------------------------------


def _map_name(name_map, fname: str) -> Optional[str]:
    if name_map is None:
        return fname
    if callable(name_map):
        return name_map(fname)
    return name_map.get(fname, fname)


class _Plan(NamedTuple):
    steps: list  # (kind "packed"|"plain", model name, file name, TensorInfo)
    unusable: List[str]
    unexpected: List[str]
    mismatched: list
    missing: List[str]
    aliases: Dict[str, List[str]]


def _plan(model, f, name_map, skip) -> _Plan:
    """Decide what happens to every file tensor; check everything that could fail while applying it."""
    expected = _expected_names(model)
    modules = dict(model.named_modules())
    steps, unusable, unexpected, mismatched = [], [], [], []
    for fname, info in f.tensors.items():
        mname = _map_name(name_map, fname)
        if mname is None or mname not in expected:
            unexpected.append(fname)
            continue
        owner, leaf = _split(mname)
        mod = modules.get(owner)
        packed = info.ggml_type not in _PLAIN
        want = (mod._rows, mod._cols) if isinstance(mod, _GGUFPacked) and leaf == "weight" else expected[mname].shape
        if tuple(info.shape) != tuple(want):
            mismatched.append((mname, tuple(info.shape), tuple(want)))
            continue
        if info.ggml_type.startswith("type#"):
            unusable.append(f"{fname}: ggml type id {info.type_id} is not one this version of ggml defines")
            continue
        if packed and not _core.ggml_type_info(info.ggml_type)[4]:
            unusable.append(f"{fname}: {info.ggml_type} has no dequantizer, so it cannot back a torch layer")
            continue
        if isinstance(mod, _GGUFPacked) and leaf == "weight" and not packed:
            unusable.append(
                f"{fname}: a plain {info.ggml_type} tensor cannot go into the packed layer {owner!r} "
                "(dequantize_model first, or load into a float model)"
            )
            continue
        keep_plain = matches_skip(owner, skip) and not isinstance(mod, _GGUFPacked)
        if packed and leaf == "weight" and isinstance(mod, (nn.Linear, nn.Embedding, _GGUFPacked)) and not keep_plain:
            problem = None if isinstance(mod, _GGUFPacked) else _subclass_problem(mod)
            if problem:
                unusable.append(f"{fname}: module {owner!r}: {problem}")
                continue
            steps.append(("packed", mname, fname, info))
        else:
            steps.append(("plain", mname, fname, info))
    loaded = {s[1] for s in steps} | {m[0] for m in mismatched}
    by_id = {id(expected[n]): n for n in loaded}
    # names tied to a loaded tensor (e.g. lm_head.weight is embed_tokens.weight) are loaded through it
    aliases: Dict[str, List[str]] = {}
    for n, t in expected.items():
        if n not in loaded and id(t) in by_id:
            aliases.setdefault(by_id[id(t)], []).append(n)
    missing = [n for n, t in expected.items() if n not in loaded and id(t) not in by_id]
    # non-persistent buffers are in no file: on the meta device they would stay unusable
    persistent = set(expected)
    missing += [
        f"{mn}.{bn}" if mn else bn
        for mn, m in modules.items()
        for bn, b in m.named_buffers(recurse=False)
        if b is not None and b.device.type == "meta" and (f"{mn}.{bn}" if mn else bn) not in persistent
    ]
    return _Plan(steps, unusable, unexpected, mismatched, missing, aliases)


def _looks_like_llama_cpp(names) -> bool:
    return any(n.startswith("blk.") for n in names) and any(n.startswith("token_embd.") for n in names)


def _raise_if_bad(plan: _Plan, path, strict: bool) -> None:
    if not (plan.mismatched or plan.unusable or (strict and (plan.missing or plan.unexpected))):
        return
    lines = [f"unusable ({len(plan.unusable)}): {'; '.join(plan.unusable[:_MAX_LISTED])}"] if plan.unusable else []
    if plan.missing:
        lines.append(f"missing in the file ({len(plan.missing)}): {_listed(plan.missing)}")
    if plan.unexpected:
        lines.append(f"unexpected in the file ({len(plan.unexpected)}): {_listed(plan.unexpected)}")
    if plan.mismatched:
        lines.append(
            f"shape mismatches ({len(plan.mismatched)}): "
            + _listed([f"{n}: file {fs} vs model {ms}" for n, fs, ms in plan.mismatched])
        )
    if plan.unexpected and _looks_like_llama_cpp(plan.unexpected):
        lines.append(
            "the file's tensors follow llama.cpp's naming (blk.N.attn_q.weight, token_embd.weight): load it "
            "with fastquant.gguf.from_pretrained(path), which maps the names and undoes llama.cpp's transforms"
        )
    raise ValueError(f"load_into({str(path)!r}) failed:\n  " + "\n  ".join(lines))


def _tie_aliases(model, modules, new: _GGUFPacked, owner: str, aliases: List[str], replaced: List[str]) -> None:
    """Tied weights: the other modules sharing the loaded weight get packed layers sharing its buffer."""
    for alias in aliases:
        a_owner, a_leaf = _split(alias)
        a_mod = modules.get(a_owner)
        if a_leaf != "weight" or a_owner == owner:
            continue
        if isinstance(a_mod, nn.Linear) and (a_mod.out_features, a_mod.in_features) == (new._rows, new._cols):
            tied = _packed_for(a_mod, new.ggml_type)
            tied.bias = a_mod.bias
        elif isinstance(a_mod, nn.Embedding) and (a_mod.num_embeddings, a_mod.embedding_dim) == (new._rows, new._cols):
            tied = _packed_for(a_mod, new.ggml_type)
            tied._dtype_probe = tied._dtype_probe.to(new.weight.device)
        else:
            continue
        tied.set_packed(new.weight, copy=False)
        _set_module(model, a_owner, tied)
        modules[a_owner] = tied
        replaced.append(a_owner)


def _apply_packed(model, modules, expected, f, mname, fname, info, dtype) -> Tuple[str, _GGUFPacked]:
    owner, _ = _split(mname)
    mod = modules[owner]
    data = torch.from_numpy(f.raw(fname).copy())
    if isinstance(mod, _GGUFPacked):
        mod.set_packed(data, info.ggml_type, copy=False)
        return owner, mod
    dev = mod.weight.device if mod.weight.device.type != "meta" else torch.device("cpu")
    new = _packed_for(mod, info.ggml_type, dtype=dtype if mod.weight.device.type == "meta" else None)
    new.set_packed(data.to(dev), copy=False)
    if isinstance(mod, nn.Linear):
        new.bias = mod.bias
        if new.bias is not None:
            new.bias.requires_grad_(False)
    _set_module(model, owner, new)
    modules[owner] = new
    # re-point names of sub-tensors (e.g. a bias loaded later) at the new module
    key = f"{owner}.bias" if owner else "bias"
    if key in expected and getattr(new, "bias", None) is not None:
        expected[key] = new.bias
    return owner, new


def _apply_plain(model, modules, expected, f, mname, fname, info, dtype) -> None:
    owner, leaf = _split(mname)
    cur = expected[mname]
    dt = cur.dtype
    if cur.device.type == "meta":
        if dtype is not None and dt.is_floating_point:
            dt = dtype
        val = f.get_tensor(fname, dtype=dt)
        holder = modules.get(owner, model)
        if isinstance(cur, nn.Parameter):
            setattr(holder, leaf, nn.Parameter(val, requires_grad=cur.requires_grad))
        else:
            setattr(holder, leaf, val)
    else:
        cur.copy_(f.get_tensor(fname, dtype=dt, device=cur.device))


def load_into(
    model: nn.Module,
    path,
    name_map: Union[None, Mapping[str, str], Callable[[str], Optional[str]]] = None,
    strict: bool = True,
    modules_to_not_convert: Optional[Sequence[str]] = None,
    dtype: Optional[torch.dtype] = None,
) -> LoadResult:
    """Load a GGUF file into ``model``.

    Tensors stored quantized whose target is the ``weight`` of an ``nn.Linear`` / ``nn.Embedding`` (or an
    existing GGUF layer) replace that module by a :class:`GGUFLinear` / :class:`GGUFEmbedding` holding the
    packed blocks (on the module's device). Other quantized tensors are dequantized. F32/F16/BF16 tensors are
    copied into the existing parameters and buffers in their dtype and device.

    ``name_map`` maps file tensor names to model names (a dict, or a callable returning ``None`` to drop a
    tensor). Shape mismatches always raise ``ValueError``. With ``strict`` (default), missing or unexpected
    names raise too; otherwise they are reported in the returned :class:`LoadResult`. Nothing in the model is
    changed when an error is raised. A subclass of ``nn.Linear``/``nn.Embedding`` with its own ``forward`` is
    refused (its behaviour would be lost), except transformers' scaled word embeddings, which become
    :class:`GGUFScaledEmbedding`. Non-persistent buffers left on the meta device are reported as missing.
    Files with llama.cpp's tensor names are for :func:`fastquant.gguf.from_pretrained`; the error says so.

    ``modules_to_not_convert``: modules (a full dotted name, an ancestor, or one name component) that stay plain
    ``nn.Linear``/``nn.Embedding``: their quantized weights are dequantized (exactly) instead of packed.
    ``dtype``: the dtype of float tensors created for parameters on the meta device, and the output dtype of
    packed embeddings replacing meta modules (default: the parameter's).
    """
    from ._split import open_gguf

    skip = list(modules_to_not_convert or [])
    with open_gguf(path) as f:
        if name_map is None and _is_transformers_model(model) and _looks_like_llama_cpp(f.tensors):
            # a llama.cpp file into a transformers model: the names, row orders and value transforms are
            # llama.cpp's (see fastquant.gguf.from_pretrained)
            from ._hf import load_llama_cpp_into

            return load_llama_cpp_into(model, f, dtype=dtype, modules_to_not_convert=skip)
        plan = _plan(model, f, name_map, skip)
        _raise_if_bad(plan, f.path, strict)
        expected = _expected_names(model)
        modules = dict(model.named_modules())
        replaced: List[str] = []
        with torch.no_grad():
            for kind, mname, fname, info in plan.steps:
                if kind == "packed":
                    owner, new = _apply_packed(model, modules, expected, f, mname, fname, info, dtype)
                    replaced.append(owner)
                    _tie_aliases(model, modules, new, owner, plan.aliases.get(mname, []), replaced)
                else:
                    _apply_plain(model, modules, expected, f, mname, fname, info, dtype)
    return LoadResult(plan.missing, plan.unexpected, plan.mismatched, replaced)


# ---------------------------------------------------------------------------------------------------------
# quantize_model, save, dequantize_model
# ---------------------------------------------------------------------------------------------------------


def quantize_model(
    model: nn.Module,
    ggml_type,
    modules_to_not_convert=None,
    embeddings: bool = False,
) -> QuantizeResult:
    """Replace every ``nn.Linear`` (and with ``embeddings=True`` every ``nn.Embedding``) by a packed layer
    of ``ggml_type``, quantized by the Rust quantizers, in place. Layers whose input width is not a multiple
    of the block size, those named in ``modules_to_not_convert`` (a name, a dotted prefix or one component),
    and subclasses with their own ``forward`` (which a packed layer would drop; transformers' scaled word
    embeddings excepted) stay float and are listed in the result's ``skipped`` with the reason."""
    from ._dequant import quantize

    _, name, be, _ = _info(ggml_type)
    skip = list(modules_to_not_convert or [])
    converted: List[str] = []
    skipped: Dict[str, str] = {}
    packed_by_weight: Dict[int, _GGUFPacked] = {}
    for mname, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear):
            width = mod.in_features
        elif embeddings and isinstance(mod, nn.Embedding):
            width = mod.embedding_dim
        else:
            continue
        if matches_skip(mname, skip):
            skipped[mname] = "in modules_to_not_convert"
            continue
        if width % be:
            skipped[mname] = f"{width} input features are not a multiple of the {name} block size {be}"
            continue
        problem = _subclass_problem(mod)
        if problem:
            skipped[mname] = problem
            continue
        tied_to = packed_by_weight.get(id(mod.weight))
        if (
            tied_to is not None
            and isinstance(mod, nn.Linear)
            and (mod.out_features, mod.in_features) == (tied_to._rows, tied_to._cols)
        ):
            # A Linear sharing its weight with a layer packed before (a tied LM head): share the blocks too.
            new = _packed_for(mod, tied_to.ggml_type)
            new.bias = mod.bias
            new.set_packed(tied_to.weight, copy=False)
        elif isinstance(mod, nn.Linear):
            new = GGUFLinear.from_linear(mod, name)
            packed_by_weight[id(mod.weight)] = new
        else:
            w = mod.weight.detach()
            new = _packed_for(mod, name)
            new.weight = torch.empty((new._rows, new.row_bytes), dtype=torch.uint8, device=w.device)
            new.set_packed(quantize(w.to("cpu", torch.float32), name))
            new._dtype_probe = new._dtype_probe.to(w.device)
            packed_by_weight[id(mod.weight)] = new
        _set_module(model, mname, new)
        converted.append(mname)
    return QuantizeResult(converted, skipped)


def save(model: nn.Module, path, metadata=None) -> int:
    """Write ``model``'s state to a GGUF file (readable by gguf-py / llama.cpp tooling): packed layers as
    their blocks (logical shape (rows, cols)), every other parameter and persistent buffer in its own dtype
    (F32/F16/BF16, integer types as I8..I64). Names are the state-dict names; a tensor shared by several
    modules (tied weights) is written once, under its first name. Returns the file size.

    A transformers model (a ``PreTrainedModel`` of an architecture llama.cpp knows) is written the llama.cpp
    way instead: llama.cpp's tensor names, Q/K permutation, per-architecture transforms and metadata (see
    :func:`fastquant.gguf.save_llama_cpp`), unless ``metadata`` has ``general.architecture`` set to something
    else than the model's llama.cpp architecture."""
    from ._writer import write

    if _is_transformers_model(model):
        from ._export import llama_cpp_architecture, save_llama_cpp

        arch = llama_cpp_architecture(model)
        if arch is not None and (metadata is None or metadata.get("general.architecture", arch) == arch):
            return save_llama_cpp(model, path, metadata=metadata)

    modules = dict(model.named_modules())
    tensors = {}
    written = set()
    for k, v in _expected_names(model).items():
        same = (v.device, v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if v.device.type != "meta" and same in written:
            continue  # a tied tensor: stored once, under its first name (as llama.cpp does); load_into re-ties it
        written.add(same)
        owner, leaf = _split(k)
        mod = modules.get(owner)
        if isinstance(mod, _GGUFPacked) and leaf == "weight":
            tensors[k] = (v.detach().cpu().contiguous().numpy().reshape(-1), mod.ggml_type, (mod._rows, mod._cols))
        else:
            tensors[k] = v.detach()
    return write(path, tensors, metadata)


def _is_transformers_model(model) -> bool:
    import sys

    if "transformers" not in sys.modules:
        return False
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def dequantize_model(model: nn.Module, dtype=torch.float32) -> nn.Module:
    """Replace every packed layer by a plain ``nn.Linear`` / ``nn.Embedding`` holding the exact dequantized
    weight in ``dtype``, in place; returns ``model``."""
    for mname, mod in list(model.named_modules()):
        if isinstance(mod, GGUFLinear):
            dev = mod.weight.device
            new = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, device="meta")
            new.weight = nn.Parameter(mod.dequantize_weight(dtype).to(dev))
            if mod.bias is not None:
                new.bias = nn.Parameter(mod.bias.detach().to(dtype))
        elif isinstance(mod, GGUFEmbedding):
            new = nn.Embedding(mod.num_embeddings, mod.embedding_dim, padding_idx=mod.padding_idx, device="meta")
            new.weight = nn.Parameter(mod.dequantize_weight(dtype))
        else:
            continue
        if mname:
            _set_module(model, mname, new)
        else:
            raise ValueError("dequantize_model needs a container module, not a bare GGUF layer")
    return model
