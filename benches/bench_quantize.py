"""Quantization throughput: fastquant.gguf.quantize vs libgguf (ggml's C++ quantizers) vs gguf-py (numpy).

One run: the same float32 matrix (rows of 4096 values, normally distributed with a per-row scale) quantized
by each tool, per type, on 1 and 2 threads. Every repeat runs the tools back to back, in reverse order on odd
repeats, so background load hits them alike; figures are medians over ``--reps`` repeats (gguf-py, which
is slow, ``--slow-reps``). Before timing, each tool's output is checked against the reference for that type
(gguf-py where it has the type, else libgguf): a speed is only reported for the same bytes.

* fastquant: ``fg.quantize(x, type, threads=t)`` (returns a new array, like the peers).
* libgguf: ``quantize_rows(x, type)`` with ``LIBGGUF_NUM_THREADS=t`` (read at every call).
* gguf-py: ``gguf.quants.quantize(x, type)``, single-threaded numpy; its 2-thread rows quantize the two
  halves of the rows on two Python threads (numpy releases the GIL in most of the work).

    PYTHONPATH=python python benches/bench_quantize.py [--types Q4_0,Q4_K] [--rows R] [--reps N]
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

from _machine import cpu_model  # noqa: E402  (benches/ is on sys.path when a script here runs)

TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
ROW = 4096
_POOL = ThreadPoolExecutor(2)


def clock(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--rows", type=int, default=4096, help="rows of 4096 values (default: 16 Mi values, 64 MiB)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--slow-reps", type=int, default=3)
    args = ap.parse_args()

    import gguf
    import libgguf
    from gguf import GGMLQuantizationType as T

    def as_bytes(a):
        return np.ascontiguousarray(a).view(np.uint8).reshape(args.rows, -1)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, ROW)).astype(np.float32)
    x *= rng.uniform(1e-2, 10, (args.rows, 1)).astype(np.float32)
    n = x.size
    halves = np.array_split(x, 2)  # gguf-py's 2-thread rows: one half of the rows per Python thread

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.machine()}, {platform.system()} "
        f"{platform.release()}, fastquant SIMD path {_core.simd_path()}"
    )
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S')}, load average %.2f %.2f %.2f" % os.getloadavg())
    from importlib.metadata import version

    print(f"numpy {np.__version__}, libgguf {version('libgguf')}, gguf-py {version('gguf')}")
    print(
        f"input: {args.rows} x {ROW} float32 ({n * 4 / 2**20:.0f} MiB); medians of {args.reps} interleaved repeats "
        f"(gguf-py: {args.slow_reps}); ns/el = nanoseconds per input value; x lib / x gpy = peer time / "
        "fastquant time (> 1: fastquant is faster)"
    )
    print()
    print(f"{'type':5} {'thr':>3} | {'fastquant':>9} | {'libgguf':>8} {'x lib':>6} | {'gguf-py':>8} {'x gpy':>6}")
    print("-" * 58)

    for name in args.types.split(","):
        qt = T[name]
        ref_tool, want = None, None
        try:
            want = as_bytes(gguf.quants.quantize(x, qt))
            ref_tool = "gguf-py"
        except NotImplementedError:
            want = as_bytes(libgguf.quantize_rows(x, qt))
            ref_tool = "libgguf"
        got = fg.quantize(x, name)
        if not np.array_equal(got, want):
            print(f"{name:5}     | fastquant's bytes differ from {ref_tool}'s: not timed")
            continue
        lib_same = np.array_equal(as_bytes(libgguf.quantize_rows(x, qt)), want)
        has_gpy = ref_tool == "gguf-py"
        for th in (1, 2):
            os.environ["LIBGGUF_NUM_THREADS"] = str(th)
            steps = [("fq", lambda: clock(lambda: fg.quantize(x, name, threads=th)))]
            if lib_same:
                steps.append(("lib", lambda: clock(lambda: libgguf.quantize_rows(x, qt))))
            ts = {k: [] for k, _ in steps}
            for rep in range(args.reps):
                for key, step in steps if rep % 2 == 0 else steps[::-1]:
                    ts[key].append(step())
            gpy = []
            for _ in range(args.slow_reps if has_gpy else 0):
                if th == 1:
                    gpy.append(clock(lambda: gguf.quants.quantize(x, qt)))
                else:
                    gpy.append(clock(lambda: list(_POOL.map(lambda part: gguf.quants.quantize(part, qt), halves))))
                ts["fq"].append(clock(lambda: fg.quantize(x, name, threads=th)))
            fq = statistics.median(ts["fq"])
            cells = [f"{name:5} {th:>3} | {fq / n * 1e9:9.3f}"]
            if "lib" in ts:
                lib = statistics.median(ts["lib"])
                cells.append(f"{lib / n * 1e9:8.3f} {lib / fq:6.2f}")
            else:
                cells.append(f"{'differs':>8} {'':6}")  # other bytes than the reference: not compared
            if gpy:
                g = statistics.median(gpy)
                cells.append(f"{g / n * 1e9:8.3f} {g / fq:6.1f}")
            else:
                cells.append(f"{'n/a':>8} {'':6}")
            print(" | ".join(cells), flush=True)
    print()
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S')}, load average %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
