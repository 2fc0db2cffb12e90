//! 4-bit float formats: MXFP4 (E2M1 codes, one E8M0 power-of-two scale per 32) and NVFP4 (E2M1 codes, one
//! unsigned E4M3 scale per 16, 64-element blocks). Codes index `KVALUES_FP4` (E2M1 values doubled), so the
//! scales are halved (docs/gguf-format.md §3.1).

use super::tables::KVALUES_FP4;
use super::{BlockFormat, GgmlDType};

/// 2^(e-128) exactly, including the two binary32 subnormals for e = 0 and 1. e = 255 is just 2^127.
#[inline(always)]
pub(crate) fn e8m0_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000u32 << e)
    } else {
        f32::from_bits(((e as u32) - 1) << 23)
    }
}

/// Unsigned E4M3 (bias 7, sign bit ignored, 0x7F read as 0) times one half. Every step is exact in binary32.
#[inline(always)]
pub(crate) fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xF) as i32;
    let man = (x & 7) as f32;
    let raw =
        if exp == 0 { man * (1.0 / 512.0) } else { (1.0 + man / 8.0) * f32::from_bits(((exp - 7 + 127) as u32) << 23) };
    raw * 0.5
}

pub struct MXFP4;
impl BlockFormat for MXFP4 {
    const TYPE: GgmlDType = GgmlDType::MXFP4;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = e8m0_half(b[0]);
        let qs = &b[1..17];
        let (lo, hi) = y[..32].split_at_mut(16);
        for j in 0..16 {
            lo[j] = KVALUES_FP4[(qs[j] & 0xF) as usize] as f32 * d;
            hi[j] = KVALUES_FP4[(qs[j] >> 4) as usize] as f32 * d;
        }
    }
}

pub struct NVFP4;
impl BlockFormat for NVFP4 {
    const TYPE: GgmlDType = GgmlDType::NVFP4;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let qs = &b[4..36];
        for s in 0..4 {
            let ds = ue4m3_half(b[s]);
            for j in 0..8 {
                let q = qs[8 * s + j];
                y[16 * s + j] = KVALUES_FP4[(q & 0xF) as usize] as f32 * ds;
                y[16 * s + 8 + j] = KVALUES_FP4[(q >> 4) as usize] as f32 * ds;
            }
        }
    }
}
