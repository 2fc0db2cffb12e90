"""``GGUFLoraLinear``: peft's LoRA ``Linear`` around a packed :class:`GGUFLinear` (imports peft).

Forward: peft's own — the base output comes from the packed blocks (exact dequantization, see
``_layers``), each active adapter adds ``B(A(dropout(x))) · scaling`` in its float dtype, so the cost of an
adapter is its rank, and the base is computed once however many adapters are active. Gradients reach the
adapters and flow to ``x`` through the packed matmul (``_lora.packed_linear_with_grad``).

Merge (``merge_adapter``, ``merge_and_unload``, diffusers' ``fuse_lora``): the original blocks are
dequantized exactly to f32, the scaled deltas of every merged adapter (earlier ones and the new ones) are
added, and the sum is quantized once with fastquant's quantizers to the layer's type (or
``merge_ggml_type``). The original blocks are kept, so ``unmerge`` restores them bit for bit, and merging in
several steps never requantizes twice. Each merge records a :class:`~fastquant.gguf._lora.MergeReport` on the
layer and on its base layer (``lora_merge_report``).
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import numpy as np
import torch
from peft.tuners.lora.layer import Linear as _LoraLinear
from peft.tuners.tuners_utils import check_adapters_to_merge

from .. import _core
from ._lora import MergeReport, _rel_l2

__all__ = ["GGUFLoraLinear", "check_merge_type"]


@functools.lru_cache(maxsize=None)
def _quantizer_check(tid: int, block_elems: int) -> Optional[str]:
    """``None`` if fastquant can quantize to the type, else the quantizer's own message (which lists the types
    it can write): one block of zeros is tried, so the answer follows the Rust core."""
    try:
        _core.quantize_blocks(np.zeros((1, block_elems), dtype=np.float32), tid, 1)
    except ValueError as e:
        return str(e)
    return None


def check_merge_type(base, ggml_type, where: str = "") -> str:
    """The name of ``ggml_type`` if merged weights of ``base`` can be written in it, else ``ValueError``."""
    from ._dequant import _type_info

    tid, name, be, _, _ = _type_info(ggml_type)
    label = f"GGUF layer {where!r}" if where else f"GGUF layer ({base.out_features}x{base.in_features})"
    missing = _quantizer_check(tid, be)
    if missing is not None:
        raise ValueError(
            f"{label}: merged LoRA weights must be requantized, and fastquant has no quantizer for {name} "
            f"({missing}); choose a type with fastquant.gguf.merge_lora(model, ggml_type=...) or the layer's "
            "merge_ggml_type"
        )
    if base.in_features % be:
        raise ValueError(f"{label}: {base.in_features} input features are not whole {be}-element {name} blocks")
    return name


class GGUFLoraLinear(_LoraLinear):
    """peft LoRA layer over a :class:`fastquant.gguf.GGUFLinear`. ``merge_ggml_type``: the ggml type merged
    weights are written in (``None``: the layer's own type, as it was before any merge)."""

    def __init__(self, base_layer, adapter_name: str, config, **kwargs: Any) -> None:
        if config.fan_in_fan_out:
            raise ValueError("GGUFLinear stores (out_features, in_features) weights; set fan_in_fan_out=False")
        super().__init__(base_layer, adapter_name, config=config, **kwargs)
        self.merge_ggml_type: Optional[str] = None
        self._fq_original = None  # (blocks, ggml type, bias) before the first merge

    def _get_in_out_features(self, module):
        return module.in_features, module.out_features

    @property
    def lora_variants(self):
        # Plain LoRA only: the variants (DoRA, ...) read the base weight as a float tensor.
        return {(): None}

    def resolve_lora_variant(self, *, config, **kwargs):
        try:
            return super().resolve_lora_variant(config=config, **kwargs)
        except ValueError as e:
            raise ValueError(
                f"GGUFLinear supports plain LoRA only (no DoRA or other LoRA variants on packed layers): {e}"
            ) from None

    # -- merging -------------------------------------------------------------------------------------------
    def merge(self, safe_merge: bool = False, adapter_names: Optional[list] = None) -> None:
        from ._dequant import quantize

        adapter_names = check_adapters_to_merge(self, adapter_names)
        adapter_names = [a for a in adapter_names if a in self.lora_A.keys()]
        if not adapter_names:
            return
        base = self.get_base_layer()
        own_type = base.ggml_type if self._fq_original is None else self._fq_original[1]
        out_type = check_merge_type(base, self.merge_ggml_type or own_type)
        if self._fq_original is None:
            # the buffer and the bias Parameter themselves: merging only ever replaces them, never writes
            self._fq_original = (base.weight, base.ggml_type, base.bias)
        blocks, orig_type, orig_bias = self._fq_original
        n, k = base.out_features, base.in_features
        tid = _core.ggml_type_info(orig_type)[0]
        names = [a for a in self.merged_adapters if a in self.lora_A.keys()] + adapter_names
        with torch.no_grad():
            target = torch.ops.fastquant.gguf_dequantize(blocks, tid, n, k, torch.float32)
            new_bias = None if orig_bias is None else orig_bias.detach().to(torch.float32)
            for a in names:
                target = target + self.get_delta_weight(a).to(target.device, torch.float32)
                if self.lora_bias[a]:
                    if new_bias is None:
                        raise RuntimeError("cannot merge a LoRA with lora_bias=True: the base layer has no bias")
                    new_bias = new_bias + self.lora_B[a].bias.to(torch.float32) * self.scaling[a]
            if safe_merge and not (
                bool(torch.isfinite(target).all()) and (new_bias is None or bool(torch.isfinite(new_bias).all()))
            ):
                raise ValueError(f"NaNs detected in the merged weights. The adapter(s) {adapter_names} seem broken")
            q = torch.from_numpy(quantize(target.cpu(), out_type)).to(blocks.device)
            out_tid = _core.ggml_type_info(out_type)[0]
            written = torch.ops.fastquant.gguf_dequantize(q, out_tid, n, k, torch.float32)
            report = MergeReport(
                out_type, _rel_l2(written, target), float((written - target).abs().max()) if target.numel() else 0.0
            )
            # set_packed copies into the layer's device and checks the size; the old buffer (kept in
            # _fq_original) is left as it was
            base.set_packed(q, out_type, copy=False)
            if any(self.lora_bias[a] for a in names):
                base.bias = torch.nn.Parameter(new_bias.to(orig_bias.dtype), requires_grad=orig_bias.requires_grad)
        self.merged_adapters.extend(adapter_names)
        self.lora_merge_report = base.lora_merge_report = report

    def unmerge(self) -> None:
        if not self.merged:
            import warnings

            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        base = self.get_base_layer()
        blocks, orig_type, orig_bias = self._fq_original
        base.set_packed(blocks, orig_type, copy=False)
        if base.bias is not orig_bias:
            base.bias = orig_bias
        self.merged_adapters.clear()
        self._fq_original = None
        for m in (self, base):
            if "lora_merge_report" in m.__dict__:
                del m.__dict__["lora_merge_report"]

    def __repr__(self) -> str:
        return "lora.GGUFLoraLinear(" + super().__repr__().split("(", 1)[1]
