"""Block decoders: one Triton function per ggml block family, each mirroring the Rust scalar reference
(rust/fastquant-core/src/quants/{legacy,kquants,iquants,fp4}.rs) operation for operation in f32.

Every decoder has the signature ``(wp, blk, e, mask, tab, tab2) -> f32`` where ``wp`` points at the packed
bytes (uint8), ``blk`` is the block index and ``e`` the element index inside the block (any broadcastable
integer tensors), ``mask`` guards the loads, and ``tab``/``tab2`` are the lookup tables of the types that
need them (others ignore them). So the same code decodes a whole block (:func:`dequant_kernel`) or the
``(rows, cols)`` weight tile of a matrix product (``_linear.py``).

Exactness: the byte arithmetic is integer; f16 scales are widened exactly; each float product/sum is written
in the reference's order and the kernels are launched without FMA contraction (``enable_fp_fusion=False``),
so each operation rounds once, as in Rust. Sign flips are negations, as in the reference.
"""

from __future__ import annotations

import triton.language as tl

from ._jit import jit

# ggml type ids (the values of ggml's enum, fixed by the file format)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14
IQ2_XXS, IQ4_NL, IQ3_S, IQ4_XS, BF16, MXFP4 = 16, 20, 21, 23, 30, 39

#: name -> (id, elements per block, bytes per block, tables (tab, tab2) or None)
TYPES = {
    "F32": (F32, 1, 4, None),
    "F16": (F16, 1, 2, None),
    "BF16": (BF16, 1, 2, None),
    "Q4_0": (Q4_0, 32, 18, None),
    "Q4_1": (Q4_1, 32, 20, None),
    "Q5_0": (Q5_0, 32, 22, None),
    "Q5_1": (Q5_1, 32, 24, None),
    "Q8_0": (Q8_0, 32, 34, None),
    "Q2_K": (Q2_K, 256, 84, None),
    "Q3_K": (Q3_K, 256, 110, None),
    "Q4_K": (Q4_K, 256, 144, None),
    "Q5_K": (Q5_K, 256, 176, None),
    "Q6_K": (Q6_K, 256, 210, None),
    "IQ4_NL": (IQ4_NL, 32, 18, ("iq4nl", "iq4nl")),
    "IQ4_XS": (IQ4_XS, 256, 136, ("iq4nl", "iq4nl")),
    "IQ2_XXS": (IQ2_XXS, 256, 66, ("iq2xxs_grid", "ksigns")),
    "IQ3_S": (IQ3_S, 256, 110, ("iq3s_grid", "iq3s_grid")),
    "MXFP4": (MXFP4, 32, 17, ("fp4", "fp4")),
}


@jit
def _b(wp, base, off, mask):
    """The byte at ``base + off`` as int32."""
    return tl.load(wp + base + off, mask=mask, other=0).to(tl.int32)


@jit
def _f16(wp, base, off, mask):
    """The little-endian f16 at ``base + off``, widened exactly to f32."""
    bits = _b(wp, base, off, mask) | (_b(wp, base, off + 1, mask) << 8)
    return bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@jit
def _nib(wp, base, off, e, mask):
    """Element ``e`` of a 32-element nibble array at ``off``: low nibbles of bytes 0..15, then high nibbles."""
    q = _b(wp, base, off + (e % 16), mask)
    return tl.where(e < 16, q & 0xF, q >> 4)


@jit
def _float(wp, blk, e, mask, T: tl.constexpr):
    if T == 0:
        bits = (
            _b(wp, blk * 4, 0, mask)
            | (_b(wp, blk * 4, 1, mask) << 8)
            | (_b(wp, blk * 4, 2, mask) << 16)
            | (_b(wp, blk * 4, 3, mask) << 24)
        )
        return bits.to(tl.float32, bitcast=True)
    elif T == 1:
        return _f16(wp, blk * 2, 0, mask)
    else:
        bits = _b(wp, blk * 2, 0, mask) | (_b(wp, blk * 2, 1, mask) << 8)
        return (bits << 16).to(tl.float32, bitcast=True)


@jit
def _legacy(wp, blk, e, mask, T: tl.constexpr):
    """Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32-element blocks)."""
    if T == 2:
        base = blk * 18
        return (_nib(wp, base, 2, e, mask) - 8).to(tl.float32) * _f16(wp, base, 0, mask)
    elif T == 3:
        base = blk * 20
        return _nib(wp, base, 4, e, mask).to(tl.float32) * _f16(wp, base, 0, mask) + _f16(wp, base, 2, mask)
    elif T == 6:
        base = blk * 22
        # bit e of the u32 qh at byte 2 is the fifth bit of element e (low half: j, high half: j + 16)
        hb = (_b(wp, base, 2 + e // 8, mask) >> (e % 8)) & 1
        x = _nib(wp, base, 6, e, mask) | (hb << 4)
        return (x - 16).to(tl.float32) * _f16(wp, base, 0, mask)
    elif T == 7:
        base = blk * 24
        hb = (_b(wp, base, 4 + e // 8, mask) >> (e % 8)) & 1
        x = _nib(wp, base, 8, e, mask) | (hb << 4)
        return x.to(tl.float32) * _f16(wp, base, 0, mask) + _f16(wp, base, 2, mask)
    else:
        base = blk * 34
        q = _b(wp, base, 2 + e, mask)
        q = q - ((q & 128) << 1)  # int8
        return q.to(tl.float32) * _f16(wp, base, 0, mask)


@jit
def _scale_min_k4(wp, base, jj, mask):
    """The jj-th 6-bit (scale, min) pair of the 12 packed bytes at ``base + 4`` (Q4_K, Q5_K)."""
    lo = jj < 4
    s_j = _b(wp, base, 4 + jj, mask)
    s_j4 = _b(wp, base, 8 + jj, mask)
    s_jm4 = _b(wp, base, 4 + tl.where(lo, jj, jj - 4), mask)
    sc = tl.where(lo, s_j & 63, (s_j4 & 0xF) | ((s_jm4 >> 6) << 4))
    mn = tl.where(lo, s_j4 & 63, (s_j4 >> 4) | ((s_j >> 6) << 4))
    return sc, mn


@jit
def _kquant(wp, blk, e, mask, T: tl.constexpr):
    """Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-element super-blocks)."""
    if T == 10:
        base = blk * 84
        n = e // 128
        j = (e % 128) // 32
        h = (e % 32) // 16
        li = e % 16
        s = _b(wp, base, 8 * n + 2 * j + h, mask)
        dl = _f16(wp, base, 80, mask) * (s & 0xF).to(tl.float32)
        ml = _f16(wp, base, 82, mask) * (s >> 4).to(tl.float32)
        q = (_b(wp, base, 16 + 32 * n + 16 * h + li, mask) >> (2 * j)) & 3
        return dl * q.to(tl.float32) - ml
    elif T == 11:
        base = blk * 110
        n = e // 128
        j = (e % 128) // 32
        li = e % 32
        i = 8 * n + 2 * j + li // 16  # sub-block scale index
        lo_b = _b(wp, base, 96 + i % 8, mask)
        lo = tl.where(i < 8, lo_b & 0xF, lo_b >> 4)
        hi = (_b(wp, base, 104 + i % 4, mask) >> (2 * (i // 4))) & 3
        sc = (lo | (hi << 4)) - 32
        dl = _f16(wp, base, 108, mask) * sc.to(tl.float32)
        low = (_b(wp, base, 32 + 32 * n + li, mask) >> (2 * j)) & 3
        minus = tl.where(((_b(wp, base, li, mask) >> (4 * n + j)) & 1) == 1, 0, 4)
        return dl * (low - minus).to(tl.float32)
    elif T == 12 or T == 13:
        if T == 12:
            base = blk * 144
        else:
            base = blk * 176
        j = e // 64
        h = (e % 64) // 32
        li = e % 32
        sc, mn = _scale_min_k4(wp, base, 2 * j + h, mask)
        d1 = _f16(wp, base, 0, mask) * sc.to(tl.float32)
        m1 = _f16(wp, base, 2, mask) * mn.to(tl.float32)
        if T == 12:
            v = (_b(wp, base, 16 + 32 * j + li, mask) >> (4 * h)) & 0xF
        else:
            v = ((_b(wp, base, 48 + 32 * j + li, mask) >> (4 * h)) & 0xF) + 16 * (
                (_b(wp, base, 16 + li, mask) >> (2 * j + h)) & 1
            )
        return d1 * v.to(tl.float32) - m1
    else:
        base = blk * 210
        n = e // 128
        k = (e % 128) // 32
        li = e % 32
        lo = (_b(wp, base, 64 * n + li + 32 * (k & 1), mask) >> (4 * (k >> 1))) & 0xF
        hi = (_b(wp, base, 128 + 32 * n + li, mask) >> (2 * k)) & 3
        q = (lo | (hi << 4)) - 32
        s = _b(wp, base, 192 + 8 * n + li // 16 + 2 * k, mask)
        s = s - ((s & 128) << 1)
        # reference order: (d * scale) * q
        return _f16(wp, base, 208, mask) * s.to(tl.float32) * q.to(tl.float32)


@jit
def _e8m0_half(x):
    """2^(x-128) exactly (the two binary32 subnormals for x = 0 and 1)."""
    bits = tl.where(x < 2, 0x00200000 << x, (x - 1) << 23)
    return bits.to(tl.float32, bitcast=True)


@jit
def _codebook(wp, blk, e, mask, tab, tab2, T: tl.constexpr):
    """IQ4_NL, IQ4_XS, IQ2_XXS, IQ3_S, MXFP4."""
    if T == 20:
        base = blk * 18
        return _f16(wp, base, 0, mask) * tl.load(tab + _nib(wp, base, 2, e, mask), mask=mask, other=0.0)
    elif T == 23:
        base = blk * 136
        ib = e // 32
        r = e % 32
        sl = (_b(wp, base, 4 + ib // 2, mask) >> (4 * (ib % 2))) & 0xF
        sh = (_b(wp, base, 2 + ib // 4, mask) >> (2 * (ib % 4))) & 3
        dl = _f16(wp, base, 0, mask) * ((sl | (sh << 4)) - 32).to(tl.float32)
        return dl * tl.load(tab + _nib(wp, base, 8 + 16 * ib, r, mask), mask=mask, other=0.0)
    elif T == 16:
        base = blk * 66
        ib = e // 32
        li = (e % 32) // 8
        j = e % 8
        g = _b(wp, base, 2 + 8 * ib + li, mask)
        # a1 = the u32 at 6 + 8 ib: sign indices in bits 0..27, the scale in bits 28..31
        a3 = _b(wp, base, 9 + 8 * ib, mask)
        a1 = (
            _b(wp, base, 6 + 8 * ib, mask)
            | (_b(wp, base, 7 + 8 * ib, mask) << 8)
            | (_b(wp, base, 8 + 8 * ib, mask) << 16)
            | ((a3 & 0xF) << 24)
        )
        db = _f16(wp, base, 0, mask) * (0.5 + (a3 >> 4).to(tl.float32)) * 0.25
        signs = tl.load(tab2 + ((a1 >> (7 * li)) & 127), mask=mask, other=0).to(tl.int32)
        v = db * tl.load(tab + g * 8 + j, mask=mask, other=0).to(tl.float32)
        return tl.where(((signs >> j) & 1) == 1, -v, v)
    elif T == 21:
        base = blk * 110
        ib = e // 32
        i = (e % 32) // 4
        j = e % 4
        sc = (_b(wp, base, 106 + ib // 2, mask) >> (4 * (ib % 2))) & 0xF
        db = _f16(wp, base, 0, mask) * (1 + 2 * sc).to(tl.float32)
        idx = _b(wp, base, 2 + 8 * ib + i, mask) | (((_b(wp, base, 66 + ib, mask) >> i) & 1) << 8)
        s = _b(wp, base, 74 + 4 * ib + i // 2, mask) >> (4 * (i % 2))
        v = db * tl.load(tab + idx * 4 + j, mask=mask, other=0).to(tl.float32)
        return tl.where(((s >> j) & 1) == 1, -v, v)
    else:
        base = blk * 17
        d = _e8m0_half(_b(wp, base, 0, mask))
        return tl.load(tab + _nib(wp, base, 1, e, mask), mask=mask, other=0.0) * d


@jit
def decode(wp, blk, e, mask, tab, tab2, T: tl.constexpr):
    """Element ``e`` of block ``blk`` of type ``T`` (a ggml type id), exactly as the Rust reference."""
    if T == 0 or T == 1 or T == 30:
        return _float(wp, blk, e, mask, T)
    elif T == 2 or T == 3 or T == 6 or T == 7 or T == 8:
        return _legacy(wp, blk, e, mask, T)
    elif T == 10 or T == 11 or T == 12 or T == 13 or T == 14:
        return _kquant(wp, blk, e, mask, T)
    else:
        return _codebook(wp, blk, e, mask, tab, tab2, T)


@jit
def to_bf16_bits(v):
    """f32 -> bfloat16 bits (int32 holding 16 bits), round to nearest-even, NaN -> quiet NaN, as the Rust
    ``f32_to_bf16`` (the interpreter's own cast truncates, so the rounding is done on the integers)."""
    b = v.to(tl.int32, bitcast=True)
    hi = (b >> 16) & 0xFFFF
    nan = (b & 0x7FFFFFFF) > 0x7F800000
    low = b & 0xFFFF
    up = (low > 0x8000) | ((low == 0x8000) & ((hi & 1) == 1))
    return tl.where(nan, hi | 64, (hi + up.to(tl.int32)) & 0xFFFF)


@jit
def dequant_kernel(
    wp, out, n_blocks, tab, tab2, T: tl.constexpr, ELEMS: tl.constexpr, BLOCKS: tl.constexpr, OUT: tl.constexpr
):
    """Decode ``BLOCKS`` whole blocks per program into ``out`` (OUT: 0 f32, 1 f16, 2 bf16 bits as int16)."""
    pid = tl.program_id(0)
    blk = (pid * BLOCKS + tl.arange(0, BLOCKS)).to(tl.int64)[:, None]
    e = tl.arange(0, ELEMS)[None, :]
    bmask = blk < n_blocks  # (BLOCKS, 1): per-block fields are loaded once per block
    v = decode(wp, blk, e, bmask, tab, tab2, T)
    mask = bmask & (e < ELEMS)
    o = out + blk * ELEMS + e
    if OUT == 0:
        tl.store(o, v, mask=mask)
    elif OUT == 1:
        tl.store(o, v.to(tl.float16), mask=mask)
    else:
        tl.store(o, to_bf16_bits(v).to(tl.int16), mask=mask)
