#!/usr/bin/env python3
"""GGUF checkpoint -> ready transformers model: fastquant.gguf.from_pretrained side by side with transformers'
own GGUF loading (``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)``) on the same file.

The file: a random Llama built from a config (hidden 768, 12 layers, the 32,000-token llama.cpp SentencePiece
vocabulary: ~134M parameters) converted at Q8_0 by llama.cpp's own ``convert_hf_to_gguf.py``
(scripts/fetch_fixtures.py machinery, cached). Every measurement runs in a fresh subprocess (imports done
before the clock starts):

* load: file -> model ready for inference (median of ``--runs``); target fastquant >= 5x faster.
* peak RSS: the process's peak resident memory after load + a 512-token prefill; target <= 0.6x.
* prefill (512 tokens, after one 4-token warm-up call) and 20-token greedy generation time.
* tokenizer build: ``fastquant.gguf.tokenizer(path)`` vs ``AutoTokenizer.from_pretrained(folder, gguf_file=...)``
  (median), on that file (32,000-token SentencePiece vocabulary); target >= 10x.

Run: ``PYTHONPATH=python python benches/bench_gguf_models.py [--runs 3]``.
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
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
sys.path.insert(0, HERE)
import _machine  # noqa: E402
import fetch_fixtures as fx  # noqa: E402

NAME = "bench-llama"
fx.MODELS[NAME] = (
    "LlamaConfig",
    "llama-spm",
    dict(
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    ),
)

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    which, path, folder, what = sys.argv[1:5]
    import transformers, fastquant.gguf as fg
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import fastquant.gguf._hf, fastquant.gguf._tokenizer, gguf, accelerate  # imports before the clock
    transformers.LlamaForCausalLM, transformers.LlamaTokenizer  # (transformers imports these lazily)
    import transformers.modeling_gguf_pytorch_utils, transformers.integrations.gguf.gguf_tokenizer_mapping
    out = {}
    if what == "tokenizer":
        t = time.perf_counter()
        tok = fg.tokenizer(path) if which == "fastquant" else AutoTokenizer.from_pretrained(folder, gguf_file=path)
        out["tokenizer_s"] = time.perf_counter() - t
        out["ids"] = tok("The quick brown fox jumps over the lazy dog 12345.")["input_ids"]
    else:
        t = time.perf_counter()
        if which == "fastquant":
            model = fg.from_pretrained(path)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=path, dtype=torch.float32).eval()
        out["load_s"] = time.perf_counter() - t
        ids = torch.randint(0, model.config.vocab_size, (1, 512), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            model(ids[:, :4])  # one warm-up call (first-call dispatch and allocations), then the clock
            t = time.perf_counter()
            logits = model(ids).logits[0, -1]
            out["prefill_s"] = time.perf_counter() - t
            t = time.perf_counter()
            g = model.generate(ids[:, :16], max_new_tokens=20, min_new_tokens=20, do_sample=False)
            out["generate20_s"] = time.perf_counter() - t
        out["greedy"] = g[0, 16:].tolist()
        out["logits"] = logits[:8].tolist()
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT" + json.dumps(out))
    """
)


def child(which: str, path: str, what: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "python"))
    r = subprocess.run(
        [sys.executable, "-c", CHILD, which, path, str(fx.OUT), what], capture_output=True, text=True, env=env
    )
    for line in r.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    raise RuntimeError(f"{which} {what} failed:\n{r.stderr[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    fx.OUT.mkdir(parents=True, exist_ok=True)
    fx.fetch_llama_cpp()
    fx.convert(NAME)
    path = str(fx.OUT / f"{NAME}-q8_0.gguf")
    print(f"machine: {_machine.describe()}; torch threads: default")
    print(f"file: {os.path.basename(path)} ({os.path.getsize(path) / 2**20:.1f} MiB, written by llama.cpp's converter)")
    res = {"fastquant": [], "transformers": []}
    tok = {"fastquant": [], "transformers": []}
    for _ in range(args.runs):
        for which in res:
            res[which].append(child(which, path, "model"))
            tok[which].append(child(which, path, "tokenizer"))

    def med(which, key, d=res):
        return statistics.median(r[key] for r in d[which])

    same_tokens = res["fastquant"][0]["greedy"] == res["transformers"][0]["greedy"]
    same_ids = all(d["fastquant"][0]["ids"] == d["transformers"][0]["ids"] for d in (tok,))
    print(f"medians of {args.runs} fresh subprocesses each")
    print(f"{'':24s} {'fastquant':>12s} {'transformers':>13s} {'ratio':>9s}")
    rows = [
        ("load (s)", "load_s", res, "faster"),
        ("peak RSS incl. prefill (MB)", "peak_rss_mb", res, "of peer"),
        ("prefill 512 tokens (s)", "prefill_s", res, "faster"),
        ("generate 20 tokens (s)", "generate20_s", res, "faster"),
        ("tokenizer build (s)", "tokenizer_s", tok, "faster"),
    ]
    for label, key, d, kind in rows:
        a, b = med("fastquant", key, d), med("transformers", key, d)
        ratio = f"{a / b:.2f}x" if kind == "of peer" else f"{b / a:.1f}x"
        print(f"{label:28s} {a:10.3f} {b:13.3f} {ratio:>9s} {kind}")
    print(f"greedy tokens equal: {same_tokens}; tokenizer ids equal: {same_ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
