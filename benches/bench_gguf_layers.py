"""Packed GGUF linear layers: fastquant.gguf.GGUFLinear vs diffusers' GGUFLinear (native torch path, a
GGUFParameter weight), same packed weights, bf16 activations, CPU.

Rows: Q4_0, Q8_0, Q4_K, Q6_K, IQ4_XS × (4096×4096, 3072×12288 as out×in) × batch 1 / 64 × 1 / 2 threads
(torch.set_num_threads; fastquant uses the same count). Time per forward is the median of several runs
(fewer for diffusers, which is slow). Batch 1 runs fastquant's fused kernel, batch 64 the exact-dequant
path (Rust dequant into bf16 + F.linear).

Also: peak extra memory of the fused forward (RSS high-water mark in a fresh subprocess, relative to the
packed size), and the time to load a whole .gguf into a model (load_into vs diffusers' load_gguf_checkpoint
+ assigning the GGUFParameters).

    PYTHONPATH=python python benches/bench_gguf_layers.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

import fastquant.gguf as fg
from fastquant import _core

from _machine import cpu_model  # noqa: E402  (benches/ is on sys.path when a script here runs)

TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS"]
SHAPES = [(4096, 4096), (3072, 12288)]  # (out_features, in_features)
F16_SCALES = {"Q4_0": [0], "Q8_0": [0], "Q4_K": [0, 2], "Q6_K": [208], "IQ4_XS": [0]}


def packed_weight(name, rows, cols, seed=0):
    """Random blocks with finite f16 scales (valid data for every type; timing does not depend on values)."""
    _, _, be, bb, _ = _core.ggml_type_info(name)
    rng = np.random.default_rng(seed)
    nb = rows * cols // be
    blocks = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
    for off in F16_SCALES[name]:
        d = rng.uniform(1e-4, 1e-2, nb).astype(np.float16).view(np.uint8).reshape(nb, 2)
        blocks[:, off : off + 2] = d
    return blocks.reshape(rows, -1)


def diffusers_linear(packed, name, rows, cols):
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    lin = GGUFLinear(cols, rows, bias=False, compute_dtype=torch.bfloat16, device="meta")
    lin.weight = GGUFParameter(torch.from_numpy(packed.copy()), quant_type=getattr(gguf.GGMLQuantizationType, name))
    return lin


def timeit(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def machine():
    cpu = cpu_model()
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, fastquant SIMD {_core.simd_path()}"
    )


# ---- peak memory of one fused forward, in a fresh process ----------------------------------------------

_MEM_CHILD = r"""
import gc, sys, torch, numpy as np
sys.path[:0] = {path!r}
from bench_gguf_layers import packed_weight, diffusers_linear
import fastquant.gguf as fg
name, rows, cols, which, threads = {args!r}
torch.set_num_threads(threads)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
p = packed_weight(name, rows, cols)
if which == "fastquant":
    layer = fg.GGUFLinear.from_packed(p, name, rows, cols)
else:
    layer = diffusers_linear(p, name, rows, cols)
del p
x = torch.randn(1, cols).to(torch.bfloat16)
# one-time process costs (torch op dispatch, thread pools: ~145 MiB whatever the layer size) on a small layer
# of the same kind first, so "first call" below is this layer's own first forward
small = fg.GGUFLinear.from_packed(packed_weight(name, 8, 256), name, 8, 256) if which == "fastquant" else diffusers_linear(packed_weight(name, 8, 256), name, 8, 256)
with torch.no_grad():
    small(torch.randn(1, 256).to(torch.bfloat16))
gc.collect()
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
base = status("VmRSS")
with torch.no_grad():
    layer(x)  # first call: includes thread-pool start-up and first allocations
first = status("VmHWM") - base
gc.collect()
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
with torch.no_grad():
    for _ in range(3):
        layer(x)
print(first, status("VmHWM") - base)
"""


def fused_peak_extra(name, rows, cols, which, threads):
    here = os.path.dirname(os.path.abspath(__file__))
    code = _MEM_CHILD.format(path=[here] + sys.path, args=(name, rows, cols, which, threads))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        return None
    return [int(v) for v in r.stdout.strip().splitlines()[-1].split()]


# ---- whole-file load ---------------------------------------------------------------------------------------


def load_bench(tmpdir, repeats, n_layers=16, name="Q4_K"):
    import gguf
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import GGUFLinear as DLinear

    rows = cols = 4096
    tensors = {}
    for i in range(n_layers):
        tensors[f"{i}.weight"] = (packed_weight(name, rows, cols, seed=i), name, (rows, cols))
        tensors[f"{i}.bias"] = torch.zeros(rows)
    path = os.path.join(tmpdir, "model.gguf")
    size = fg.write(path, tensors)

    def ours():
        with torch.device("meta"):
            model = nn.Sequential(*[nn.Linear(cols, rows) for _ in range(n_layers)])
        fg.load_into(model, path)
        return model

    def theirs():
        sd = load_gguf_checkpoint(path)
        with torch.device("meta"):
            model = nn.Sequential(
                *[DLinear(cols, rows, bias=True, compute_dtype=torch.bfloat16) for _ in range(n_layers)]
            )
        for k, v in sd.items():
            i, leaf = k.split(".")
            setattr(model[int(i)], leaf, v if isinstance(v, nn.Parameter) else nn.Parameter(v, requires_grad=False))
        return model

    m = ours()
    assert isinstance(m[0], fg.GGUFLinear)
    t_ours = timeit(ours, repeats)
    t_theirs = timeit(theirs, repeats)
    _ = gguf
    return size, t_ours, t_theirs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one shape, fewer repeats")
    args = ap.parse_args()
    shapes = SHAPES[:1] if args.quick else SHAPES
    print("machine:", machine())
    print("activations bf16; times are medians (ms per forward); ratio = diffusers / fastquant\n")
    hdr = f"{'type':7} {'out x in':>11} {'batch':>5} {'thr':>3} {'fastquant':>10} {'diffusers':>10} {'ratio':>7}  path"
    print(hdr)
    print("-" * len(hdr))
    rows_out = []
    torch.manual_seed(0)
    for name in TYPES:
        for rows, cols in shapes:
            p = packed_weight(name, rows, cols)
            ours = fg.GGUFLinear.from_packed(p, name, rows, cols)
            theirs = diffusers_linear(p, name, rows, cols)
            for batch in (1, 64):
                x = torch.randn(batch, cols).to(torch.bfloat16)
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    with torch.no_grad():
                        t_o = timeit(lambda: ours(x), 3 if args.quick else 7)
                        t_d = timeit(lambda: theirs(x), 2 if args.quick else 3)
                    path = "fused" if batch <= fg.FUSED_MAX_ROWS else "dequant+F.linear"
                    r = t_d / t_o
                    rows_out.append(r)
                    print(
                        f"{name:7} {rows:>5}x{cols:<5} {batch:>5} {threads:>3} {t_o * 1e3:10.2f} {t_d * 1e3:10.2f} {r:6.1f}x  {path}"
                    )
            del ours, theirs, p
    torch.set_num_threads(2)
    print(f"\nmin ratio {min(rows_out):.1f}x, median {statistics.median(rows_out):.1f}x (target >= 3x in every row)")

    print("\npeak extra RSS of a batch-1 forward (fresh process; VmHWM after clear_refs), vs packed size:")
    for name, (rows, cols) in [("Q4_K", (4096, 4096)), ("Q4_K", (3072, 12288)), ("Q8_0", (3072, 12288))]:
        _, _, be, bb, _ = _core.ggml_type_info(name)
        packed = rows * cols // be * bb
        for threads in (1, 2):
            ex_o = fused_peak_extra(name, rows, cols, "fastquant", threads)
            ex_d = fused_peak_extra(name, rows, cols, "diffusers", threads)
            k = cols
            t_rows = max(4, min(64, (65536 // k) // 4 * 4))
            analytic = threads * t_rows * k * 4 + 2 * rows * 4
            fmt = (
                lambda e: "n/a"
                if e is None
                else (
                    f"first call {e[0] / 2**20:5.1f} MiB = {(packed + e[0]) / packed:5.2f}x packed, "
                    f"steady {e[1] / 2**20:5.1f} MiB = {(packed + e[1]) / packed:5.2f}x"
                )
            )
            print(
                f"  {name} {rows}x{cols} thr={threads}: packed {packed / 2**20:5.1f} MiB\n"
                f"    fastquant extra: {fmt(ex_o)} (tile buffers + output: {analytic / 2**20:.2f} MiB)\n"
                f"    diffusers extra: {fmt(ex_d)}"
            )

    with tempfile.TemporaryDirectory() as d:
        size, t_o, t_d = load_bench(d, 2 if args.quick else 3)
        print(
            f"\nload a {size / 2**20:.0f} MiB file (16 Q4_K 4096x4096 layers + biases) into a model: fastquant load_into "
            f"{t_o * 1e3:.0f} ms, diffusers load_gguf_checkpoint + assign {t_d * 1e3:.0f} ms ({t_d / t_o:.1f}x)"
        )


if __name__ == "__main__":
    main()
