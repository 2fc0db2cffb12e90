"""The ``fastquant`` command.

``fastquant inspect [FILE] [--json] [--tensors]`` prints a summary of a GGUF file: architecture, tensor
count, a table of tensor types with counts and bytes, and every metadata key with a short value. Without
FILE it inspects the small sample file shipped inside the package.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "sample.gguf")
_HEAD = 3  # elements shown of a long array
_MAX_STR = 60


def _human(n: int) -> str:
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if f < 1024 or unit == "GiB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"  # pragma: no cover


def _f32_repr(v: float) -> str:
    """Shortest decimal that reads back as the same float32 (values of f32 keys are widened to float)."""
    if v != v or v in (float("inf"), float("-inf")):
        return repr(v)
    packed = struct.pack("<f", v)
    for digits in range(1, 10):
        s = f"{v:.{digits}g}"
        if struct.pack("<f", float(s)) == packed:
            return repr(float(s))
    return repr(v)  # pragma: no cover


def _short(v, f32=False):
    if isinstance(v, str):
        return repr(v if len(v) <= _MAX_STR else v[: _MAX_STR - 3] + "...")
    if isinstance(v, float):
        return _f32_repr(v) if f32 else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_short(x, f32) for x in v) + "]"
    return repr(v)


def _json_scalar(v):
    if isinstance(v, str) and len(v) > 200:
        return v[:197] + "..."
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return repr(v)  # JSON has no NaN/inf
    return v


def _describe(f, key):
    """(type, short text, JSON-able value) of one metadata value, without decoding long arrays."""
    vt = f.value_type(key)
    info = f.array_info(key)
    if info is None:
        v = f.metadata[key]
        return vt, _short(v, vt == "f32"), _json_scalar(v)
    etype, n = info
    f32 = etype == "f32"
    if n <= 8 and etype != "array":
        v = f.metadata[key]
        text = _short(v, f32)
        if len(text) <= 100:
            return vt, text, [_json_scalar(x) for x in v]
    head = [f.array_item(key, i) for i in range(min(n, _HEAD))]
    head_text = ", ".join(_short(x, f32) for x in head)
    more = ", ..." if n > len(head) else ""
    return (
        vt,
        f"[{n} × {etype}] [{head_text}{more}]",
        {
            "length": n,
            "element_type": etype,
            "head": [_json_scalar(x) if not isinstance(x, list) else "[...]" for x in head],
        },
    )


def _summary(f):
    types = {}
    total = 0
    for t in f.tensors.values():
        d = types.setdefault(t.ggml_type, {"count": 0, "bytes": 0})
        d["count"] += 1
        d["bytes"] += t.nbytes or 0
        total += t.nbytes or 0
    meta = {k: _describe(f, k) for k in f.metadata.keys()}
    arch = f.metadata.get("general.architecture") if "general.architecture" in f.metadata else None
    return types, total, meta, arch


def inspect(path: str, as_json: bool, show_tensors: bool, out=sys.stdout) -> int:
    from . import gguf

    with gguf.open(path) as f:
        types, total, meta, arch = _summary(f)
        if as_json:
            doc = {
                "path": path,
                "file_size": f.file_size,
                "version": f.version,
                "alignment": f.alignment,
                "data_offset": f.data_offset,
                "architecture": arch,
                "tensor_count": len(f.tensors),
                "tensor_bytes": total,
                "types": types,
                "metadata": {k: {"type": t, "value": j} for k, (t, _, j) in meta.items()},
                "tensors": [
                    {
                        "name": t.name,
                        "type": t.ggml_type,
                        "shape": list(t.shape),
                        "ne": list(t.ne),
                        "nbytes": t.nbytes,
                        "offset": t.offset,
                    }
                    for t in f.tensors.values()
                ],
            }
            json.dump(doc, out, indent=2, ensure_ascii=False)
            out.write("\n")
            return 0
        w = out.write
        w(f"{path}  ({_human(f.file_size)})\n")
        w(f"GGUF v{f.version}, alignment {f.alignment}, tensor data at offset {f.data_offset}\n")
        w(f"architecture: {arch if arch is not None else '(not set)'}\n")
        w(f"tensors: {len(f.tensors)}, {_human(total)}\n")
        if types:
            w(f"\n  {'type':<10} {'count':>7} {'bytes':>14}\n")
            for name, d in sorted(types.items(), key=lambda kv: -kv[1]["bytes"]):
                w(f"  {name:<10} {d['count']:>7} {d['bytes']:>14,}\n")
        w(f"\nmetadata: {len(meta)} keys\n")
        kw = max((len(k) for k in meta), default=0)
        tw = max((len(t) for t, _, _ in meta.values()), default=0)
        for k, (t, text, _) in meta.items():
            w(f"  {k:<{kw}}  {t:<{tw}}  {text}\n")
        if show_tensors and len(f.tensors):
            nw = max(len(n) for n in f.tensors)
            w(f"\n  {'name':<{nw}}  {'type':<8} {'shape':<24} {'bytes':>14} {'offset':>14}\n")
            for t in f.tensors.values():
                shape = "×".join(str(d) for d in t.shape) or "()"
                nb = f"{t.nbytes:,}" if t.nbytes is not None else "?"
                w(f"  {t.name:<{nw}}  {t.ggml_type:<8} {shape:<24} {nb:>14} {t.offset:>14,}\n")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fastquant", description="fastquant command line tools")
    sub = p.add_subparsers(dest="command", required=True)
    pi = sub.add_parser("inspect", help="summarize a GGUF file")
    pi.add_argument("file", nargs="?", help="GGUF file (default: the sample file shipped with fastquant)")
    pi.add_argument("--json", action="store_true", help="machine-readable output")
    pi.add_argument("--tensors", action="store_true", help="also list every tensor")
    from . import _cli_quantize

    _cli_quantize.add_parser(sub)
    args = p.parse_args(argv)
    if args.command == "quantize":
        return _cli_quantize.run(args)
    if args.command == "inspect":
        from .gguf import GGUFError

        path = args.file or SAMPLE
        try:
            return inspect(path, args.json, args.tensors)
        except BrokenPipeError:
            # The reader of our output went away (`fastquant inspect | head`): not an error of ours.
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            return 0
        except GGUFError as e:
            print(f"fastquant inspect: {path}: not a valid GGUF file: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"fastquant inspect: {e}", file=sys.stderr)
            return 2
    return 1  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
