//! Fused dequantize + matrix multiply for small activation batches: `out = x · Wᵀ` where `W` (`n × k`) stays
//! packed in ggml blocks.
//!
//! The float weight is never materialised. `W` is walked in tiles of a few output rows; each rayon task
//! dequantizes its tile with the regular (bit-exact) block kernels into a per-task scratch buffer of
//! [`TILE_FLOATS`] f32 values (or 4 rows of `k`, when `k` exceeds 16384), multiplies it with every activation
//! row, and moves on. Extra memory is that scratch per worker thread, a small per-tile accumulator
//! (16 floats per activation row and tile row) and the `m × n` f32 result buffer.
//!
//! The dot products accumulate in f32 in 16 lane-wise partial sums (fused multiply-add on AVX2/AVX-512),
//! then add the lanes pairwise, so results differ from a BLAS `x · Wᵀ` only by summation order: both are
//! within the usual `k·u·Σ|x_i·w_i|` bound (u = 2⁻²⁴). The result does not depend on the thread count.

use rayon::prelude::*;

use super::{pool, prepare, DequantError, GgmlType, Path};

/// f32 values of dequantized weight held per task (256 KiB): the tile height is this divided by `k`,
/// rounded down to a multiple of 4, between 4 and 64 rows.
pub const TILE_FLOATS: usize = 64 * 1024;

/// Why a fused product was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FusedError {
    #[error(transparent)]
    Dequant(#[from] DequantError),
    #[error("{ty}: in_features {k} is not a multiple of the {block}-element block")]
    Features { ty: GgmlType, k: usize, block: usize },
    #[error("{ty}: packed weight is {got} bytes, expected {expected} for {n} rows of {k} values")]
    WeightLength { ty: GgmlType, n: usize, k: usize, expected: usize, got: usize },
    #[error("activations hold {got} values, expected {expected} ({m} rows of {k})")]
    InputLength { m: usize, k: usize, expected: usize, got: usize },
    #[error("output holds {got} values, expected {expected} ({m} rows of {n})")]
    OutputLength { m: usize, n: usize, expected: usize, got: usize },
}

/// Rows of `W` per tile for rows of `k` values.
pub fn tile_rows(k: usize) -> usize {
    ((TILE_FLOATS / k.max(1)) / 4 * 4).clamp(4, 64)
}

/// `out[i][j] = Σ_l x[i][l] · W[j][l]` for `x` (`m × k`, row-major f32), `W` (`n × k`, packed `ty` blocks,
/// each row `k / block_elems` whole blocks) and `out` (`m × n`, row-major f32).
/// `threads`: `None` = rayon's global pool, `Some(1)` = the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn linear_fused(
    ty: GgmlType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    out: &mut [f32],
    threads: Option<usize>,
) -> Result<(), FusedError> {
    let (be, bb) = ty.block_geometry();
    if k % be != 0 {
        return Err(FusedError::Features { ty, k, block: be });
    }
    let row_bytes = k / be * bb;
    let expected = n.saturating_mul(row_bytes);
    if w.len() != expected {
        return Err(FusedError::WeightLength { ty, n, k, expected, got: w.len() });
    }
    let xe = m.saturating_mul(k);
    if x.len() != xe {
        return Err(FusedError::InputLength { m, k, expected: xe, got: x.len() });
    }
    let oe = m.saturating_mul(n);
    if out.len() != oe {
        return Err(FusedError::OutputLength { m, n, expected: oe, got: out.len() });
    }
    if threads == Some(0) {
        return Err(DequantError::ThreadPool("threads must be at least 1".into()).into());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let tile = tile_rows(k);
    // Validates the type (has a dequantizer) and picks the kernel once for one whole tile.
    let (kernel, path) = prepare(ty, tile.min(n) * row_bytes, tile.min(n) * k, Path::Auto)?;
    let mul = pick_mul(path);

    // Results are produced transposed (`n × m`): each tile owns a contiguous chunk.
    let mut out_t = vec![0f32; n * m];
    let task = |scratch: &mut Vec<f32>, (wt, ot): (&[u8], &mut [f32])| {
        let rows = wt.len() / row_bytes;
        let s = &mut scratch[..rows * k];
        // SAFETY: `wt` is `rows` whole rows of whole blocks (checked above), decoding to exactly
        // `rows * k` values = `s.len()`; `prepare` checked the kernel's CPU features.
        unsafe { kernel(wt, s) };
        // SAFETY: `mul` was chosen for `path`, whose CPU features `prepare` confirmed; the slices have the
        // lengths the micro-kernel expects (`s`: rows×k, `x`: m×k, `ot`: rows×m).
        unsafe { mul(x, s, ot, m, k) };
    };
    let serial = threads == Some(1) || n <= tile || (threads.is_none() && rayon::current_num_threads() == 1);
    if serial {
        let mut scratch = vec![0f32; tile * k];
        for item in w.chunks(tile * row_bytes).zip(out_t.chunks_mut(tile * m)) {
            task(&mut scratch, item);
        }
    } else {
        let work = |out_t: &mut [f32]| {
            w.par_chunks(tile * row_bytes)
                .zip(out_t.par_chunks_mut(tile * m))
                .for_each_init(|| vec![0f32; tile * k], |scratch, item| task(scratch, item));
        };
        match threads {
            None => work(&mut out_t),
            Some(t) => pool(t)?.install(|| work(&mut out_t)),
        }
    }
    for j in 0..n {
        for i in 0..m {
            out[i * n + j] = out_t[j * m + i];
        }
    }
    Ok(())
}

/// The micro-kernel: `ot[r][i] = dot(x[i], w[r])` for every tile row `r` and activation row `i`.
/// `unsafe` because the SIMD variants need their CPU features.
type MulFn = unsafe fn(&[f32], &[f32], &mut [f32], usize, usize);

fn pick_mul(path: Path) -> MulFn {
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => mul_avx512,
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => mul_avx2,
        _ => mul_scalar,
    }
}

const LANES: usize = 16;

/// Pairwise sum of the 16 lanes (a fixed order, the same on every path).
#[inline(always)]
fn hsum(a: &[f32; LANES]) -> f32 {
    let mut v = *a;
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            v[l] += v[l + w];
        }
        w /= 2;
    }
    v[0]
}

/// Shared body. `fma(a, b, c) = a·b + c`, fused where the caller's ISA has it. Blocks of 4 weight rows ×
/// 2 activation rows keep 8 independent accumulators of 16 lanes and reuse every load twice or four times.
#[inline(always)]
fn mul_body<F: Fn(f32, f32, f32) -> f32 + Copy>(x: &[f32], w: &[f32], ot: &mut [f32], m: usize, k: usize, fma: F) {
    let rows = w.len() / k;
    let kv = k / LANES * LANES;
    let mut r = 0;
    while r < rows {
        let rb = (rows - r).min(4);
        let mut i = 0;
        while i < m {
            let ib = (m - i).min(2);
            let mut acc = [[[0f32; LANES]; 2]; 4];
            let xs: [&[f32]; 2] = [&x[i * k..(i + 1) * k], &x[(i + ib - 1) * k..(i + ib) * k]];
            let wr = |q: usize| &w[(r + q.min(rb - 1)) * k..(r + q.min(rb - 1) + 1) * k];
            let ws: [&[f32]; 4] = [wr(0), wr(1), wr(2), wr(3)];
            let mut l = 0;
            while l < kv {
                for q in 0..4 {
                    let wv: &[f32; LANES] = ws[q][l..l + LANES].try_into().unwrap();
                    for p in 0..2 {
                        let xv: &[f32; LANES] = xs[p][l..l + LANES].try_into().unwrap();
                        for t in 0..LANES {
                            acc[q][p][t] = fma(xv[t], wv[t], acc[q][p][t]);
                        }
                    }
                }
                l += LANES;
            }
            for q in 0..rb {
                for p in 0..ib {
                    let mut s = hsum(&acc[q][p]);
                    for t in kv..k {
                        s = fma(xs[p][t], ws[q][t], s);
                    }
                    ot[(r + q) * m + i + p] = s;
                }
            }
            i += ib;
        }
        r += rb;
    }
}

unsafe fn mul_scalar(x: &[f32], w: &[f32], ot: &mut [f32], m: usize, k: usize) {
    mul_body(x, w, ot, m, k, |a, b, c| a * b + c)
}

#[cfg(target_arch = "x86_64")]
use simd::{mul_avx2, mul_avx512};

/// Explicit-intrinsic micro-kernels: the same lane assignment, fused multiply-adds and pairwise lane sum as
/// `mul_body` with `f32::mul_add`, so they are bit-identical to that scalar code (tested below).
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{hsum, LANES};
    use std::arch::x86_64::*;

    /// Values of k per chunk (2 KiB of each row).
    const KC: usize = 512;

    macro_rules! mul_kernel {
        ($fname:ident, $feat:literal, $n:expr, $load:ident, $fma:ident, $zero:ident, $store:ident) => {
            /// `ot[r][i] = dot(x[i], w[r])`. Caller contract: the CPU has the enabled features,
            /// `x.len() == m * k`, `w.len()` is a multiple of `k`, `ot.len() == w.len() / k * m`, `k > 0`.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $fname(x: &[f32], w: &[f32], ot: &mut [f32], m: usize, k: usize) {
                const STEP: usize = LANES / $n;
                let rows = w.len() / k;
                assert!(x.len() == m * k && ot.len() == rows * m && w.len() == rows * k);
                let kv = k / LANES * LANES;
                let (xp, wp) = (x.as_ptr(), w.as_ptr());
                // Lane accumulators of every (weight row, activation row) pair persist across k-chunks, so
                // the 4 weight rows of a block stay in L1 while all activation rows stream past them. The
                // per-lane operation sequence is unchanged by the chunking.
                let mut buf = vec![0f32; rows * m * LANES];
                let bp = buf.as_mut_ptr();
                let mut k0 = 0;
                while k0 < kv {
                    let k1 = (k0 + KC).min(kv);
                    let mut r = 0;
                    while r < rows {
                        let rb = (rows - r).min(4);
                        // Short blocks repeat their last row (computed, never stored).
                        let rq = [0, 1, 2, 3].map(|q: usize| r + q.min(rb - 1));
                        let ws = rq.map(|row| wp.add(row * k));
                        let mut i = 0;
                        while i < m {
                            let ib = (m - i).min(2);
                            let ip = [i, i + ib - 1];
                            let xs = [xp.add(i * k), xp.add((i + ib - 1) * k)];
                            let mut acc = [[$zero(); $n]; 8];
                            // SAFETY (buffer): (row, i) < (rows, m), so every slot lies inside `buf`.
                            for q in 0..4 {
                                for p in 0..2 {
                                    for h in 0..$n {
                                        acc[2 * q + p][h] = $load(bp.add((rq[q] * m + ip[p]) * LANES + h * STEP));
                                    }
                                }
                            }
                            let mut l = k0;
                            while l < k1 {
                                // SAFETY (loads): l + LANES <= kv <= k, so every read stays inside its row.
                                for h in 0..$n {
                                    let off = l + h * STEP;
                                    let x0 = $load(xs[0].add(off));
                                    let x1 = $load(xs[1].add(off));
                                    for q in 0..4 {
                                        let wv = $load(ws[q].add(off));
                                        acc[2 * q][h] = $fma(x0, wv, acc[2 * q][h]);
                                        acc[2 * q + 1][h] = $fma(x1, wv, acc[2 * q + 1][h]);
                                    }
                                }
                                l += LANES;
                            }
                            for q in 0..rb {
                                for p in 0..ib {
                                    for h in 0..$n {
                                        $store(bp.add((rq[q] * m + ip[p]) * LANES + h * STEP), acc[2 * q + p][h]);
                                    }
                                }
                            }
                            i += ib;
                        }
                        r += rb;
                    }
                    k0 = k1;
                }
                for row in 0..rows {
                    for i in 0..m {
                        let lanes: &[f32; LANES] =
                            buf[(row * m + i) * LANES..(row * m + i + 1) * LANES].try_into().unwrap();
                        let mut s = hsum(lanes);
                        for t in kv..k {
                            s = x[i * k + t].mul_add(w[row * k + t], s);
                        }
                        ot[row * m + i] = s;
                    }
                }
            }
        };
    }
    mul_kernel!(mul_avx2, "avx2,fma", 2, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_setzero_ps, _mm256_storeu_ps);
    mul_kernel!(
        mul_avx512,
        "avx512f,avx2,fma",
        1,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_setzero_ps,
        _mm512_storeu_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn check(ty: GgmlType, m: usize, k: usize, n: usize, threads: Option<usize>) {
        let mut seed = 0x9E3779B97F4A7C15u64 ^ (m * 131 + k * 7 + n) as u64;
        let vals: Vec<f32> = (0..n * k).map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0).collect();
        let w = super::super::quantize(ty, &vals).unwrap();
        let wf = super::super::dequantize_to_vec(ty, &w).unwrap();
        let x: Vec<f32> = (0..m * k).map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0).collect();
        let mut out = vec![f32::NAN; m * n];
        linear_fused(ty, &x, m, k, &w, n, &mut out, threads).unwrap();
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut a) = (0f64, 0f64);
                for l in 0..k {
                    let p = x[i * k + l] as f64 * wf[j * k + l] as f64;
                    s += p;
                    a += p.abs();
                }
                let got = out[i * n + j] as f64;
                let bound = k as f64 * 2f64.powi(-24) * a + 1e-30;
                assert!((got - s).abs() <= bound, "{ty} m={m} k={k} n={n} [{i},{j}]: {got} vs {s} (bound {bound})");
            }
        }
        // Scalar micro-kernel on the same tiles agrees within the same bound, and threads do not matter.
        let mut again = vec![0f32; m * n];
        linear_fused(ty, &x, m, k, &w, n, &mut again, Some(2)).unwrap();
        assert_eq!(
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            again.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn fused_matches_f64_reference() {
        for &ty in &[GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K, GgmlType::F16, GgmlType::BF16] {
            for &(m, k, n) in &[(1, 256, 9), (2, 512, 70), (3, 256, 130), (5, 1024, 33), (16, 256, 64)] {
                check(ty, m, k, n, None);
                check(ty, m, k, n, Some(1));
            }
        }
        check(GgmlType::F32, 3, 37, 11, None); // k not a multiple of 16: the scalar tail
    }

    #[test]
    fn simd_micro_kernels_match_scalar_within_bound() {
        let (m, k) = (3usize, 1200usize + 7);
        let mut seed = 42u64;
        let x: Vec<f32> = (0..m * k).map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0).collect();
        let w: Vec<f32> = (0..7 * k).map(|_| (rng(&mut seed) % 2001) as f32 / 1000.0 - 1.0).collect();
        let mut want = vec![0f32; 7 * m];
        // SAFETY: the scalar kernel has no CPU requirements; lengths as documented.
        unsafe { mul_scalar(&x, &w, &mut want, m, k) };
        let mut want_fma = vec![0f32; 7 * m];
        mul_body(&x, &w, &mut want_fma, m, k, |a: f32, b: f32, c: f32| a.mul_add(b, c));
        for path in [Path::Avx2, Path::Avx512] {
            if !path.available() {
                continue;
            }
            let mut got = vec![0f32; 7 * m];
            // SAFETY: `path.available()` confirmed the features.
            unsafe { pick_mul(path)(&x, &w, &mut got, m, k) };
            // bit-identical to the scalar body with fused multiply-adds
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want_fma.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{path:?}"
            );
            for (g, s) in got.iter().zip(&want) {
                assert!((g - s).abs() <= k as f32 * 2f32.powi(-23) * 80.0, "{path:?}: {g} vs {s}");
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let w = vec![0u8; 34 * 2];
        let mut out = vec![0f32; 2];
        assert!(matches!(
            linear_fused(GgmlType::Q8_0, &[0.0; 32], 1, 32, &w, 3, &mut [0f32; 3], None),
            Err(FusedError::WeightLength { .. })
        ));
        assert!(matches!(
            linear_fused(GgmlType::Q8_0, &[0.0; 30], 1, 30, &w, 2, &mut out, None),
            Err(FusedError::Features { .. })
        ));
        assert!(matches!(
            linear_fused(GgmlType::Q8_1, &[0.0; 32], 1, 32, &[0u8; 36 * 2], 2, &mut out, None),
            Err(FusedError::Dequant(DequantError::Unsupported { .. }))
        ));
        assert!(linear_fused(GgmlType::Q8_0, &[0.0; 64], 1, 64, &w, 1, &mut out[..1], Some(0)).is_err());
    }
}
