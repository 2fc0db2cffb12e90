"""Hostile and unlucky files (issue 14): crash-safe GGUF writes, files that shrink, FIFOs and directories, `out=`
over read-only or overlapping memory, errors that say what happened, and a terminal-safe `fastquant inspect`.

Failures that would be a signal or a hang run in a subprocess with a timeout."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastquant.gguf as fg
from fastquant import _core, _json
from fastquant.gguf import GGUFError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYDIR = os.path.join(ROOT, "python")
ENV = dict(os.environ, PYTHONPATH=PYDIR)


def _py(code, timeout=60, **kw):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=ENV, timeout=timeout, **kw
    )


def _cli(*args, timeout=60, **kw):
    return subprocess.run(
        [sys.executable, "-m", "fastquant.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout, **kw
    )


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _big_meta_file(path, n_tokens=200_000):
    """A file whose metadata (a ~2.5 MB vocabulary) is longer than the reader's first read."""
    tokens = [f"token-{i}" for i in range(n_tokens)]
    w = np.arange(64 * 32, dtype=np.float32).reshape(32, 64)
    fg.write(path, {"w": w}, {"general.architecture": "llama", "tokenizer.ggml.tokens": tokens})
    return tokens, w


# ------------------------------------------------------------------------------------------------------
# crash-safe writes


_WRITER = """
import sys, numpy as np, fastquant.gguf as fg
path, seed = sys.argv[1], int(sys.argv[2])
data = np.random.default_rng(seed).standard_normal((1024, 8192), dtype=np.float32)  # 32 MiB
print("ready", flush=True)
sys.stdin.readline()
fg.write(path, {"w": data}, {"general.name": f"seed {seed}"})
print("done", flush=True)
"""


def _run_writer(script, path, seed, kill_after=None):
    """Run the writer; with `kill_after`, SIGKILL it that many seconds into its write. Returns the write's time."""
    p = subprocess.Popen(
        [sys.executable, str(script), str(path), str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=ENV,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        t0 = time.perf_counter()
        p.stdin.write("\n")
        p.stdin.flush()
        if kill_after is None:
            assert p.stdout.readline().strip() == "done"
            elapsed = time.perf_counter() - t0
            assert p.wait(timeout=60) == 0
            return elapsed
        time.sleep(kill_after)
        p.kill()
        p.wait(timeout=60)
        return time.perf_counter() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigkill_during_write_leaves_old_or_new_file(tmp_path):
    """SIGKILL of a writing process at random (seeded) points, repeated: the file under the final name is
    always the complete old file or the complete new one, and no temporary file is left behind."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    target = tmp_path / "out" / "m.gguf"
    ref = tmp_path / "ref"
    target.parent.mkdir()
    ref.mkdir()
    # the reference contents: old (seed 1) and new (seed 2), written by the same code
    write_time = _run_writer(script, ref / "new.gguf", 2)
    new_sha = _sha(ref / "new.gguf")
    rng = random.Random(1234)
    seen = []
    for i in range(8):
        _run_writer(script, target, 1)
        old_sha = _sha(target)
        _run_writer(script, target, 2, kill_after=rng.uniform(0, 1.2 * write_time))
        got = _sha(target)
        assert got in (old_sha, new_sha), f"round {i}: the file is neither the old nor the new one"
        seen.append("new" if got == new_sha else "old")
        with fg.open(target) as f:
            assert f.metadata["general.name"] in ("seed 1", "seed 2")
        assert sorted(os.listdir(target.parent)) == ["m.gguf"], os.listdir(target.parent)
    assert "old" in seen, seen  # some kills landed inside the write (which ones depends on timing)


def test_planted_symlinks_do_not_redirect_the_write(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "m.gguf"
    for name in (f"m.gguf.tmp-{os.getpid()}", "m.gguf.tmp", ".m.gguf.tmp", "m.gguf~"):
        os.symlink(victim, tmp_path / name)
    fg.write(target, {"w": np.ones(32, np.float32)}, {"a": 1})
    assert victim.read_bytes() == b"precious"
    assert not os.path.islink(target)
    with fg.open(target) as f:
        assert f.metadata["a"] == 1


def test_overwrite_keeps_mode_and_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "m.gguf"
    fg.write(target, {"w": np.ones(32, np.float32)}, {"a": 1})
    os.chmod(target, 0o600)
    fg.write(target, {"w": np.zeros(32, np.float32)}, {"a": 2})
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    before = target.read_bytes()
    with pytest.raises(ValueError):
        fg.write(target, {"w": (b"\0" * 3, "F32", (4,))})
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.gguf"]
    # a new file gets the usual mode (0666 less the umask)
    umask = os.umask(0)
    os.umask(umask)
    fg.write(tmp_path / "new.gguf", {}, {"a": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "new.gguf").st_mode) == 0o666 & ~umask


def test_write_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        fg.write(tmp_path / "no" / "such" / "m.gguf", {}, {"a": 1})
    assert ei.value.errno == errno.ENOENT and ei.value.filename == str(tmp_path / "no" / "such" / "m.gguf")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError) as ei:
        fg.write(tmp_path / "d", {}, {"a": 1})
    assert ei.value.filename == str(tmp_path / "d")


def test_write_failure_midway_names_the_path_and_keeps_the_old_file(tmp_path):
    """A write that fails part-way (here: a 1 MiB file-size limit, as a full disk would) raises an OSError
    naming the file, leaves the old file as it was and no temporary file."""
    target = tmp_path / "m.gguf"
    fg.write(target, {"w": np.ones(64, np.float32)}, {"a": 1})
    old = target.read_bytes()
    r = _py(
        f"""
        import resource, signal, numpy as np, fastquant.gguf as fg
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            fg.write({str(target)!r}, {{"w": np.ones((1024, 1024), np.float32)}}, {{"a": 2}})
        except OSError as e:
            print(e.errno, e.filename)
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(errno.EFBIG), str(target)]
    assert target.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.gguf"]


def test_other_threads_run_during_a_large_write(tmp_path):
    data = np.random.default_rng(0).standard_normal((4096, 8192), dtype=np.float32)  # 128 MiB
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    fg.write(tmp_path / "big.gguf", {"w": data}, {})
    t1 = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if t0 <= x <= t1]
    gaps = np.diff([t0, *during, t1])
    # With the GIL held for the whole write, the ticker would stop for all of it (one gap = the write).
    assert gaps.max() < 0.5 * (t1 - t0), f"the ticker stalled {gaps.max():.3f} s of a {t1 - t0:.3f} s write"
    assert len(during) >= 3


# ------------------------------------------------------------------------------------------------------
# reading files that change, and files that are not files


def test_truncated_file_metadata_survives_in_a_subprocess(tmp_path):
    p = tmp_path / "m.gguf"
    _big_meta_file(p)
    r = _py(
        f"""
        import os, fastquant.gguf as fg
        f = fg.open({str(p)!r})
        os.truncate({str(p)!r}, 0)
        m = f.metadata
        assert m["general.architecture"] == "llama"
        assert f.array_item("tokenizer.ggml.tokens", 199_999) == "token-199999"
        assert len(m["tokenizer.ggml.tokens"]) == 200_000
        assert [t.name for t in f.tensors.values()] == ["w"]
        try:
            f.raw("w")
        except OSError as e:
            assert e.errno == 5 and e.filename == {str(p)!r} and "truncated" in str(e), e
        else:
            raise SystemExit("raw() of a truncated file gave data")
        print("ok")
        """
    )
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.strip() == "ok"


def test_inspect_survives_a_file_truncated_while_open(tmp_path):
    p, p2 = tmp_path / "m.gguf", tmp_path / "m2.gguf"
    _big_meta_file(p)
    _big_meta_file(p2)
    r = _py(
        f"""
        import io, os, fastquant.gguf as fg, fastquant.cli as cli
        real_open = fg.open
        def open_then_truncate(path):
            f = real_open(path)
            os.truncate(path, 100)
            return f
        fg.open = open_then_truncate
        out = io.StringIO()
        assert cli.inspect({str(p)!r}, False, True, out=out) == 0
        assert "token-0" in out.getvalue()
        out = io.StringIO()
        assert cli.inspect({str(p2)!r}, True, True, out=out) == 0
        assert '"token-0"' in out.getvalue()
        print("ok")
        """
    )
    assert r.returncode == 0, (r.returncode, r.stderr)


def test_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    r = _py(
        f"""
        import fastquant.gguf as fg
        try:
            fg.open({str(fifo)!r})
        except OSError as e:
            print(type(e).__name__, e.errno, e.filename)
        """,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["OSError", str(errno.EINVAL), str(fifo)]
    r = _cli("inspect", str(fifo), timeout=30)
    assert r.returncode == 2 and "not a regular file" in r.stderr and "Traceback" not in r.stderr


def test_os_errors_carry_errno_and_filename(tmp_path):
    with pytest.raises(IsADirectoryError) as ei:
        fg.open(tmp_path)
    assert ei.value.errno == errno.EISDIR and ei.value.filename == str(tmp_path)
    missing = tmp_path / "missing.gguf"
    with pytest.raises(FileNotFoundError) as ei:
        fg.open(missing)
    assert ei.value.errno == errno.ENOENT and ei.value.filename == str(missing)
    assert "os error" not in ei.value.strerror


def test_gguf_error_has_offset_and_field():
    bad = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IIQ", 9, 0, 2**63)
    with pytest.raises(GGUFError) as ei:
        _core._GGUFReader.from_bytes(bad)
    e = ei.value
    assert isinstance(e.offset, int) and e.offset == 41  # the length field of the array
    assert e.field == "metadata key #0 'a'"
    assert str(e).startswith(f"offset {e.offset}: {e.field}: array length 2^63")
    assert GGUFError("plain").offset is None and GGUFError("plain").field is None


def test_error_quotes_only_a_prefix_of_a_huge_key():
    key = "k" * 1_000_000
    rec = struct.pack("<Q", len(key)) + key.encode() + struct.pack("<II", 4, 1)
    bad = b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + rec + rec
    with pytest.raises(GGUFError, match="duplicate key") as ei:
        _core._GGUFReader.from_bytes(bad)
    assert len(str(ei.value)) < 400 and "(1000000 bytes)" in str(ei.value)


# ------------------------------------------------------------------------------------------------------
# out= and argument checks


def test_torch_out_over_a_read_only_mapping_is_refused(tmp_path):
    pytest.importorskip("torch")
    p = tmp_path / "m.gguf"
    fg.write(p, {"w": np.ones((4, 64), np.float32)}, {})
    r = _py(
        f"""
        import warnings, numpy as np, torch, fastquant.gguf as fg
        f = fg.open({str(p)!r})
        raw = f.raw("w")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = torch.from_numpy(raw.view(np.float32))
        src = fg.quantize(np.ones(256, np.float32), "Q8_0")
        try:
            fg.dequantize(src, "Q8_0", out=out)
        except ValueError as e:
            assert "not writable" in str(e), e
        else:
            raise SystemExit("wrote into a read-only mapping")
        mm = np.memmap({str(p)!r}, dtype=np.uint8, mode="r")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out2 = torch.from_numpy(mm[f.data_offset:f.data_offset + 1024]).view(torch.float32)
        try:
            fg.dequantize(src, "Q8_0", out=out2)
        except ValueError as e:
            assert "not writable" in str(e), e
        else:
            raise SystemExit("wrote into a read-only memmap")
        print("ok")
        """
    )
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.strip() == "ok"


def test_out_overlapping_the_input_is_refused():
    torch = pytest.importorskip("torch")
    q = fg.quantize(np.ones(1024, np.float32), "Q8_0")
    buf = torch.zeros(8192, dtype=torch.uint8)
    data = buf[: q.size]
    data.copy_(torch.from_numpy(q))
    out = buf.view(torch.float32)[:1024]  # the same memory as `data`
    with pytest.raises(ValueError, match="overlaps"):
        fg.dequantize(data, "Q8_0", out=out)
    ok = torch.empty(1024)
    fg.dequantize(data, "Q8_0", out=ok)
    assert torch.allclose(ok, torch.ones(1024), atol=1e-3)
    a = np.zeros(8192, np.uint8)
    a[: q.size] = q
    with pytest.raises(ValueError):
        fg.dequantize(a[: q.size], "Q8_0", out=a.view(np.float32)[:1024])


def test_shapes_must_be_integers_and_inputs_real():
    q = fg.quantize(np.ones((4, 64), np.float32), "Q8_0")
    with pytest.raises(TypeError, match="integers"):
        fg.dequantize(q, "Q8_0", shape=(4.9, 64))
    with pytest.raises(TypeError):
        fg.dequantize(q, "Q8_0", shape=(True, 256))
    assert fg.dequantize(q, "Q8_0", shape=(np.int64(4), 64)).shape == (4, 64)
    with pytest.raises(TypeError, match="integers"):
        fg.write("/nonexistent/never.gguf", {"w": (q.tobytes(), "Q8_0", (4.9, 64))})
    with pytest.raises(TypeError, match="None"):
        fg.quantize(None, "F32")
    with pytest.raises(TypeError, match="complex"):
        fg.quantize(np.ones(32, np.complex64), "F32")
    with pytest.raises(TypeError, match="complex"):
        fg.quantize([1 + 2j] * 32, "Q8_0")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="complex"):
        fg.quantize(torch.ones(32, dtype=torch.complex64), "F32")


def test_json_nesting_is_capped(tmp_path):
    deep = "[" * 10_000 + "]" * 10_000
    with pytest.raises(ValueError, match="nested more than 64"):
        _json.loads(deep, "x")
    with pytest.raises(ValueError, match="nested more than 64"):
        _json.loads("[" * 100 + "]" * 100, "x")
    assert _json.loads("[" * 64 + "]" * 64, "x") is not None
    from fastquant import DiffusersAutoQuantizer

    (tmp_path / "config.json").write_text('{"quantization_config": ' + '{"a": ' * 5000 + "1" + "}" * 5001)
    with pytest.raises(ValueError, match="nested"):
        DiffusersAutoQuantizer.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------------
# fastquant inspect


def test_inspect_escapes_and_bounds_its_output(tmp_path):
    p = tmp_path / "evil.gguf"
    long_key = "k" * 100_000
    fg.write(
        p,
        {"t\x1b]0;pwned\x07": np.ones(32, np.float32)},
        {
            "evil.\x1b[2J\rFAKE": "line1\nline2\x1b[31m",
            long_key: "x" * 5_000_000,
            "general.architecture": "\x1b[1mllama",
            "bidi": "\u202eabc",
        },
    )
    r = _cli("inspect", "--tensors", str(p))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert not any(c in out for c in "\x1b\r\x07\u202e")
    assert "\\x1b[2J\\rFAKE" in out and "\\x1b[1mllama" in out and "\\u202e" in out
    assert max(len(line) for line in out.splitlines()) < 400, "a line was not bounded"
    assert len(out) < 5000
    assert "…(+" in out  # the cut key and the cut value say so


def test_inspect_json_gives_strings_whole_and_one_array_shape(tmp_path):
    p = tmp_path / "m.gguf"
    s = "é" * 500
    fg.write(p, {"w": np.ones(32, np.float32)}, {"s": s, "short": [1, 2, 3], "long": list(range(100))})
    r = _cli("inspect", "--json", str(p))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["metadata"]["s"]["value"] == s
    assert doc["metadata"]["short"]["value"] == {"element_type": "i32", "length": 3, "head": [1, 2, 3]}
    assert doc["metadata"]["long"]["value"] == {"element_type": "i32", "length": 100, "head": list(range(8))}
    assert doc["tensors"][0]["ggml_type"] == "F32" and "type" not in doc["tensors"][0]


def test_inspect_empty_path_is_an_error():
    r = _cli("inspect", "")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "architecture" not in r.stdout


def test_inspect_with_stdout_closed_or_broken(tmp_path):
    r = subprocess.run(
        ["bash", "-c", f"exec {sys.executable} -m fastquant.cli inspect --json >&-"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and "closed" in r.stderr, r.stderr
    p = tmp_path / "m.gguf"
    fg.write(p, {}, {f"key.{i}": f"value {i}" for i in range(20_000)})  # about 1.5 MB of JSON
    r = subprocess.run(
        [
            "bash",
            "-c",
            f"{sys.executable} -m fastquant.cli inspect --json {p} | head -c 10 >/dev/null; " + "exit ${PIPESTATUS[0]}",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr and "broken pipe" in r.stderr, (r.returncode, r.stderr)
    r = subprocess.run(
        [sys.executable, "-m", "fastquant.cli", "inspect", "--json", str(p)],
        stdout=open("/dev/full", "w"),
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "No space left" in r.stderr, r.stderr
