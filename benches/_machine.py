"""What every benchmark prints about the machine it ran on (imported by the scripts in this folder)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows, or '?')."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def describe() -> str:
    """CPU model, logical CPUs, Python and OS in one line."""
    return f"{cpu_model()}; {os.cpu_count()} logical CPUs; Python {platform.python_version()}; {platform.platform()}"
