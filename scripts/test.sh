#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every test: the Rust core's cargo tests and the Python suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --release -p fastquant-core
.venv/bin/python -m pytest -q tests
