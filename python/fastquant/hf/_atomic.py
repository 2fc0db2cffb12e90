"""Crash-safe folder writes: a reader never sees a half-written folder, a crash never loses the previous one.

`atomic_folder(path)` is a context manager that yields a fresh temporary folder beside `path`; what the body
writes there becomes `path` in one step when the body returns:

1. The temporary folder `.<name>.tmp-<random>` is created with `tempfile.mkdtemp` in the same parent folder
   (exclusive creation, an unpredictable name, the same file system, so renames are atomic).
2. Files the previous folder holds that a save does not rewrite (a tokenizer, a README, subfolders) are
   hard-linked (or copied) into it, so a re-save keeps them as `save_pretrained` does.
3. Every file and folder in it is fsync'ed.
4. First save (`path` absent): `rename(tmp, path)`. Re-save (`path` a folder): `renameat2(tmp, path,
   RENAME_EXCHANGE)` swaps the two folders in one atomic step (Linux >= 3.15); where the kernel or file system
   lacks it, `path` is renamed to `.<name>.old-<random>`, the new folder renamed in, and a later save puts a
   stranded `.old` folder back if a crash came between the two renames. The parent folder is fsync'ed, then the
   previous folder (now under the temporary name) is removed.
5. Any error in the body or in steps 2-4 removes the temporary folder and leaves `path` as it was.

At every instant `path` names either the complete previous folder or the complete new one. A SIGKILL at any
point leaves at worst a `.<name>.tmp-*` folder behind (removed by the next save to the same path).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from typing import Callable, Iterator, Optional

__all__ = ["atomic_folder", "fsync_tree"]

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _fsync_path(path: str, directory: bool) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    """fsync every regular file and folder under `root` (folders after their contents)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                _fsync_path(p, directory=False)
        _fsync_path(dirpath, directory=True)


_renameat2 = None


def _exchange(a: str, b: str) -> bool:
    """Atomically swap the folders at `a` and `b`. False when the system cannot (then nothing changed)."""
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    if not _renameat2:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)):
        return False
    raise OSError(err, f"swapping {a!r} and {b!r} failed: {os.strerror(err)}", b)


def _siblings(parent: str, name: str, kind: str):
    prefix = f".{name}.{kind}-"
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    return [os.path.join(parent, e) for e in entries if e.startswith(prefix)]


def _recover(path: str, parent: str, name: str) -> None:
    """Clean up what an interrupted earlier save left: stale temporary folders, and an `.old` folder stranded
    between the two renames of the fallback swap (put back when `path` is missing)."""
    for tmp in _siblings(parent, name, "tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    olds = _siblings(parent, name, "old")
    if olds and not os.path.lexists(path):
        newest = max(olds, key=lambda p: os.stat(p).st_mtime_ns)
        os.rename(newest, path)
        _fsync_path(parent, directory=True)
        olds.remove(newest)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def _carry_over(old: str, new: str, is_stale: Callable[[str], bool]) -> None:
    """Hard-link (or copy) into `new` what `old` holds that `new` does not and that is not stale."""
    for entry in os.listdir(old):
        src, dst = os.path.join(old, entry), os.path.join(new, entry)
        if os.path.lexists(dst) or is_stale(entry):
            continue
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(src, dst)


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def atomic_folder(path, *, is_stale: Optional[Callable[[str], bool]] = None) -> Iterator[str]:
    """Yield a temporary folder; on success it replaces folder `path` atomically (see the module docstring).

    `is_stale(name)`: whether an entry of the previous folder is replaced by the new save (weights, index,
    config) rather than carried over. Raises FileExistsError when `path` exists and is not a folder."""
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if not name:
        raise ValueError(f"{path!r}: expected a folder path with a name, not a file system root")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FileExistsError(errno.EEXIST, "the target exists and is not a folder", path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, "the parent folder of the target does not exist", parent)
    _recover(path, parent, name)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    done = False
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a saved folder gets the usual permissions
        yield tmp
        if os.path.isdir(path):
            _carry_over(path, tmp, is_stale or (lambda _: False))
        fsync_tree(tmp)
        if not os.path.isdir(path):
            os.rename(tmp, path)  # first save; fails if someone created a non-empty `path` meanwhile
            _fsync_path(parent, directory=True)
        elif _exchange(tmp, path):
            _fsync_path(parent, directory=True)
            shutil.rmtree(tmp, ignore_errors=True)  # the previous folder, now under the temporary name
        else:
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.rmdir(old)
            os.rename(path, old)
            os.rename(tmp, path)
            _fsync_path(parent, directory=True)
            shutil.rmtree(old, ignore_errors=True)
        done = True
    finally:
        if not done:
            shutil.rmtree(tmp, ignore_errors=True)
