"""LoRA on packed GGUF layers: forward time with 0, 1, 2 and 4 adapters, fastquant (peft's LoRA layer beside
the packed base) against the way ComfyUI-GGUF applies LoRAs (re-implemented here, not their code: on every
forward, dequantize the weight, add each adapter's scaled delta B·A to it, then one matmul).

One 3072×3072 layer (out×in), Q4_K and Q8_0, bf16 activations, rank-32 adapters (bf16), batch 1 and 64, on the
CPU with one thread by default (``--threads``; fastquant's kernels use torch's thread count too: on a
shared, oversubscribed machine multi-threaded sub-millisecond matmuls measure the scheduler, not the code). Both sides use fastquant's Rust dequantizer for the base weight, so the
difference is the method alone. Times are medians (ms per forward) over rounds that time every variant once
each, interleaved.

    PYTHONPATH=python python benches/bench_lora.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import fastquant.gguf as fg

from _machine import describe  # noqa: E402  (benches/ is on sys.path when a script here runs)

N = 3072
RANK = 32
TYPES = ["Q4_K", "Q8_0"]
BATCHES = [1, 64]
ADAPTERS = [0, 1, 2, 4]


def interleaved_medians(fns, rounds: int):
    """Median time (ms) of each function, timed in interleaved rounds (each round calls every function once),
    so that the load of a shared machine falls on all of them alike."""
    for f in fns:
        f()
        f()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t)
    return [statistics.median(ts) * 1e3 for ts in times]


def build(ggml_type: str, n_adapters: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(N, N))
    fg.quantize_model(model, ggml_type)
    if n_adapters == 0:
        return model, model[0], []
    cfg = LoraConfig(r=RANK, lora_alpha=RANK, target_modules=["0"], init_lora_weights=False)
    pm = get_peft_model(model, cfg, adapter_name="a0")
    for i in range(1, n_adapters):
        pm.add_adapter(f"a{i}", LoraConfig(r=RANK, lora_alpha=RANK, target_modules=["0"], init_lora_weights=False))
    names = [f"a{i}" for i in range(n_adapters)]
    pm.base_model.set_adapter(names)
    layer = pm.base_model.model[0]
    layer.to(torch.bfloat16)
    adapters = [(layer.lora_A[a].weight, layer.lora_B[a].weight, layer.scaling[a]) for a in names]
    return pm, layer.base_layer, adapters


def comfy_style(base: fg.GGUFLinear, adapters, x: torch.Tensor) -> torch.Tensor:
    """ComfyUI-GGUF's approach: patch the dequantized weight with every LoRA delta, per forward."""
    w = base.dequantize_weight(torch.float32)
    for a, b, scale in adapters:
        w += scale * (b.float() @ a.float())
    return F.linear(x, w.to(x.dtype), base.bias.to(x.dtype))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = 7 if args.quick else 25
    print(f"machine: {describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"one {N}x{N} layer, bf16 activations, rank-{RANK} bf16 adapters; medians of {runs} interleaved rounds (ms/forward)"
    )
    print("ratio = ComfyUI-GGUF-style / fastquant; overhead = fastquant with adapters / fastquant without")
    print()
    print(f"{'type':6} {'batch':>5} {'adapters':>8} {'fastquant':>10} {'comfy-style':>12} {'ratio':>7} {'overhead':>9}")
    print("-" * 64)
    for ggml_type in TYPES:
        for batch in BATCHES:
            x = torch.randn(batch, N, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
            built = [build(ggml_type, n_ad) for n_ad in ADAPTERS]
            fns = []
            with torch.no_grad():
                for model, base, adapters in built:
                    if adapters:
                        # the same result, up to the bf16 rounding of two orders of operations
                        want = comfy_style(base, adapters, x).float()
                        assert float((model(x).float() - want).norm() / want.norm()) < 2e-2
                    fns += [lambda m=model: m(x), lambda b=base, a=adapters: comfy_style(b, a, x)]
                t = interleaved_medians(fns, runs)
            plain = t[0]
            for i, n_ad in enumerate(ADAPTERS):
                ours, theirs = t[2 * i], t[2 * i + 1]
                print(
                    f"{ggml_type:6} {batch:5d} {n_ad:8d} {ours:10.2f} {theirs:12.2f} {theirs / ours:6.1f}x "
                    f"{ours / plain:8.2f}x"
                )


if __name__ == "__main__":
    main()
