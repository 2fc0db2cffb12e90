"""``fastquant.gguf.tokenizer``: the transformers fast tokenizer a GGUF file describes, built from metadata read
lazily by fastquant's Rust reader.

transformers' ``AutoTokenizer.from_pretrained(folder, gguf_file=...)`` parses the whole file with gguf-py to
rebuild the config before it reads the vocabulary again. Here the config comes from the few hyper-parameter
keys (:func:`fastquant.gguf._hf.gguf_config`), the vocabulary, scores, token types and merges are decoded
once by the Rust reader, and the tokenizer itself is built by transformers' own GGUF tokenizer code
(``convert_gguf_tokenizer``) and class, so it encodes exactly as transformers' GGUF tokenizer does.
"""

from __future__ import annotations

__all__ = ["tokenizer", "tokenizer_dict"]

# special tokens transformers sets from the file (its get_gguf_tokenizer does the same)
_SPECIAL = {
    "bos_token": "bos_token_id",
    "eos_token": "eos_token_id",
    "unk_token": "unknown_token_id",
    "pad_token": "padding_token_id",
}
_NUMERIC_ARRAYS = ("scores", "token_type")


def tokenizer_dict(f):
    """``(architecture, tokenizer_dict, tokenizer_config)`` as transformers' ``get_gguf_tokenizer`` returns
    them, read from the open file ``f``."""
    from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING

    md = f.metadata
    if "tokenizer.ggml.tokens" not in md:
        raise ValueError(f"{f.path}: no tokenizer.ggml.tokens in the metadata: the file holds no tokenizer")
    groups = {}
    for group, renames in GGUF_TOKENIZER_MAPPING.items():
        out = {}
        for key, name in renames.items():
            full = f"tokenizer.{key}"
            if full not in md:
                continue
            if name in _NUMERIC_ARRAYS and f.array_info(full) is not None:
                out[name] = f.array(full).tolist()
            else:
                out[name] = md[full]
        groups[group] = out
    tok, config = groups["tokenizer"], groups["tokenizer_config"]
    ttype = tok.get("tokenizer_type")
    if ttype == "llama":
        config.setdefault("add_bos_token", True)
    elif ttype == "gemma4":
        config["add_bos_token"] = False
    tokens = tok["tokens"]
    for name, key in _SPECIAL.items():
        i = md.get(f"tokenizer.ggml.{key}")
        if i is not None and not 0 <= int(i) < len(tokens):
            raise ValueError(f"{f.path}: tokenizer.ggml.{key} is {i}, outside the {len(tokens)}-token vocabulary")
        config[name] = tokens[int(i)] if i is not None else None
    return md["general.architecture"], tok, config


def _tokenizer_class(f):
    """The class AutoTokenizer picks for this file's config (PreTrainedTokenizerFast when it has none)."""
    from transformers import AutoConfig, PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING

    from ._hf import gguf_config

    try:
        config = AutoConfig.for_model(**gguf_config(f))
        cls = TOKENIZER_MAPPING[type(config)]
    except (KeyError, ValueError):
        return PreTrainedTokenizerFast
    if isinstance(cls, (tuple, list)):
        cls = cls[-1] or cls[0]
    return cls or PreTrainedTokenizerFast


def tokenizer(path):
    """The transformers fast tokenizer of the GGUF file (or split set) at ``path``."""
    from transformers.integrations.gguf import convert_gguf_tokenizer

    from ._split import open_gguf

    with open_gguf(path) as f:
        arch, tok, config = tokenizer_dict(f)
        cls = _tokenizer_class(f)
    backend, extra = convert_gguf_tokenizer(arch, tok)
    kwargs = dict(config)
    kwargs.update(extra)
    return cls(tokenizer_object=backend, **kwargs)
