"""Backend version ranges: parsed with `packaging`, and both bounds enforced (too old and too new are each a
clear BackendImportError naming the package, the installed version and the range that works)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastquant.quantizers import _utils
from fastquant.quantizers._utils import BACKEND_PACKAGES, BackendImportError, check_version, require


@pytest.mark.parametrize(
    "installed",
    ["0.46", "0.46.0", "0.50.2", "0.50.99", "0.50.2+cu128", "0.50.3rc1", "0.46.0.post1"],
)
def test_inside_the_range_is_accepted(installed):
    check_version("bitsandbytes", ">=0.46,<0.51", installed)


@pytest.mark.parametrize("installed", ["0.45.9", "0.3", "0.46.0rc1", "0.46.0.dev3"])
def test_too_old_is_refused(installed):
    with pytest.raises(BackendImportError) as e:
        check_version("bitsandbytes", ">=0.46,<0.51", installed, "bitsandbytes quantization")
    msg = str(e.value)
    assert isinstance(e.value, ImportError)
    assert f"version {installed} is installed (older than" in msg
    assert "pip install 'bitsandbytes>=0.46,<0.51'" in msg and "for bitsandbytes quantization" in msg
    assert e.value.package == "bitsandbytes" and e.value.version_range == ">=0.46,<0.51"


# 0.51.0rc1 is a pre-release of 0.51, which "<0.51" excludes (PEP 440's own rule).
@pytest.mark.parametrize("installed", ["0.51", "0.51.0", "0.51.0rc1", "1.0", "0.51.0.post1", "0.60.0+local"])
def test_too_new_is_refused(installed):
    with pytest.raises(BackendImportError) as e:
        check_version("bitsandbytes", ">=0.46,<0.51", installed)
    assert f"version {installed} is installed (newer than" in str(e.value)


def test_unknown_or_unparsable_version_is_not_refused():
    check_version("torch", ">=2.4", None)
    check_version("torch", ">=2.4", "not a version")


def _fake_backend(monkeypatch, installed):
    # A real importable module (json) standing in for a backend, with its installed version patched.
    monkeypatch.setitem(BACKEND_PACKAGES, "fake-backend", ("json", ">=1.2,<2"))
    monkeypatch.setattr(_utils, "_installed_version", lambda package, import_name: installed)


def test_require_checks_both_bounds(monkeypatch):
    _fake_backend(monkeypatch, "1.5.0")
    assert require("fake-backend") is json
    _fake_backend(monkeypatch, "1.1")
    with pytest.raises(BackendImportError, match=r"version 1\.1 is installed \(older than"):
        require("fake-backend", "testing")
    _fake_backend(monkeypatch, "2.0.0")
    with pytest.raises(BackendImportError, match=r"version 2\.0\.0 is installed \(newer than"):
        require("fake-backend", "testing")


def test_quantizer_validate_environment_refuses_a_too_new_backend(monkeypatch):
    import fastquant as fq

    real = _utils._installed_version
    monkeypatch.setattr(_utils, "_installed_version", lambda p, i: "0.19.0" if p == "torchao" else real(p, i))
    q = fq.DiffusersAutoQuantizer.from_config(fq.TorchAoConfig("int8wo"), pre_quantized=False)
    with pytest.raises(BackendImportError, match=r"torchao.*version 0\.19\.0 is installed \(newer than"):
        q.validate_environment(device_map={"": "cpu"})


def test_pinned_dev_versions_lie_in_the_advertised_ranges():
    # requirements-dev.txt pins what the tests run with; every backend pin must satisfy BACKEND_PACKAGES.
    path = os.path.join(os.path.dirname(__file__), "..", "requirements-dev.txt")
    pins = {}
    for line in open(path, encoding="utf-8"):
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    checked = 0
    for package, (_, version_range) in BACKEND_PACKAGES.items():
        if package in pins:
            check_version(package, version_range, pins[package])
            checked += 1
    assert checked == len(BACKEND_PACKAGES)


def test_packaging_is_imported_lazily():
    code = (
        "import sys, fastquant; fastquant.DiffusersAutoQuantizer.from_config({'load_in_4bit': True}); "
        "print(json.dumps('packaging' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False
