"""Fused Triton GGUF linear (fastquant.gguf.triton, through GGUFLinear) vs diffusers' GGUF linear (its best
available kernels) vs a dense bf16 F.linear, side by side in one run, bf16 activations, same packed weights.

Types Q4_0, Q8_0, Q4_K, Q6_K, IQ4_XS; (out, in) = 4096x4096 and 3072x12288; batch 1, 16, 256. Times are
CUDA-event medians of --reps forwards after warm-up (first calls compile, and autotune unless
FASTQUANT_TRITON_AUTOTUNE=0). Before timing, the kernels are checked on this device: dequantization bit-exact
with the Rust kernels for every covered type, linear within the f32 accumulation bound.

Targets (issue 16): >= 3x diffusers at batch 1 and 16, >= 1x at batch 256, batch-1 time <= 3x dense bf16.

diffusers' fastest path is its CUDA-kernel forward (``DIFFUSERS_GGUF_CUDA_KERNELS=true``, kernels fetched from
the Hugging Face Hub by the ``kernels`` package); where that cannot load (no network, package missing) its
native torch path runs, and the output says which one was measured.

    FASTQUANT_TRITON_AUTOTUNE=0 PYTHONPATH=python python benches/bench_gguf_triton_cuda.py  # fixed configs,
                                                       # ~15 compiles: the quick first run on a CUDA machine
    PYTHONPATH=python python benches/bench_gguf_triton_cuda.py            # autotuned: ~65 compiles, minutes
    PYTHONPATH=python python benches/bench_gguf_triton_cuda.py --dry-run  # anywhere: tiny exactness checks
                                                                          # (interpreter without a GPU)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe  # noqa: E402

TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS"]
SHAPES = [(4096, 4096), (3072, 12288)]  # (out_features, in_features)
BATCHES = [1, 16, 256]
F16_SCALES = {"Q4_0": [0], "Q8_0": [0], "Q4_K": [0, 2], "Q6_K": [208], "IQ4_XS": [0]}


def packed_weight(name, rows, cols, seed=0):
    """Random blocks with finite f16 scales (valid data for every type; timing does not depend on values)."""
    from fastquant import _core

    _, _, be, bb, _ = _core.ggml_type_info(name)
    rng = np.random.default_rng(seed)
    nb = rows * cols // be
    blocks = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
    for off in F16_SCALES.get(name, []):
        blocks[:, off : off + 2] = rng.uniform(1e-4, 1e-2, nb).astype(np.float16).view(np.uint8).reshape(nb, 2)
    return blocks.reshape(rows, -1)


def check_exactness(device: str, log) -> bool:
    """Tiny shapes: every covered type's dequantize vs the Rust kernels (f32, bf16), and linear vs the bound."""
    import fastquant.gguf as fg
    from fastquant.gguf import triton as gt

    ok = True
    for name in sorted(gt.TYPES):
        _, be, bb, _ = gt.TYPES[name]
        rows, cols = 8, max(256, be)
        p = packed_weight(name, rows, cols, seed=1) if name in F16_SCALES else _random_valid(name, rows, cols)
        for kind, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            want = fg.dequantize(p.reshape(-1), name, dtype=kind)
            got = gt.dequantize(torch.from_numpy(p).to(device), name, (rows, cols), dt).cpu()
            g = got.view(torch.int32 if dt == torch.float32 else torch.int16).numpy().reshape(-1)
            w = want.view(np.int32 if kind == "float32" else np.int16).reshape(-1)
            nan = np.isnan(fg.dequantize(p.reshape(-1), name))
            if not np.array_equal(g[~nan], w[~nan]):
                log(f"  MISMATCH dequantize {name} {kind}: {(g[~nan] != w[~nan]).sum()} values")
                ok = False
    for name in TYPES:
        rows, cols = 24, 512
        p = packed_weight(name, rows, cols, seed=2)
        W = torch.from_numpy(fg.dequantize(p.reshape(-1), name, shape=(rows, cols))).double()
        for m in (1, 16, 40):
            x = torch.randn(m, cols)
            y = gt.linear(x.to(device), torch.from_numpy(p).to(device), name, (rows, cols)).cpu().double()
            ref = x.double() @ W.T
            bound = cols * 2.0**-24 * (x.double().abs() @ W.abs().T) + 2.0**-24 * ref.abs() + 1e-30
            if not ((y - ref).abs() <= bound).all():
                log(
                    f"  OUT OF BOUND linear {name} rows={m}: max err/bound {float(((y - ref).abs() / bound).max()):.3g}"
                )
                ok = False
    log(f"exactness on {device}: {'all covered types bit-exact, linear within bound' if ok else 'FAILED'}")
    return ok


def _random_valid(name, rows, cols):
    from fastquant import _core

    _, _, be, bb, _ = _core.ggml_type_info(name)
    rng = np.random.default_rng(3)
    if name in ("F32", "F16", "BF16"):
        v = rng.standard_normal(rows * cols).astype(np.float32)
        if name == "F32":
            return v.view(np.uint8).reshape(rows, -1)
        if name == "F16":
            return v.astype("<f2").view(np.uint8).reshape(rows, -1)
        return (v.view(np.uint32) >> 16).astype("<u2").view(np.uint8).reshape(rows, -1)
    blocks = rng.integers(0, 256, size=(rows * cols // be, bb), dtype=np.uint8)
    return blocks.reshape(rows, -1)


def cuda_ms(fn, reps, warmup=5):
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


def diffusers_layer(packed, name, rows, cols):
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    lin = GGUFLinear(cols, rows, bias=False, compute_dtype=torch.bfloat16, device="meta")
    lin.weight = GGUFParameter(torch.from_numpy(packed.copy()), quant_type=getattr(gguf.GGMLQuantizationType, name))
    return lin.to("cuda")


def diffusers_path() -> str:
    try:
        from diffusers.quantizers.gguf import utils
    except Exception as e:  # noqa: BLE001  (report whatever stops diffusers from importing)
        return f"unavailable ({type(e).__name__}: {e})"
    if getattr(utils, "ops", None) is not None:
        return "CUDA kernels (DIFFUSERS_GGUF_CUDA_KERNELS, Isotr0py/ggml via the kernels package)"
    return "native torch path (dequantize_gguf_tensor + F.linear; the Hub CUDA kernels are not loaded)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="only the exactness checks, on tiny shapes")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument(
        "--out", default=None, help="results file (default benches/results/bench_gguf_triton_cuda_<gpu>.txt)"
    )
    args = ap.parse_args()

    lines = []
    # the interpreter's numpy ops warn on the Inf/NaN that random blocks decode to; the hardware does not
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton")

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    from fastquant.gguf import triton as gt

    device = "cpu" if gt.INTERPRET else "cuda"
    log(f"machine: {describe()}")
    log(
        f"torch {torch.__version__}; triton {__import__('triton').__version__}; kernels: "
        f"{'interpreter (no CUDA device)' if gt.INTERPRET else torch.cuda.get_device_name()}"
    )
    ok = check_exactness(device, log)
    if args.dry_run or gt.INTERPRET:
        if not args.dry_run:
            log("requires CUDA for the timings; only the exactness checks ran")
        sys.exit(0 if ok else 1)

    import fastquant.gguf as fg
    from fastquant.gguf import _layers

    autotune = os.environ.get("FASTQUANT_TRITON_AUTOTUNE", "1") != "0"
    log(f"autotune: {'on (first call per shape tunes; cached on disk)' if autotune else 'off (fixed configs)'}")
    dpath = diffusers_path()
    log(f"diffusers: {dpath}")
    have_diffusers = not dpath.startswith("unavailable")
    log(f"bf16 activations; CUDA-event medians of {args.reps} forwards; ratios: diffusers/ours, ours/dense")
    hdr = (
        f"{'type':<7}{'shape':>12}{'batch':>6}{'ours ms':>10}{'diffusers ms':>14}{'dense ms':>10}"
        f"{'vs diff':>9}{'vs dense':>10}  targets"
    )
    log(hdr)
    misses = 0
    t_start = time.time()
    for name in TYPES:
        for rows, cols in SHAPES:
            p = packed_weight(name, rows, cols)
            ours = fg.GGUFLinear.from_packed(p, name, rows, cols).to("cuda")
            theirs = diffusers_layer(p, name, rows, cols) if have_diffusers else None
            w = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16)
            for batch in BATCHES:
                x = torch.randn(batch, cols, device="cuda", dtype=torch.bfloat16)
                with torch.no_grad():
                    t0 = time.time()
                    ours(x)  # compile (and tune) outside the timing
                    torch.cuda.synchronize()
                    first = time.time() - t0
                    t_fq = cuda_ms(lambda: ours(x), args.reps)
                    t_df = cuda_ms(lambda: theirs(x), args.reps) if theirs is not None else float("nan")
                    t_dense = cuda_ms(lambda: F.linear(x, w), args.reps)
                r_df, r_dense = t_df / t_fq, t_fq / t_dense
                want = 3.0 if batch <= 16 else 1.0
                verdict = [f"diff>={want:g}x:{'ok' if r_df >= want else 'MISS'}"]
                if batch == 1:
                    verdict.append(f"dense<=3x:{'ok' if r_dense <= 3.0 else 'MISS'}")
                misses += sum("MISS" in v for v in verdict)
                log(
                    f"{name:<7}{f'{rows}x{cols}':>12}{batch:>6}{t_fq:>10.4f}{t_df:>14.4f}{t_dense:>10.4f}"
                    f"{r_df:>9.2f}{r_dense:>10.2f}  {' '.join(verdict)}  (first call {first:.1f}s)"
                )
    log(
        f"targets missed: {misses}; wall {time.time() - t_start:.0f}s; Triton path used: "
        f"{sorted(_layers._triton_types()) == sorted(gt.TYPES)}"
    )
    gpu = torch.cuda.get_device_name().split()[-1].lower()
    out = Path(args.out or Path(__file__).parent / "results" / f"bench_gguf_triton_cuda_{gpu}.txt")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
