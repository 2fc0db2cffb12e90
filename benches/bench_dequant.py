"""Dequantization throughput: fastquant vs libgguf vs gguf-py vs diffusers' torch functions.

One run: 16 Mi elements per type, f32 output, 1 and 2 threads; GB/s of f32 output, ns/element, and the ratio
to this machine's memcpy bandwidth (numpy copy of an array as large as the output) at the same thread count.
Also bf16 output for the memory-bound types. Figures are medians.

    PYTHONPATH=python python benches/bench_dequant.py [--types Q4_0,Q4_K] [--elems N] [--reps R]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import fastquant.gguf as fg
from fastquant import _core

MEMORY_BOUND = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0", "F16", "BF16"]
ALL = [
    "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
    "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0",
    "MXFP4", "NVFP4", "Q1_0", "Q2_0",
]
SCALE_OFFSETS = {
    "Q4_0": [0], "Q5_0": [0], "Q8_0": [0], "IQ4_NL": [0], "IQ2_XXS": [0], "IQ2_XS": [0], "IQ2_S": [0],
    "IQ3_XXS": [0], "IQ3_S": [0], "IQ1_S": [0], "IQ4_XS": [0], "Q1_0": [0], "Q2_0": [0],
    "Q4_1": [0, 2], "Q5_1": [0, 2], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q2_K": [80, 82], "Q3_K": [108],
    "Q6_K": [208], "TQ1_0": [52], "TQ2_0": [64],
}


def machine() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.machine()}, SIMD path {_core.simd_path()}"


def blocks_for(name: str, n_elems: int) -> np.ndarray:
    _, _, be, bb, _ = fg._dequant._type_info(name)
    rng = np.random.default_rng(1)
    n = n_elems // be
    b = rng.integers(0, 256, (n, bb), dtype=np.uint8)
    for off in SCALE_OFFSETS.get(name, []):  # finite scales in [-1, 1]
        b[:, off : off + 2] = rng.uniform(-1, 1, n).astype("<f2").view(np.uint8).reshape(n, 2)
    if name == "F16":
        b = rng.uniform(-4, 4, n).astype("<f2").view(np.uint8).reshape(n, 2)
    if name == "Q8_K":
        b[:, 0:4] = rng.uniform(-1, 1, n).astype("<f4").view(np.uint8).reshape(n, 4)
    if name == "MXFP4":
        b[:, 0] = rng.integers(100, 140, n)
    if name == "IQ1_M":
        b[:, 55] &= 0xBF
    return b


def timed(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def split2(fn_half):
    """Run fn_half(0) and fn_half(1) on two Python threads (for peers without a thread option)."""
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(fn_half, (0, 1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default=",".join(ALL))
    ap.add_argument("--elems", type=int, default=16 << 20)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--slow-reps", type=int, default=3)
    args = ap.parse_args()
    N = args.elems
    types = [t for t in args.types.split(",") if t]

    import torch
    import libgguf
    import gguf
    from gguf import GGMLQuantizationType as T
    from diffusers.quantizers.gguf.utils import dequantize_functions

    print(f"machine: {machine()}")
    print(f"tensor: {N} elements ({N * 4 / 2**20:.0f} MiB of f32 output); median of {args.reps} runs "
          f"(gguf-py/diffusers: {args.slow_reps})")

    src = np.ones(N, np.float32)
    dst = np.empty_like(src)
    dst[:] = 0
    memcpy = {1: N * 4 / timed(lambda: np.copyto(dst, src), args.reps) / 1e9}
    h = N // 2
    memcpy[2] = N * 4 / timed(lambda: split2(lambda i: np.copyto(dst[i * h:(i + 1) * h], src[i * h:(i + 1) * h])), args.reps) / 1e9
    print(f"memcpy (numpy copy, GB/s of bytes copied): 1 thread {memcpy[1]:.2f}, 2 threads {memcpy[2]:.2f}")
    print()
    hdr = f"{'type':8} {'thr':>3} | {'fastquant':>22} | {'libgguf':>22} | {'gguf-py':>14} | {'diffusers':>14} | {'fq/lib':>6} {'fq/gpy':>7} | {'bf16 GB/s (elem/ns)':>20}"
    print(hdr)
    print("-" * len(hdr))

    def fmt(t):
        if t is None:
            return None
        return N * 4 / t / 1e9

    for name in types:
        tid, _, be, bb, _ = fg._dequant._type_info(name)
        blocks = blocks_for(name, N)
        flat = blocks.reshape(-1)
        out = np.empty(N, np.float32)
        out[:] = 0
        qt = T(tid) if tid in T._value2member_map_ else None
        has_lib = qt is not None and tid in libgguf._SUPPORTED_QUANTIZED_QTYPES
        has_gpy = name in ("F16",) or (qt is not None and qt in gguf.quants._type_traits)
        has_diff = qt is not None and qt in dequantize_functions
        tblocks = torch.from_numpy(blocks)
        for th in (1, 2):
            r = {}
            r["fq"] = timed(lambda: fg.dequantize(flat, name, out=out, threads=th), args.reps)
            if has_lib:
                if th == 1:
                    r["lib"] = timed(lambda: libgguf.dequantize_rows_into_raw(tid, flat, out, 1, N), args.reps)
                else:
                    hb = blocks.shape[0] // 2
                    halves = [blocks[:hb].reshape(-1), blocks[hb:].reshape(-1)]
                    outs = [out[: hb * be], out[hb * be:]]
                    r["lib"] = timed(lambda: split2(lambda i: libgguf.dequantize_rows_into_raw(
                        tid, halves[i], outs[i], 1, outs[i].size)), args.reps)
            if has_gpy:
                gq = T.F16 if name == "F16" else qt
                if th == 1:
                    r["gpy"] = timed(lambda: gguf.quants.dequantize(blocks, gq), args.slow_reps)
                else:
                    hb = blocks.shape[0] // 2
                    r["gpy"] = timed(lambda: split2(lambda i: gguf.quants.dequantize(blocks[i * hb:(i + 1) * hb], gq)), args.slow_reps)
            if has_diff:
                torch.set_num_threads(th)
                fn = dequantize_functions[qt]
                r["diff"] = timed(lambda: fn(tblocks, be, bb, dtype=torch.float32), args.slow_reps)
            bf = ""
            if name in MEMORY_BOUND:
                o16 = np.empty(N, np.uint16)
                t16 = timed(lambda: fg.dequantize(flat, name, out=o16, dtype="bfloat16", threads=th), args.reps)
                bf = f"{N * 2 / t16 / 1e9:6.2f} ({N / t16 / 1e9:.2f}/ns)"
            g = {k: fmt(v) for k, v in r.items()}

            def cell(k, w):
                if k not in g:
                    return f"{'n/a':>{w}}"
                s = f"{g[k]:.2f} {r[k] / N * 1e9:.3f}ns"
                if w > 14:
                    s += f" {g[k] / memcpy[th]:.0%}m"
                return f"{s:>{w}}"

            ratio_lib = f"{g['fq'] / g['lib']:6.2f}" if "lib" in g else f"{'n/a':>6}"
            ratio_gpy = f"{g['fq'] / g['gpy']:7.1f}" if "gpy" in g else f"{'n/a':>7}"
            print(f"{name:8} {th:>3} | {cell('fq', 22)} | {cell('lib', 22)} | {cell('gpy', 14)} | {cell('diff', 14)} | {ratio_lib} {ratio_gpy} | {bf:>20}", flush=True)
    print()
    print("cells: GB/s of f32 output, ns per element, and (fastquant/libgguf) % of memcpy at the same thread count.")
    print("libgguf/gguf-py have no thread option: their 2-thread rows run two halves on two Python threads.")


if __name__ == "__main__":
    main()
