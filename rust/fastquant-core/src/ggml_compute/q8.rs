//! Activation quantization to ggml's 8-bit dot-product formats, rounding as ggml's x86 CPU backend does.
//!
//! * Q8_0 (32 values, one f16 scale): the backend's AVX/AVX2 quantizer takes `amax = max |x|`, stores
//!   `d = f16(amax / 127)` and multiplies every value by `id = 127 / amax` (not by `1 / d`), then rounds to
//!   the nearest integer with ties to even (a vector round instruction), saturating to the int8 range. The
//!   portable reference quantizer instead multiplies by `1 / d` and rounds ties away from zero, so the two
//!   can differ by one step; this module follows the SIMD one, which is what x86 builds run.
//! * Q8_K (256 values, one f32 scale, sixteen int16 group sums): `max` is the first value of largest
//!   magnitude, `iscale = -127 / max`, each value is rounded (ties to even) from `iscale · x` and clamped at
//!   127, `d = 1 / iscale`, and `bsums[g]` sums the 16 quants of group `g`. An all-zero block has `d = 0`.

use crate::quants::float::f16_to_f32;
use half::f16;

/// Values per Q8_0 block.
pub const QK8_0: usize = 32;
/// Values per Q8_K block.
pub const QK_K: usize = 256;

/// One Q8_0 activation block: `d` is the f32 value of the stored f16 scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: f32,
    pub qs: [i8; QK8_0],
}

/// One Q8_K activation block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8_0 {
    fn default() -> Self {
        BlockQ8_0 { d: 0.0, qs: [0; QK8_0] }
    }
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }
    }
}

/// `maxps` semantics: the second operand unless the first is strictly greater.
#[inline(always)]
fn maxps(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Quantizes one row (`x.len() == out.len() * 32`) to Q8_0.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * QK8_0);
    for (xb, y) in x.chunks_exact(QK8_0).zip(out.iter_mut()) {
        // The vector code keeps eight running maxima (lane l sees x[l], x[l+8], ...) and then reduces
        // them pairwise; max is exact, so only NaN ordering could tell the orders apart.
        let mut lanes = [0f32; 8];
        for (l, m) in lanes.iter_mut().enumerate() {
            let mut v = xb[l].abs();
            for r in 1..4 {
                v = maxps(v, xb[l + 8 * r].abs());
            }
            *m = v;
        }
        let m4 = [
            maxps(lanes[4], lanes[0]),
            maxps(lanes[5], lanes[1]),
            maxps(lanes[6], lanes[2]),
            maxps(lanes[7], lanes[3]),
        ];
        let amax = maxps(maxps(m4[0], m4[2]), maxps(m4[1], m4[3]));
        let d = amax / 127.0;
        y.d = f16_to_f32(f16::from_f32(d).to_bits());
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            // cvtps_epi32 of an already-integral value is exact; the two packs saturate to int8.
            *q = (v * id).round_ties_even().clamp(-128.0, 127.0) as i8;
        }
    }
}

/// Quantizes one row (`x.len() == out.len() * 256`) to Q8_K.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            let a = v.abs();
            if a > amax {
                amax = a;
                max = v;
            }
        }
        if amax == 0.0 {
            *y = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            // |iscale · v| ≤ 127 (up to rounding), so the int8 cast after the clamp at 127 is exact.
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        for (g, s) in y.bsums.iter_mut().enumerate() {
            *s = y.qs[16 * g..16 * g + 16].iter().map(|&q| q as i16).sum();
        }
        y.d = 1.0 / iscale;
    }
}
