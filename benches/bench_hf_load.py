"""Quantize-on-load of a sharded bf16 Llama checkpoint: peak anonymous memory and time, side by side.

A Llama config sized to ~220M parameters (bf16: ~440 MB) is written once by transformers' `save_pretrained` with a
small `max_shard_size` (>= 4 shards). Then, for torchao int8 weight-only and optimum-quanto int8, each of three ways
runs in a fresh Python process:

  transformers   LlamaForCausalLM.from_pretrained(folder, quantization_config=<transformers config>)
  fastquant      fastquant.from_pretrained(LlamaForCausalLM, folder, quantization_config=<dict>)
  float+quantize LlamaForCausalLM.from_pretrained(folder) then fastquant.quantize(model, <dict>)

The child imports torch, transformers, the backends and fastquant first; its anonymous memory (RssAnon in
/proc/self/status, i.e. not the safetensors files' page cache or mmap) is then the baseline, and a thread samples
RssAnon every 1 ms during the load. The ways run round-robin, REPEATS times, after one uncounted run that warms the
page cache. Reported: peak RssAnon above the baseline and wall time, the median of REPEATS processes, and fastquant's ratios to transformers (targets: peak <= 0.85x for torchao, <= 0.65x for quanto, time
<= 1x).

    PYTHONPATH=python python benches/bench_hf_load.py [--repeats N] [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _machine import describe  # noqa: E402

CONFIG = dict(
    hidden_size=1024,
    intermediate_size=2816,
    num_hidden_layers=12,
    num_attention_heads=16,
    num_key_value_heads=16,
    vocab_size=32000,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)

METHODS = {
    "torchao-int8wo": {"quant_method": "torchao", "quant_type": "int8wo"},
    "quanto-int8": {"quant_method": "quanto", "weights_dtype": "int8"},
}
WAYS = ("transformers", "fastquant", "float+quantize")

CHILD = r"""
import json, os, sys, threading, time, warnings
warnings.filterwarnings("ignore")
os.environ["TQDM_DISABLE"] = "1"
import torch
import transformers, torchao, optimum.quanto
from transformers import LlamaForCausalLM
import fastquant
from fastquant.hf import _load  # noqa: F401  (imported before the baseline, like the others)

def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")

method, way, folder = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = json.loads(sys.argv[4])
if way == "transformers":
    if method.startswith("torchao"):
        from torchao.quantization import Int8WeightOnlyConfig
        lib_cfg = transformers.TorchAoConfig(Int8WeightOnlyConfig())
    else:
        lib_cfg = transformers.QuantoConfig(weights="int8")
base = rss_anon()
peak = [base]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.001)
t = threading.Thread(target=sample, daemon=True)
t.start()
t0 = time.perf_counter()
if way == "transformers":
    model = LlamaForCausalLM.from_pretrained(folder, quantization_config=lib_cfg, device_map="cpu")
elif way == "fastquant":
    model = fastquant.from_pretrained(LlamaForCausalLM, folder, quantization_config=cfg)
else:
    model = LlamaForCausalLM.from_pretrained(folder)
    model = fastquant.quantize(model, cfg, modules_to_not_convert=["lm_head"])
elapsed = time.perf_counter() - t0
stop.set()
t.join()
peak[0] = max(peak[0], rss_anon())
with torch.no_grad():
    out = model(torch.arange(8)[None]).logits
assert torch.isfinite(out.float()).all()
q = type(model.model.layers[0].mlp.up_proj).__name__
w = type(model.model.layers[0].mlp.up_proj.weight).__name__
print(json.dumps({"peak": peak[0] - base, "time": elapsed, "layer": q, "weight": w}))
"""


def write_checkpoint(folder: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG, dtype="bfloat16"))
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(folder, max_shard_size="120MB")


def run_child(method: str, way: str, folder: str) -> dict:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, method, way, folder, json.dumps(METHODS[method])],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{method}/{way} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--folder", default=None, help="reuse (or create) the checkpoint here")
    args = ap.parse_args()
    print(describe())
    tmp = None
    folder = args.folder
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = tmp.name
    if not os.path.exists(os.path.join(folder, "model.safetensors.index.json")):
        write_checkpoint(folder)
    shards = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in shards)
    print(f"checkpoint: {size / 1e6:.0f} MB bf16 in {len(shards)} shards; median of {args.repeats} fresh processes")
    print(f"{'method':16} {'way':16} {'peak MB':>9} {'time s':>8}  layer / weight")
    results = {}
    # round-robin over the ways, so that a busy spell on the (shared) machine hits each of them alike
    runs_of = {(m, w): [] for m in METHODS for w in WAYS}
    for method in METHODS:
        run_child(method, "fastquant", folder)  # warm the page cache once; not counted
        for _ in range(args.repeats):
            for way in WAYS:
                runs_of[(method, way)].append(run_child(method, way, folder))
    for method in METHODS:
        for way in WAYS:
            runs = runs_of[(method, way)]
            peak = statistics.median(r["peak"] for r in runs) / 1e6
            secs = statistics.median(r["time"] for r in runs)
            results[(method, way)] = (peak, secs)
            print(f"{method:16} {way:16} {peak:9.0f} {secs:8.2f}  {runs[0]['layer']} / {runs[0]['weight']}")
    print()
    targets = {"torchao-int8wo": 0.85, "quanto-int8": 0.65}
    for method in METHODS:
        tp, tt = results[(method, "transformers")]
        fp, ft = results[(method, "fastquant")]
        qp, qt = results[(method, "float+quantize")]
        verdict = "meets" if fp <= targets[method] * tp and ft <= tt else "MISSES"
        print(
            f"{method}: fastquant/transformers peak {fp / tp:.2f}x (target <= {targets[method]}x), time "
            f"{ft / tt:.2f}x (target <= 1x) -> {verdict}; float+quantize/transformers peak {qp / tp:.2f}x, "
            f"time {qt / tt:.2f}x"
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
