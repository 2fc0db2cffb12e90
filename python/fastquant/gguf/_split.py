"""Split GGUF sets (llama.cpp's ``gguf-split``): ``name-00001-of-00003.gguf`` … opened as one file.

Every shard is a complete GGUF file. The first holds the model's metadata; each shard states ``split.no``
(0-based), ``split.count`` and the first also ``split.tensors.count`` (the tensors of the whole set).
:func:`open_gguf` opens a plain file as :class:`~fastquant.gguf.GGUFFile` and a set (given any of its
shards) as :class:`GGUFSplitFile`, which has the same reading API.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .._core import GGUFError
from ._file import GGUFFile

_SHARD = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

#: metadata keys that describe one shard, not the model
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def shard_paths(path) -> list:
    """The paths of every shard of the set ``path`` belongs to (``[path]`` for a plain file name)."""
    path = os.fspath(path)
    m = _SHARD.match(os.path.basename(path))
    if not m:
        return [path]
    count = int(m["count"])
    if count < 1 or int(m["no"]) < 1 or int(m["no"]) > count:
        raise GGUFError(f"{path}: shard number {m['no']} of {m['count']} is not a valid split file name")
    d = os.path.dirname(path)
    return [os.path.join(d, f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


class _Merged(Mapping):
    """The tensors of every shard, in shard order."""

    def __init__(self, infos):
        self._d = infos

    def __getitem__(self, k):
        return self._d[k][1]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __contains__(self, k):
        return k in self._d


class GGUFSplitFile:
    """A split GGUF set read as one file: metadata from the first shard, tensors from all of them."""

    def __init__(self, paths):
        self.path = os.fspath(paths[0])
        self.paths = [os.fspath(p) for p in paths]
        self._shards = []
        try:
            for p in self.paths:
                if not os.path.exists(p):
                    raise FileNotFoundError(f"split GGUF set {self.path!r}: shard {p!r} is missing")
                self._shards.append(GGUFFile(p))
            self._check()
        except BaseException:
            self.close()
            raise
        infos = {}
        for i, s in enumerate(self._shards):
            for name, info in s.tensors.items():
                if name in infos:
                    raise GGUFError(f"{s.path}: tensor {name!r} is also in shard {infos[name][0] + 1}")
                infos[name] = (i, info)
        want = self._shards[0].metadata.get("split.tensors.count")
        if want is not None and int(want) != len(infos):
            raise GGUFError(f"{self.path}: split.tensors.count is {want} but the shards hold {len(infos)} tensors")
        self._infos = infos
        self._tensors = _Merged(infos)

    def _check(self):
        n = len(self._shards)
        for i, s in enumerate(self._shards):
            md = s.metadata
            if "split.count" not in md or "split.no" not in md:
                raise GGUFError(f"{s.path}: a shard of a split set needs split.no and split.count metadata")
            if int(md["split.count"]) != n or int(md["split.no"]) != i:
                raise GGUFError(
                    f"{s.path}: split.no={md['split.no']} split.count={md['split.count']}, expected "
                    f"split.no={i} split.count={n} (shard {i + 1} of {n} by its name)"
                )

    # reading API of GGUFFile --------------------------------------------------------------------------
    @property
    def metadata(self):
        return self._shards[0].metadata

    def keys(self):
        return self._shards[0].keys()

    def value_type(self, key):
        return self._shards[0].value_type(key)

    def array_info(self, key):
        return self._shards[0].array_info(key)

    def array_item(self, key, index):
        return self._shards[0].array_item(key, index)

    def array(self, key):
        return self._shards[0].array(key)

    @property
    def tensors(self) -> Mapping:
        return self._tensors

    def _shard_of(self, name) -> GGUFFile:
        try:
            return self._shards[self._infos[name][0]]
        except KeyError:
            raise KeyError(name) from None

    def raw(self, name):
        return self._shard_of(name).raw(name)

    def get_tensor(self, name, dtype=None, device=None):
        return self._shard_of(name).get_tensor(name, dtype=dtype, device=device)

    @property
    def file_size(self) -> int:
        return sum(s.file_size for s in self._shards)

    def close(self):
        for s in self._shards:
            s.close()

    @property
    def closed(self) -> bool:
        return all(s.closed for s in self._shards)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<GGUFSplitFile {self.path!r}: {len(self._shards)} shards, {len(self._tensors)} tensors>"


def open_gguf(path):
    """Open a GGUF file, or a whole split set given any one of its shards."""
    if isinstance(path, (GGUFFile, GGUFSplitFile)):
        raise TypeError("pass a path, not an open GGUF file")
    paths = shard_paths(path)
    if len(paths) == 1:
        f = GGUFFile(paths[0])
        count = f.metadata.get("split.count")
        if count is not None and int(count) > 1:
            f.close()
            raise GGUFError(
                f"{paths[0]}: split.count is {count}, but the name does not follow llama.cpp's "
                "<name>-00001-of-0000N.gguf pattern, so the other shards cannot be found"
            )
        return f
    return GGUFSplitFile(paths)


def load_state_dict(path, dtype=None, device=None) -> dict:
    """All tensors of a GGUF file or split set as ``{name: torch.Tensor}``."""
    with open_gguf(path) as f:
        return {name: f.get_tensor(name, dtype=dtype, device=device) for name in f.tensors}


__all__ = ["GGUFSplitFile", "load_state_dict", "open_gguf", "shard_paths"]
