#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check: the static checks (scripts/lint.sh: rustfmt, clippy,
# ruff), the Rust core's cargo tests, the Python suite, and the built wheel in a bare venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh
cargo test --release -p fastquant-core
.venv/bin/python -m pytest -q tests
bash scripts/wheel_smoke.sh
