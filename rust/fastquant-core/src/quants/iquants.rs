//! i-quants: lattice/codebook types (docs/gguf-format.md §3.4). Scalar reference code in ggml's order:
//! `db * grid * (±1)`. A sign flip by negation is bit-identical to multiplying by -1 (including zeros).

use super::tables::*;
use super::{f16_at, u16_at, u32_at, BlockFormat, GgmlDType};

#[inline(always)]
fn grid_byte(row: u64, j: usize) -> f32 {
    ((row >> (8 * j)) & 0xFF) as u8 as f32
}

/// `v * (sign ? -1 : 1)` as ggml computes it (multiplication by ±1.0 is exact, so this is negation).
#[inline(always)]
fn signed(v: f32, neg: bool) -> f32 {
    if neg {
        -v
    } else {
        v
    }
}

pub struct IQ2XXS;
impl BlockFormat for IQ2XXS {
    const TYPE: GgmlDType = GgmlDType::IQ2XXS;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        for ib in 0..8 {
            let a0 = u32_at(b, 2 + 8 * ib);
            let a1 = u32_at(b, 6 + 8 * ib);
            let db = d * (0.5 + (a1 >> 28) as f32) * 0.25;
            for l in 0..4 {
                let g = IQ2XXS_GRID[((a0 >> (8 * l)) & 0xFF) as usize];
                let s = KSIGNS_IQ2XS[((a1 >> (7 * l)) & 127) as usize];
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] = signed(db * grid_byte(g, j), (s >> j) & 1 == 1);
                }
            }
        }
    }
}

pub struct IQ2XS;
impl BlockFormat for IQ2XS {
    const TYPE: GgmlDType = GgmlDType::IQ2XS;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let scales = &b[66..74];
        for ib in 0..8 {
            let db = [d * (0.5 + (scales[ib] & 0xF) as f32) * 0.25, d * (0.5 + (scales[ib] >> 4) as f32) * 0.25];
            for l in 0..4 {
                let q = u16_at(b, 2 + 2 * (4 * ib + l));
                let g = IQ2XS_GRID[(q & 511) as usize];
                let s = KSIGNS_IQ2XS[(q >> 9) as usize];
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] = signed(db[l / 2] * grid_byte(g, j), (s >> j) & 1 == 1);
                }
            }
        }
    }
}

pub struct IQ2S;
impl BlockFormat for IQ2S {
    const TYPE: GgmlDType = GgmlDType::IQ2S;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let qs = &b[2..34];
        let signs = &b[34..66];
        let qh = &b[66..74];
        let scales = &b[74..82];
        for ib in 0..8 {
            let db = [d * (0.5 + (scales[ib] & 0xF) as f32) * 0.25, d * (0.5 + (scales[ib] >> 4) as f32) * 0.25];
            for l in 0..4 {
                let idx = qs[4 * ib + l] as usize | ((((qh[ib] >> (2 * l)) & 3) as usize) << 8);
                let g = IQ2S_GRID[idx];
                let s = signs[4 * ib + l];
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] = signed(db[l / 2] * grid_byte(g, j), (s >> j) & 1 == 1);
                }
            }
        }
    }
}

pub struct IQ3XXS;
impl BlockFormat for IQ3XXS {
    const TYPE: GgmlDType = GgmlDType::IQ3XXS;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let qs = &b[2..66];
        for ib in 0..8 {
            let a = u32_at(b, 66 + 4 * ib);
            let db = d * (0.5 + (a >> 28) as f32) * 0.5;
            for l in 0..4 {
                let s = KSIGNS_IQ2XS[((a >> (7 * l)) & 127) as usize];
                let g1 = IQ3XXS_GRID[qs[8 * ib + 2 * l] as usize] as u64;
                let g2 = IQ3XXS_GRID[qs[8 * ib + 2 * l + 1] as usize] as u64;
                let o = 32 * ib + 8 * l;
                for j in 0..4 {
                    y[o + j] = signed(db * grid_byte(g1, j), (s >> j) & 1 == 1);
                    y[o + 4 + j] = signed(db * grid_byte(g2, j), (s >> (j + 4)) & 1 == 1);
                }
            }
        }
    }
}

pub struct IQ3S;
impl BlockFormat for IQ3S {
    const TYPE: GgmlDType = GgmlDType::IQ3S;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let qs = &b[2..66];
        let qh = &b[66..74];
        let signs = &b[74..106];
        let scales = &b[106..110];
        for ib in 0..8 {
            let db = d * (1 + 2 * ((scales[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32) as f32;
            for i in 0..8 {
                let idx = qs[8 * ib + i] as usize | ((((qh[ib] >> i) & 1) as usize) << 8);
                let g = IQ3S_GRID[idx] as u64;
                let s = signs[4 * ib + i / 2] >> (4 * (i % 2));
                for j in 0..4 {
                    y[32 * ib + 4 * i + j] = signed(db * grid_byte(g, j), (s >> j) & 1 == 1);
                }
            }
        }
    }
}

pub struct IQ1S;
impl BlockFormat for IQ1S {
    const TYPE: GgmlDType = GgmlDType::IQ1S;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let qs = &b[2..34];
        for ib in 0..8 {
            let h = u16_at(b, 34 + 2 * ib);
            let dl = d * (2 * ((h >> 12) & 7) + 1) as f32;
            let delta = if h & 0x8000 != 0 { -0.125f32 } else { 0.125 };
            for l in 0..4 {
                let idx = qs[4 * ib + l] as usize | ((((h >> (3 * l)) & 7) as usize) << 8);
                let g = IQ1S_GRID[idx];
                for j in 0..8 {
                    let v = ((g >> (8 * j)) & 0xFF) as u8 as i8 as f32;
                    y[32 * ib + 8 * l + j] = dl * (v + delta);
                }
            }
        }
    }
}

pub struct IQ1M;
impl BlockFormat for IQ1M {
    const TYPE: GgmlDType = GgmlDType::IQ1M;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let qs = &b[0..32];
        let qh = &b[32..48];
        let sc = [u16_at(b, 48), u16_at(b, 50), u16_at(b, 52), u16_at(b, 54)];
        let bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000);
        let d = super::float::f16_to_f32(bits);
        for ib in 0..8 {
            let w = sc[ib / 2];
            let sh = 6 * (ib % 2);
            let dl1 = d * (2 * ((w >> sh) & 7) + 1) as f32;
            let dl2 = d * (2 * ((w >> (sh + 3)) & 7) + 1) as f32;
            for k in 0..4 {
                let hb = qh[2 * ib + k / 2] >> (4 * (k % 2));
                let idx = qs[4 * ib + k] as usize | (((hb & 7) as usize) << 8);
                let delta = if hb & 8 != 0 { -0.125f32 } else { 0.125 };
                let dl = if k < 2 { dl1 } else { dl2 };
                let g = IQ1S_GRID[idx];
                for j in 0..8 {
                    let v = ((g >> (8 * j)) & 0xFF) as u8 as i8 as f32;
                    y[32 * ib + 8 * k + j] = dl * (v + delta);
                }
            }
        }
    }
}

pub struct IQ4NL;
impl BlockFormat for IQ4NL {
    const TYPE: GgmlDType = GgmlDType::IQ4NL;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        let (lo, hi) = y[..32].split_at_mut(16);
        for j in 0..16 {
            lo[j] = d * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
            hi[j] = d * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
        }
    }
}

pub struct IQ4XS;
impl BlockFormat for IQ4XS {
    const TYPE: GgmlDType = GgmlDType::IQ4XS;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let d = f16_at(b, 0);
        let scales_h = u16_at(b, 2);
        let scales_l = &b[4..8];
        let qs = &b[8..136];
        for ib in 0..8 {
            let ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32 | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
            let dl = d * (ls - 32) as f32;
            for j in 0..16 {
                let q = qs[16 * ib + j];
                y[32 * ib + j] = dl * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
                y[32 * ib + 16 + j] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    }
}
