#!/usr/bin/env python3
"""GGUF diffusion checkpoint -> ready diffusers model: ``fastquant.gguf.from_single_file`` side by side with
diffusers' own ``FluxTransformer2DModel.from_single_file(path, quantization_config=GGUFQuantizationConfig(...))``
on the same file.

The file: a Flux transformer built from a config at the real width (3072; diffusers' converter hard-codes it)
with 1 double and 1 single block (~530M parameters) and random weights, in BFL's original key layout (as
city96's files are), the large matrices Q8_0, a few Q4_K, small tensors F32/F16/BF16 (written once, cached
in ``bench-out/single_file/``, which git ignores). Every measurement runs in a fresh subprocess, imports done
before the clock starts:

* load: file -> model ready for inference (median of ``--runs``);
* peak RSS: the process's peak resident memory after the load, and after a forward as well;
* forward: one denoising call at 256 image + 64 text tokens, f32 compute (median of 3 after one warm-up);
* the two models' outputs compared (relative L2; diffusers rounds dequantized values to f16).

Run: ``PYTHONPATH=python python benches/bench_gguf_single_file.py [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import _machine  # noqa: E402

CACHE = os.path.join(HERE, "..", "bench-out", "single_file")  # ignored by git

CHILD = textwrap.dedent(
    """
    import json, resource, statistics, sys, time
    import torch
    which, path, cfg = sys.argv[1:4]
    import fastquant.gguf as fg, fastquant.gguf._single_file, fastquant.gguf._layers  # imports before the clock
    import diffusers, gguf, accelerate
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
    import diffusers.loaders.single_file_model, diffusers.quantizers.gguf.utils
    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"rss_before_mb": rss()}
    t = time.perf_counter()
    if which == "fastquant":
        model = fg.from_single_file(FluxTransformer2DModel, path, config=cfg)
    else:
        model = FluxTransformer2DModel.from_single_file(
            path, config=cfg, torch_dtype=torch.float32,
            quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32))
    out["load_s"] = time.perf_counter() - t
    out["peak_rss_load_mb"] = rss()
    g = torch.Generator().manual_seed(0)
    n_img, n_txt = 256, 64
    inp = dict(
        hidden_states=torch.randn(1, n_img, 16, generator=g),
        encoder_hidden_states=torch.randn(1, n_txt, 64, generator=g),
        pooled_projections=torch.randn(1, 32, generator=g),
        timestep=torch.tensor([0.5]), guidance=torch.tensor([3.5]),
        img_ids=torch.randn(n_img, 3, generator=g), txt_ids=torch.zeros(n_txt, 3), return_dict=False)
    times = []
    with torch.no_grad():
        y = model(**inp)[0]
        for _ in range(3):
            t = time.perf_counter()
            model(**inp)
            times.append(time.perf_counter() - t)
    out["forward_s"] = statistics.median(times)
    out["peak_rss_mb"] = rss()
    torch.save(y, sys.argv[4])
    print("RESULT" + json.dumps(out))
    """
)


def build(path: str, cfg_dir: str) -> None:
    """The random Flux in BFL's layout as a GGUF file, and its diffusers config folder."""
    import torch
    from diffusers import FluxTransformer2DModel

    import _single_file_layouts as L
    import fastquant.gguf as fg

    with torch.device("meta"):
        model = FluxTransformer2DModel(**L.FLUX_CONFIG)
    model.to_empty(device="cpu")
    L.random_init(model, 0, std=0.02, dtype=torch.bfloat16)
    cfg = dict(model.config)
    orig = L.flux_original(model.state_dict())
    del model

    def types(name, t):
        if t.ndim < 2:
            return "F32"
        if t.shape[-1] % 256 or t.numel() < 1_000_000:
            return "F16"
        if name.endswith(("img_attn.proj.weight", "txt_attn.proj.weight", "time_in.out_layer.weight")):
            return "Q4_K"
        if name.endswith("vector_in.out_layer.weight"):
            return "BF16"
        return "Q8_0"

    md: dict = {"general.architecture": "flux"}
    tensors = L.to_gguf_tensors(orig, types, md)
    del orig
    fg.write(path + ".tmp", tensors, md)
    os.replace(path + ".tmp", path)
    os.makedirs(cfg_dir, exist_ok=True)
    with open(os.path.join(cfg_dir, "config.json"), "w") as f:
        json.dump({"_class_name": "FluxTransformer2DModel", **cfg}, f)


def child(which: str, path: str, cfg_dir: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "python"))
    y = os.path.join(CACHE, f"y-{which}.pt")
    r = subprocess.run([sys.executable, "-c", CHILD, which, path, cfg_dir, y], capture_output=True, text=True, env=env)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    raise RuntimeError(f"{which} failed:\n{r.stderr[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, "flux-bench.gguf")
    cfg_dir = os.path.join(CACHE, "flux-bench-config")
    if not os.path.exists(path):
        build(path, cfg_dir)
    print(f"machine: {_machine.describe()}; torch threads: default")
    print(
        f"file: flux-bench.gguf ({os.path.getsize(path) / 2**20:.1f} MiB; Flux at width 3072, 1 double + 1 single "
        "block, ~530M parameters, BFL layout, Q8_0/Q4_K/BF16/F16/F32)"
    )
    res: dict = {"fastquant": [], "diffusers": []}
    for _ in range(args.runs):
        for which in res:
            res[which].append(child(which, path, cfg_dir))

    def med(which, key):
        return statistics.median(r[key] for r in res[which])

    import torch

    ya, yb = (torch.load(os.path.join(CACHE, f"y-{w}.pt"), weights_only=True) for w in res)
    print(f"medians of {args.runs} fresh subprocesses each")
    print(f"{'':32s} {'fastquant':>10s} {'diffusers':>10s} {'ratio':>9s}")
    rows = [
        ("load (s)", "load_s", "faster"),
        ("peak RSS after load (MB)", "peak_rss_load_mb", "of peer"),
        ("peak RSS incl. forward (MB)", "peak_rss_mb", "of peer"),
        ("forward 256+64 tokens (s)", "forward_s", "faster"),
        ("RSS after imports (MB)", "rss_before_mb", "of peer"),
    ]
    for label, key, kind in rows:
        a, b = med("fastquant", key), med("diffusers", key)
        ratio = f"{a / b:.2f}x" if kind == "of peer" else f"{b / a:.1f}x"
        print(f"{label:32s} {a:10.3f} {b:10.3f} {ratio:>9s} {kind}")
    print(
        f"outputs: relative L2 {float((ya - yb).norm() / yb.norm()):.2e} (diffusers rounds dequantized values to f16)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
