//! Quantizers: F16, BF16 and the legacy types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 reproduce gguf-py's
//! `gguf.quants.quantize` bit for bit (same f32 arithmetic and the same rounding: truncation after +0.5 /
//! +8.5 / +16.5 for the 4/5-bit types, round-half-away-from-zero for Q8_0); Q4_K, Q5_K and Q6_K follow ggml's
//! reference quantizers (`quantize_row_q*_K_ref`: iterative scale/min search, `nearest_int` rounding).
//!
//! Inputs are expected to be finite; NaN/Inf inputs give some output without panicking, but the bytes are not
//! promised to equal any peer's (gguf-py's own result for them depends on numpy's float→uint8 cast).

use super::float::{f16_to_f32, f32_to_f16};
use super::kquants::scale_min_k4;
use super::{block, GgmlDType, Path};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantizeError {
    #[error("{ty}: {len} values is not a whole number of {block}-element blocks")]
    PartialBlock { ty: GgmlDType, len: usize, block: usize },
    #[error("{ty}: output buffer is {got} bytes, expected {expected}")]
    OutputLength { ty: GgmlDType, expected: usize, got: usize },
    #[error(
        "quantization to {ty} is not implemented (supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K)"
    )]
    Unsupported { ty: GgmlDType },
    #[error("code path {path:?} is not available on this CPU")]
    PathUnavailable { path: Path },
    #[error("could not start the thread pool: {0}")]
    ThreadPool(String),
}

/// The types [`quantize`] can produce.
pub const QUANTIZE_TYPES: [GgmlDType; 11] = [
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q8_0,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// Whether `ty` has a quantizer.
pub fn has_quantizer(ty: GgmlDType) -> bool {
    QUANTIZE_TYPES.contains(&ty)
}

/// Bytes that `n_values` values quantize to as `ty`, or why they cannot be quantized.
pub fn quantized_len(ty: GgmlDType, n_values: usize) -> Result<usize, QuantizeError> {
    if !has_quantizer(ty) {
        return Err(QuantizeError::Unsupported { ty });
    }
    let (be, bb) = ty.block_geometry();
    if !n_values.is_multiple_of(be) {
        return Err(QuantizeError::PartialBlock { ty, len: n_values, block: be });
    }
    Ok(n_values / be * bb)
}

/// Input values per parallel task (whole blocks): 64 KiB of f32.
const TASK_ELEMS: usize = 16 * 1024;

/// A K-quant block with every NaN replaced by the one quiet NaN pattern. ggml's `nearest_int` reads a NaN's
/// payload bits, and when an input NaN meets one the arithmetic made (Inf * 0), which payload survives is up
/// to operand order, which the compiler may change between builds; with one NaN pattern in the input every
/// surviving NaN has the same payload bits, so the bytes cannot depend on the path.
#[inline(always)]
fn canonical_nans(xb: &[f32]) -> [f32; block::QK_K] {
    let mut c = [0f32; block::QK_K];
    for (ci, &v) in c.iter_mut().zip(xb) {
        *ci = if v.is_nan() { f32::NAN } else { v };
    }
    c
}

/// Quantize whole blocks: `x` holds `o.len() / block_bytes` blocks of `ty` (checked by the callers).
/// `#[inline(always)]` so that [`blocks_avx2`] compiles the block functions with its instructions.
#[inline(always)]
fn blocks_generic(ty: GgmlDType, x: &[f32], o: &mut [u8]) {
    use GgmlDType::*;
    let (be, bb) = ty.block_geometry();
    // A direct call per block, so that the `#[inline(always)]` block functions inline into the caller's
    // instruction set (through a closure or `Fn` shim they stayed separate, baseline-compiled functions).
    macro_rules! each {
        ($f:ident) => {
            for (xb, ob) in x.chunks_exact(be).zip(o.chunks_exact_mut(bb)) {
                $f(xb, ob);
            }
        };
    }
    // K-quant blocks holding a NaN go through `canonical_nans` first.
    macro_rules! each_kquant {
        ($f:ident) => {
            for (xb, ob) in x.chunks_exact(be).zip(o.chunks_exact_mut(bb)) {
                if xb.iter().any(|v| v.is_nan()) {
                    $f(&canonical_nans(xb), ob);
                } else {
                    $f(xb, ob);
                }
            }
        };
    }
    match ty {
        F32 => {
            for (v, ob) in x.iter().zip(o.chunks_exact_mut(4)) {
                ob.copy_from_slice(&v.to_le_bytes());
            }
        }
        Q8_0 => each!(q8_0),
        Q4_0 => each!(q4_0),
        Q5_0 => each!(q5_0),
        Q4_1 => each!(q4_1),
        Q5_1 => each!(q5_1),
        Q4K => each_kquant!(q4_k),
        Q5K => each_kquant!(q5_k),
        Q6K => each_kquant!(q6_k),
        _ => unreachable!("callers check `has_quantizer`; F16/BF16 go through `halves`"),
    }
}

/// [`blocks_generic`] compiled for AVX2/F16C/SSE4.1 (round/trunc become single instructions and the loops can
/// use wider registers). The arithmetic is the same IEEE f32 operations in the same order (Rust never fuses
/// a multiply and an add, and FMA is not enabled here), so the bytes equal the baseline build's; the tests
/// compare the two on every type.
///
/// # Safety
/// The CPU has AVX2, F16C and SSE4.1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c,sse4.1")]
unsafe fn blocks_avx2(ty: GgmlDType, x: &[f32], o: &mut [u8]) {
    blocks_generic(ty, x, o)
}

/// F16/BF16: the crate's f32 → half slice conversion (`OutElem::from_f32_slice`, SIMD on the x86 paths, the
/// scalar `f32_to_f16`/`f32_to_bf16` otherwise; tested equal), through an L1 scratch into the byte output.
fn halves<T: super::OutElem + Default>(x: &[f32], o: &mut [u8], path: Path, bits: fn(T) -> u16) {
    let mut h = [T::default(); 2048];
    for (xc, oc) in x.chunks(2048).zip(o.chunks_mut(4096)) {
        let h = &mut h[..xc.len()];
        T::from_f32_slice(xc, h, path);
        for (v, ob) in h.iter().zip(oc.chunks_exact_mut(2)) {
            ob.copy_from_slice(&bits(*v).to_le_bytes());
        }
    }
}

/// Quantize a whole-block piece on `path`.
///
/// # Safety
/// `path` is resolved (not `Auto`) and available on this CPU.
unsafe fn run(ty: GgmlDType, x: &[f32], o: &mut [u8], path: Path) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        match ty {
            GgmlDType::F16 => return halves(x, o, path, half::f16::to_bits),
            GgmlDType::BF16 => return halves(x, o, path, half::bf16::to_bits),
            _ => {}
        }
        #[cfg(target_arch = "x86_64")]
        if matches!(path, Path::Avx2 | Path::Avx512) {
            if matches!(ty, GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q5_0 | GgmlDType::Q4_1 | GgmlDType::Q5_1) {
                // SAFETY: both x86 SIMD paths include AVX2 and F16C, and the path is available.
                simd::legacy(ty, x, o);
            } else {
                // SAFETY: both paths include AVX2, F16C and SSE4.1 and were checked available by the caller.
                blocks_avx2(ty, x, o);
            }
            return;
        }
        let _ = path;
        blocks_generic(ty, x, o);
    }
}

/// Quantize `src` into `dst` (exactly the encoded size) with the best code for this CPU, on the calling thread.
pub fn quantize_into(ty: GgmlDType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    quantize_into_with(ty, src, dst, Path::Auto, Some(1))
}

/// As [`quantize_into`], on a chosen code path (the SIMD paths compile the same arithmetic with wider
/// instructions; a path the CPU lacks is refused) and `threads` threads (`None`: rayon's global pool, one per
/// core, or the pool the caller already runs in). Tasks are whole blocks, so the result does not depend on
/// the path or the thread count.
pub fn quantize_into_with(
    ty: GgmlDType,
    src: &[f32],
    dst: &mut [u8],
    path: Path,
    threads: Option<usize>,
) -> Result<(), QuantizeError> {
    let expected = quantized_len(ty, src.len())?;
    let (be, bb) = ty.block_geometry();
    if dst.len() != expected {
        return Err(QuantizeError::OutputLength { ty, expected, got: dst.len() });
    }
    if !path.available() {
        return Err(QuantizeError::PathUnavailable { path });
    }
    let path = path.resolve();
    let task = (TASK_ELEMS / be).max(1);
    let n_threads = threads.unwrap_or_else(rayon::current_num_threads).max(1);
    if n_threads == 1 || src.len() <= task * be {
        // SAFETY: `path` was checked available above and resolved.
        unsafe { run(ty, src, dst, path) };
        return Ok(());
    }
    let mut work = || {
        use rayon::prelude::*;
        src.par_chunks(task * be).zip(dst.par_chunks_mut(task * bb)).for_each(|(x, o)| {
            // SAFETY: as above.
            unsafe { run(ty, x, o, path) }
        });
    };
    match threads {
        None => work(),
        Some(n) => super::pool(n).map_err(|e| QuantizeError::ThreadPool(e.to_string()))?.install(work),
    }
    Ok(())
}

/// Quantize `src` into a new byte vector (on the calling thread).
pub fn quantize(ty: GgmlDType, src: &[f32]) -> Result<Vec<u8>, QuantizeError> {
    quantize_with(ty, src, Path::Auto, Some(1))
}

/// As [`quantize`], with [`quantize_into_with`]'s path and threads.
pub fn quantize_with(ty: GgmlDType, src: &[f32], path: Path, threads: Option<usize>) -> Result<Vec<u8>, QuantizeError> {
    let mut out = vec![0u8; quantized_len(ty, src.len())?];
    quantize_into_with(ty, src, &mut out, path, threads)?;
    Ok(out)
}

/// numpy's `where(d == 0, 0, 1 / d)` in f32.
#[inline(always)]
fn inv(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// numpy's float32 → uint8 cast followed by `.clip(0, hi)`, for the in-range values finite inputs give. `v` is
/// already integral; NaN gives 0, +Inf and values above `hi` give `hi` (as a saturating integer cast would).
/// Written as float min/max so that it vectorizes.
#[inline(always)]
fn to_u8_clip(v: f32, hi: u8) -> u8 {
    v.max(0.0).min(hi as f32) as u8
}

#[inline(always)]
fn q8_0(x: &[f32], o: &mut [u8]) {
    let amax = x[..block::QK].iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inv(d);
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    for j in 0..block::QK {
        // Round half away from zero (gguf-py's np_roundf, equal to f32::round for finite values).
        o[2 + j] = (x[j] * id).round() as i8 as u8;
    }
}

#[inline(always)]
fn q4_0(x: &[f32], o: &mut [u8]) {
    sym_nibbles(x, o, 8.0, 15)
}

#[inline(always)]
fn q5_0(x: &[f32], o: &mut [u8]) {
    sym_nibbles(x, o, 16.0, 31)
}

#[inline(always)]
fn q4_1(x: &[f32], o: &mut [u8]) {
    asym_nibbles(x, o, 15)
}

#[inline(always)]
fn q5_1(x: &[f32], o: &mut [u8]) {
    asym_nibbles(x, o, 31)
}

/// Q4_0 (`off` 8, max 15) and Q5_0 (`off` 16, max 31): d = (value of largest magnitude) / -off.
#[inline(always)]
fn sym_nibbles(x: &[f32], o: &mut [u8], off: f32, qmax: u8) {
    // First index of the largest |x| (numpy argmax).
    let mut imax = 0;
    for j in 1..32 {
        if x[j].abs() > x[imax].abs() {
            imax = j;
        }
    }
    let d = x[imax] / -off;
    let id = inv(d);
    let mut q = [0u8; 32];
    for j in 0..32 {
        q[j] = to_u8_clip((x[j] * id + (off + 0.5)).trunc(), qmax);
    }
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    pack_nibbles(&q, o, 2, qmax > 15);
}

/// Q4_1 (max 15) and Q5_1 (max 31): d = (max - min) / qmax, m = min.
#[inline(always)]
fn asym_nibbles(x: &[f32], o: &mut [u8], qmax: u8) {
    // Plain comparisons, not f32::max/min: NaNs are skipped and, on ties between +0 and -0, the first zero
    // in the block is kept, both guaranteed by the language (f32::max leaves the zero's sign unspecified).
    let (mut max, mut min) = (f32::NEG_INFINITY, f32::INFINITY);
    for &v in &x[..block::QK] {
        if v > max {
            max = v;
        }
        if v < min {
            min = v;
        }
    }
    let d = (max - min) / qmax as f32;
    let id = inv(d);
    let mut q = [0u8; 32];
    for j in 0..32 {
        q[j] = to_u8_clip(((x[j] - min) * id + 0.5).trunc(), qmax);
    }
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    o[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
    pack_nibbles(&q, o, 4, qmax > 15);
}

/// Low nibbles of q[0..16] | high nibbles of q[16..32]; with `five_bits`, a u32 of the 5th bits first.
#[inline(always)]
fn pack_nibbles(q: &[u8; 32], o: &mut [u8], mut at: usize, five_bits: bool) {
    if five_bits {
        let mut qh = 0u32;
        for (j, &v) in q.iter().enumerate() {
            qh |= ((v >> 4) as u32 & 1) << j;
        }
        o[at..at + 4].copy_from_slice(&qh.to_le_bytes());
        at += 4;
    }
    for j in 0..16 {
        o[at + j] = (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4);
    }
}

// ---- K-quants (ggml reference algorithm) ----

const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even via the 1.5 * 2^23 trick (valid for |x| < 2^22).
#[inline]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Scale/min search for asymmetric sub-blocks (`make_qkx2_quants`). Returns (scale, -min) and fills `l`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn make_qkx2(x: &[f32], w: &[f32], nmax: i32, rmin: f32, rdelta: f32, nstep: i32, l: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let qf = q as f32;
            sum_l += w[i] * qf;
            sum_l2 += w[i] * qf * qf;
            sum_xl += w[i] * qf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Shared first half of Q4_K/Q5_K: per-32 scale/min search, 6-bit packing, f16 super-scales, final codes.
#[inline(always)]
fn kquant_asym(x: &[f32], o: &mut [u8], nmax: i32, rmin: f32, nstep: i32) -> [u8; block::QK_K] {
    let mut l = [0u8; block::QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let sub = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for v in sub {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut w = [0f32; 32];
        for (wi, v) in w.iter_mut().zip(sub) {
            *wi = av_x + v.abs();
        }
        let (s, m) = make_qkx2(sub, &w, nmax, rmin, 0.1, nstep, &mut l[32 * j..32 * j + 32]);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut o[4..16];
    sc.fill(0);
    for j in 0..8 {
        let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
        let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let dh = f32_to_f16(max_scale / 63.0);
    let mh = f32_to_f16(max_min / 63.0);
    o[0..2].copy_from_slice(&dh.to_le_bytes());
    o[2..4].copy_from_slice(&mh.to_le_bytes());
    let (d, dmin) = (f16_to_f32(dh), f16_to_f32(mh));
    let scb: [u8; 12] = o[4..16].try_into().unwrap();
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &scb);
        let dj = d * s as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    l
}

#[inline(always)]
fn q4_k(x: &[f32], o: &mut [u8]) {
    let l = kquant_asym(x, o, 15, -1.0, 20);
    let qs = &mut o[16..block::Q4_K.bytes];
    for (k, j) in (0..256).step_by(64).enumerate() {
        for i in 0..32 {
            qs[32 * k + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

#[inline(always)]
fn q5_k(x: &[f32], o: &mut [u8]) {
    let l = kquant_asym(x, o, 31, -0.5, 15);
    let (qh, qs) = o[16..block::Q5_K.bytes].split_at_mut(32);
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (k, n) in (0..256).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            qs[32 * k + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// Symmetric scale search (`make_qx_quants` with weights x², no early return). Codes stored as l + nmax.
#[inline(always)]
fn make_qx(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in &x[..n] {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (nmax + nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

#[inline(always)]
fn q6_k(x: &[f32], o: &mut [u8]) {
    let mut l = [0i8; block::QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for ib in 0..16 {
        let s = make_qx(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = s;
        if s.abs() > max_abs {
            max_abs = s.abs();
            max_scale = s;
        }
    }
    o[..block::Q6_K.bytes].fill(0);
    if max_abs < GROUP_MAX_EPS {
        return; // all-zero block, d = +0
    }
    let iscale = -128.0 / max_scale;
    let dh = f32_to_f16(1.0 / iscale);
    o[block::Q6_K.bytes - 2..block::Q6_K.bytes].copy_from_slice(&dh.to_le_bytes());
    for ib in 0..16 {
        o[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d = f16_to_f32(dh);
    for j in 0..16 {
        let dj = d * o[192 + j] as i8 as f32;
        if dj == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / dj).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let (ql, rest) = o.split_at_mut(128);
    let qh = &mut rest[..64];
    for (k, j) in (0..256).step_by(128).enumerate() {
        for i in 0..32 {
            let q = |o: usize| l[j + i + o] as u8;
            ql[64 * k + i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
            ql[64 * k + i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
            qh[32 * k + i] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
}

/// AVX2 versions of the legacy quantizers, one 32-value block in four 8-lane vectors. Every value is the
/// scalar functions' f32 operation on the same operands (max/min/abs, one division per scale, multiply then
/// add, truncation or round-half-away-from-zero, clamping), so the bytes are equal; blocks holding a NaN take
/// the scalar functions instead, because their first-index and fold rules around NaN are not worth copying.
/// The tests compare this path with the baseline build byte for byte, special values included.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{asym_nibbles, inv, q8_0, sym_nibbles, GgmlDType};
    use crate::quants::float::f32_to_f16;
    use std::arch::x86_64::*;

    /// Quantize whole blocks of a legacy type.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn legacy(ty: GgmlDType, x: &[f32], o: &mut [u8]) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            debug_assert!(matches!(
                ty,
                GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q5_0 | GgmlDType::Q4_1 | GgmlDType::Q5_1
            ));
            let bb = ty.block_geometry().1;
            for (xb, ob) in x.chunks_exact(crate::quants::block::QK).zip(o.chunks_exact_mut(bb)) {
                // SAFETY: `xb` holds 32 values and `ob` one block (chunks_exact); AVX2/F16C by this fn's contract.
                let v = [
                    _mm256_loadu_ps(xb.as_ptr()),
                    _mm256_loadu_ps(xb.as_ptr().add(8)),
                    _mm256_loadu_ps(xb.as_ptr().add(16)),
                    _mm256_loadu_ps(xb.as_ptr().add(24)),
                ];
                if has_nan(&v) {
                    match ty {
                        GgmlDType::Q8_0 => q8_0(xb, ob),
                        GgmlDType::Q4_0 => sym_nibbles(xb, ob, 8.0, 15),
                        GgmlDType::Q5_0 => sym_nibbles(xb, ob, 16.0, 31),
                        GgmlDType::Q4_1 => asym_nibbles(xb, ob, 15),
                        _ => asym_nibbles(xb, ob, 31),
                    }
                    continue;
                }
                match ty {
                    GgmlDType::Q8_0 => block_q8_0(&v, ob),
                    GgmlDType::Q4_0 => block_sym(&v, ob, 8.0, 15),
                    GgmlDType::Q5_0 => block_sym(&v, ob, 16.0, 31),
                    GgmlDType::Q4_1 => {
                        if !block_asym(&v, ob, 15) {
                            asym_nibbles(xb, ob, 15);
                        }
                    }
                    _ => {
                        if !block_asym(&v, ob, 31) {
                            asym_nibbles(xb, ob, 31);
                        }
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn has_nan(v: &[__m256; 4]) -> bool {
        let u = _mm256_or_ps(
            _mm256_or_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v[0], v[0]), _mm256_cmp_ps::<_CMP_UNORD_Q>(v[1], v[1])),
            _mm256_or_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v[2], v[2]), _mm256_cmp_ps::<_CMP_UNORD_Q>(v[3], v[3])),
        );
        _mm256_movemask_ps(u) != 0
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn abs(v: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
    }

    /// Largest lane (no NaN in `v`).
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn hmin(v: __m256) -> f32 {
        let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_min_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// 32 integral f32 values already clamped to -128..=127 or 0..=127 (the signed saturating packs would
    /// turn 128..=255 into 127) as 32 bytes, in order.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn pack32(q: &[__m256; 4]) -> __m256i {
        let i = [
            _mm256_cvttps_epi32(q[0]),
            _mm256_cvttps_epi32(q[1]),
            _mm256_cvttps_epi32(q[2]),
            _mm256_cvttps_epi32(q[3]),
        ];
        // packs works per 128-bit lane; the permute puts the 4-byte groups back in order.
        let ab = _mm256_packs_epi32(i[0], i[1]);
        let cd = _mm256_packs_epi32(i[2], i[3]);
        let p = _mm256_packs_epi16(ab, cd);
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// `f32::max(v, 0.0).min(hi)` per lane: `maxps` returns its second operand when the first is NaN, as
    /// `f32::max(NaN, 0.0)` gives 0.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn clip(v: __m256, hi: f32) -> __m256 {
        _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(hi))
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn trunc(v: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v)
    }

    /// Low nibbles of q[0..16] | high nibbles of q[16..32]; for 5-bit codes the u32 of 5th bits first.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn store_nibbles(q: __m256i, o: &mut [u8], at: usize, five_bits: bool) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            let mut at = at;
            if five_bits {
                // Bit 4 of each byte to bit 7 (16-bit shifts only spill the low byte's top bits into the
                // high byte's low bits), then one bit per byte.
                let qh = _mm256_movemask_epi8(_mm256_slli_epi16::<3>(q)) as u32;
                o[at..at + 4].copy_from_slice(&qh.to_le_bytes());
                at += 4;
            }
            let m = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(_mm256_castsi256_si128(q), m);
            let hi = _mm_and_si128(_mm256_extracti128_si256::<1>(q), m);
            let r = _mm_or_si128(lo, _mm_slli_epi16::<4>(hi));
            let dst = &mut o[at..at + 16];
            // SAFETY: `dst` is 16 bytes; unaligned store.
            _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, r);
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn block_q8_0(v: &[__m256; 4], o: &mut [u8]) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            let a = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
            let d = hmax(a) / 127.0;
            let id = _mm256_set1_ps(inv(d));
            o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
            let sign = _mm256_set1_ps(-0.0);
            let half = _mm256_set1_ps(0.5);
            let one = _mm256_set1_ps(1.0);
            let mut q = [_mm256_setzero_ps(); 4];
            for k in 0..4 {
                let p = _mm256_mul_ps(v[k], id);
                // Round half away from zero on |p| (floor, then +1 when the exact fraction is >= 0.5), sign back.
                let a = abs(p);
                let f = _mm256_floor_ps(a);
                let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_sub_ps(a, f), half), one);
                let r = _mm256_or_ps(_mm256_add_ps(f, up), _mm256_and_ps(p, sign));
                // `as i8`: saturate, NaN to 0.
                let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(r, r);
                let c = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-128.0)), _mm256_set1_ps(127.0));
                q[k] = _mm256_andnot_ps(nan, c);
            }
            let dst = &mut o[2..crate::quants::block::Q8_0.bytes];
            // SAFETY: `dst` is 32 bytes; unaligned store.
            _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, pack32(&q));
        }
    }

    /// Q4_0/Q5_0: d = (the first value of largest magnitude) / -off.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn block_sym(v: &[__m256; 4], o: &mut [u8], off: f32, qmax: u8) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            let a = [abs(v[0]), abs(v[1]), abs(v[2]), abs(v[3])];
            let amax = _mm256_set1_ps(hmax(_mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]))));
            let mut hits = 0u32;
            for (k, &ak) in a.iter().enumerate() {
                hits |= (_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(ak, amax)) as u32) << (8 * k);
            }
            let imax = hits.trailing_zeros() as usize; // some lane equals the maximum: no NaN here
            let mut lanes = [0f32; 32];
            for (k, &vk) in v.iter().enumerate() {
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * k), vk);
            }
            let d = lanes[imax] / -off;
            let id = _mm256_set1_ps(inv(d));
            let c = _mm256_set1_ps(off + 0.5);
            let mut q = [_mm256_setzero_ps(); 4];
            for k in 0..4 {
                q[k] = clip(trunc(_mm256_add_ps(_mm256_mul_ps(v[k], id), c)), qmax as f32);
            }
            o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
            store_nibbles(pack32(&q), o, 2, qmax > 15);
        }
    }

    /// Q4_1/Q5_1: d = (max - min) / qmax, m = min. Returns false, writing nothing, when the max or the min is
    /// a zero: which of +0 and -0 a max/min fold keeps is up to its operand order, so the scalar fold decides.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn block_asym(v: &[__m256; 4], o: &mut [u8], qmax: u8) -> bool {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            let max = hmax(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
            let min = hmin(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
            if max == 0.0 || min == 0.0 {
                return false;
            }
            let d = (max - min) / qmax as f32;
            let id = _mm256_set1_ps(inv(d));
            let mn = _mm256_set1_ps(min);
            let half = _mm256_set1_ps(0.5);
            let mut q = [_mm256_setzero_ps(); 4];
            for k in 0..4 {
                q[k] = clip(trunc(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], mn), id), half)), qmax as f32);
            }
            o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
            o[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
            store_nibbles(pack32(&q), o, 4, qmax > 15);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quants::dequantize_to_vec;

    fn signal(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                u * (1.0 + (i % 97) as f32 / 10.0)
            })
            .collect()
    }

    #[test]
    fn round_trip_error_is_bounded() {
        let x = signal(256 * 64, 1);
        // Max abs error relative to the block's max |x|, per type (loose upper bounds of the format's step).
        for (ty, bound) in [
            (GgmlDType::Q8_0, 0.005),
            (GgmlDType::Q4_0, 0.126), // the value opposite the max clips at 15: up to d = amax/8
            (GgmlDType::Q4_1, 0.07),  // half a step of (max - min)/15 plus f16 rounding
            (GgmlDType::Q5_0, 0.063),
            (GgmlDType::Q5_1, 0.035),
            (GgmlDType::Q4K, 0.09),
            (GgmlDType::Q5K, 0.045),
            (GgmlDType::Q6K, 0.03),
            (GgmlDType::F16, 0.001),
            (GgmlDType::BF16, 0.004),
        ] {
            let q = quantize(ty, &x).unwrap();
            let y = dequantize_to_vec(ty, &q).unwrap();
            let be = ty.block_elems().max(256);
            for (xb, yb) in x.chunks(be).zip(y.chunks(be)) {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let err = xb.iter().zip(yb).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err <= bound * amax, "{ty}: err {err} > {bound} * {amax}");
            }
        }
    }

    /// Every path and thread count gives the same bytes as the baseline build on one thread, for signals,
    /// special values (±0, subnormals, huge, ±Inf, NaN) and blocks that are constant or nearly so.
    #[test]
    fn paths_and_threads_agree_byte_for_byte() {
        let mut x = signal(256 * 96, 7);
        let specials = [0.0f32, -0.0, 1e-40, -1e-40, 65504.0, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        for (i, v) in x.iter_mut().enumerate().skip(256 * 8).step_by(37).take(200) {
            *v = specials[i % specials.len()];
        }
        x[256 * 20..256 * 21].fill(0.25); // constant block
        x[256 * 21..256 * 22].fill(-0.0);
        for (i, v) in x[256 * 22..256 * 23].iter_mut().enumerate() {
            *v = 1.0 + (i % 2) as f32 * f32::EPSILON;
        }
        // Zero extremes of both signs (which zero a max/min keeps depends on operand order).
        for (i, v) in x[256 * 23..256 * 24].iter_mut().enumerate() {
            *v = match i % 5 {
                0 => 0.0,
                1 => -0.0,
                _ => (i % 7) as f32 * if i < 128 { 0.1 } else { -0.1 },
            };
        }
        // Values that scale to exact halves and to just below them (the rounding rules' edges).
        // NaNs with payloads (and a signalling one) next to infinities: the arithmetic makes NaNs of its own.
        x[256 * 25..256 * 26].fill(0.0);
        x[256 * 25 + 143] = f32::NEG_INFINITY;
        x[256 * 25 + 233] = f32::from_bits(0x7f80_0001);
        x[256 * 26 + 7] = f32::INFINITY;
        x[256 * 26 + 99] = f32::from_bits(0xffc0_1234);
        // With a block maximum of 127, Q8_0's scale is exactly 1, so these hit round-half-away's edges.
        for (i, v) in x[256 * 24..256 * 25].iter_mut().enumerate() {
            let k = (i % 32) as f32 - 16.0;
            *v = match i % 32 {
                0 => 127.0,
                j if j % 3 == 0 => k + 0.5,
                j if j % 3 == 1 => (k + 0.5) * (1.0 - f32::EPSILON),
                _ => k - 0.5,
            };
        }
        let paths: Vec<Path> =
            [Path::Scalar, Path::Avx2, Path::Avx512, Path::Neon].into_iter().filter(|p| p.available()).collect();
        for ty in QUANTIZE_TYPES {
            let want = quantize_with(ty, &x, Path::Scalar, Some(1)).unwrap();
            for &path in &paths {
                for threads in [Some(1), Some(3), None] {
                    let got = quantize_with(ty, &x, path, threads).unwrap();
                    let bad = want.iter().zip(&got).position(|(a, b)| a != b);
                    assert!(bad.is_none(), "{ty} {path:?} {threads:?}: first differing byte {bad:?}");
                }
            }
        }
    }

    #[test]
    fn known_values() {
        // Q8_0 of 0..31: d = 31/127, codes round(x * 127/31).
        let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let q = quantize(GgmlDType::Q8_0, &x).unwrap();
        assert_eq!(u16::from_le_bytes([q[0], q[1]]), f32_to_f16(31.0 / 127.0));
        assert_eq!(q[2 + 31], 127);
        assert_eq!(q[2 + 1], 4); // 1 * 127/31 = 4.096...
                                 // Zero blocks quantize to zero scales and decode to zeros.
        for ty in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let z = vec![0f32; 256];
            let y = dequantize_to_vec(ty, &quantize(ty, &z).unwrap()).unwrap();
            assert!(y.iter().all(|v| *v == 0.0), "{ty}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            quantize(GgmlDType::Q4_0, &[0.0; 33]),
            Err(QuantizeError::PartialBlock { ty: GgmlDType::Q4_0, len: 33, block: 32 })
        );
        assert_eq!(quantize(GgmlDType::IQ2XXS, &[0.0; 256]), Err(QuantizeError::Unsupported { ty: GgmlDType::IQ2XXS }));
        let mut out = [0u8; 10];
        assert!(matches!(
            quantize_into(GgmlDType::Q8_0, &[0.0; 32], &mut out),
            Err(QuantizeError::OutputLength { .. })
        ));
        let missing = [Path::Avx2, Path::Avx512, Path::Neon].into_iter().find(|p| !p.available());
        if let Some(path) = missing {
            assert_eq!(
                quantize_with(GgmlDType::Q8_0, &[0.0; 32], path, None),
                Err(QuantizeError::PathUnavailable { path })
            );
        }
        // Non-finite input does not panic.
        for ty in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_1, GgmlDType::Q4K, GgmlDType::Q6K] {
            let mut x = vec![1.0f32; 256];
            x[3] = f32::NAN;
            x[7] = f32::INFINITY;
            let _ = quantize(ty, &x).unwrap();
        }
    }
}
