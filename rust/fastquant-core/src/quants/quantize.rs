//! Quantizers: F16, BF16 and the legacy types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 reproduce gguf-py's
//! `gguf.quants.quantize` bit for bit (same f32 arithmetic and the same rounding: truncation after +0.5 /
//! +8.5 / +16.5 for the 4/5-bit types, round-half-away-from-zero for Q8_0); Q4_K, Q5_K and Q6_K follow ggml's
//! reference quantizers (`quantize_row_q*_K_ref`: iterative scale/min search, `nearest_int` rounding).
//!
//! Inputs are expected to be finite; NaN/Inf inputs give some output without panicking, but the bytes are not
//! promised to equal any peer's (gguf-py's own result for them depends on numpy's float→uint8 cast).

use super::float::{f16_to_f32, f32_to_bf16, f32_to_f16};
use super::kquants::scale_min_k4;
use super::GgmlType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantizeError {
    #[error("{ty}: {len} values is not a whole number of {block}-element blocks")]
    PartialBlock { ty: GgmlType, len: usize, block: usize },
    #[error("{ty}: output buffer is {got} bytes, expected {expected}")]
    OutputLength { ty: GgmlType, expected: usize, got: usize },
    #[error("quantization to {ty} is not implemented (supported: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K)")]
    Unsupported { ty: GgmlType },
}

fn block_fn(ty: GgmlType) -> Option<fn(&[f32], &mut [u8])> {
    use GgmlType::*;
    Some(match ty {
        F32 => |x, o| o[..4].copy_from_slice(&x[0].to_le_bytes()),
        F16 => |x, o| o[..2].copy_from_slice(&f32_to_f16(x[0]).to_le_bytes()),
        BF16 => |x, o| o[..2].copy_from_slice(&f32_to_bf16(x[0]).to_le_bytes()),
        Q8_0 => q8_0,
        Q4_0 => |x, o| sym_nibbles(x, o, 8.0, 15),
        Q5_0 => |x, o| sym_nibbles(x, o, 16.0, 31),
        Q4_1 => |x, o| asym_nibbles(x, o, 15),
        Q5_1 => |x, o| asym_nibbles(x, o, 31),
        Q4K => q4_k,
        Q5K => q5_k,
        Q6K => q6_k,
        _ => return None,
    })
}

/// Quantize `src` into `dst` (exactly the encoded size).
pub fn quantize_into(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    let f = block_fn(ty).ok_or(QuantizeError::Unsupported { ty })?;
    let (be, bb) = ty.block_geometry();
    if src.len() % be != 0 {
        return Err(QuantizeError::PartialBlock { ty, len: src.len(), block: be });
    }
    let expected = src.len() / be * bb;
    if dst.len() != expected {
        return Err(QuantizeError::OutputLength { ty, expected, got: dst.len() });
    }
    for (x, o) in src.chunks_exact(be).zip(dst.chunks_exact_mut(bb)) {
        f(x, o);
    }
    Ok(())
}

/// Quantize `src` into a new byte vector.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantizeError> {
    block_fn(ty).ok_or(QuantizeError::Unsupported { ty })?;
    let (be, bb) = ty.block_geometry();
    if src.len() % be != 0 {
        return Err(QuantizeError::PartialBlock { ty, len: src.len(), block: be });
    }
    let mut out = vec![0u8; src.len() / be * bb];
    quantize_into(ty, src, &mut out)?;
    Ok(out)
}

/// numpy's `where(d == 0, 0, 1 / d)` in f32.
#[inline]
fn inv(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// numpy's float32 → uint8 cast followed by `.clip(0, hi)`, for the in-range values finite inputs give.
#[inline]
fn to_u8_clip(v: f32, hi: u8) -> u8 {
    (v as i64).clamp(0, 255).min(hi as i64) as u8
}

fn q8_0(x: &[f32], o: &mut [u8]) {
    let amax = x[..32].iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inv(d);
    o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    for j in 0..32 {
        // Round half away from zero (gguf-py's np_roundf, equal to f32::round for finite values).
        o[2 + j] = (x[j] * id).round() as i8 as u8;
    }
}

/// Q4_0 (`off` 8, max 15) and Q5_0 (`off` 16, max 31): d = (value of largest magnitude) / -off.
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
fn asym_nibbles(x: &[f32], o: &mut [u8], qmax: u8) {
    let max = x[..32].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = x[..32].iter().copied().fold(f32::INFINITY, f32::min);
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
fn kquant_asym(x: &[f32], o: &mut [u8], nmax: i32, rmin: f32, nstep: i32) -> [u8; 256] {
    let mut l = [0u8; 256];
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

fn q4_k(x: &[f32], o: &mut [u8]) {
    let l = kquant_asym(x, o, 15, -1.0, 20);
    let qs = &mut o[16..144];
    for (k, j) in (0..256).step_by(64).enumerate() {
        for i in 0..32 {
            qs[32 * k + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

fn q5_k(x: &[f32], o: &mut [u8]) {
    let l = kquant_asym(x, o, 31, -0.5, 15);
    let (qh, qs) = o[16..176].split_at_mut(32);
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

fn q6_k(x: &[f32], o: &mut [u8]) {
    let mut l = [0i8; 256];
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
    o[..210].fill(0);
    if max_abs < GROUP_MAX_EPS {
        return; // all-zero block, d = +0
    }
    let iscale = -128.0 / max_scale;
    let dh = f32_to_f16(1.0 / iscale);
    o[208..210].copy_from_slice(&dh.to_le_bytes());
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
            (GgmlType::Q8_0, 0.005),
            (GgmlType::Q4_0, 0.126), // the value opposite the max clips at 15: up to d = amax/8
            (GgmlType::Q4_1, 0.07), // half a step of (max - min)/15 plus f16 rounding
            (GgmlType::Q5_0, 0.063),
            (GgmlType::Q5_1, 0.035),
            (GgmlType::Q4K, 0.09),
            (GgmlType::Q5K, 0.045),
            (GgmlType::Q6K, 0.03),
            (GgmlType::F16, 0.001),
            (GgmlType::BF16, 0.004),
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

    #[test]
    fn known_values() {
        // Q8_0 of 0..31: d = 31/127, codes round(x * 127/31).
        let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let q = quantize(GgmlType::Q8_0, &x).unwrap();
        assert_eq!(u16::from_le_bytes([q[0], q[1]]), f32_to_f16(31.0 / 127.0));
        assert_eq!(q[2 + 31], 127);
        assert_eq!(q[2 + 1], 4); // 1 * 127/31 = 4.096...
        // Zero blocks quantize to zero scales and decode to zeros.
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            let z = vec![0f32; 256];
            let y = dequantize_to_vec(ty, &quantize(ty, &z).unwrap()).unwrap();
            assert!(y.iter().all(|v| *v == 0.0), "{ty}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            quantize(GgmlType::Q4_0, &[0.0; 33]),
            Err(QuantizeError::PartialBlock { ty: GgmlType::Q4_0, len: 33, block: 32 })
        );
        assert_eq!(quantize(GgmlType::IQ2XXS, &[0.0; 256]), Err(QuantizeError::Unsupported { ty: GgmlType::IQ2XXS }));
        let mut out = [0u8; 10];
        assert!(matches!(quantize_into(GgmlType::Q8_0, &[0.0; 32], &mut out), Err(QuantizeError::OutputLength { .. })));
        // Non-finite input does not panic.
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q6K] {
            let mut x = vec![1.0f32; 256];
            x[3] = f32::NAN;
            x[7] = f32::INFINITY;
            let _ = quantize(ty, &x).unwrap();
        }
    }
}
