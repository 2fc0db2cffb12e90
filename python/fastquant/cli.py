"""The ``fastquant`` command.

``fastquant inspect [FILE] [--json] [--tensors]`` prints a summary of a GGUF file: architecture, tensor
count, a table of tensor types with counts and bytes, and every metadata key with a short value. Without
FILE it inspects the small sample file shipped inside the package. Text output is made safe for a terminal:
control characters are escaped, long keys, names and values are cut with a visible marker (``…(+N chars)``), and
columns are bounded. ``--json`` gives strings whole; every array is ``{"element_type", "length", "head"}`` with its
first 8 elements (nested arrays in the same shape), and tensors carry ``ggml_type``.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "sample.gguf")
_HEAD = 3  # elements shown of a long array
_JSON_HEAD = 8  # elements given of an array in --json
_MAX_STR = 60  # characters shown of a string value
_KEY_COL = 40  # widest key (or tensor name) column; longer ones are cut with a marker
_TYPE_COL = 16


def _human(n: int) -> str:
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if f < 1024 or unit == "GiB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"  # pragma: no cover


def _esc(s: str, limit: int) -> str:
    """`s` safe for a terminal: control and other non-printable characters (ESC, CR, bidi overrides, ...)
    escaped as in a Python literal, and cut to `limit` characters with a visible marker."""
    cut = s[:limit]
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    if len(s) > limit:
        out += f"…(+{len(s) - limit} chars)"
    return out


def _cell(s: str, width: int) -> str:
    """`s` escaped and cut to fit a column of `width` characters (padded to it)."""
    e = _esc(s, width)
    if len(e) > width:
        e = e[: width - 1] + "…"
    return f"{e:<{width}}"


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
        # repr escapes control characters; a cut string says how much is missing, outside the quotes
        return repr(v) if len(v) <= _MAX_STR else f"{v[:_MAX_STR]!r}…(+{len(v) - _MAX_STR} chars)"
    if isinstance(v, float):
        return _f32_repr(v) if f32 else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_short(x, f32) for x in v) + "]"
    return repr(v)


def _json_scalar(v):
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return repr(v)  # JSON has no NaN/inf
    return v  # strings whole, as gguf-dump gives them


def _json_array(etype: str, values, length: int):
    """The one JSON shape of an array value: element type, length and the first elements."""
    head = []
    for x in values[:_JSON_HEAD]:
        if isinstance(x, list):
            head.append(_json_array("array", x, len(x)))
        else:
            head.append(_json_scalar(x))
    return {"element_type": etype, "length": length, "head": head}


def _describe(f, key):
    """(type, short text, JSON-able value) of one metadata value, without decoding long arrays."""
    vt = f.value_type(key)
    info = f.array_info(key)
    if info is None:
        v = f.metadata[key]
        return vt, _short(v, vt == "f32"), _json_scalar(v)
    etype, n = info
    f32 = etype == "f32"
    head = [f.array_item(key, i) for i in range(min(n, _JSON_HEAD))]
    doc = _json_array(etype, head, n)
    if n <= 8 and etype != "array":
        text = _short(head, f32)
        if len(text) <= 100:
            return vt, text, doc
    head_text = ", ".join(_short(x, f32) for x in head[:_HEAD])
    more = ", ..." if n > _HEAD else ""
    return vt, f"[{n} × {etype}] [{head_text}{more}]", doc


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


def inspect(path: str, as_json: bool, show_tensors: bool, out=None) -> int:
    from . import gguf

    out = sys.stdout if out is None else out
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
                        "ggml_type": t.ggml_type,
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
            out.flush()
            return 0
        w = out.write
        w(f"{_esc(path, 200)}  ({_human(f.file_size)})\n")
        w(f"GGUF v{f.version}, alignment {f.alignment}, tensor data at offset {f.data_offset}\n")
        arch_text = _esc(str(arch), _MAX_STR) if arch is not None else "(not set)"
        w(f"architecture: {arch_text}\n")
        w(f"tensors: {len(f.tensors)}, {_human(total)}\n")
        if types:
            w(f"\n  {'type':<10} {'count':>7} {'bytes':>14}\n")
            for name, d in sorted(types.items(), key=lambda kv: -kv[1]["bytes"]):
                w(f"  {name:<10} {d['count']:>7} {d['bytes']:>14,}\n")
        w(f"\nmetadata: {len(meta)} keys\n")
        kw = min(max((len(_esc(k, _KEY_COL)) for k in meta), default=0), _KEY_COL)
        tw = min(max((len(t) for t, _, _ in meta.values()), default=0), _TYPE_COL)
        for k, (t, text, _) in meta.items():
            w(f"  {_cell(k, kw)}  {_cell(t, tw)}  {text}\n")
        if show_tensors and len(f.tensors):
            nw = min(max(len(_esc(n, _KEY_COL)) for n in f.tensors), _KEY_COL)
            w(f"\n  {'name':<{nw}}  {'type':<8} {'shape':<24} {'bytes':>14} {'offset':>14}\n")
            for t in f.tensors.values():
                shape = "×".join(str(d) for d in t.shape) or "()"
                nb = f"{t.nbytes:,}" if t.nbytes is not None else "?"
                w(f"  {_cell(t.name, nw)}  {t.ggml_type:<8} {shape:<24} {nb:>14} {t.offset:>14,}\n")
        out.flush()
    return 0


def _silence_stdout():
    """Point file descriptor 1 at /dev/null, so the interpreter's final flush of a dead stdout stays quiet."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.close(fd)
    except OSError:
        pass


def _inspect_main(args) -> int:
    from .gguf import GGUFError

    path = SAMPLE if args.file is None else args.file
    if sys.stdout is None:  # started with file descriptor 1 closed
        print("fastquant inspect: standard output is closed; nothing was written", file=sys.stderr)
        return 2
    try:
        return inspect(path, args.json, args.tensors)
    except BrokenPipeError:
        _silence_stdout()
        print(
            "fastquant inspect: standard output was closed before the output was written (broken pipe)", file=sys.stderr
        )
        return 1
    except GGUFError as e:
        print(f"fastquant inspect: {_esc(path, 200)}: not a valid GGUF file: {_esc(str(e), 500)}", file=sys.stderr)
        return 2
    except OSError as e:
        if getattr(e, "filename", None) is None:  # writing our output failed (stdout closed, disk full)
            _silence_stdout()
        print(f"fastquant inspect: {_esc(str(e), 500)}", file=sys.stderr)
        return 2


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
        return _inspect_main(args)
    return 1  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
