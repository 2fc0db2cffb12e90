#!/usr/bin/env bash
# Build the wheel users install (abi3, manylinux2014 through zig) and check it in a bare virtual environment:
# install it with its one dependency (numpy), then use the parts that need no torch: configs, the GGUF reader,
# dequantize/quantize and the inspect command. Catches a wheel that builds but does not install or import
# (missing files, a too-new glibc symbol, a stale stub).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
PATH="$PWD/.venv/bin:$PATH" maturin build --release --zig --compatibility manylinux2014 -q -o "$out/dist"
wheel="$(ls "$out"/dist/fastquant-*-cp311-abi3-manylinux*.whl)"
# The wheel must not need symbols newer than manylinux2014 (glibc 2.17).
if unzip -p "$wheel" 'fastquant/_core*.so' > "$out/_core.so" && objdump -T "$out/_core.so" | grep -o 'GLIBC_2\.[0-9]*' | sort -u -t. -k2 -n | tail -1 | grep -qvE 'GLIBC_2\.(1[0-7]|[0-9])$'; then
    echo "wheel_smoke: $wheel needs a glibc newer than 2.17" >&2
    objdump -T "$out/_core.so" | grep -o 'GLIBC_2\.[0-9]*' | sort -u >&2
    exit 1
fi
python3 -m venv "$out/venv"
"$out/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
cd "$out"
"$out/venv/bin/python" - <<'PY'
import sys
import numpy as np
import fastquant, fastquant.gguf as fg
assert "torch" not in sys.modules, "import fastquant imported torch"
cfg = fastquant.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
assert fastquant.DiffusersAutoQuantizer.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
x = np.linspace(-1, 1, 256 * 4, dtype=np.float32)
blocks = fg.quantize(x, "Q8_0")
y = fg.dequantize(blocks, "Q8_0", x.shape)
assert np.abs(y - x).max() < 1e-2
try:
    fastquant.NVIDIAModelOptConfig("FP9")
except ValueError:
    pass
else:
    raise AssertionError("a bad config was accepted")
print("wheel smoke test passed:", fastquant.__version__, sys.version.split()[0])
PY
"$out/venv/bin/fastquant" inspect > /dev/null
echo "wheel_smoke: ok ($(basename "$wheel"))"
