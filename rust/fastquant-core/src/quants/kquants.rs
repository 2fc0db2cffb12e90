//! K-quants: 256-element super-blocks with 6-bit (Q4_K/Q5_K), 4-bit (Q2_K) or 8-bit (Q6_K) sub-block scales.
//! Scalar reference code following ggml's operation order (docs/gguf-format.md §3.2).

use super::{f16_at, BlockFormat, GgmlDType};

/// Unpack the j-th (scale, min) pair of the 12-byte packed 6-bit scale array used by Q4_K and Q5_K.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

pub struct Q2K;
impl BlockFormat for Q2K {
    const TYPE: GgmlDType = GgmlDType::Q2K;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let scales = &b[0..16];
        let qs = &b[16..80];
        let d = f16_at(b, 80);
        let dmin = f16_at(b, 82);
        for n in 0..2 {
            for j in 0..4 {
                for h in 0..2 {
                    let s = scales[8 * n + 2 * j + h];
                    let dl = d * (s & 0xF) as f32;
                    let ml = dmin * (s >> 4) as f32;
                    let q = &qs[32 * n + 16 * h..32 * n + 16 * h + 16];
                    let o = &mut y[128 * n + 32 * j + 16 * h..128 * n + 32 * j + 16 * h + 16];
                    for l in 0..16 {
                        o[l] = dl * ((q[l] >> (2 * j)) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}

/// The 16 signed 6-bit sub-block scales of Q3_K.
#[inline(always)]
pub(crate) fn q3k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let lo = if i < 8 { s[i] & 0xF } else { s[i - 8] >> 4 };
        let hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((lo | (hi << 4)) as i32 - 32) as i8;
    }
    out
}

pub struct Q3K;
impl BlockFormat for Q3K {
    const TYPE: GgmlDType = GgmlDType::Q3K;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let hmask = &b[0..32];
        let qs = &b[32..96];
        let sc = q3k_scales(&b[96..108]);
        let d = f16_at(b, 108);
        for n in 0..2 {
            for j in 0..4 {
                for h in 0..2 {
                    let dl = d * sc[8 * n + 2 * j + h] as f32;
                    for l in 0..16 {
                        let li = 16 * h + l;
                        let low = ((qs[32 * n + li] >> (2 * j)) & 3) as i32;
                        let minus = if (hmask[li] >> (4 * n + j)) & 1 == 1 { 0 } else { 4 };
                        y[128 * n + 32 * j + li] = dl * (low - minus) as f32;
                    }
                }
            }
        }
    }
}

pub struct Q4K;
impl BlockFormat for Q4K {
    const TYPE: GgmlDType = GgmlDType::Q4K;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for j in 0..4 {
            for h in 0..2 {
                let (sc, m) = scale_min_k4(2 * j + h, scales);
                let d1 = d * sc as f32;
                let m1 = dmin * m as f32;
                let q = &qs[32 * j..32 * j + 32];
                let o = &mut y[64 * j + 32 * h..64 * j + 32 * h + 32];
                for l in 0..32 {
                    o[l] = d1 * ((q[l] >> (4 * h)) & 0xF) as f32 - m1;
                }
            }
        }
    }
}

pub struct Q5K;
impl BlockFormat for Q5K {
    const TYPE: GgmlDType = GgmlDType::Q5K;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for j in 0..4 {
            for h in 0..2 {
                let (sc, m) = scale_min_k4(2 * j + h, scales);
                let d1 = d * sc as f32;
                let m1 = dmin * m as f32;
                let q = &qs[32 * j..32 * j + 32];
                let o = &mut y[64 * j + 32 * h..64 * j + 32 * h + 32];
                for l in 0..32 {
                    let v = ((q[l] >> (4 * h)) & 0xF) + 16 * ((qh[l] >> (2 * j + h)) & 1);
                    o[l] = d1 * v as f32 - m1;
                }
            }
        }
    }
}

pub struct Q6K;
impl BlockFormat for Q6K {
    const TYPE: GgmlDType = GgmlDType::Q6K;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let ql = &b[0..128];
        let qh = &b[128..192];
        let sc = &b[192..208];
        let d = f16_at(b, 208);
        for n in 0..2 {
            for k in 0..4 {
                for l in 0..32 {
                    let lo = (ql[64 * n + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF;
                    let hi = (qh[32 * n + l] >> (2 * k)) & 3;
                    let q = (lo | (hi << 4)) as i32 - 32;
                    // Reference order: (d * scale) * q.
                    let s = sc[8 * n + l / 16 + 2 * k] as i8;
                    y[128 * n + 32 * k + l] = d * s as f32 * q as f32;
                }
            }
        }
    }
}

pub struct Q8K;
impl BlockFormat for Q8K {
    const TYPE: GgmlDType = GgmlDType::Q8K;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f32::from_le_bytes(b[0..4].try_into().unwrap());
        for (o, &q) in y[..256].iter_mut().zip(&b[4..260]) {
            *o = d * q as i8 as f32;
        }
    }
}
