#!/usr/bin/env bash
# Every static check a change must pass (run by scripts/test.sh, and by pre-commit hook by hook):
# rustfmt, clippy with warnings as errors (the workspace lints in Cargo.toml), ruff lint and format.
# mypy's stubtest of python/fastquant/_core.pyi is not here yet: the stubs lag the binding (GGUF reader and
# config signatures), see CHANGELOG.md; run it by hand with `.venv/bin/python -m mypy.stubtest fastquant._core`.
# Needs the set-up (scripts/setup.sh): the tools come from requirements-dev.txt and the extension is built.
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
echo "lint: all checks passed"
