#!/usr/bin/env bash
# Every static check a change must pass (run by scripts/test.sh, and by pre-commit hook by hook):
# rustfmt, clippy with warnings as errors (the workspace lints in Cargo.toml), ruff lint and format, mypy's
# stubtest of python/fastquant/_core.pyi against the built extension (no allowlist), and mypy on
# tests/typing/public_api.py (the public names as a user's type checker sees them).
# Needs the set-up (scripts/setup.sh): the tools come from requirements-dev.txt and the extension is built from
# the current Rust source (stubtest imports it; rebuild after changing rust/fastquant-py).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
echo "lint: cargo fmt --check"
cargo fmt --all --check
echo "lint: cargo clippy -D warnings"
cargo clippy --release --workspace --all-targets -q -- -D warnings
echo "lint: ruff check / ruff format --check"
"$py" -m ruff check -q python tests benches scripts
"$py" -m ruff format -q --check python tests benches scripts
# The package in this checkout (python/), whatever an editable install elsewhere points at.
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
echo "lint: mypy.stubtest fastquant._core"
"$py" -m mypy.stubtest fastquant._core --mypy-config-file pyproject.toml
echo "lint: mypy tests/typing"
"$py" -m mypy --config-file pyproject.toml tests/typing
echo "lint: all checks passed"
