"""How the kernels are built: compiled for CUDA, or run by Triton's interpreter (numpy, on CPU tensors).

The choice is made once, when this package is first imported: the interpreter when ``TRITON_INTERPRET=1`` is
set or when torch sees no CUDA device, compiled kernels otherwise. Triton itself decides this per function at
decoration time from the same environment variable; deciding here as well lets a machine without a GPU run
the very same kernel code on CPU tensors without the variable having been set before ``triton`` was imported
(and without changing how any other Triton user in the process is built).
"""

from __future__ import annotations

import os

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1" or not torch.cuda.is_available()


def jit(fn):
    """``triton.jit``, or the interpreter's wrapper when :data:`INTERPRET` is set."""
    if INTERPRET:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(fn)
    return triton.jit(fn)


def launch_options() -> dict:
    """Extra launch keywords: no FMA contraction (``a*b + c`` stays two roundings, as in the Rust reference).
    The interpreter computes with numpy, which never contracts."""
    return {} if INTERPRET else {"enable_fp_fusion": False}
