#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with every Python dependency, and fastquant
# built (release) and installed into it in editable mode. Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo (Rust) is needed; install it with rustup first" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# Build the extension and install the package (editable) into .venv. VIRTUAL_ENV is set explicitly so that a
# virtual environment activated in the caller's shell cannot receive the install instead.
VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --release -q
# GGUF test fixtures written by llama.cpp's own converter (cached under ~/.cache/fastquant/gguf-fixtures or
# $FASTQUANT_FIXTURES; a no-op when they exist). See scripts/fetch_fixtures.py.
.venv/bin/python scripts/fetch_fixtures.py
