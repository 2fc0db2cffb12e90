//! AVX-512 fused row kernels for small batches: the weight blocks are decoded into vector registers and
//! multiplied there, without the L1 round trip of the chunked path (`matmul.rs`).
//!
//! Each kernel takes a group of up to 4 weight rows and up to 4 activation rows at a time. Every decoded
//! 16-value vector is the block decoder's (`x86.rs`) exact value, computed with the same operations (one f16
//! scale conversion, integer unpacking, the scale product rounded to f32, then the same multiply and
//! subtract); scale tables are computed with scalar f32 products, which round exactly as the vector ones. The
//! vector then meets the activations with one fused multiply-add per lane into the (activation row, weight
//! row) accumulator, in increasing column order: the same per-lane sequence as the chunked path, so the two
//! give bit-identical results (tested in `matmul_tests.rs`).
//!
//! Types: Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS. Others use the chunked path.

use std::arch::x86_64::*;

use super::kquants::scale_min_k4;
use super::matmul::{GROUP, LANES};
use super::GgmlDType;

/// Partial lane sums of a row group: for activation rows `i < m` (`x` rows `xs` apart) and weight rows
/// `q < rb` (`w` rows `row_bytes` apart, `nblocks` blocks each), `sums[(i·GROUP + q)·LANES + t]` = the
/// lane-`t` fused multiply-add chain over the whole row. `unsafe`: AVX-512 and those ranges.
pub(crate) type RowFn = unsafe fn(*const f32, usize, usize, *const u8, usize, usize, usize, *mut f32);

/// The register-fused kernel of `ty`, if it has one.
pub(crate) fn row_kernel(ty: GgmlDType) -> Option<RowFn> {
    Some(match ty {
        GgmlDType::Q4_0 => q4_0 as RowFn,
        GgmlDType::Q8_0 => q8_0 as RowFn,
        GgmlDType::Q4K => q4_k as RowFn,
        GgmlDType::Q5K => q5_k as RowFn,
        GgmlDType::Q6K => q6_k as RowFn,
        GgmlDType::IQ4XS => iq4_xs as RowFn,
        _ => return None,
    })
}

/// Exact f16 → f32 with F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn h2f(b: *const u8) -> f32 {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        // SAFETY: the caller points `b` at two readable bytes.
        let h = { u16::from_le_bytes([*b, *b.add(1)]) };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn load16(p: *const u8) -> __m128i {
    // SAFETY: the caller points `p` at 16 readable bytes.
    unsafe { _mm_loadu_si128(p as *const __m128i) }
}

/// 0, 1, ..., 15 in the 32-bit lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
fn iota() -> __m512i {
    _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn i8_mul(q: __m128i, d: __m512) -> __m512 {
    _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn u8_mul_sub(q: __m128i, d: __m512, m: __m512) -> __m512 {
    _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q))), m)
}

/// One kernel: `$body` decodes the block at `$b` and hands each 16-value vector to `$emit(offset, vector)`
/// in increasing offset order.
macro_rules! row_kernel {
    ($fname:ident, $inner:ident, $be:expr, $bb:expr, |$b:ident, $emit:ident| $body:block) => {
        /// `IB` activation rows against a group of weight rows. Safety: as [`RowFn`].
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        #[inline]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $inner<const IB: usize>(
            x: *const f32,
            xs: usize,
            w: *const u8,
            row_bytes: usize,
            rb: usize,
            nblocks: usize,
            sums: *mut f32,
        ) {
            // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); GROUP]; IB];
                for blk in 0..nblocks {
                    let xb = x.wrapping_add(blk * $be);
                    for q in 0..GROUP {
                        // A short group repeats its last row (computed, never stored).
                        let $b = w.wrapping_add(q.min(rb - 1) * row_bytes + blk * $bb);
                        // Software prefetch PREFETCH bytes ahead in this row: four interleaved row streams
                        // are more than the hardware prefetcher keeps ahead of. A prefetch never faults,
                        // past the row's end included.
                        let mut o = 0;
                        while o < $bb {
                            _mm_prefetch::<_MM_HINT_T0>($b.wrapping_add(PREFETCH + o) as *const i8);
                            o += 64;
                        }
                        let a = &mut acc;
                        let mut $emit = |off: usize, v: __m512| {
                            for p in 0..IB {
                                // SAFETY: column blk·be + off + 16 <= k of activation row p (caller contract).
                                let xv = { _mm512_loadu_ps(xb.add(p * xs + off)) };
                                a[p][q] = _mm512_fmadd_ps(xv, v, a[p][q]);
                            }
                        };
                        // SAFETY: `$b` points at a whole block of the caller's rows.
                        {
                            $body
                        }
                    }
                }
                for (p, ap) in acc.iter().enumerate() {
                    for (q, v) in ap.iter().enumerate().take(rb) {
                        // SAFETY: slot (p, q) of the caller's partial sums.
                        {
                            _mm512_storeu_ps(sums.add((p * GROUP + q) * LANES), *v)
                        };
                    }
                }
            }
        }

        /// [`RowFn`] for this type. Safety: the CPU has AVX-512 (F, BW, VL), FMA and F16C; ranges as `RowFn`.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $fname(
            x: *const f32,
            xs: usize,
            m: usize,
            w: *const u8,
            row_bytes: usize,
            rb: usize,
            nblocks: usize,
            sums: *mut f32,
        ) {
            // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
            unsafe {
                let mut i = 0;
                while i < m {
                    let ib = (m - i).min(IB_MAX);
                    let (xi, si) = (x.wrapping_add(i * xs), sums.wrapping_add(i * GROUP * LANES));
                    // SAFETY: forwarded contract, rows i..i + ib.
                    {
                        match ib {
                            1 => $inner::<1>(xi, xs, w, row_bytes, rb, nblocks, si),
                            _ => $inner::<2>(xi, xs, w, row_bytes, rb, nblocks, si),
                        }
                    }
                    i += ib;
                }
            }
        }
    };
}

/// How far ahead (bytes) each weight row is prefetched.
const PREFETCH: usize = 1024;

/// Activation rows per pass over the weights (more passes re-decode the blocks).
const IB_MAX: usize = 2;

row_kernel!(q4_0, q4_0_ib, 32, 18, |b, emit| {
    // The 16 possible values (q - 8)·d in one register, then one lane permute per vector.
    let t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(iota(), _mm512_set1_epi32(8))), _mm512_set1_ps(h2f(b)));
    let lo = _mm512_cvtepu8_epi32(load16(b.add(2)));
    emit(0, _mm512_permutexvar_ps(lo, t));
    emit(16, _mm512_permutexvar_ps(_mm512_srli_epi32(lo, 4), t));
});

row_kernel!(q8_0, q8_0_ib, 32, 34, |b, emit| {
    let d = _mm512_set1_ps(h2f(b));
    emit(0, i8_mul(load16(b.add(2)), d));
    emit(16, i8_mul(load16(b.add(18)), d));
});

row_kernel!(iq4_xs, iq4_xs_ib, 256, 136, |b, emit| {
    let kv =
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load16(crate::quants::tables::KVALUES_IQ4NL.as_ptr() as *const u8)));
    let d = h2f(b);
    let sh = u16::from_le_bytes([*b.add(2), *b.add(3)]);
    for ib in 0..8 {
        let sl = (*b.add(4 + ib / 2) >> (4 * (ib % 2))) & 0xF;
        let ls = (sl as i32) | ((((sh >> (2 * ib)) & 3) as i32) << 4);
        // kvalue·dl for the 16 codes, then one lane permute per vector.
        let t = _mm512_mul_ps(kv, _mm512_set1_ps(d * (ls - 32) as f32));
        let lo = _mm512_cvtepu8_epi32(load16(b.add(8 + 16 * ib)));
        emit(32 * ib, _mm512_permutexvar_ps(lo, t));
        emit(32 * ib + 16, _mm512_permutexvar_ps(_mm512_srli_epi32(lo, 4), t));
    }
});

row_kernel!(q4_k, q4_k_ib, 256, 144, |b, emit| {
    let (d, dmin) = (h2f(b), h2f(b.add(2)));
    let s = std::slice::from_raw_parts(b.add(4), 12);
    let io = _mm512_cvtepi32_ps(iota());
    for j in 0..4 {
        let qa = _mm512_cvtepu8_epi32(load16(b.add(16 + 32 * j)));
        let qb = _mm512_cvtepu8_epi32(load16(b.add(32 + 32 * j)));
        for h in 0..2 {
            let (sc, mn) = scale_min_k4(2 * j + h, s);
            // d1·q - m1 for the 16 codes (the decoder's two roundings), then one lane permute per vector;
            // the permute reads the low 4 bits of each lane: the low nibble, or the high one after a shift.
            let t = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(d * sc as f32), io), _mm512_set1_ps(dmin * mn as f32));
            let (a, c) = if h == 0 { (qa, qb) } else { (_mm512_srli_epi32(qa, 4), _mm512_srli_epi32(qb, 4)) };
            emit(64 * j + 32 * h, _mm512_permutexvar_ps(a, t));
            emit(64 * j + 32 * h + 16, _mm512_permutexvar_ps(c, t));
        }
    }
});

row_kernel!(q5_k, q5_k_ib, 256, 176, |b, emit| {
    let m4 = _mm_set1_epi8(0x0F);
    let k16 = _mm_set1_epi8(0x10);
    let (d, dmin) = (h2f(b), h2f(b.add(2)));
    let s = std::slice::from_raw_parts(b.add(4), 12);
    let qha = load16(b.add(16));
    let qhb = load16(b.add(32));
    for j in 0..4 {
        let qa = load16(b.add(48 + 32 * j));
        let qb = load16(b.add(64 + 32 * j));
        for h in 0..2 {
            let (sc, mn) = scale_min_k4(2 * j + h, s);
            let d1 = _mm512_set1_ps(d * sc as f32);
            let m1 = _mm512_set1_ps(dmin * mn as f32);
            let bit = _mm_set1_epi8((1u8 << (2 * j + h)) as i8);
            let ha = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(qha, bit), bit), k16);
            let hb = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(qhb, bit), bit), k16);
            let (a, c) = if h == 0 {
                (_mm_and_si128(qa, m4), _mm_and_si128(qb, m4))
            } else {
                (_mm_and_si128(_mm_srli_epi16(qa, 4), m4), _mm_and_si128(_mm_srli_epi16(qb, 4), m4))
            };
            emit(64 * j + 32 * h, u8_mul_sub(_mm_or_si128(a, ha), d1, m1));
            emit(64 * j + 32 * h + 16, u8_mul_sub(_mm_or_si128(c, hb), d1, m1));
        }
    }
});

row_kernel!(q6_k, q6_k_ib, 256, 210, |b, emit| {
    let m4 = _mm_set1_epi8(0x0F);
    let m2 = _mm_set1_epi8(0x03);
    let k32 = _mm_set1_epi8(32);
    let d = h2f(b.add(208));
    for n in 0..2 {
        let ql = b.add(64 * n);
        let qh = b.add(128 + 32 * n);
        let sc = b.add(192 + 8 * n);
        let qh_v = [load16(qh), load16(qh.add(16))];
        let ql_v = [load16(ql), load16(ql.add(16)), load16(ql.add(32)), load16(ql.add(48))];
        for k in 0..4 {
            for half in 0..2 {
                let src = ql_v[2 * (k & 1) + half];
                let lo = if k >> 1 == 0 { _mm_and_si128(src, m4) } else { _mm_and_si128(_mm_srli_epi16(src, 4), m4) };
                let hi = _mm_and_si128(_mm_srl_epi16(qh_v[half], _mm_cvtsi32_si128(2 * k as i32)), m2);
                let q = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), k32);
                let s = *sc.add(half + 2 * k) as i8;
                let ds = _mm512_set1_ps(d * s as f32);
                emit(128 * n + 32 * k + 16 * half, i8_mul(q, ds));
            }
        }
    }
});
