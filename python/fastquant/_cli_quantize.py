"""``fastquant quantize SRC DST --config CONFIG``: a float checkpoint folder -> a quantized one.

CONFIG is a JSON quantization config (text or a file path) or a short form (see ``SHORT``). Backend configs give
a folder in the library's own layout (``fastquant.save_pretrained``; loaded with ``fastquant.from_pretrained``,
quantizing on load); ``gguf-<TYPE>`` gives one ``.gguf`` file (``fastquant.gguf.quantize_model`` + ``save``).
``fastquant quantize --demo OUT`` runs the whole job on a small Llama it builds from a config with random weights:
save the float folder, quantize it, load the result back with transformers and report.
"""

from __future__ import annotations

import json
import os
import sys
import time

__all__ = ["SHORT", "GGUF_TYPES", "add_parser", "run", "parse_config"]

#: short form -> quantization config dict
SHORT = {
    "bnb-nf4": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "bnb-fp4": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
    "bnb-int8": {"quant_method": "bitsandbytes", "load_in_8bit": True},
    "torchao-int8wo": {"quant_method": "torchao", "quant_type": "int8wo"},
    "torchao-int8dq": {"quant_method": "torchao", "quant_type": "int8dq"},
    "quanto-int8": {"quant_method": "quanto", "weights_dtype": "int8"},
    "quanto-int4": {"quant_method": "quanto", "weights_dtype": "int4"},
    "quanto-int2": {"quant_method": "quanto", "weights_dtype": "int2"},
    "quanto-float8": {"quant_method": "quanto", "weights_dtype": "float8"},
}
#: the ggml types fastquant quantizes to (``gguf-<TYPE>``)
GGUF_TYPES = ("F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")

# hidden/intermediate sizes multiples of 256: every GGUF type (K-quants have 256-element blocks) applies
DEMO_CONFIG = dict(
    vocab_size=256,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def _choices() -> str:
    return ", ".join(list(SHORT) + [f"gguf-{t}" for t in GGUF_TYPES])


def parse_config(text: str):
    """A short form -> ('gguf', TYPE) or ('hf', config dict); JSON text or a .json file -> ('hf', dict)."""
    if text in SHORT:
        return "hf", dict(SHORT[text])
    if text.lower().startswith("gguf-"):
        t = text[5:].upper()
        if t not in GGUF_TYPES:
            raise ValueError(f"--config {text!r}: fastquant quantizes GGUF types {', '.join(GGUF_TYPES)}")
        return "gguf", t
    source = text
    if not text.lstrip().startswith("{"):
        if not os.path.isfile(text):
            raise ValueError(f"--config {text!r}: not a short form ({_choices()}), a JSON object or a JSON file")
        with open(text, encoding="utf-8") as f:
            source = f.read()
    try:
        data = json.loads(source)
    except json.JSONDecodeError as e:
        raise ValueError(f"--config: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise ValueError(f"--config: expected a JSON object, got {type(data).__name__}")
    return "hf", data


def _model_class(src: str):
    """The transformers/diffusers class named by SRC/config.json."""
    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "no config.json in the source folder", path)
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("quantization_config") is not None:
        raise ValueError(
            f"{path}: the checkpoint is already quantized ({cfg['quantization_config'].get('quant_method')})"
        )
    if cfg.get("_class_name"):
        import diffusers

        name, lib = cfg["_class_name"], diffusers
    elif cfg.get("architectures"):
        import transformers

        name, lib = cfg["architectures"][0], transformers
    else:
        raise ValueError(
            f"{path}: names no model class ('architectures' for transformers, '_class_name' for diffusers)"
        )
    cls = getattr(lib, name, None)
    if cls is None:
        raise ValueError(f"{path}: {lib.__name__} {lib.__version__} has no class {name!r}")
    return cls


def _load(cls, src, config=None, skip=None):
    """fastquant.from_pretrained (streams and quantizes on load) when the package has it, else the library's own
    from_pretrained for the float model (quantized afterwards by the caller)."""
    try:
        from .hf import _load  # noqa: F401
    except ImportError:
        model = cls.from_pretrained(src)
        return model.eval(), False
    import fastquant

    if config is None:
        return fastquant.from_pretrained(cls, src).eval(), False
    return fastquant.from_pretrained(cls, src, quantization_config=config, modules_to_not_convert=skip), True


def _progress(total, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with transformers
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=True, file=sys.stderr)


def quantize_folder(src, dst, kind, config, modules_to_not_convert=None, max_shard_size="5GB"):
    """The job of ``fastquant quantize``; returns a dict describing what was written."""
    import fastquant

    src = os.fspath(src)
    cls = _model_class(src)
    skip = list(modules_to_not_convert) if modules_to_not_convert is not None else None
    is_lm = hasattr(cls, "get_output_embeddings") and "transformers" in cls.__module__
    if skip is None:
        skip = ["lm_head"] if is_lm else []  # transformers' rule: the output embeddings stay in float
    bar = _progress(3, f"fastquant quantize ({'gguf-' + config if kind == 'gguf' else config.get('quant_method')})")
    t0 = time.perf_counter()
    if kind == "gguf":
        import fastquant.gguf as fg

        model, _ = _load(cls, src)
        bar and bar.update(1)
        layers = [n for n, m in model.named_modules() if type(m).__name__ == "Linear"]
        result = fg.quantize_model(model, config, modules_to_not_convert=skip)
        bar and bar.update(1)
        dst = os.fspath(dst)
        if not dst.endswith(".gguf"):
            dst = dst + ".gguf"
        size = fg.save(model, dst)
        bar and bar.update(1)
        bar and bar.close()
        return {
            "path": dst,
            "bytes": size,
            "quantized": len(result.converted),
            "linear_layers": len(layers),
            "skipped": dict(result.skipped),
            "seconds": time.perf_counter() - t0,
        }
    cfg = fastquant.DiffusersAutoQuantizer.from_dict(config)
    if is_lm and str(cfg.quant_method) == "quanto":  # refuse before loading: save_pretrained would
        raise ValueError(
            "quanto: transformers cannot load pre-quantized optimum-quanto checkpoints, so there is no folder to "
            "write for this model; quantize it on load instead (quanto folders work for diffusers models)"
        )
    model, done = _load(cls, src, cfg, skip)
    bar and bar.update(1)
    if not done:
        fastquant.quantize(model, cfg, modules_to_not_convert=skip)
        model.eval()
    bar and bar.update(1)
    fastquant.save_pretrained(model, dst, max_shard_size=max_shard_size)
    bar and bar.update(1)
    bar and bar.close()
    size = sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst) if f.endswith(".safetensors"))
    return {
        "path": os.fspath(dst),
        "bytes": size,
        "quantized": len(model.hf_quantizer.quantized_modules(model)),
        "seconds": time.perf_counter() - t0,
    }


def _folder_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))


def demo(out_dir, kind, config, name, out=None) -> int:
    """Build a small Llama (random weights), save it, quantize the folder, load the result back and report."""
    import torch
    import transformers

    w = (out or sys.stdout).write
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    src = os.path.join(out_dir, "float")
    torch.manual_seed(0)
    float_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**DEMO_CONFIG)).eval()
    float_model.save_pretrained(src)
    w(
        f"float model: LlamaForCausalLM, {sum(p.numel() for p in float_model.parameters()):,} parameters, "
        f"{_folder_bytes(src):,} bytes of safetensors in {src}\n"
    )
    dst = os.path.join(out_dir, name)
    info = quantize_folder(src, dst, kind, config)
    w(
        f"{name}: {info['quantized']} layers quantized, {info['bytes']:,} bytes in {info['path']} "
        f"({info['seconds']:.2f} s)\n"
    )
    for layer, why in sorted((info.get("skipped") or {}).items()):
        w(f"  kept in float: {layer} ({why})\n")
    tokens = torch.arange(16).reshape(1, 16) % DEMO_CONFIG["vocab_size"]
    with torch.no_grad():
        ref = float_model(tokens).logits
    if kind == "gguf":
        import fastquant.gguf as fg

        with fg.open(info["path"]) as f:
            types = sorted({t.ggml_type for t in f.tensors.values()})
            w(f"reopened: {len(f.tensors)} tensors, types {', '.join(types)}\n")
        return 0
    loaded = transformers.LlamaForCausalLM.from_pretrained(dst).eval()
    with torch.no_grad():
        got = loaded(tokens).logits
    err = ((got.float() - ref).norm() / ref.norm()).item()
    qcfg = loaded.config.quantization_config
    w(
        f"transformers.from_pretrained({name!r}): {type(qcfg).__name__} ({getattr(qcfg.quant_method, 'value', qcfg.quant_method)}), "
        f"relative L2 error of the logits against the float model: {err:.4f}\n"
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "quantize",
        help="quantize a float checkpoint folder (HF layout out, or one .gguf)",
        description="Quantize a transformers/diffusers float checkpoint folder. CONFIG: a JSON config (text or "
        f"file) or one of: {_choices()}.",
    )
    p.add_argument("src", nargs="?", help="float checkpoint folder (config.json + safetensors)")
    p.add_argument("dst", nargs="?", help="output folder (or .gguf file for gguf-* configs)")
    p.add_argument("--config", default=None, help="quantization config (default for --demo: torchao-int8wo)")
    p.add_argument(
        "--skip",
        action="append",
        default=None,
        metavar="MODULE",
        help="module to keep in float (repeatable; default: lm_head for language models)",
    )
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    p.add_argument(
        "--demo",
        metavar="OUT",
        default=None,
        help="build a small Llama with random weights in OUT/float, quantize it and report",
    )


def run(args) -> int:
    try:
        if args.demo is not None:
            if args.src or args.dst:
                raise ValueError("--demo OUT takes no SRC/DST")
            name = args.config or "torchao-int8wo"
            kind, config = parse_config(name)
            label = name if (name in SHORT or kind == "gguf") else "quantized"
            return demo(args.demo, kind, config, label)
        if not args.src or not args.dst or not args.config:
            raise ValueError("usage: fastquant quantize SRC DST --config CONFIG   (or: fastquant quantize --demo OUT)")
        kind, config = parse_config(args.config)
        info = quantize_folder(args.src, args.dst, kind, config, args.skip, args.max_shard_size)
        print(
            f"{info['path']}: {info['quantized']} layers quantized, {info['bytes']:,} bytes ({info['seconds']:.2f} s)"
        )
        return 0
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"fastquant quantize: {e}", file=sys.stderr)
        return 2
