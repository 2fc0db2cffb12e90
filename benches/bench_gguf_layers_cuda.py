"""Packed GGUF linear layers on CUDA: fastquant.gguf.GGUFLinear (torch-op decoders, exact f32 math) vs
diffusers' GGUFLinear (native torch path, fp16 dequant math) vs a dense bf16 F.linear, same packed weights,
bf16 activations. Times are CUDA-event medians of 30 forwards after warm-up. Needs a CUDA GPU.

    PYTHONPATH=python python benches/bench_gguf_layers_cuda.py
"""

from __future__ import annotations

import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "benches")
import fastquant.gguf as fg  # noqa: E402
from bench_gguf_layers import SHAPES, TYPES, diffusers_linear, packed_weight  # noqa: E402


def cuda_ms(fn, reps=30, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    if not torch.cuda.is_available():
        print("requires CUDA")
        return
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    try:
        import diffusers  # noqa: F401

        have_diffusers = True
    except ImportError:
        have_diffusers = False
    print(
        f"{'type':<7}{'shape':>12}{'batch':>6}{'fastquant ms':>14}{'diffusers ms':>14}{'ratio':>8}{'dense bf16 ms':>15}"
    )
    for name in TYPES:
        for rows, cols in SHAPES:
            p = packed_weight(name, rows, cols)
            ours = fg.GGUFLinear.from_packed(p, name, rows, cols).to("cuda")
            theirs = diffusers_linear(p, name, rows, cols).to("cuda") if have_diffusers else None
            w = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16)
            for batch in (1, 64):
                x = torch.randn(batch, cols, device="cuda", dtype=torch.bfloat16)
                with torch.no_grad():
                    t_fq = cuda_ms(lambda: ours(x))
                    t_df = cuda_ms(lambda: theirs(x)) if theirs is not None else float("nan")
                    t_dense = cuda_ms(lambda: F.linear(x, w))
                print(
                    f"{name:<7}{f'{rows}x{cols}':>12}{batch:>6}{t_fq:>14.3f}{t_df:>14.3f}{t_df / t_fq:>8.2f}{t_dense:>15.3f}"
                )


if __name__ == "__main__":
    main()
