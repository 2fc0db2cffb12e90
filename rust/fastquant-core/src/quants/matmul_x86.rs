//! AVX-512 and AVX2 multiply kernels of the fused linear product (`matmul.rs`): lane-wise fused
//! multiply-adds of decoded weight chunks (in L1) with activation rows into 16-lane f32 partial sums.
//!
//! Lane `t` of each partial sum gets the products of elements `l ≡ t (mod 16)` in increasing `l`, one fused
//! multiply-add each, exactly as `matmul::mul_scalar_fma` does; the tests check the two are bit-identical.
//! AVX2 runs each 8-lane half of a chunk separately, which keeps that per-lane order.

use std::arch::x86_64::*;

use super::matmul::{GROUP, LANES};

/// Weight-row pointers of a group; a short group repeats its last row (computed, never stored).
#[inline(always)]
fn rows(w: *const f32, ws: usize, rb: usize) -> [*const f32; GROUP] {
    // wrapping_add: pure address arithmetic; every pointer is one of the caller's rows.
    [0, 1, 2, 3].map(|q: usize| w.wrapping_add(q.min(rb - 1) * ws))
}

/// `IB` activation rows (from `i`) against the group's 4 weight rows, `len` values.
///
/// # Safety
/// AVX-512F and FMA; the ranges of [`super::matmul::MulFn`].
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn pass512<const IB: usize>(
    x: *const f32,
    xs: usize,
    i: usize,
    wp: [*const f32; GROUP],
    rb: usize,
    len: usize,
    acc: *mut f32,
) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let mut a = [[_mm512_setzero_ps(); GROUP]; IB];
        for (p, ap) in a.iter_mut().enumerate() {
            for (q, v) in ap.iter_mut().enumerate().take(rb) {
                // SAFETY: slot (i + p, q) of the m × GROUP × LANES partial sums.
                *v = _mm512_loadu_ps(acc.add(((i + p) * GROUP + q) * LANES));
            }
        }
        let mut l = 0;
        while l < len {
            // SAFETY: l + 16 <= len, inside every weight row and activation row (caller contract).
            let wv = wp.map(|r| _mm512_loadu_ps(r.add(l)));
            for (p, ap) in a.iter_mut().enumerate() {
                // SAFETY: as above.
                let xv = { _mm512_loadu_ps(x.add((i + p) * xs + l)) };
                for q in 0..GROUP {
                    ap[q] = _mm512_fmadd_ps(xv, wv[q], ap[q]);
                }
            }
            l += LANES;
        }
        for (p, ap) in a.iter().enumerate() {
            for (q, v) in ap.iter().enumerate().take(rb) {
                // SAFETY: as for the loads.
                _mm512_storeu_ps(acc.add(((i + p) * GROUP + q) * LANES), *v);
            }
        }
    }
}

/// [`super::matmul::MulFn`] on AVX-512.
///
/// # Safety
/// The CPU has AVX-512F and FMA; the pointer ranges of `MulFn`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mul_avx512(
    x: *const f32,
    xs: usize,
    m: usize,
    w: *const f32,
    ws: usize,
    rb: usize,
    len: usize,
    acc: *mut f32,
) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let wp = rows(w, ws, rb);
        let mut i = 0;
        while i < m {
            // SAFETY: forwarded contract; rows i.. exist.
            {
                match m - i {
                    1 => pass512::<1>(x, xs, i, wp, rb, len, acc),
                    2 | 3 => pass512::<2>(x, xs, i, wp, rb, len, acc),
                    _ => pass512::<4>(x, xs, i, wp, rb, len, acc),
                }
            }
            i += match m - i {
                1 => 1,
                2 | 3 => 2,
                _ => 4,
            };
        }
    }
}

/// As [`pass512`] for one 8-lane half `h` of each 16-lane partial sum.
///
/// # Safety
/// AVX2 and FMA; the ranges of [`super::matmul::MulFn`].
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn pass256<const IB: usize>(
    x: *const f32,
    xs: usize,
    i: usize,
    wp: [*const f32; GROUP],
    rb: usize,
    len: usize,
    acc: *mut f32,
    h: usize,
) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let mut a = [[_mm256_setzero_ps(); GROUP]; IB];
        for (p, ap) in a.iter_mut().enumerate() {
            for (q, v) in ap.iter_mut().enumerate().take(rb) {
                // SAFETY: half h of slot (i + p, q) of the partial sums.
                *v = _mm256_loadu_ps(acc.add(((i + p) * GROUP + q) * LANES + 8 * h));
            }
        }
        let mut l = 8 * h;
        while l < len {
            // SAFETY: l + 8 <= len (len is a multiple of 16), inside every row (caller contract).
            let wv = wp.map(|r| _mm256_loadu_ps(r.add(l)));
            for (p, ap) in a.iter_mut().enumerate() {
                // SAFETY: as above.
                let xv = { _mm256_loadu_ps(x.add((i + p) * xs + l)) };
                for q in 0..GROUP {
                    ap[q] = _mm256_fmadd_ps(xv, wv[q], ap[q]);
                }
            }
            l += LANES;
        }
        for (p, ap) in a.iter().enumerate() {
            for (q, v) in ap.iter().enumerate().take(rb) {
                // SAFETY: as for the loads.
                _mm256_storeu_ps(acc.add(((i + p) * GROUP + q) * LANES + 8 * h), *v);
            }
        }
    }
}

/// [`super::matmul::MulFn`] on AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA; the pointer ranges of `MulFn`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mul_avx2(
    x: *const f32,
    xs: usize,
    m: usize,
    w: *const f32,
    ws: usize,
    rb: usize,
    len: usize,
    acc: *mut f32,
) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let wp = rows(w, ws, rb);
        let mut i = 0;
        while i < m {
            let ib = if m - i >= 2 { 2 } else { 1 };
            for h in 0..2 {
                // SAFETY: forwarded contract; rows i..i + ib exist.
                {
                    if ib == 2 {
                        pass256::<2>(x, xs, i, wp, rb, len, acc, h)
                    } else {
                        pass256::<1>(x, xs, i, wp, rb, len, acc, h)
                    }
                }
            }
            i += ib;
        }
    }
}
