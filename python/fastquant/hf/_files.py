"""Reading a Hugging Face model folder without trusting it: `config.json` and the safetensors checkpoint (one file,
or shards with their index json), tensor by tensor.

Nothing here unpickles: only JSON and safetensors are read. Headers are read first (names, shapes, dtypes), so a
folder can be checked completely before any model is touched; tensors are then read one at a time.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List, Optional

__all__ = ["read_json", "resolve_folder", "Checkpoint", "WEIGHT_NAMES"]

#: the largest JSON file read (config.json, index json): far above any real one, and it bounds memory
_MAX_JSON_BYTES = 64 << 20
#: nesting deeper than this in a JSON file is refused before parsing (Python's parser would recurse)
_MAX_JSON_DEPTH = 200

#: library -> the checkpoint file stems it writes, preferred first
WEIGHT_NAMES = {
    "transformers": ("model", "diffusion_pytorch_model"),
    "diffusers": ("diffusion_pytorch_model", "model"),
}

_PICKLE_NAMES = ("pytorch_model.bin", "diffusion_pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json")


def _json_depth_ok(text: str, path: str) -> None:
    """Reject nesting deeper than _MAX_JSON_DEPTH with a linear scan (no recursion; strings are skipped)."""
    depth = 0
    in_string = False
    escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > _MAX_JSON_DEPTH:
                raise ValueError(
                    f"{path}: JSON nested more than {_MAX_JSON_DEPTH} levels deep (at character {i}); "
                    "this is not a model config"
                )
        elif ch in "]}":
            depth -= 1


def read_json(path: str, what: str = "config") -> dict:
    """Parse the JSON object in file `path`; any problem is a ValueError (or FileNotFoundError) naming the file."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (the {what} of a model folder)") from None
    if size > _MAX_JSON_BYTES:
        raise ValueError(f"{path}: {size} bytes; a {what} JSON file is expected to be under {_MAX_JSON_BYTES} bytes")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    _json_depth_ok(text, path)
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def resolve_folder(path, subfolder: Optional[str] = None) -> str:
    """The local folder `path` (/ `subfolder`): it must exist and hold a config.json."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"from_pretrained: path must be a local folder (str or os.PathLike), got {type(path).__name__}")
    folder = os.fspath(path)
    if subfolder:
        if not isinstance(subfolder, str):
            raise TypeError(f"subfolder must be a str, got {type(subfolder).__name__}")
        folder = os.path.join(folder, subfolder)
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(f"{folder}: not a folder (from_pretrained reads a model folder)")
        raise FileNotFoundError(
            f"{folder}: no such folder (fastquant.from_pretrained reads local folders; download hub models first, "
            "e.g. with huggingface_hub.snapshot_download, and pass the snapshot folder)"
        )
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder}: no config.json in this folder; it is not a transformers/diffusers model")
    return folder


# safetensors header dtype names -> torch dtype attribute names
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}


class Checkpoint:
    """The safetensors checkpoint of a folder: key -> file from the headers, tensors read on demand.

    `names`: the stems to look for, in order ("model", "diffusion_pytorch_model"): `<stem>.safetensors` or
    `<stem>.safetensors.index.json` with the shards it names."""

    def __init__(self, folder: str, names: Iterable[str]):
        from safetensors import safe_open

        self.folder = folder
        self._safe_open = safe_open
        files = self._find_files(folder, tuple(names))
        self.files: List[str] = files
        self._handles: Dict[str, object] = {}
        self._where: Dict[str, str] = {}
        self._info: Dict[str, tuple] = {}
        self.metadata: Dict[str, str] = {}
        for file in files:
            handle = self._open(file)
            meta = handle.metadata() or {}
            self.metadata.update(meta)
            for key in handle.keys():
                if key in self._where:
                    raise ValueError(f"{file}: tensor {key!r} is also in {self._where[key]}")
                sl = handle.get_slice(key)
                self._where[key] = file
                self._info[key] = (tuple(sl.get_shape()), sl.get_dtype())
        if self._index is not None:
            for key, file in self._index.items():
                got = self._where.get(key)
                if got is None:
                    raise ValueError(f"{self._index_path}: names tensor {key!r} in {file}, which does not hold it")
                if os.path.basename(got) != file:
                    raise ValueError(f"{self._index_path}: names tensor {key!r} in {file}, but it is in {got}")

    # ---- finding files -----------------------------------------------------------------------------------------

    def _find_files(self, folder: str, names) -> List[str]:
        self._index = None
        self._index_path = None
        for stem in names:
            single = os.path.join(folder, stem + ".safetensors")
            index = single + ".index.json"
            if os.path.isfile(index):
                return self._read_index(folder, index)
            if os.path.isfile(single):
                return [single]
        pickles = [n for n in _PICKLE_NAMES if os.path.exists(os.path.join(folder, n))]
        if pickles:
            raise ValueError(
                f"{folder}: the weights are in {pickles[0]} (a pickle); fastquant reads safetensors checkpoints only "
                "and never unpickles a folder's files: convert it to safetensors first"
            )
        wanted = ", ".join(f"{s}.safetensors[.index.json]" for s in names)
        raise FileNotFoundError(f"{folder}: no checkpoint found (looked for {wanted})")

    def _read_index(self, folder: str, index: str) -> List[str]:
        data = read_json(index, "checkpoint index")
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: 'weight_map' must be a non-empty object of tensor name -> shard file")
        files = []
        for key, file in weight_map.items():
            if not isinstance(file, str) or not file or os.path.basename(file) != file or file.startswith("."):
                raise ValueError(f"{index}: tensor {key!r} maps to {file!r}; expected a shard file name in the folder")
            if file not in files:
                files.append(file)
        paths = []
        for file in files:
            p = os.path.join(folder, file)
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{index}: shard {file} is missing from {folder}")
            paths.append(p)
        self._index = dict(weight_map)
        self._index_path = index
        return paths

    def _open(self, file: str):
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = self._safe_open(file, framework="pt", device="cpu")
            except Exception as e:  # safetensors raises its own error types for a bad header
                raise ValueError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from None
            self._handles[file] = handle
        return handle

    # ---- what is in it -----------------------------------------------------------------------------------------

    def keys(self) -> List[str]:
        return list(self._where)

    def __contains__(self, key) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def file_of(self, key: str) -> str:
        return self._where[key]

    def shape(self, key: str) -> tuple:
        return self._info[key][0]

    def dtype_name(self, key: str) -> str:
        return self._info[key][1]

    def torch_dtype(self, key: str):
        import torch

        name = _ST_DTYPES.get(self._info[key][1])
        return getattr(torch, name, None) if name else None

    def is_floating(self, key: str) -> bool:
        return self._info[key][1] in ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")

    def nbytes(self, key: str) -> int:
        import math

        dt = self.torch_dtype(key)
        size = dt.itemsize if dt is not None else 1
        return math.prod(self.shape(key)) * size

    def with_prefix(self, prefix: str) -> List[str]:
        return [k for k in self._where if k.startswith(prefix)]

    def get(self, key: str):
        """Read one tensor (a fresh CPU tensor)."""
        file = self._where.get(key)
        if file is None:
            raise KeyError(f"{self.folder}: the checkpoint has no tensor {key!r}")
        try:
            return self._open(file).get_tensor(key)
        except Exception as e:
            raise ValueError(f"{file}: cannot read tensor {key!r} ({type(e).__name__}: {e})") from None

    def where(self, key: str) -> str:
        """'file: key' for error messages."""
        file = self._where.get(key)
        return f"{os.path.basename(file) if file else self.folder}: {key!r}"

    def close(self) -> None:
        self._handles.clear()
