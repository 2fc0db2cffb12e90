"""`import fastquant` stays light: no torch, numpy or backend package is imported."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "torch",
    "numpy",
    "diffusers",
    "transformers",
    "bitsandbytes",
    "torchao",
    "optimum",
    "modelopt",
    "gguf",
    "safetensors",
]


def test_import_loads_no_heavy_module():
    code = (
        "import sys, json, warnings; import fastquant; "
        "fastquant.DiffusersAutoQuantizer.from_config({'load_in_4bit': True}); "
        "fastquant.TorchAoConfig('int8wo'); fastquant.NVIDIAModelOptConfig('FP8').to_dict(); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (HEAVY,)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_importtime_is_small():
    # The figure itself is reported by benches/bench_import.py; this guards against a heavy import sneaking in.
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fastquant"], capture_output=True, text=True, check=True
    )
    total_us = None
    for line in res.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "fastquant":
            total_us = int(parts[1])
    assert total_us is not None, res.stderr[-2000:]
    assert total_us < 1_000_000, f"import fastquant took {total_us / 1000:.1f} ms"
