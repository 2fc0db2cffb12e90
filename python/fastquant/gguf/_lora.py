"""LoRA (peft) on packed GGUF layers: gradients through :class:`GGUFLinear`, peft registration, merge reports.

Three pieces live here; the peft layer class itself is in :mod:`fastquant.gguf._peft_layer` (it imports peft).

* :func:`packed_linear_with_grad`: ``GGUFLinear.forward`` routes inputs that need a gradient through this
  ``autograd.Function``. The forward is the layer's own (no-grad) forward, unchanged; the backward gives
  ``grad_x = grad_y · W`` with ``W`` the exact dequantized weight (tile by tile of output rows, so a huge layer
  never needs its whole float weight at once) and ``grad_bias = Σ grad_y`` when the bias is trainable. The
  packed blocks never get a gradient: they are frozen.
* Registration with peft. peft's public route for layer types it does not know is
  ``LoraConfig._register_custom_module({GGUFLinear: GGUFLoraLinear})`` (:func:`peft_mapping` gives the dict).
  It is per config, and diffusers' ``load_lora_adapter`` builds its config internally, so
  :func:`enable_peft` also makes every ``LoraModel`` (``get_peft_model``, ``inject_adapter_in_model``,
  diffusers' loaders) dispatch GGUF layers through that same mechanism: when a target is a ``GGUFLinear`` and
  the config carries no mapping for it, a copy of the config with the mapping added is handed to peft's own
  dispatcher (the caller's config is not changed). Importing the GGUF layers calls :func:`autoregister_peft`,
  which does this as soon as peft is imported (at once if it already is; otherwise a one-shot import hook
  waits for ``peft.tuners.lora.model``), so importing fastquant never imports peft.
* :func:`merge_lora` / :func:`merge_report`: merging with a chosen ggml type, and the per-layer
  requantization errors of the last merge.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.util
import math
import sys
import threading
from typing import Dict, NamedTuple, Optional, Sequence

import torch

__all__ = [
    "MergeReport",
    "autoregister_peft",
    "disable_peft",
    "enable_peft",
    "merge_lora",
    "merge_report",
    "packed_linear_with_grad",
    "peft_mapping",
]

# ---------------------------------------------------------------------------------------------------------
# autograd through the packed matmul (w.r.t. the input and the bias; the blocks are frozen)
# ---------------------------------------------------------------------------------------------------------

#: Largest float tile (bytes) of the dequantized weight the backward builds at once.
GRAD_TILE_BYTES = 32 << 20


def _grad_input(gy: torch.Tensor, packed: torch.Tensor, tid: int, n: int, k: int) -> torch.Tensor:
    """``gy (m, n) · W (n, k)`` with W dequantized exactly, ``rows`` output rows of W at a time."""
    dtype = gy.dtype
    rows = max(1, min(n, GRAD_TILE_BYTES // max(1, k * gy.element_size())))
    if rows >= n:
        w = torch.ops.fastquant.gguf_dequantize(packed, tid, n, k, dtype)
        return gy @ w
    gx = None
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        w = torch.ops.fastquant.gguf_dequantize(packed[r0:r1], tid, r1 - r0, k, dtype)
        part = gy[:, r0:r1] @ w
        gx = part if gx is None else gx.add_(part)
    return gx


class _PackedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, layer, fused):
        # Grad mode is off here, so the layer takes its ordinary inference path (fused / unfused / CUDA).
        y = layer.forward(x, fused)
        # Keep the blocks as they are now: a merge that swaps the layer's buffer later does not change this.
        ctx.packed, ctx.tid, ctx.n, ctx.k = layer.weight, layer._type_id, layer.out_features, layer.in_features
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, gy):
        gx = gb = None
        g2 = gy.reshape(-1, ctx.n)
        if ctx.needs_input_grad[0]:
            gx = _grad_input(g2.to(ctx.x_dtype), ctx.packed, ctx.tid, ctx.n, ctx.k).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            gb = g2.sum(0).to(ctx.bias_dtype)
        return gx, gb, None, None


def packed_linear_with_grad(layer, x: torch.Tensor, fused: Optional[bool] = None) -> torch.Tensor:
    """``layer(x)`` for a :class:`GGUFLinear` with autograd w.r.t. ``x`` (and a trainable bias)."""
    return _PackedLinear.apply(x, layer.bias, layer, fused)


# ---------------------------------------------------------------------------------------------------------
# peft registration
# ---------------------------------------------------------------------------------------------------------

_lock = threading.Lock()
_patched: Dict[str, tuple] = {}  # module name -> (class, attribute, original)
_hook: list = []  # the pending import hook, if any


def peft_mapping() -> dict:
    """``{GGUFLinear: GGUFLoraLinear}``, for peft's per-config route:
    ``LoraConfig(...)._register_custom_module(fastquant.gguf.peft_mapping())`` (imports peft)."""
    from ._layers import GGUFLinear
    from ._peft_layer import GGUFLoraLinear

    return {GGUFLinear: GGUFLoraLinear}


def _base(target):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return target.get_base_layer() if isinstance(target, BaseTunerLayer) else target


def _patch_peft(module) -> None:
    """``LoraModel._create_new_module``: GGUF targets go through peft's custom-module dispatch."""
    cls = module.LoraModel
    original = cls.__dict__["_create_new_module"]
    create = original.__func__ if isinstance(original, staticmethod) else original

    def _create_new_module(lora_config, adapter_name, target, **kwargs):
        from ._layers import GGUFLinear

        custom = getattr(lora_config, "_custom_modules", None) or {}
        if isinstance(_base(target), GGUFLinear) and not any(issubclass(GGUFLinear, t) for t in custom):
            # peft's own custom-module dispatch, on a copy: the caller's config stays as it was
            lora_config = copy.copy(lora_config)
            lora_config._custom_modules = {**custom, **peft_mapping()}
        return create(lora_config, adapter_name, target, **kwargs)

    _create_new_module.__wrapped__ = create
    _create_new_module.__doc__ = create.__doc__
    cls._create_new_module = staticmethod(_create_new_module)
    _patched[module.__name__] = (cls, "_create_new_module", original)


def _patch_diffusers(module) -> None:
    """diffusers' Flux LoRA loader reads a layer's (out, in) shape from ``module.weight.shape``, which for a
    packed layer is (rows, bytes per row): give it the logical shape instead (it pads or refuses LoRAs by it)."""
    cls = getattr(module, "FluxLoraLoaderMixin", None)
    original = None if cls is None else cls.__dict__.get("_calculate_module_shape")
    if original is None:
        return
    calc = original.__func__ if isinstance(original, staticmethod) else original

    def _calculate_module_shape(model, base_module=None, base_weight_param_name=None):
        from ._layers import GGUFLinear

        mod = base_module
        if mod is None and isinstance(base_weight_param_name, str) and base_weight_param_name.endswith(".weight"):
            try:
                mod = model.get_submodule(base_weight_param_name.rsplit(".weight", 1)[0])
            except AttributeError:
                mod = None
        if isinstance(mod, GGUFLinear):
            return torch.Size((mod.out_features, mod.in_features))
        return calc(model, base_module=base_module, base_weight_param_name=base_weight_param_name)

    _calculate_module_shape.__wrapped__ = calc
    cls._calculate_module_shape = staticmethod(_calculate_module_shape)
    _patched[module.__name__] = (cls, "_calculate_module_shape", original)


_TARGETS = {"peft.tuners.lora.model": _patch_peft, "diffusers.loaders.lora_pipeline": _patch_diffusers}


def _apply(name: str, module) -> None:
    with _lock:
        if name not in _patched:
            _TARGETS[name](module)


class _ImportHook(importlib.abc.MetaPathFinder):
    """Patches each of :data:`_TARGETS` right after its module has been executed (so neither peft nor
    diffusers is imported by fastquant), and removes itself once all are done."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS or fullname in _patched:
            return None
        # find the real spec with this hook out of the way (no recursion), then wrap its loader
        with _lock:
            idx = sys.meta_path.index(self) if self in sys.meta_path else None
            if idx is not None:
                sys.meta_path.pop(idx)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            with _lock:
                if idx is not None and _hook and _hook[0] is self:
                    sys.meta_path.insert(idx, self)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _apply(fullname, module)
            _drop_hook_if_done()

        loader.exec_module = exec_and_patch
        return spec


def _drop_hook_if_done() -> None:
    with _lock:
        if _hook and all(t in _patched for t in _TARGETS):
            if _hook[0] in sys.meta_path:
                sys.meta_path.remove(_hook[0])
            _hook.clear()


def _install() -> None:
    """Patch what is imported already; hook the rest."""
    for name in _TARGETS:
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "__spec__", None) is not None and name not in _patched:
            try:
                _apply(name, mod)
            except AttributeError:
                pass  # still being imported: the hook patches it when it is done
    with _lock:
        if not _hook and not all(t in _patched for t in _TARGETS):
            _hook.append(_ImportHook())
            sys.meta_path.insert(0, _hook[0])


def enable_peft() -> None:
    """Make peft's ``LoraModel`` (hence ``get_peft_model``, ``inject_adapter_in_model`` and diffusers'
    ``load_lora_adapter`` / ``load_lora_weights``) wrap :class:`GGUFLinear` layers in ``GGUFLoraLinear``, and
    diffusers' Flux LoRA loader see packed layers' logical shapes. Imports peft (not diffusers: that one is
    patched when it is imported). Idempotent; the GGUF layers call it on import without importing peft."""
    import peft.tuners.lora.model as m

    _apply(m.__name__, m)
    _install()


def disable_peft() -> None:
    """Undo :func:`enable_peft` / the automatic registration. Layers already wrapped stay wrapped."""
    with _lock:
        if _hook:
            if _hook[0] in sys.meta_path:
                sys.meta_path.remove(_hook[0])
            _hook.clear()
        for name, (cls, attr, original) in list(_patched.items()):
            setattr(cls, attr, original)
            del _patched[name]


def autoregister_peft() -> None:
    """Called when the GGUF layers are imported: patches peft / diffusers now where they are loaded, and
    when they are imported otherwise (never importing them)."""
    _install()


# ---------------------------------------------------------------------------------------------------------
# merging with a chosen type, and the reports
# ---------------------------------------------------------------------------------------------------------


class MergeReport(NamedTuple):
    """The requantization of one merged layer: the type written, the relative L2 error
    ``‖W_q − (W + ΔW)‖ / ‖W + ΔW‖`` and the largest absolute error against the exact float target."""

    ggml_type: str
    rel_l2: float
    max_abs: float


def merge_report(model: torch.nn.Module) -> Dict[str, MergeReport]:
    """Module name -> :class:`MergeReport` for every packed layer holding merged LoRA weights (after
    ``merge_adapter()``, ``merge_and_unload()``, diffusers' ``fuse_lora()`` or :func:`merge_lora`)."""
    out = {}
    for name, mod in model.named_modules():
        rep = getattr(mod, "lora_merge_report", None)
        if isinstance(rep, MergeReport):
            out[name] = rep
    # a wrapped layer and its base_layer carry the same report: keep the outer name
    return {n: r for n, r in out.items() if not (n.endswith(".base_layer") and n[: -len(".base_layer")] in out)}


def merge_lora(
    model: torch.nn.Module,
    ggml_type=None,
    adapter_names: Optional[Sequence[str]] = None,
    safe_merge: bool = False,
) -> Dict[str, MergeReport]:
    """Merge the active (or the named) adapters of every LoRA-wrapped GGUF layer of ``model`` into its
    blocks, requantized to ``ggml_type`` (default: each layer's own type). The layers stay wrapped (peft's
    ``unmerge_adapter()`` / diffusers' ``unfuse_lora()`` restore the original blocks bit for bit). Returns
    :func:`merge_report`."""
    from ._peft_layer import GGUFLoraLinear, check_merge_type

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, GGUFLoraLinear)]
    if ggml_type is not None:
        for n, m in layers:  # check every layer before changing any
            check_merge_type(m.get_base_layer(), ggml_type, n)
    for _, m in layers:
        previous = m.merge_ggml_type
        m.merge_ggml_type = ggml_type if ggml_type is not None else previous
        try:
            m.merge(safe_merge=safe_merge, adapter_names=None if adapter_names is None else list(adapter_names))
        finally:
            m.merge_ggml_type = previous
    return merge_report(model)


def _rel_l2(a: torch.Tensor, ref: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(ref.double()))
    num = float(torch.linalg.vector_norm((a.double() - ref.double())))
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


# Imported by the GGUF layers: hook peft / diffusers now (never importing them).
autoregister_peft()
