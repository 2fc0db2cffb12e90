"""JSON from files a user did not write (a model folder's `config.json`, checkpoint metadata), nesting capped.

Python's `json` recurses once per nesting level: 10,000 nested brackets raise RecursionError, and anything
between the Rust config parser's cap (64, `from_dict`) and Python's recursion limit is accepted only to be walked
again later. `loads`/`load` refuse more than `MAX_DEPTH` levels with a ValueError naming the source.
"""

from __future__ import annotations

import json

#: the nesting limit of the Rust config parser (`from_dict`)
MAX_DEPTH = 64


def _depth_ok(value, limit: int) -> bool:
    """Whether `value` nests at most `limit` containers deep (iterative: no recursion of our own)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            items = v.values()
        elif isinstance(v, list):
            items = v
        else:
            continue
        if d > limit:
            return False
        stack.extend((x, d + 1) for x in items if isinstance(x, (dict, list)))
    return True


def loads(text, source: str = "JSON text", max_depth: int = MAX_DEPTH):
    """`json.loads(text)`, refusing (ValueError) text nested deeper than `max_depth`."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        ok = False
    else:
        ok = _depth_ok(value, max_depth)
    if not ok:
        raise ValueError(f"{source}: JSON nested more than {max_depth} levels deep")
    return value


def load(path, max_depth: int = MAX_DEPTH):
    """Read and parse the JSON file `path` (UTF-8), nesting capped as in `loads`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return loads(text, str(path), max_depth)
