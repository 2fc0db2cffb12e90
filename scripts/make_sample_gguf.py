#!/usr/bin/env python3
"""Regenerate python/fastquant/data/sample.gguf, the small file `fastquant inspect` shows by default.

A toy llama-shaped model (deterministic): metadata of several types including tokenizer arrays, and
F32, F16, BF16 and Q8_0 tensors (Q8_0 blocks packed here with numpy). Run from the repository root with
fastquant importable: ``PYTHONPATH=python python scripts/make_sample_gguf.py``.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import fastquant.gguf as fg  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "python", "fastquant", "data", "sample.gguf")


def q8_0(x: np.ndarray) -> bytes:
    """Pack float32 rows into ggml Q8_0 blocks (f16 scale + 32 int8), as ggml's reference quantizer."""
    blocks = x.astype(np.float32).reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1)
    d = amax / 127.0
    inv = np.where(d != 0, 1.0 / np.where(d == 0, 1, d), 0.0)
    q = np.round(blocks * inv[:, None]).astype(np.int8)
    out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


def main():
    rng = np.random.default_rng(20240604)
    vocab = ["<unk>", "<s>", "</s>"] + [f"tok{i}" for i in range(29)]
    n_embd, n_vocab, n_ff = 32, len(vocab), 64
    meta = {
        "general.architecture": "llama",
        "general.name": "fastquant sample (toy llama, random weights)",
        "general.file_type": fg.Value(7, "u32"),
        "general.quantization_version": fg.Value(2, "u32"),
        "llama.context_length": fg.Value(128, "u32"),
        "llama.embedding_length": fg.Value(n_embd, "u32"),
        "llama.block_count": fg.Value(1, "u32"),
        "llama.feed_forward_length": fg.Value(n_ff, "u32"),
        "llama.attention.head_count": fg.Value(4, "u32"),
        "llama.attention.layer_norm_rms_epsilon": fg.Value(1e-5, "f32"),
        "llama.rope.freq_base": fg.Value(10000.0, "f32"),
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": vocab,
        "tokenizer.ggml.scores": np.linspace(0, -1, n_vocab, dtype=np.float32),
        "tokenizer.ggml.token_type": fg.Value([2, 3, 3] + [1] * 29, "i32"),
        "tokenizer.ggml.bos_token_id": fg.Value(1, "u32"),
        "tokenizer.ggml.add_bos_token": True,
    }
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    tensors = {
        "token_embd.weight": f32(n_vocab, n_embd).astype(np.float16),
        "blk.0.attn_norm.weight": np.ones(n_embd, dtype=np.float32),
        "blk.0.attn_q.weight": (q8_0(f32(n_embd, n_embd)), "Q8_0", (n_embd, n_embd)),
        "blk.0.ffn_up.weight": (q8_0(f32(n_ff, n_embd)), "Q8_0", (n_ff, n_embd)),
        "blk.0.ffn_down.weight": f32(n_embd, n_ff).astype(np.float16),
        "output_norm.weight": np.ones(n_embd, dtype=np.float32),
    }
    try:
        import torch

        tensors["output.weight"] = torch.from_numpy(f32(n_vocab, n_embd)).to(torch.bfloat16)
    except ImportError:  # keep the script usable without torch: same bits, written as packed BF16
        x = f32(n_vocab, n_embd)
        bits = (x.view(np.uint32) + 0x7FFF + ((x.view(np.uint32) >> 16) & 1)) >> 16
        tensors["output.weight"] = (bits.astype(np.uint16).tobytes(), "BF16", (n_vocab, n_embd))
    n = fg.write(OUT, tensors, meta)
    print(f"wrote {os.path.normpath(OUT)} ({n} bytes)")


if __name__ == "__main__":
    main()
