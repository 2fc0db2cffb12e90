//! `ggml_vec_dot_iq4_xs_q8_K` (AVX2 path): sixteen non-linear 4-bit codebook values, a 6-bit signed scale per
//! 32 values, one f16 scale per super-block; the integer lanes are formed as for the other kernels (see
//! `dot.rs`), then one FMA per super-block with `d_w · d_a`.

use super::dot::IQ4_XS_BYTES;
use super::q8::BlockQ8K;
use crate::quants::float::f16_to_f32;
use crate::quants::tables::KVALUES_IQ4NL;

#[inline(always)]
pub fn dot_iq4_xs(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, y) in w.chunks_exact(IQ4_XS_BYTES).zip(a) {
        let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]])) * y.d;
        let sh = u16::from_le_bytes([b[2], b[3]]) as i32;
        let (sl, qs) = (&b[4..8], &b[8..136]);
        let mut sumi = [0i32; 8];
        for ib in 0..8 {
            let lo = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32;
            let ls = (lo | (((sh >> (2 * ib)) & 3) << 4)) - 32;
            let q = &qs[16 * ib..16 * ib + 16];
            let y8 = &y.qs[32 * ib..32 * ib + 32];
            let mut p = [0i32; 32];
            for e in 0..16 {
                p[e] = KVALUES_IQ4NL[(q[e] & 15) as usize] as i32 * y8[e] as i32;
                p[e + 16] = KVALUES_IQ4NL[(q[e] >> 4) as usize] as i32 * y8[e + 16] as i32;
            }
            for l in 0..8 {
                sumi[l] += ls * ((p[4 * l] + p[4 * l + 1]) + (p[4 * l + 2] + p[4 * l + 3]));
            }
        }
        for l in 0..8 {
            acc[l] = d.mul_add(sumi[l] as f32, acc[l]);
        }
    }
    let r = [acc[4] + acc[0], acc[5] + acc[1], acc[6] + acc[2], acc[7] + acc[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}
