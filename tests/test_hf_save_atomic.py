"""Crash safety of fastquant.save_pretrained: SIGKILL at random points during a save leaves the previous save (or
the complete new one) in place, never a mix; I/O errors are OSError naming the path; failures leave no temp."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fastquant.hf import _atomic
from fastquant.hf._atomic import atomic_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONPATH = os.path.join(ROOT, "python") + os.pathsep + os.environ.get("PYTHONPATH", "")


def folder_digest(path):
    """Digest of a folder's content. A safetensors file counts by its tensors and metadata (its header's
    metadata order differs from one process to the next), any other file by its bytes."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        h.update(name.encode() + b"\0")
        full = os.path.join(path, name)
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(full, framework="pt") as f:
                h.update(repr(sorted((f.metadata() or {}).items())).encode())
                for key in sorted(f.keys()):
                    t = f.get_tensor(key)
                    h.update(key.encode() + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
                    h.update(t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
        else:
            with open(full, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _spawn(code, *args):
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


WRITER = """
import os, sys
from fastquant.hf._atomic import atomic_folder
target = sys.argv[1]
version = int(sys.argv[2])
print("ready", flush=True)
while True:
    version += 1
    with atomic_folder(target) as tmp:
        for i in range(6):
            with open(os.path.join(tmp, f"part{i}.bin"), "wb") as f:
                f.write(str(version).encode() * (20000 + 3000 * i))
    print(version, flush=True)
"""


def check_complete(path):
    """All six parts of one version: the folder is one whole save."""
    names = sorted(os.listdir(path))
    assert names == [f"part{i}.bin" for i in range(6)], names
    versions = set()
    for i, name in enumerate(names):
        data = open(os.path.join(path, name), "rb").read()
        v = data[: len(data) // (20000 + 3000 * i)]
        assert data == v * (20000 + 3000 * i)
        versions.add(int(v))
    assert len(versions) == 1, versions
    return versions.pop()


def test_sigkill_at_random_points_never_breaks_the_folder(tmp_path):
    rng = random.Random(1234)
    target = tmp_path / "save"
    with atomic_folder(target) as tmp:
        for i in range(6):
            with open(os.path.join(tmp, f"part{i}.bin"), "wb") as f:
                f.write(b"0" * (20000 + 3000 * i))
    last = 0
    for round_ in range(8):
        proc = _spawn(WRITER, target, (round_ + 1) * 1000)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0].split()
        completed = [int(v) for v in out]
        v = check_complete(target)
        # the folder holds the last completed save, or the one being written if the kill came after its swap
        newest = completed[-1] if completed else last
        in_flight = (completed[-1] if completed else (round_ + 1) * 1000) + 1
        assert v in (newest, in_flight), (v, newest, in_flight)
        last = v
    # a later save cleans what the killed ones left (temporary folders) and succeeds
    with atomic_folder(target) as tmp:
        for i in range(6):
            with open(os.path.join(tmp, f"part{i}.bin"), "wb") as f:
                f.write(b"7" * (20000 + 3000 * i))
    assert check_complete(target) == 7
    assert os.listdir(tmp_path) == ["save"]


MODEL_WRITER = """
import sys, torch, transformers, fastquant as fq
sys.path.insert(0, sys.argv[2])
from test_hf_save_atomic import tiny_models
models = tiny_models(fq, torch, transformers)
print("ready", flush=True)
i = 0
while True:
    fq.save_pretrained(models[i % 2], sys.argv[1], max_shard_size="60KB")
    i += 1
"""


def tiny_models(fq, torch, transformers):
    cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(fq.quantize(transformers.LlamaForCausalLM(cfg).eval(), fq.TorchAoConfig("int8wo")))
    return models


def test_sigkill_during_real_saves_leaves_a_loadable_save(tmp_path):
    """A transformers model saved over and over (two different models, sharded) while SIGKILL lands at random
    moments: the folder is always byte for byte one of the two saves, and transformers loads it."""
    import shutil

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import fastquant as fq

    for i, m in enumerate(tiny_models(fq, torch, transformers)):
        fq.save_pretrained(m, tmp_path / f"ref{i}", max_shard_size="60KB")
    refs = {folder_digest(tmp_path / f"ref{i}"): i for i in (0, 1)}
    assert len(refs) == 2
    target = tmp_path / "save"
    shutil.copytree(tmp_path / "ref1", target)  # the previous save
    rng = random.Random(99)
    for _ in range(2):
        proc = _spawn(MODEL_WRITER, target, os.path.dirname(os.path.abspath(__file__)))
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert folder_digest(target) in refs
    which = refs[folder_digest(target)]
    loaded = transformers.LlamaForCausalLM.from_pretrained(target).eval()
    ref = transformers.LlamaForCausalLM.from_pretrained(tmp_path / f"ref{which}").eval()
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ref(x).logits)


# ---- errors -------------------------------------------------------------------------------------------------------


def _write(tmp, text="new"):
    with open(os.path.join(tmp, "config.json"), "w") as f:
        f.write(text)


def test_error_in_the_body_keeps_the_previous_folder_and_removes_the_temp(tmp_path):
    target = tmp_path / "m"
    with atomic_folder(target) as tmp:
        _write(tmp, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(target) as tmp:
            _write(tmp)
            raise RuntimeError("boom")
    assert (target / "config.json").read_text() == "old"
    assert os.listdir(tmp_path) == ["m"]


def test_target_that_is_a_file_or_has_no_parent(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError) as e:
        with atomic_folder(tmp_path / "f"):
            pass
    assert e.value.filename == str(tmp_path / "f")
    with pytest.raises(FileNotFoundError) as e:
        with atomic_folder(tmp_path / "missing" / "m"):
            pass
    assert e.value.filename == str(tmp_path / "missing")


def test_fallback_swap_and_recovery_of_a_stranded_old_folder(tmp_path, monkeypatch):
    """Without renameat2 the swap is two renames; a crash between them leaves `.m.old-*` and no `m`: the next
    save puts it back first, so even a failing next save leaves the previous one in place."""
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "m"
    with atomic_folder(target) as tmp:
        _write(tmp, "v1")
    with atomic_folder(target) as tmp:
        _write(tmp, "v2")
    assert (target / "config.json").read_text() == "v2"
    os.rename(target, tmp_path / ".m.old-abc123")  # as if killed between the two renames
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            raise RuntimeError("crash again")
    assert (target / "config.json").read_text() == "v2"
    assert os.listdir(tmp_path) == ["m"]


def test_io_errors_of_the_library_writer_are_oserror_naming_the_path(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import fastquant as fq
    import transformers.modeling_utils as mu
    from safetensors import SafetensorError

    torch_ = __import__("torch")
    torch_.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    model = fq.quantize(transformers.LlamaForCausalLM(cfg).eval(), fq.TorchAoConfig("int8wo"))
    target = tmp_path / "m"
    fq.save_pretrained(model, target)
    before = folder_digest(target)

    def disk_full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(mu, "safe_save_file", disk_full)
    with pytest.raises(OSError) as e:
        fq.save_pretrained(model, target)
    assert e.value.filename == str(target) and "No space left" in str(e.value)
    assert not isinstance(e.value, SafetensorError)

    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mu, "safe_save_file", enospc)
    with pytest.raises(OSError) as e:
        fq.save_pretrained(model, target)
    assert e.value.filename == str(target)
    assert folder_digest(target) == before and os.listdir(tmp_path) == ["m"]
