//! The 32-element "legacy" block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL is in `iquants`) and the newer
//! small-block types Q1_0 (128 elements) and Q2_0 (64 elements). Scalar reference code, written to follow
//! ggml's `dequantize_row_*` operation order exactly (see docs/gguf-format.md §3.1).

use super::{f16_at, u32_at, BlockFormat, GgmlDType};

pub struct Q4_0;
impl BlockFormat for Q4_0 {
    const TYPE: GgmlDType = GgmlDType::Q4_0;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        let (lo, hi) = y[..32].split_at_mut(16);
        for j in 0..16 {
            // (q - 8) * d: subtracting before the multiply keeps ggml's -0 for q == 8, d < 0.
            lo[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
            hi[j] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub struct Q4_1;
impl BlockFormat for Q4_1 {
    const TYPE: GgmlDType = GgmlDType::Q4_1;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qs = &b[4..20];
        let (lo, hi) = y[..32].split_at_mut(16);
        for j in 0..16 {
            lo[j] = (qs[j] & 0xF) as f32 * d + m;
            hi[j] = (qs[j] >> 4) as f32 * d + m;
        }
    }
}

pub struct Q5_0;
impl BlockFormat for Q5_0 {
    const TYPE: GgmlDType = GgmlDType::Q5_0;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let qh = u32_at(b, 2);
        let qs = &b[6..22];
        let (lo, hi) = y[..32].split_at_mut(16);
        for j in 0..16 {
            let x0 = (qs[j] & 0xF) as u32 | (((qh >> j) & 1) << 4);
            let x1 = (qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
            lo[j] = (x0 as i32 - 16) as f32 * d;
            hi[j] = (x1 as i32 - 16) as f32 * d;
        }
    }
}

pub struct Q5_1;
impl BlockFormat for Q5_1 {
    const TYPE: GgmlDType = GgmlDType::Q5_1;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32_at(b, 4);
        let qs = &b[8..24];
        let (lo, hi) = y[..32].split_at_mut(16);
        for j in 0..16 {
            let x0 = (qs[j] & 0xF) as u32 | (((qh >> j) & 1) << 4);
            let x1 = (qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
            lo[j] = x0 as f32 * d + m;
            hi[j] = x1 as f32 * d + m;
        }
    }
}

pub struct Q8_0;
impl BlockFormat for Q8_0 {
    const TYPE: GgmlDType = GgmlDType::Q8_0;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        for (o, &q) in y[..32].iter_mut().zip(&b[2..34]) {
            *o = q as i8 as f32 * d;
        }
    }
}

/// Q1_0: one sign bit per element, LSB first; value is +d or -d.
pub struct Q1_0;
impl BlockFormat for Q1_0 {
    const TYPE: GgmlDType = GgmlDType::Q1_0;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let neg = -d;
        for (j, o) in y[..128].iter_mut().enumerate() {
            *o = if (b[2 + j / 8] >> (j % 8)) & 1 == 1 { d } else { neg };
        }
    }
}

/// Q2_0: 2-bit codes packed sequentially inside each byte (element 4k+i in bits 2i..2i+1 of byte k).
pub struct Q2_0;
impl BlockFormat for Q2_0 {
    const TYPE: GgmlDType = GgmlDType::Q2_0;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        for (j, o) in y[..64].iter_mut().enumerate() {
            let q = (b[2 + j / 4] >> (2 * (j % 4))) & 3;
            *o = (q as i32 - 1) as f32 * d;
        }
    }
}
