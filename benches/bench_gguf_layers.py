"""Packed GGUF linear layers on the CPU: fastquant.gguf.GGUFLinear against dense nn.Linear holding the exact
dequantized weight (bf16 and f32), and (with --diffusers) against diffusers' GGUFLinear.

Main table: Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS at out x in = 4096x4096 and 576x1536 (plus 1536x576 for the
32-element block types), batch 1 / 16 / 48 / 512, 2 threads (torch.set_num_threads; fastquant uses the same
count). Times are medians of interleaved repeats (packed and dense alternate), so the ratios compare runs under
the same machine load. Batch 1 is timed twice: "hot" (the same layer called again and again: its weights stay
in the CPU caches) and "cold" (a buffer twice the last-level cache is read before every call, as in decoding a
model larger than the cache); roofline = packed bytes / read bandwidth of a buffer larger than the cache
(torch .sum() on the same thread count), and "x roof" = cold packed time / roofline.

Also: the fixed cost per call (a tiny layer: layer time minus the raw kernel call, next to nn.Linear's own
time), and an end-to-end greedy decode of a small Llama-family model in transformers (built from a config with
random weights, quantized with quantize_model) in tokens/s, packed vs the same model with dense bf16 weights.

Targets (issue 18): batch 1 packed <= 0.8x dense bf16 and cold <= 1.5x roofline; batch 48 and 512 packed
<= 1.15x dense in the same dtype; fixed cost <= 10 us; decode faster than dense bf16.

    PYTHONPATH=python python benches/bench_gguf_layers.py [--quick] [--diffusers]
"""

from __future__ import annotations

import argparse
import copy
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

TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]
SHAPES = [(4096, 4096), (576, 1536), (1536, 576)]  # (out_features, in_features); 1536x576 for 32-blocks only
BATCHES = [1, 16, 48, 512]
D_TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS"]  # the diffusers comparison (--diffusers)
D_SHAPES = [(4096, 4096), (3072, 12288)]
F16_SCALES = {"Q4_0": [0], "Q8_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ4_XS": [0]}


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


def llc_bytes() -> int:
    """Size of the largest CPU cache (sysfs), or 64 MiB if unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            if d.startswith("index"):
                with open(os.path.join(base, d, "size")) as f:
                    v = f.read().strip()
                mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(v[-1], 1)
                best = max(best, int(v.rstrip("KMG")) * mult)
    except OSError:
        pass
    return best or (64 << 20)


class Flusher:
    """Reads a buffer twice the last-level cache (capped at 1 GiB), evicting earlier data."""

    def __init__(self):
        self.buf = torch.ones(min(2 * llc_bytes(), 1 << 30) // 4, dtype=torch.float32)

    def __call__(self):
        self.buf.sum()

    def bandwidth(self, repeats=5) -> float:
        """Read GB/s of the buffer on the current thread count (median)."""
        t = timeit(self, repeats)
        return self.buf.numel() * 4 / t / 1e9


def interleaved(fns, repeats, before=None):
    """Median seconds of each function, the functions alternating in every round (same load for all)."""
    for f in fns:
        f()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            if before is not None:
                before()
            t0 = time.perf_counter()
            f()
            ts[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in ts]


def layer_table(args, flush):
    bw = flush.bandwidth()
    print(f"read bandwidth (buffer > LLC, {torch.get_num_threads()} threads): {bw:.1f} GB/s\n")
    hdr = (
        f"{'type':7} {'out x in':>10} {'batch':>5} | {'pk bf16':>8} {'dn bf16':>8} {'ratio':>6} | "
        f"{'pk f32':>8} {'dn f32':>8} {'ratio':>6} | {'roof':>7} {'x roof':>6}  (ms)"
    )
    print(hdr)
    print("-" * len(hdr))
    summary = {"b1": [], "b1cold": [], "roof": [], "big": []}
    shapes = SHAPES[:2] if args.quick else SHAPES
    batches = [1, 48] if args.quick else BATCHES
    reps = 5 if args.quick else 9
    for name in TYPES:
        _, _, be, _, _ = _core.ggml_type_info(name)
        for rows, cols in shapes:
            if cols % be:
                continue
            p = packed_weight(name, rows, cols)
            layer = fg.GGUFLinear.from_packed(p, name, rows, cols)
            w32 = layer.dequantize_weight(torch.float32)
            d32 = nn.Linear(cols, rows, bias=False)
            d32.weight = nn.Parameter(w32, requires_grad=False)
            d16 = nn.Linear(cols, rows, bias=False, dtype=torch.bfloat16)
            d16.weight = nn.Parameter(w32.to(torch.bfloat16), requires_grad=False)
            p16 = copy.deepcopy(layer).to(torch.bfloat16)
            for batch in batches:
                x32 = torch.randn(batch, cols)
                x16 = x32.to(torch.bfloat16)
                with torch.no_grad():
                    fns = [lambda: p16(x16), lambda: d16(x16), lambda: layer(x32), lambda: d32(x32)]
                    r = reps if batch < 512 else max(3, reps // 2)
                    tp16, td16, tp32, td32 = interleaved(fns, r)
                    extra = ""
                    if batch == 1:
                        roof = p.nbytes / (bw * 1e9)
                        cp16, cd16 = interleaved(fns[:2], r, before=flush)
                        extra = f" | {roof * 1e3:7.3f} {cp16 / roof:6.2f}  cold: pk {cp16 * 1e3:.3f} dn {cd16 * 1e3:.3f} ({cp16 / cd16:.2f})"
                        summary["b1"].append((name, rows, cols, tp16 / td16))
                        summary["b1cold"].append((name, rows, cols, cp16 / cd16))
                        summary["roof"].append((name, rows, cols, cp16 / roof))
                    else:
                        summary["big"].append((name, rows, cols, batch, tp16 / td16, tp32 / td32))
                print(
                    f"{name:7} {rows:>4}x{cols:<5} {batch:>5} | {tp16 * 1e3:8.3f} {td16 * 1e3:8.3f} {tp16 / td16:6.2f} | "
                    f"{tp32 * 1e3:8.3f} {td32 * 1e3:8.3f} {tp32 / td32:6.2f}{extra}"
                )
    return summary


def fixed_cost(repeats=3000):
    """Per-call fixed cost on a tiny layer (8 x 256, Q8_0, batch 1)."""
    n, k = 8, 256
    layer = fg.GGUFLinear.from_packed(packed_weight("Q8_0", n, k), "Q8_0", n, k)
    dense = nn.Linear(k, n, bias=False)
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        lay = copy.deepcopy(layer).to(dt)
        den = copy.deepcopy(dense).to(dt)
        x = torch.randn(1, k).to(dt)
        xa, oa = fg._layers._as_kind(x), fg._layers._as_kind(torch.empty(1, n, dtype=dt))
        kind = fg._layers._KIND[dt]
        wn = lay._packed_numpy()
        tid = lay._type_id
        with torch.no_grad():
            t_layer, t_dense, t_kernel = interleaved(
                [lambda: lay(x), lambda: den(x), lambda: _core.linear_fused(xa, wn, tid, n, k, oa, 2, "auto", kind)],
                repeats,
            )
        out[dt] = (t_layer, t_dense, t_kernel)
    return out


def decode_bench(args):
    """Greedy decode of a small Llama-family model (SmolLM-135M's shapes, random weights): tokens/s."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30 if not args.quick else 8,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    base = LlamaForCausalLM(cfg).eval()
    new_tokens = 16 if args.quick else 32
    prompt = torch.randint(0, cfg.vocab_size, (1, 8))

    def tps(model):
        with torch.no_grad():
            kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
            model.generate(prompt, **kw)  # warm-up
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                model.generate(prompt, **kw)
                ts.append(time.perf_counter() - t0)
        return new_tokens / statistics.median(ts)

    dense16 = copy.deepcopy(base).to(torch.bfloat16)
    rows = [("dense bf16", tps(dense16))]
    for name in ("Q8_0", "Q4_0"):
        m = copy.deepcopy(base)
        res = fg.quantize_model(m, name)
        m = m.to(torch.bfloat16)
        rows.append((f"packed {name} ({len(res.converted)} layers), bf16 activations", tps(m)))
    print(
        f"\nend-to-end greedy decode, Llama {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
        f"vocab {cfg.vocab_size} (random weights), prompt 8, {new_tokens} new tokens, "
        f"{torch.get_num_threads()} threads:"
    )
    for label, v in rows:
        print(f"  {label:50} {v:7.1f} tokens/s  ({v / rows[0][1]:.2f}x dense bf16)")
    return rows


def diffusers_table(args):
    print("\nvs diffusers' GGUFLinear (bf16 activations; ratio = diffusers / fastquant):\n")
    hdr = f"{'type':7} {'out x in':>11} {'batch':>5} {'thr':>3} {'fastquant':>10} {'diffusers':>10} {'ratio':>7}"
    print(hdr)
    print("-" * len(hdr))
    ratios = []
    for name in D_TYPES:
        for rows, cols in D_SHAPES[:1] if args.quick else D_SHAPES:
            p = packed_weight(name, rows, cols)
            ours = fg.GGUFLinear.from_packed(p, name, rows, cols)
            theirs = diffusers_linear(p, name, rows, cols)
            for batch in (1, 64):
                x = torch.randn(batch, cols).to(torch.bfloat16)
                with torch.no_grad():
                    t_o = timeit(lambda: ours(x), 5)
                    t_d = timeit(lambda: theirs(x), 2)
                ratios.append(t_d / t_o)
                print(
                    f"{name:7} {rows:>5}x{cols:<5} {batch:>5} {torch.get_num_threads():>3} "
                    f"{t_o * 1e3:10.2f} {t_d * 1e3:10.2f} {t_d / t_o:6.1f}x"
                )
    print(f"min ratio {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer shapes, batches and repeats")
    ap.add_argument("--diffusers", action="store_true", help="also compare with diffusers' GGUFLinear")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print("machine:", machine())
    try:
        print("load average at start:", " ".join(open("/proc/loadavg").read().split()[:3]))
    except OSError:
        pass
    print(f"last-level cache {llc_bytes() / 2**20:.0f} MiB; threads {torch.get_num_threads()}")
    print("times: medians (ms per forward) of interleaved repeats; ratio = packed / dense (< 1: packed faster)\n")
    flush = Flusher()
    summary = layer_table(args, flush)
    del flush

    fc = fixed_cost()
    print("\nfixed cost per call (8x256 Q8_0 layer, batch 1): layer / nn.Linear / raw kernel call, us")
    for dt, (tl, td, tk) in fc.items():
        print(
            f"  {str(dt):15} packed layer {tl * 1e6:6.1f}  dense {td * 1e6:6.1f}  kernel {tk * 1e6:5.1f}  "
            f"-> fixed cost {(tl - tk) * 1e6:5.1f} us, above dense {(tl - td) * 1e6:5.1f} us (target <= 10)"
        )
    decode = decode_bench(args)

    print("\ntargets:")
    b1 = [r[3] for r in summary["b1"]]
    cold = [r[3] for r in summary["b1cold"]]
    roof = [r[3] for r in summary["roof"]]

    def misses(rows, lim, idx=3):
        return [f"{r[0]} {r[1]}x{r[2]}" + (f" b{r[3]}" if len(r) > 4 else "") for r in rows if r[idx] > lim]

    print(
        f"  batch 1 packed/dense bf16 (hot): median {statistics.median(b1):.2f}, max {max(b1):.2f} (target <= 0.8); "
        f"misses: {misses(summary['b1'], 0.8) or 'none'}"
    )
    print(
        f"  batch 1 packed/dense bf16 (cold): median {statistics.median(cold):.2f}, max {max(cold):.2f} "
        f"(target <= 0.8); misses: {misses(summary['b1cold'], 0.8) or 'none'}"
    )
    print(
        f"  batch 1 cold / roofline: median {statistics.median(roof):.2f}, max {max(roof):.2f} (target <= 1.5); "
        f"misses: {misses(summary['roof'], 1.5) or 'none'}"
    )
    for col, label in ((4, "bf16"), (5, "f32")):
        v = [r[col] for r in summary["big"]]
        print(
            f"  batch >= 16 packed/dense {label}: median {statistics.median(v):.2f}, max {max(v):.2f} "
            f"(target <= 1.15 at 48 and 512); misses: {misses([r for r in summary['big'] if r[3] >= 48], 1.15, col) or 'none'}"
        )
    print(
        f"  decode: packed/dense bf16 tokens/s {', '.join(f'{v / decode[0][1]:.2f}' for _, v in decode[1:])} (target > 1)"
    )

    if args.diffusers:
        diffusers_table(args)

        def fmt(e):
            return "n/a" if e is None else f"first call {e[0] / 2**20:5.1f} MiB, steady {e[1] / 2**20:5.1f} MiB"

        print("\npeak extra RSS of a batch-1 forward (fresh process; VmHWM after clear_refs), vs packed size:")
        for name, (rows, cols) in [("Q4_K", (4096, 4096)), ("Q8_0", (3072, 12288))]:
            _, _, be, bb, _ = _core.ggml_type_info(name)
            packed = rows * cols // be * bb
            ex_o = fused_peak_extra(name, rows, cols, "fastquant", 2)
            ex_d = fused_peak_extra(name, rows, cols, "diffusers", 2)
            print(
                f"  {name} {rows}x{cols} thr=2: packed {packed / 2**20:5.1f} MiB; fastquant extra {fmt(ex_o)}; diffusers extra {fmt(ex_d)}"
            )

        with tempfile.TemporaryDirectory() as d:
            size, t_o, t_d = load_bench(d, 2 if args.quick else 3)
        print(
            f"\nload a {size / 2**20:.0f} MiB file (16 Q4_K 4096x4096 layers + biases) into a model: fastquant "
            f"load_into {t_o * 1e3:.0f} ms, diffusers load_gguf_checkpoint + assign {t_d * 1e3:.0f} ms ({t_d / t_o:.1f}x)"
        )


if __name__ == "__main__":
    main()
