#!/usr/bin/env bash
# Build the Rust core for aarch64 and run its SIMD check (examples/simd_check.rs: golden vectors and random
# blocks, every NEON kernel against the scalar reference, f32/f16/bf16 outputs) under qemu-user, so the NEON
# kernels are verified on an x86-64 machine. The unit-test binary cannot run there: Debian 12's qemu-user
# hangs in thread creation, and the test harness starts a thread per test; simd_check runs on one thread.
# Not part of .ci/run (it needs root for apt). On a real aarch64 machine, `cargo test -p fastquant-core`
# runs the full unit tests, NEON included.
#
# Needs (Debian 12): Debian's rustc-web (a rustc with an aarch64 standard library packaged beside it),
# the aarch64 cross linker and qemu-user:
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in /usr/bin/rustc aarch64-linux-gnu-gcc qemu-aarch64-static; do
    command -v "$tool" >/dev/null || { echo "missing $tool (see the comment at the top of $0)" >&2; exit 2; }
done
/usr/bin/rustc --print sysroot >/dev/null
[ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/aarch64-unknown-linux-gnu" ] \
    || { echo "no aarch64 standard library for /usr/bin/rustc (install libstd-rust-web-dev:arm64)" >&2; exit 2; }
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
cargo build --release -p fastquant-core --target aarch64-unknown-linux-gnu --target-dir target/aarch64 \
    --example simd_check
# Type-check the unit tests for aarch64 as well (they run on real aarch64 hardware).
cargo test --release -p fastquant-core --target aarch64-unknown-linux-gnu --target-dir target/aarch64 --no-run
qemu-aarch64-static -L /usr/aarch64-linux-gnu target/aarch64/aarch64-unknown-linux-gnu/release/examples/simd_check
