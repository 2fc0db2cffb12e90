"""Dequantization throughput: fastquant vs libgguf vs gguf-py vs diffusers' torch functions, against memcpy.

One run: 16 Mi elements per type, 1 and 2 threads.

Method (built for a noisy, shared machine):

* Every repeat of a row runs, back to back, fastquant into a preallocated f32 output, a memcpy probe, fastquant
  into a fresh output (allocated by the call, so page faults are paid), the fresh-output floor, libgguf, and
  fastquant into a preallocated bf16 output (memory-bound types); odd repeats run them in reverse order. Background load therefore hits all of them alike; each figure is the
  median over the repeats (``--reps``, ≥ 7 by default). gguf-py and diffusers are slow (10-300 ns/element), so
  they run ``--slow-reps`` times per row, also interleaved with a memcpy probe.
* memcpy roofline: the probe is ``np.copyto`` of a 256 MiB buffer into another (already faulted) one, on the
  row's thread count (2 threads = two halves on two Python threads; numpy releases the GIL for the copy). Its
  bandwidth B counts read + write bytes. For a type, ``memcpy time = (input bytes + output bytes) / B`` and
  ``roofline = memcpy time / fastquant time`` (1.00 = as fast as copying the same number of bytes).
* Threads. fastquant: ``threads=`` (1 runs on the calling thread; 2 runs a 2-thread rayon pool). libgguf: it
  has no thread argument; ``dequantize_rows_into_raw`` splits rows over std::threads when it gets >= 64 rows,
  using the environment variable ``LIBGGUF_NUM_THREADS`` (read at every call; unset = all cores). It is called
  with rows of 4096 elements and LIBGGUF_NUM_THREADS set to the row's thread count. gguf-py is numpy and
  single-threaded: its 2-thread rows run two halves on two Python threads. diffusers: ``torch.set_num_threads``.

    PYTHONPATH=python python benches/bench_dequant.py [--types Q4_0,Q4_K] [--elems N] [--reps R] [--no-slow]
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
from fastquant.gguf import _dequant as fgd
from fastquant import _core

from _machine import cpu_model  # noqa: E402  (benches/ is on sys.path when a script here runs)

MEMORY_BOUND = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0", "F16", "BF16"]
ALL = [
    "F16",
    "BF16",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "Q8_K",
    "IQ2_XXS",
    "IQ2_XS",
    "IQ2_S",
    "IQ3_XXS",
    "IQ3_S",
    "IQ1_S",
    "IQ1_M",
    "IQ4_NL",
    "IQ4_XS",
    "TQ1_0",
    "TQ2_0",
    "MXFP4",
    "NVFP4",
    "Q1_0",
    "Q2_0",
]
SCALE_OFFSETS = {
    "Q4_0": [0],
    "Q5_0": [0],
    "Q8_0": [0],
    "IQ4_NL": [0],
    "IQ2_XXS": [0],
    "IQ2_XS": [0],
    "IQ2_S": [0],
    "IQ3_XXS": [0],
    "IQ3_S": [0],
    "IQ1_S": [0],
    "IQ4_XS": [0],
    "Q1_0": [0],
    "Q2_0": [0],
    "Q4_1": [0, 2],
    "Q5_1": [0, 2],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q6_K": [208],
    "TQ1_0": [52],
    "TQ2_0": [64],
}
LIB_ROW = 4096
COPY_BYTES = 256 << 20


def machine() -> str:
    model = cpu_model()
    try:
        mem = next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1]
        mem = f", {int(mem) / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        mem = ""
    return (
        f"{model}, {os.cpu_count()} logical cores{mem}, {platform.machine()}, {platform.system()} "
        f"{platform.release()}, fastquant SIMD path {_core.simd_path()}"
    )


def loadavg() -> str:
    try:
        return "load average %.2f %.2f %.2f (1/5/15 min)" % os.getloadavg()
    except OSError:
        return "load average n/a"


def blocks_for(name: str, n_elems: int) -> np.ndarray:
    _, _, be, bb, _ = fgd._type_info(name)
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


_POOL = ThreadPoolExecutor(2)


def split2(fn_half):
    """Run fn_half(0) and fn_half(1) on two Python threads (for peers without a thread option)."""
    list(_POOL.map(fn_half, (0, 1)))


def clock(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fresh_floor(n: int, th: int) -> None:
    """Allocate a new f32 array of n elements and write every page once (what a fresh output costs at least)."""
    a = np.empty(n, np.float32)
    if th == 1:
        a.fill(0)
    else:
        h = n // 2
        split2(lambda i: a[i * h : (i + 1) * h].fill(0))


class Copier:
    """memcpy probe: np.copyto of a 256 MiB buffer on 1 or 2 threads; returns GB/s of read + write bytes."""

    def __init__(self):
        self.src = np.ones(COPY_BYTES // 4, np.float32)
        self.dst = np.zeros_like(self.src)
        self.h = self.src.size // 2

    def run(self, th: int) -> float:
        s, d, h = self.src, self.dst, self.h
        if th == 1:
            t = clock(lambda: np.copyto(d, s))
        else:
            t = clock(lambda: split2(lambda i: np.copyto(d[i * h : (i + 1) * h], s[i * h : (i + 1) * h])))
        return 2 * COPY_BYTES / t / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default=",".join(ALL))
    ap.add_argument("--elems", type=int, default=16 << 20)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--slow-reps", type=int, default=3)
    ap.add_argument("--no-slow", action="store_true", help="skip gguf-py and diffusers")
    args = ap.parse_args()
    N = args.elems
    types = [t for t in args.types.split(",") if t]

    import libgguf
    import gguf
    from gguf import GGMLQuantizationType as T

    if not args.no_slow:
        import torch
        from diffusers.quantizers.gguf.utils import dequantize_functions
    else:
        dequantize_functions = {}

    copier = Copier()
    print(f"machine: {machine()}")
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S')}, {loadavg()}")
    from importlib.metadata import version

    print(
        f"numpy {np.__version__}, libgguf {version('libgguf')}, gguf-py {version('gguf')}"
        + ("" if args.no_slow else f", torch {torch.__version__}, diffusers {version('diffusers')}")
    )
    print(
        f"tensor: {N} elements ({N * 4 / 2**20:.0f} MiB of f32 output); medians of {args.reps} interleaved repeats "
        f"(gguf-py/diffusers: {args.slow_reps})"
    )
    print(
        "roofline = memcpy time for the same bytes / fastquant time, where memcpy time = (input bytes + output "
        "bytes) / B"
    )
    print(
        "  and B = GB/s of (read + write) bytes of np.copyto of a 256 MiB buffer on the same thread count, "
        "measured in every repeat."
    )
    print(
        "columns: fq = fastquant into a preallocated f32 array; fresh = fastquant allocating its f32 output "
        "(page faults included);"
    )
    print(
        "  GB/s are of f32 output; x lib = libgguf time / fq time; x gpy = gguf-py time / fastquant time "
        "(fresh: gguf-py allocates too);"
    )
    print(
        "  bf16 = fastquant into a preallocated bf16 (uint16) array; bf16/f32 = f32 time / bf16 time "
        "(> 1: bf16 output is faster)."
    )
    print("  bound = gguf-py time / time to allocate and first-touch a fresh f32 output of the same size (np.empty +")
    print(
        "  fill, on 1 thread or split over the row's threads, whichever is faster): the most any dequantizer that returns a new array could beat"
    )
    print("  gguf-py by on this machine, since it must pay at least that.")
    print()
    hdr = (
        f"{'type':8} {'thr':>3} | {'memcpy B':>8} | {'fq GB/s':>7} {'ns/el':>6} {'roofl':>5} | {'fresh':>6} "
        f"{'roofl':>5} | {'lib GB/s':>8} {'roofl':>5} | {'x lib':>5} | {'gpy GB/s':>8} {'x gpy':>6} {'bound':>6} | "
        f"{'diff GB/s':>9} | {'bf16 ns/el':>10} {'bf16/f32':>8}"
    )
    print(hdr)
    print("-" * len(hdr))

    env_before = os.environ.get("LIBGGUF_NUM_THREADS")
    mins = []
    for name in types:
        tid, _, be, bb, _ = fgd._type_info(name)
        blocks = blocks_for(name, N)
        flat = blocks.reshape(-1)
        in_bytes = flat.nbytes
        out = np.empty(N, np.float32)
        out[:] = 0
        o16 = None
        if name in MEMORY_BOUND:
            o16 = np.empty(N, np.uint16)
            o16[:] = 0
        qt = T(tid) if tid in T._value2member_map_ else None
        has_lib = qt is not None and tid in libgguf._SUPPORTED_QUANTIZED_QTYPES
        has_gpy = not args.no_slow and (name == "F16" or (qt is not None and qt in gguf.quants._type_traits))
        has_diff = not args.no_slow and qt is not None and qt in dequantize_functions
        tblocks = torch.from_numpy(blocks) if has_diff else None
        rows = N // LIB_ROW
        for th in (1, 2):
            os.environ["LIBGGUF_NUM_THREADS"] = str(th)
            ts: dict[str, list[float]] = {
                k: [] for k in ("fq", "fresh", "bf16", "lib", "B", "gpy", "diff", "Bs", "floor")
            }
            # warm-up (pool creation, first faults of `out`)
            fg.dequantize(flat, name, out=out, threads=th)
            steps = [
                ("fq", lambda: clock(lambda: fg.dequantize(flat, name, out=out, threads=th))),
                ("B", lambda: copier.run(th)),
                ("fresh", lambda: clock(lambda: fg.dequantize(flat, name, threads=th))),
                # The cheaper of first-touching on one thread or on the row's threads (faults from two threads
                # at once are slower than from one on this VM): a lower bound for any fresh-output dequantizer.
                ("floor", lambda: min(clock(lambda: fresh_floor(N, t)) for t in sorted({1, th}))),
            ]
            if has_lib:
                steps.append(
                    ("lib", lambda: clock(lambda: libgguf.dequantize_rows_into_raw(tid, flat, out, rows, LIB_ROW)))
                )
            if o16 is not None:
                steps.append(
                    ("bf16", lambda: clock(lambda: fg.dequantize(flat, name, out=o16, dtype="bfloat16", threads=th)))
                )
            for rep in range(args.reps):
                # Alternate the order, so that no tool always runs right after the same neighbour.
                for key, step in steps if rep % 2 == 0 else steps[::-1]:
                    ts[key].append(step())
            for _ in range(args.slow_reps if (has_gpy or has_diff) else 0):
                if has_gpy:
                    gq = T.F16 if name == "F16" else qt
                    if th == 1:
                        ts["gpy"].append(clock(lambda: gguf.quants.dequantize(blocks, gq)))
                    else:
                        hb = blocks.shape[0] // 2
                        ts["gpy"].append(
                            clock(lambda: split2(lambda i: gguf.quants.dequantize(blocks[i * hb : (i + 1) * hb], gq)))
                        )
                ts["Bs"].append(copier.run(th))
                if has_diff:
                    torch.set_num_threads(th)
                    fn = dequantize_functions[qt]
                    ts["diff"].append(clock(lambda: fn(tblocks, be, bb, dtype=torch.float32)))
            m = {k: statistics.median(v) for k, v in ts.items() if v}
            mins.append((name, th, in_bytes, {k: (max(v) if k in ("B", "Bs") else min(v)) for k, v in ts.items() if v}))
            B = m["B"]
            t_copy = (in_bytes + N * 4) / (B * 1e9)

            def gbs(t):
                return N * 4 / t / 1e9

            cells = [
                f"{name:8} {th:>3}",
                f"{B:8.2f}",
                f"{gbs(m['fq']):7.2f} {m['fq'] / N * 1e9:6.3f} {t_copy / m['fq']:5.2f}",
                f"{gbs(m['fresh']):6.2f} {t_copy / m['fresh']:5.2f}",
            ]
            if "lib" in m:
                cells.append(f"{gbs(m['lib']):8.2f} {t_copy / m['lib']:5.2f}")
                cells.append(f"{m['lib'] / m['fq']:5.2f}")
            else:
                cells += [f"{'n/a':>8} {'':5}", f"{'n/a':>5}"]
            if "gpy" in m:
                cells.append(f"{gbs(m['gpy']):8.3f} {m['gpy'] / m['fresh']:6.1f} {m['gpy'] / m['floor']:6.1f}")
            else:
                cells.append(f"{'n/a':>8} {'':6} {'':6}")
            cells.append(f"{gbs(m['diff']):9.3f}" if "diff" in m else f"{'n/a':>9}")
            if "bf16" in m:
                cells.append(f"{m['bf16'] / N * 1e9:10.3f} {m['fq'] / m['bf16']:8.2f}")
            else:
                cells.append(f"{'':10} {'':8}")
            print(" | ".join(cells), flush=True)
    if env_before is None:
        os.environ.pop("LIBGGUF_NUM_THREADS", None)
    else:
        os.environ["LIBGGUF_NUM_THREADS"] = env_before
    print()
    print("Same runs, least-disturbed repeat of each (fastest time, highest memcpy B): what the code does when the")
    print("neighbours leave it alone. roofline and x lib as above.")
    h2 = f"{'type':8} {'thr':>3} | {'memcpy B':>8} | {'fq ns/el':>8} {'roofl':>5} | {'fresh roofl':>11} | {'x lib':>5} | {'bf16/f32':>8}"
    print(h2)
    print("-" * len(h2))
    for name, th, in_bytes, m in mins:
        t_copy = (in_bytes + N * 4) / (m["B"] * 1e9)
        lib = f"{m['lib'] / m['fq']:5.2f}" if "lib" in m else f"{'n/a':>5}"
        bf = f"{m['fq'] / m['bf16']:8.2f}" if "bf16" in m else f"{'':8}"
        print(
            f"{name:8} {th:>3} | {m['B']:8.2f} | {m['fq'] / N * 1e9:8.3f} {t_copy / m['fq']:5.2f} | "
            f"{t_copy / m['fresh']:11.2f} | {lib} | {bf}"
        )
    print()
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S')}, {loadavg()}")


if __name__ == "__main__":
    main()
