"""`python -X importtime -c "import fastquant"`: cumulative import time (median of several runs), and what
it pulls in, beside `import diffusers.quantizers` for comparison. Target: under 100 ms, no torch/backends."""

from __future__ import annotations

import statistics
import subprocess
import sys


def cumulative_us(stmt: str, top: str) -> int:
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", stmt], capture_output=True, text=True, check=True)
    for line in res.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == top:
            return int(parts[1])
    raise RuntimeError(res.stderr[-1000:])


def main() -> None:
    sys.path.insert(0, "benches")
    from bench_config import machine

    print(f"machine: {machine()}")
    runs = [cumulative_us("import fastquant", "fastquant") for _ in range(7)]
    fq_ms = statistics.median(runs) / 1000
    mods = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, fastquant; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch','numpy','diffusers','bitsandbytes','torchao','optimum','modelopt','gguf')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    df = [cumulative_us("import diffusers.quantizers", "diffusers.quantizers") for _ in range(3)]
    df_ms = statistics.median(df) / 1000
    print(f"import fastquant: {fq_ms:.1f} ms (median of 7; target < 100 ms: {'met' if fq_ms < 100 else 'NOT MET'})")
    print(f"heavy modules imported by it: {mods}")
    print(f"import diffusers.quantizers: {df_ms:.0f} ms (median of 3) -> {df_ms / fq_ms:.0f}x slower")


if __name__ == "__main__":
    main()
