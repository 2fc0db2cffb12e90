#!/usr/bin/env python3
"""GGUF container benchmark, fastquant side by side with gguf-py (``gguf.GGUFReader``).

1. open + list: open a file with a 262,144-entry string array (a Gemma-sized vocabulary) and a few hundred
   tensors, then list every tensor (name, type, shape, bytes, offset) and read every scalar metadata value.
   Targets: fastquant < 30 ms and >= 100x faster than gguf-py.
2. hostile file: a 49-byte file whose u8 array claims 2^63 elements must be rejected in < 1 ms
   (gguf==0.19 hangs on it, so gguf-py is not run on it).
3. raw() is zero-copy: a sparse multi-GiB file; raw() of its huge tensor must return fast and not grow RSS.

Medians of several runs. Run: ``PYTHONPATH=python python benches/bench_gguf_open.py [--quick]``.
"""

from __future__ import annotations

import os
import platform
import statistics
import struct
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import fastquant.gguf as fg  # noqa: E402
from fastquant import _core  # noqa: E402


from _machine import cpu_model  # noqa: E402  (benches/ is on sys.path when a script here runs)


def machine() -> str:
    cpu = cpu_model()
    try:
        import gguf

        gv = getattr(gguf, "__version__", None)
        if gv is None:
            from importlib.metadata import version

            gv = version("gguf")
    except Exception:  # pragma: no cover
        gv = "not installed"
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs; "
        f"Python {platform.python_version()}, numpy {np.__version__}, gguf-py {gv}"
    )


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def median_time(fn, runs):
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


def make_model_file(path, n_layers=32):
    """A llama-shaped file: 262,144-token vocabulary, scores and token types, ~25 scalar keys,
    9 tensors per layer + 3 (n_layers=32 -> 291 tensors), mixed Q4_K / Q6_K / F32; small dims so the
    file stays a few MiB (the reader's work does not depend on tensor sizes)."""
    rng = np.random.default_rng(0)
    n_vocab = 262144
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"▁tok{i}" for i in range(n_vocab - 4)]
    meta = {
        "general.architecture": "llama",
        "general.name": "bench",
        "general.file_type": fg.Value(15, "u32"),
        "general.quantization_version": fg.Value(2, "u32"),
        "llama.context_length": fg.Value(8192, "u32"),
        "llama.embedding_length": fg.Value(256, "u32"),
        "llama.block_count": fg.Value(n_layers, "u32"),
        "llama.feed_forward_length": fg.Value(512, "u32"),
        "llama.attention.head_count": fg.Value(8, "u32"),
        "llama.attention.head_count_kv": fg.Value(2, "u32"),
        "llama.rope.freq_base": fg.Value(500000.0, "f32"),
        "llama.attention.layer_norm_rms_epsilon": fg.Value(1e-5, "f32"),
        "llama.vocab_size": fg.Value(n_vocab, "u32"),
        "llama.rope.dimension_count": fg.Value(32, "u32"),
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": rng.standard_normal(n_vocab).astype(np.float32),
        "tokenizer.ggml.token_type": np.ones(n_vocab, dtype=np.int32),
        "tokenizer.ggml.bos_token_id": fg.Value(2, "u32"),
        "tokenizer.ggml.eos_token_id": fg.Value(1, "u32"),
        "tokenizer.ggml.padding_token_id": fg.Value(0, "u32"),
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    }
    d, ff = 256, 512

    def packed(t, rows, cols):
        be, bb = {"Q4_K": (256, 144), "Q6_K": (256, 210)}[t]
        return (rng.integers(0, 256, rows * cols // be * bb, dtype=np.uint8), t, (rows, cols))

    tensors = {"token_embd.weight": packed("Q6_K", 64, d)}
    for i in range(n_layers):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = np.ones(d, np.float32)
        tensors[p + "attn_q.weight"] = packed("Q4_K", d, d)
        tensors[p + "attn_k.weight"] = packed("Q4_K", 64, d)
        tensors[p + "attn_v.weight"] = packed("Q6_K", 64, d)
        tensors[p + "attn_output.weight"] = packed("Q4_K", d, d)
        tensors[p + "ffn_norm.weight"] = np.ones(d, np.float32)
        tensors[p + "ffn_gate.weight"] = packed("Q4_K", ff, d)
        tensors[p + "ffn_up.weight"] = packed("Q4_K", ff, d)
        tensors[p + "ffn_down.weight"] = packed("Q6_K", d, ff)
    tensors["output_norm.weight"] = np.ones(d, np.float32)
    tensors["output.weight"] = packed("Q6_K", 64, d)
    fg.write(path, tensors, meta)
    return len(tensors)


def fastquant_open_and_list(path):
    with fg.open(path) as f:
        listed = [(t.name, t.ggml_type, t.shape, t.nbytes, t.offset) for t in f.tensors.values()]
        scalars = {k: f.metadata[k] for k in f.metadata.keys() if f.array_info(k) is None}
    return len(listed), len(scalars)


def ggufpy_open_and_list(path):
    import gguf

    r = gguf.GGUFReader(path)
    listed = [
        (t.name, t.tensor_type.name, tuple(reversed(t.shape.tolist())), t.n_bytes, t.data_offset) for t in r.tensors
    ]
    scalars = {
        k: f.contents()
        for k, f in r.fields.items()
        if not k.startswith("GGUF.") and f.types and f.types[0] != gguf.GGUFValueType.ARRAY
    }
    return len(listed), len(scalars)


def main():
    quick = "--quick" in sys.argv
    print(f"machine: {machine()}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="fq-bench-") as tmp:
        # 1. open + list --------------------------------------------------------------------------------
        path = os.path.join(tmp, "model.gguf")
        n_t = make_model_file(path)
        print(
            f"\n[1] open + list every tensor and scalar value: {os.path.getsize(path) / 2**20:.1f} MiB, "
            f"{n_t} tensors, 262,144-string vocabulary"
        )
        a = fastquant_open_and_list(path)
        try:
            b = ggufpy_open_and_list(path)
            assert a == b, (a, b)
            have_ggufpy = True
        except ImportError:
            have_ggufpy = False
        fq_med, fq_min = median_time(lambda: fastquant_open_and_list(path), 5 if quick else 21)
        print(f"  fastquant : median {fq_med * 1e3:8.2f} ms   (min {fq_min * 1e3:.2f} ms)")
        if have_ggufpy:
            gp_med, gp_min = median_time(lambda: ggufpy_open_and_list(path), 1 if quick else 5)
            ratio = gp_med / fq_med
            print(f"  gguf-py   : median {gp_med * 1e3:8.2f} ms   (min {gp_min * 1e3:.2f} ms)")
            print(f"  speed-up  : {ratio:.0f}x   (target >= 100x)")
            ok &= ratio >= 100
        print(f"  target < 30 ms: {'PASS' if fq_med < 0.030 else 'FAIL'}")
        ok &= fq_med < 0.030
        # lazy access to one vocabulary entry, and decoding the whole vocabulary
        with fg.open(path) as f:
            t = time.perf_counter()
            f.array_item("tokenizer.ggml.tokens", 200000)
            t1 = time.perf_counter() - t
            t = time.perf_counter()
            toks = f.metadata["tokenizer.ggml.tokens"]
            t2 = time.perf_counter() - t
        print(
            f"  one vocabulary entry (builds the offset table): {t1 * 1e3:.2f} ms; "
            f"whole vocabulary as a list of {len(toks)} str: {t2 * 1e3:.1f} ms"
        )

        # 2. hostile 2^63-element array ------------------------------------------------------------------
        data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 0, 2**63)
        hostile = os.path.join(tmp, "hostile.gguf")
        with open(hostile, "wb") as fh:
            fh.write(data)

        def reject_file():
            try:
                fg.open(hostile)
            except fg.GGUFError:
                return
            raise AssertionError("accepted")

        def reject_bytes():
            try:
                _core._GGUFReader.from_bytes(data)
            except fg.GGUFError:
                return
            raise AssertionError("accepted")

        m1, _ = median_time(reject_file, 2001)
        m2, _ = median_time(reject_bytes, 2001)
        print(
            f"\n[2] {len(data)}-byte file with a 2^63-element array: rejected in median {m1 * 1e6:.1f} µs "
            f"(open from disk) / {m2 * 1e6:.1f} µs (in memory); target < 1 ms: "
            f"{'PASS' if m1 < 1e-3 else 'FAIL'}"
        )
        ok &= m1 < 1e-3

        # 3. raw() on a sparse multi-GiB file ------------------------------------------------------------
        ne = [2**20, 2**11]  # 2^31 F32 elements = 8 GiB
        nbytes = 4 * ne[0] * ne[1]
        hdr = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 1, 1))
        hdr += struct.pack("<Q", 20) + b"general.architecture" + struct.pack("<IQ", 8, 5) + b"llama"
        hdr += struct.pack("<Q", 4) + b"huge" + struct.pack("<I", 2) + struct.pack("<QQ", *ne)
        hdr += struct.pack("<IQ", 0, 0)
        hdr += bytes((-len(hdr)) % 32)
        sparse = os.path.join(tmp, "sparse.gguf")
        with open(sparse, "wb") as fh:
            fh.write(hdr)
            fh.truncate(len(hdr) + nbytes)
        st = os.stat(sparse)
        rss0 = rss_bytes()
        times = []
        for _ in range(9):
            t = time.perf_counter()
            with fg.open(sparse) as f:
                r = f.raw("huge")
            times.append(time.perf_counter() - t)
            assert r.nbytes == nbytes and not r.flags.writeable
            first, last = int(r[0]), int(r[-1])  # touch two pages
        rss1 = rss_bytes()
        print(
            f"\n[3] raw() of an {nbytes / 2**30:.0f} GiB tensor in a sparse file "
            f"({st.st_blocks * 512 / 2**10:.0f} KiB on disk): open + raw() median "
            f"{statistics.median(times) * 1e6:.0f} µs; RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB "
            f"(+{(rss1 - rss0) / 2**20:.2f} MiB); bytes read {first}, {last}"
        )
        ok &= (rss1 - rss0) < 64 * 2**20 and statistics.median(times) < 0.01
        del r
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
