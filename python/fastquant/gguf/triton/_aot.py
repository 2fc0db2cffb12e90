"""Ahead-of-time compile checks: build the kernels for a CUDA architecture without a GPU (Triton's own
compiler and the ptxas it ships), to catch compile errors and read register use, spills and the PTX.

Needs ``FASTQUANT_TRITON_COMPILE_ONLY=1`` in the environment before this package is imported (otherwise,
without a GPU, the kernels are built for the interpreter). Used by ``tests/test_gguf_triton.py`` and
``benches/bench_gguf_triton_cuda.py --compile-check``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import _dequant as D
from . import _linear as L
from ._jit import INTERPRET

_OUT_PTR = {0: "*fp32", 1: "*fp16", 2: "*i16"}
_X_PTR = {0: "*fp32", 1: "*fp16", 2: "*bf16"}


def _tab_types(name: str):
    tabs = D.TYPES[name][3]
    if tabs is None:
        return "*fp32", "*fp32"
    kind = {"iq4nl": "*fp32", "fp4": "*fp32"}
    return kind.get(tabs[0], "*u8"), kind.get(tabs[1], "*u8")


def _ptxas_report(ptx: str, arch: int):
    """(registers, spill store bytes) from ``ptxas -v``, or (None, None) if no ptxas accepts this PTX."""
    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        for exe in ("ptxas-blackwell", "ptxas"):
            p = bindir / exe
            if not p.exists():
                continue
            r = subprocess.run(
                [str(p), "-v", f"-arch=sm_{arch}a", src, "-o", os.devnull], capture_output=True, text=True
            )
            regs = re.findall(r"Used (\d+) registers", r.stderr)
            spills = re.findall(r"(\d+) bytes spill stores", r.stderr)
            if r.returncode == 0 and regs:
                return int(regs[0]), int(spills[0]) if spills else 0
    return None, None


def _compile(fn, signature, constexprs, options, arch, report=True):
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    ptx = k.asm["ptx"]
    regs, spills = _ptxas_report(ptx, arch) if report else (None, None)
    return {"fma": ptx.count("fma.rn"), "shared": k.metadata.shared, "regs": regs, "spills": spills}


def compile_dequant(name: str, out: int = 0, arch: int = 90, fp_fusion: bool = False, report: bool = True) -> dict:
    """Compile ``dequant_kernel`` for type ``name`` and output code ``out`` (0 f32, 1 f16, 2 bf16)."""
    if INTERPRET:
        raise RuntimeError("set FASTQUANT_TRITON_COMPILE_ONLY=1 before importing fastquant.gguf.triton")
    tid, be, _, _ = D.TYPES[name]
    t1, t2 = _tab_types(name)
    sig = {"wp": "*u8", "out": _OUT_PTR[out], "n_blocks": "i32", "tab": t1, "tab2": t2}
    sig.update({k: "constexpr" for k in ("T", "ELEMS", "BLOCKS", "OUT")})
    consts = {"T": tid, "ELEMS": be, "BLOCKS": max(1, 1024 // be), "OUT": out}
    return _compile(D.dequant_kernel, sig, consts, {"enable_fp_fusion": fp_fusion}, arch, report)


def compile_linear(
    name: str, rows: int, out: int = 2, arch: int = 90, config: dict = None, report: bool = True
) -> dict:
    """Compile the linear kernel that ``rows`` activation rows use (the fixed configuration unless given)."""
    if INTERPRET:
        raise RuntimeError("set FASTQUANT_TRITON_COMPILE_ONLY=1 before importing fastquant.gguf.triton")
    tid, be, _, _ = D.TYPES[name]
    t1, t2 = _tab_types(name)
    sig = {"x": _X_PTR[out], "wp": "*u8", "out": _OUT_PTR[out], "bias": "*fp32", "tab": t1, "tab2": t2}
    sig.update({k: "i32" for k in ("M", "N", "K", "stride_xm", "M_KEY")})
    consts = {"T": tid, "ELEMS": be, "HAS_BIAS": True, "OUT": out}
    small = rows <= L.SMALL_BATCH_ROWS
    cfg = dict(config or (L._fixed_small(L._m_bucket(rows), be) if small else L._fixed_mma(rows, be)))
    options = {"enable_fp_fusion": False, "num_warps": cfg.pop("num_warps", 4)}
    if "num_stages" in cfg:
        options["num_stages"] = cfg.pop("num_stages")
    if small:
        consts.update(BM=L._m_bucket(rows), **cfg)
        fn = L._linear_small
    else:
        consts.update(UPCAST=False, **cfg)
        fn = L._linear_mma
    sig.update({k: "constexpr" for k in consts})
    return _compile(fn, sig, consts, options, arch, report)
