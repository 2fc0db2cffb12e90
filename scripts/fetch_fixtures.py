#!/usr/bin/env python3
"""Build GGUF test fixtures with llama.cpp's own converter (not fastquant's writer), cached.

llama.cpp's ``convert_hf_to_gguf.py`` (with its ``conversion/`` package and gguf-py) and its vocab-only GGUF
files (``models/ggml-vocab-*.gguf``, real tokenizers written by llama.cpp) ship in the llama-cpp-python source
distribution on PyPI. This script downloads that archive once with pip, extracts only those files, builds a small
random transformers model per architecture (tokenizer rebuilt from a llama.cpp vocab file by transformers'
own GGUF tokenizer code), saves it with ``save_pretrained`` and runs the converter on it at F16 and Q8_0.

Everything lands in ``$FASTQUANT_FIXTURES`` (default ``~/.cache/fastquant/gguf-fixtures``); nothing is written
into the repository. Running it again does nothing when every output exists (a few milliseconds).

    python scripts/fetch_fixtures.py            # all architectures
    python scripts/fetch_fixtures.py llama qwen2
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendor/llama.cpp provides the converter
VERSION = 1  # bump when the models below change, so caches are rebuilt

ROOT = Path(os.environ.get("FASTQUANT_FIXTURES", Path.home() / ".cache" / "fastquant" / "gguf-fixtures"))
SRC = ROOT / f"llama.cpp-{LLAMA_CPP_PYTHON}"
OUT = ROOT / f"v{VERSION}"

VOCABS = ("llama-spm", "gpt-2", "qwen2", "starcoder")

_SMALL = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256
)

# name -> (transformers config class, vocab file, config kwargs)
MODELS = {
    "llama": ("LlamaConfig", "llama-spm", dict(_SMALL, hidden_size=256, intermediate_size=512, num_key_value_heads=2)),
    "mistral": ("MistralConfig", "llama-spm", dict(_SMALL, num_key_value_heads=2, sliding_window=None)),
    "qwen2": ("Qwen2Config", "qwen2", dict(_SMALL, num_key_value_heads=2, tie_word_embeddings=True)),
    # transformers' GGUF tables do not map head_dim / the expert widths for these: keep its defaults (128,
    # 1408/5632, 768) so that its own loader, the reference, builds the right shapes
    "qwen3": ("Qwen3Config", "qwen2", dict(_SMALL, num_key_value_heads=2)),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "qwen2",
        dict(
            _SMALL,
            num_key_value_heads=2,
            num_experts=4,
            num_experts_per_tok=2,
        ),
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "qwen2",
        dict(_SMALL, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "gpt-2",
        dict(_SMALL, num_key_value_heads=2, head_dim=16, sliding_window=64, tie_word_embeddings=True),
    ),
    "starcoder2": ("Starcoder2Config", "starcoder", dict(_SMALL, num_key_value_heads=2)),
}
OUTTYPES = ("f16", "q8_0")
# transformers' own GGUF loader fails on these files (for qwen2_moe: the shape it gives ffn_gate_inp_shexp), so
# there is no transformers reference for them; tests compare with the original float model instead
NO_REFERENCE = {"qwen2_moe"}


def _log(msg: str) -> None:
    print(f"fetch_fixtures: {msg}", file=sys.stderr, flush=True)


def fetch_llama_cpp() -> Path:
    """The converter, its conversion package, gguf-py and the vocab files, extracted from the sdist."""
    done = SRC / ".complete"
    if done.exists():
        return SRC
    cache = ROOT / "sdist"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not archive.exists():
        _log(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON} source distribution from PyPI")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps"]
            + ["--no-binary", "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(cache)],
            check=True,
        )
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/") + tuple(
        f"models/ggml-vocab-{v}.gguf" for v in VOCABS
    )
    SRC.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if not m.name.startswith(prefix) or not m.isfile():
                continue
            rel = m.name[len(prefix) :]
            if rel.startswith(wanted) and ".." not in rel.split("/"):
                dest = SRC / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(dest, "wb") as dst:
                    dst.write(src.read())
    done.write_text("ok\n")
    return SRC


def _tokenizer_from_vocab(vocab_path: Path):
    """A transformers fast tokenizer from a llama.cpp vocab file, by transformers' own GGUF tokenizer code."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer

    arch, tok_dict, tok_config = get_gguf_tokenizer(str(vocab_path))
    backend, extra = convert_gguf_tokenizer(arch, tok_dict)
    kwargs = {k: v for k, v in dict(tok_config, **extra).items() if v is not None and k != "chat_template"}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs), len(tok_dict["tokens"])


def build_model(name: str, folder: Path) -> None:
    import torch
    import transformers

    cfg_cls, vocab, kw = MODELS[name]
    tok, n_vocab = _tokenizer_from_vocab(SRC / "models" / f"ggml-vocab-{vocab}.gguf")
    config = getattr(transformers, cfg_cls)(vocab_size=n_vocab, **kw)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or "layernorm" in n or "ln_" in n:
                p.add_(torch.randn_like(p) * 0.1)  # norms off 1.0, so a wrong offset shows
            elif n.endswith(".bias"):
                p.normal_(0, 0.02)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def convert(name: str) -> None:
    folder = OUT / f"{name}-hf"
    outs = [OUT / f"{name}-{t}.gguf" for t in OUTTYPES]
    if all(o.exists() for o in outs):
        return
    if not (folder / "config.json").exists():
        _log(f"building a random {name} model")
        build_model(name, folder)
    for t, o in zip(OUTTYPES, outs, strict=False):
        if o.exists():
            continue
        _log(f"converting {name} to {t} with llama.cpp's convert_hf_to_gguf.py")
        tmp = o.with_suffix(".tmp")
        subprocess.run(
            [sys.executable, str(SRC / "convert_hf_to_gguf.py"), str(folder), "--outtype", t, "--outfile", str(tmp)],
            check=True,
            cwd=str(SRC),
            stdout=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=str(SRC)),
        )
        tmp.rename(o)


# the inputs the references are computed on (tests use the same)
REF_TEXTS = ["Hello world! I've been 'told' 33333 times.", "  leading spaces\n\nand\ttabs  ", "日本語 🚀 émoji <s></s>"]
REF_LEN = 24  # > 16 rows: fastquant's exact (dequantize + F.linear) path
REF_NEW_TOKENS = 8


def reference(name: str, outtype: str) -> None:
    """What transformers' own GGUF loading gives for the file: last logits, greedy tokens, tokenizer ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = OUT / f"{name}-{outtype}.gguf"
    ref = OUT / f"{name}-{outtype}.ref.pt"
    if ref.exists():
        return
    _log(f"computing transformers' reference outputs for {gguf.name}")
    model = AutoModelForCausalLM.from_pretrained(str(OUT), gguf_file=str(gguf), dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, REF_LEN), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
        greedy = model.generate(
            ids[:, :8], max_new_tokens=REF_NEW_TOKENS, do_sample=False, min_new_tokens=REF_NEW_TOKENS
        )
    tok = AutoTokenizer.from_pretrained(str(OUT), gguf_file=str(gguf))
    out = {"ids": ids, "logits": logits, "greedy": greedy, "token_ids": [tok(t)["input_ids"] for t in REF_TEXTS]}
    out["class"] = type(model).__name__
    torch.save(out, ref.with_suffix(".tmp"))
    ref.with_suffix(".tmp").rename(ref)


def split(name: str, outtype: str, max_tensors: int = 8) -> None:
    """The same model written as a split set by the converter (llama.cpp's gguf-split layout)."""
    base = OUT / f"{name}-{outtype}-split"
    if list(OUT.glob(f"{base.name}-*-of-*.gguf")):
        return
    _log(f"converting {name} to a split {outtype} set")
    subprocess.run(
        [sys.executable, str(SRC / "convert_hf_to_gguf.py"), str(OUT / f"{name}-hf"), "--outtype", outtype]
        + ["--outfile", str(base) + ".gguf", "--split-max-tensors", str(max_tensors)],
        check=True,
        cwd=str(SRC),
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(SRC)),
    )


def main(argv) -> int:
    names = argv or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown fixture models {unknown}; known: {sorted(MODELS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    fetch_llama_cpp()
    for n in names:
        convert(n)
        for t in OUTTYPES:
            if n not in NO_REFERENCE:
                reference(n, t)
    if "llama" in names:
        split("llama", "q8_0")
    (OUT / "index.json").write_text(json.dumps({n: [f"{n}-{t}.gguf" for t in OUTTYPES] for n in MODELS}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
