"""Fused ``x · Wᵀ`` on packed ggml blocks.

* ``_linear_small`` (at most 16 activation rows: decode steps, diffusion steps): each program owns ``BN``
  output features and walks ``K`` in ``BK`` steps; the weight tile is decoded from the packed bytes into
  registers (the exact f32 weight, see ``_dequant.decode``) and multiplied with all ``BM`` activation rows
  at once (f32 products, f32 sums). Every packed byte is read from global memory by one program; the float
  weight never exists in memory.
* ``_linear_mma`` (more rows): ``BM × BN`` output tiles; each ``BN × BK`` weight tile is decoded, rounded to
  the activation dtype (bf16/f16: the exact ``W.to(x.dtype)``; f32 stays f32) and fed with the activation
  tile to ``tl.dot`` (tensor cores for bf16/f16, full-precision ``ieee`` dots for f32) into an f32
  accumulator. Triton stages the dot operands through shared memory.

Both add the bias in f32 and round once to the output dtype. On CUDA both are autotuned per
``(N, K, row bucket, type)`` with results cached on disk (``cache_results=True``: Triton's cache directory,
``TRITON_CACHE_DIR``, default ``~/.triton/cache``), so a shape is tuned once per machine. Under the
interpreter one fixed configuration runs (autotuning would time numpy).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

from ._dequant import decode, to_bf16_bits
from ._jit import INTERPRET, jit, launch_options

SMALL_BATCH_ROWS = 16


@jit
def _store(out, offs, acc, mask, OUT: tl.constexpr):
    if OUT == 0:
        tl.store(out + offs, acc, mask=mask)
    elif OUT == 1:
        tl.store(out + offs, acc.to(tl.float16), mask=mask)
    else:
        tl.store(out + offs, to_bf16_bits(acc).to(tl.int16), mask=mask)


@jit
def _weight_tile(
    wp, rn, n_ok, k0, K, tab, tab2, T: tl.constexpr, ELEMS: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr
):
    """The exact f32 weight tile W[rn, k0:k0+BK] (zeros outside the matrix), decoded as (BN, blocks, elements):
    per-block fields (the f16 scales) are loaded once per block, per-element ones per element. Either BK is a
    multiple of ELEMS (whole blocks) or ELEMS a multiple of BK (a slice of one block per row); K is a multiple
    of ELEMS, so blocks are wholly in or out."""
    if BK >= ELEMS:
        kb = k0 // ELEMS + tl.arange(0, BK // ELEMS)
        e = tl.arange(0, ELEMS)[None, None, :]
    else:
        kb = k0 // ELEMS + tl.arange(0, 1)
        e = (k0 % ELEMS + tl.arange(0, BK))[None, None, :]
    blk = (rn.to(tl.int64)[:, None] * (K // ELEMS) + kb[None, :])[:, :, None]
    bmask = (n_ok[:, None] & (kb < K // ELEMS)[None, :])[:, :, None]
    w = tl.where(bmask, decode(wp, blk, e, bmask, tab, tab2, T), 0.0)
    return tl.reshape(w, (BN, BK))


@jit
def _linear_small(
    x,
    wp,
    out,
    bias,
    tab,
    tab2,
    M,
    N,
    K,
    stride_xm,
    M_KEY,
    T: tl.constexpr,
    ELEMS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    OUT: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    pid = tl.program_id(0)
    rn = pid * BN + tl.arange(0, BN)
    rm = tl.arange(0, BM)
    n_ok = rn < N
    acc = tl.full((BM, BN), 0.0, tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        k_ok = rk < K
        w = _weight_tile(wp, rn, n_ok, k0, K, tab, tab2, T, ELEMS, BN, BK)
        xm = (rm[:, None] < M) & k_ok[None, :]
        xt = tl.load(x + rm[:, None] * stride_xm + rk[None, :], mask=xm, other=0.0).to(tl.float32)
        acc += tl.reduce(xt[:, None, :] * w[None, :, :], 2, tl.standard._sum_combine)
    if HAS_BIAS:
        acc += tl.load(bias + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    omask = (rm[:, None] < M) & n_ok[None, :]
    _store(out, rm[:, None] * N + rn[None, :], acc, omask, OUT)


@jit
def _linear_mma(
    x,
    wp,
    out,
    bias,
    tab,
    tab2,
    M,
    N,
    K,
    stride_xm,
    M_KEY,
    T: tl.constexpr,
    ELEMS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    OUT: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    UPCAST: tl.constexpr,
):
    # grouped launch order: consecutive programs share weight tiles (L2 reuse)
    pid = tl.program_id(0)
    num_m = (M + BM - 1) // BM
    num_n = (N + BN - 1) // BN
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    gsize = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % gsize
    pid_n = (pid % group) // gsize
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.full((BM, BN), 0.0, tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        k_ok = rk < K
        w = _weight_tile(wp, rn, n_ok, k0, K, tab, tab2, T, ELEMS, BN, BK)
        xt = tl.load(
            x + rm.to(tl.int64)[:, None] * stride_xm + rk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0
        )
        if OUT == 0:
            acc = tl.dot(xt, tl.trans(w), acc, input_precision="ieee")
        elif OUT == 1:
            acc = tl.dot(xt, tl.trans(w.to(tl.float16)), acc)
        else:
            wb = to_bf16_bits(w).to(tl.int16).to(tl.bfloat16, bitcast=True)
            if UPCAST:
                # the interpreter's dot cannot multiply bf16 (numpy has none); bf16 products are exact in
                # f32, so an f32 dot of the same values is the same computation
                acc = tl.dot(xt.to(tl.float32), tl.trans(wb.to(tl.float32)), acc, input_precision="ieee")
            else:
                acc = tl.dot(xt, tl.trans(wb), acc)
    if HAS_BIAS:
        acc += tl.load(bias + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    omask = m_ok[:, None] & n_ok[None, :]
    _store(out, rm.to(tl.int64)[:, None] * N + rn[None, :], acc, omask, OUT)


def _prune_small(configs, named_args, **kwargs):
    bm = kwargs.get("BM", named_args.get("BM", 16))
    # keep the register tile BM*BN*BK within 4 Ki f32 values per warp (32 per thread)
    keep = [c for c in configs if bm * c.kwargs["BN"] * c.kwargs["BK"] <= 4096 * c.num_warps]
    return keep or configs[-1:]


# Few configurations on purpose: each costs a compile (seconds) the first time a shape is seen.
_SMALL_CONFIGS = [
    triton.Config({"BN": bn, "BK": bk}, num_warps=w, num_stages=2)
    for bn, bk, w in ((16, 256, 4), (8, 256, 4), (32, 128, 4), (16, 128, 4), (8, 128, 4), (4, 256, 4))
]
_MMA_CONFIGS = [
    triton.Config({"BM": bm, "BN": bn, "BK": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in (
        (128, 64, 64, 8, 3),
        (64, 128, 32, 4, 3),
        (128, 128, 32, 8, 3),
        (64, 64, 64, 4, 3),
        (128, 32, 64, 4, 3),
    )
]

#: ``FASTQUANT_TRITON_AUTOTUNE=0``: no tuning, the fixed configurations below (one compile per shape family)
AUTOTUNE = os.environ.get("FASTQUANT_TRITON_AUTOTUNE", "1") != "0"


def _fixed_small(bm: int, elems: int) -> dict:
    return {"BN": 16, "BK": 256, "num_warps": 4} if bm <= 4 else {"BN": 8, "BK": 64, "num_warps": 8}


def _fixed_mma(m: int, elems: int) -> dict:
    return {"BM": 128 if m >= 128 else 64, "BN": 64, "BK": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}


if INTERPRET or not AUTOTUNE:
    _small_tuned = _mma_tuned = None
else:
    _small_tuned = triton.autotune(
        _SMALL_CONFIGS,
        key=["N", "K", "M_KEY", "T", "OUT"],
        prune_configs_by={"early_config_prune": _prune_small},
        cache_results=True,
    )(_linear_small)
    _mma_tuned = triton.autotune(
        _MMA_CONFIGS,
        key=["N", "K", "M_KEY", "T", "OUT"],
        cache_results=True,
    )(_linear_mma)

#: the configuration used under the interpreter (tests may override it to exercise the masks)
INTERP_SMALL = {"BN": 32, "BK": 256}
INTERP_MMA = {"BM": 32, "BN": 32, "BK": 64, "GROUP_M": 2}
_OUT_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _m_bucket(m: int) -> int:
    return 1 << max(0, (m - 1).bit_length())


def linear_impl(
    x: torch.Tensor, packed: torch.Tensor, tid: int, n: int, k: int, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    from ._ops import BY_ID, tables_for

    name, be, bb, _ = BY_ID[tid]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out.reshape(*lead, n)
    if k == 0:
        out.zero_()
        if bias is not None:
            out += bias.to(out.dtype)
        return out.reshape(*lead, n)
    packed = packed.contiguous()
    tab, tab2 = tables_for(tid, packed.device)
    dst = out.view(torch.int16) if x.dtype == torch.bfloat16 else out
    b = bias.contiguous() if bias is not None else out  # any pointer when there is no bias
    code = _OUT_CODES[x.dtype]
    args = (x2, packed, dst, b, tab, tab2, m, n, k, x2.stride(0), _m_bucket(m))
    flags = dict(T=tid, ELEMS=be, HAS_BIAS=bias is not None, OUT=code)
    opts = launch_options()
    if m <= SMALL_BATCH_ROWS:
        bm = _m_bucket(m)
        if INTERPRET:
            cfg = INTERP_SMALL
            _linear_small[(triton.cdiv(n, cfg["BN"]),)](*args, **flags, BM=bm, **cfg)
        elif _small_tuned is None:
            cfg = _fixed_small(bm, be)
            _linear_small[(triton.cdiv(n, cfg["BN"]),)](*args, **flags, BM=bm, **cfg, **opts)
        else:
            grid = lambda meta: (triton.cdiv(n, meta["BN"]),)  # noqa: E731
            _small_tuned[grid](*args, **flags, BM=bm, **opts)
    else:
        if INTERPRET:
            cfg = INTERP_MMA
            grid = (triton.cdiv(m, cfg["BM"]) * triton.cdiv(n, cfg["BN"]),)
            _linear_mma[grid](*args, **flags, **cfg, UPCAST=True)
        elif _mma_tuned is None:
            cfg = _fixed_mma(m, be)
            grid = (triton.cdiv(m, cfg["BM"]) * triton.cdiv(n, cfg["BN"]),)
            _linear_mma[grid](*args, **flags, **cfg, UPCAST=False, **opts)
        else:
            grid = lambda meta: (triton.cdiv(m, meta["BM"]) * triton.cdiv(n, meta["BN"]),)  # noqa: E731
            _mma_tuned[grid](*args, **flags, UPCAST=False, **opts)
    return out.reshape(*lead, n)
