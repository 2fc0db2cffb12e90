//! `compute="ggml"`: a matmul that does what llama.cpp's x86 CPU backend does instead of exact f32
//! arithmetic. Each activation row is quantized to the weight type's `vec_dot_type` (Q8_0 for Q4_0/Q8_0,
//! Q8_K for the K-quants and IQ4_XS) the way ggml's AVX2 quantizers round, and each output is the integer
//! block dot product scaled and summed in the float order of ggml's AVX2/AVX-512 kernels (see [`dot`]).
//! The result matches llama.cpp's `ggml_mul_mat` on such a CPU bit for bit; it is *not* the exact product
//! of the dequantized weight with the f32 activations (activations lose precision to 8 bits per value).
//!
//! Threads split the weight rows; each activation row is quantized once per call.

pub mod dot;
mod iq4xs;
pub mod q8;
#[cfg(test)]
mod tests;

use crate::quants::GgmlDType;
use q8::{BlockQ8K, BlockQ8_0, QK8_0, QK_K};
use rayon::prelude::*;

/// Why a `compute="ggml"` matmul was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgmlComputeError {
    #[error("compute=\"ggml\" supports Q4_0, Q8_0, Q4_K, Q5_K, Q6_K and IQ4_XS weights, not {ty}")]
    Unsupported { ty: GgmlDType },
    #[error("{ty}: in_features k={k} is not a multiple of the block size {block}")]
    BadK { ty: GgmlDType, k: usize, block: usize },
    #[error("{what}: expected {expected} {unit}, got {got}")]
    Length { what: &'static str, expected: usize, got: usize, unit: &'static str },
    #[error("could not build a thread pool: {0}")]
    ThreadPool(String),
}

/// One weight type's kernel: its activation block, quantizer and row dot product.
trait Kernel {
    type A: Copy + Default + Send + Sync;
    /// Values per activation (and weight) block.
    const QK: usize;
    /// Bytes per weight block.
    const WB: usize;
    fn quant(x: &[f32], out: &mut [Self::A]);
    fn dot(w: &[u8], a: &[Self::A]) -> f32;
}

macro_rules! kernel {
    ($name:ident, $a:ty, $qk:expr, $wb:expr, $quant:path, $dot:path) => {
        struct $name;
        impl Kernel for $name {
            type A = $a;
            const QK: usize = $qk;
            const WB: usize = $wb;
            #[inline(always)]
            fn quant(x: &[f32], out: &mut [$a]) {
                $quant(x, out)
            }
            #[inline(always)]
            fn dot(w: &[u8], a: &[$a]) -> f32 {
                $dot(w, a)
            }
        }
    };
}

kernel!(KQ4_0, BlockQ8_0, QK8_0, dot::Q4_0_BYTES, q8::quantize_row_q8_0, dot::dot_q4_0);
kernel!(KQ8_0, BlockQ8_0, QK8_0, dot::Q8_0_BYTES, q8::quantize_row_q8_0, dot::dot_q8_0);
kernel!(KQ4K, BlockQ8K, QK_K, dot::Q4_K_BYTES, q8::quantize_row_q8_k, dot::dot_q4_k);
kernel!(KQ5K, BlockQ8K, QK_K, dot::Q5_K_BYTES, q8::quantize_row_q8_k, dot::dot_q5_k);
kernel!(KQ6K, BlockQ8K, QK_K, dot::Q6_K_BYTES, q8::quantize_row_q8_k, dot::dot_q6_k);
kernel!(KIQ4XS, BlockQ8K, QK_K, dot::IQ4_XS_BYTES, q8::quantize_row_q8_k, iq4xs::dot_iq4_xs);

/// Whether `compute="ggml"` handles weights of this type.
pub fn supports(ty: GgmlDType) -> bool {
    matches!(
        ty,
        GgmlDType::Q4_0 | GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K | GgmlDType::IQ4XS
    )
}

/// Which build of the kernels runs here: "avx2" (AVX2+FMA, vectorised by the compiler) or "portable". Both
/// give the same bits.
pub fn kernel_path() -> &'static str {
    if avx2() {
        "avx2"
    } else {
        "portable"
    }
}

#[inline]
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[j][i] = dot(w row i, x row j)` for the weight rows in `w` (`rows` of them, starting anywhere), into
/// `out` laid out row-of-weights-major (`out[i * m + j]`).
#[inline(always)]
fn rows_body<K: Kernel>(w: &[u8], row_bytes: usize, acts: &[K::A], m: usize, out: &mut [f32]) {
    let nb = acts.len() / m;
    for (wr, o) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(m)) {
        for (j, oj) in o.iter_mut().enumerate() {
            *oj = K::dot(wr, &acts[j * nb..(j + 1) * nb]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_avx2<K: Kernel>(w: &[u8], row_bytes: usize, acts: &[K::A], m: usize, out: &mut [f32]) {
    rows_body::<K>(w, row_bytes, acts, m, out)
}

fn rows<K: Kernel>(w: &[u8], row_bytes: usize, acts: &[K::A], m: usize, out: &mut [f32], fast: bool) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` is only true when `avx2()` found AVX2 and FMA on this CPU.
        unsafe { rows_avx2::<K>(w, row_bytes, acts, m, out) };
        return;
    }
    let _ = fast;
    rows_body::<K>(w, row_bytes, acts, m, out)
}

#[allow(clippy::too_many_arguments)]
fn run<K: Kernel>(
    ty: GgmlDType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    out: &mut [f32],
    threads: Option<usize>,
    fast: bool,
) -> Result<(), GgmlComputeError> {
    if k == 0 || !k.is_multiple_of(K::QK) {
        return Err(GgmlComputeError::BadK { ty, k, block: K::QK });
    }
    let nb = k / K::QK;
    let row_bytes = nb * K::WB;
    let check = |what, expected: usize, got: usize, unit| {
        if expected == got {
            Ok(())
        } else {
            Err(GgmlComputeError::Length { what, expected, got, unit })
        }
    };
    check("x", m * k, x.len(), "values")?;
    check("w", n * row_bytes, w.len(), "bytes")?;
    check("out", m * n, out.len(), "values")?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let mut acts = vec![K::A::default(); m * nb];
    for (xr, ar) in x.chunks_exact(k).zip(acts.chunks_exact_mut(nb)) {
        K::quant(xr, ar);
    }
    let n_threads = threads.unwrap_or_else(rayon::current_num_threads).max(1);
    // Tasks of whole weight rows: a few per thread, at least 8 rows.
    let rows_per_task = n.div_ceil(n_threads * 4).max(8);
    let work = |dst: &mut [f32]| {
        if n_threads == 1 || n <= rows_per_task {
            rows::<K>(w, row_bytes, &acts, m, dst, fast);
        } else {
            w.par_chunks(rows_per_task * row_bytes)
                .zip(dst.par_chunks_mut(rows_per_task * m))
                .for_each(|(wc, oc)| rows::<K>(wc, row_bytes, &acts, m, oc, fast));
        }
    };
    let pooled = |f: &mut (dyn FnMut() + Send)| -> Result<(), GgmlComputeError> {
        match threads {
            Some(t) if t > 1 => {
                crate::quants::pool(t).map_err(|e| GgmlComputeError::ThreadPool(e.to_string()))?.install(f)
            }
            _ => f(),
        }
        Ok(())
    };
    if m == 1 {
        pooled(&mut || work(out))
    } else {
        let mut t = vec![0f32; n * m];
        pooled(&mut || work(&mut t))?;
        for (i, ti) in t.chunks_exact(m).enumerate() {
            for (j, &v) in ti.iter().enumerate() {
                out[j * n + i] = v;
            }
        }
        Ok(())
    }
}

/// `out = x · Wᵀ` as llama.cpp's CPU backend computes it: `x` is `m × k` f32 activations, `w` the `n` packed
/// rows of a `ty` weight, `out` `m × n`. `threads`: `None` = rayon's global pool. Nothing panics on bad
/// shapes; they are refused with a [`GgmlComputeError`].
#[allow(clippy::too_many_arguments)]
pub fn linear_ggml(
    ty: GgmlDType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    out: &mut [f32],
    threads: Option<usize>,
) -> Result<(), GgmlComputeError> {
    linear_ggml_path(ty, x, m, k, w, n, out, threads, true)
}

/// As [`linear_ggml`]; `simd = false` forces the portable build (tests check both give the same bits).
#[allow(clippy::too_many_arguments)]
pub fn linear_ggml_path(
    ty: GgmlDType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    out: &mut [f32],
    threads: Option<usize>,
    simd: bool,
) -> Result<(), GgmlComputeError> {
    let fast = simd && avx2();
    match ty {
        GgmlDType::Q4_0 => run::<KQ4_0>(ty, x, m, k, w, n, out, threads, fast),
        GgmlDType::Q8_0 => run::<KQ8_0>(ty, x, m, k, w, n, out, threads, fast),
        GgmlDType::Q4K => run::<KQ4K>(ty, x, m, k, w, n, out, threads, fast),
        GgmlDType::Q5K => run::<KQ5K>(ty, x, m, k, w, n, out, threads, fast),
        GgmlDType::Q6K => run::<KQ6K>(ty, x, m, k, w, n, out, threads, fast),
        GgmlDType::IQ4XS => run::<KIQ4XS>(ty, x, m, k, w, n, out, threads, fast),
        _ => Err(GgmlComputeError::Unsupported { ty }),
    }
}
