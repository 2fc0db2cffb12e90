//! Ternary types TQ1_0 (base-3 packed, 1.69 bpw) and TQ2_0 (2-bit packed). Values are (t - 1) * d with
//! t in {0, 1, 2} (docs/gguf-format.md §3.3).

use super::{f16_at, BlockFormat, GgmlDType};

/// Base-3 digit n of a TQ1_0 byte: the byte is a fixed-point fraction; multiplying by 3^n (mod 256) moves
/// digit n to the top, and `(x * 3) >> 8` reads it.
#[inline(always)]
pub(crate) fn trit(x: u8, pow3: u8) -> i32 {
    let v = x.wrapping_mul(pow3) as u16;
    ((v * 3) >> 8) as i32
}

pub(crate) const POW3: [u8; 5] = [1, 3, 9, 27, 81];

pub struct TQ1_0;
impl BlockFormat for TQ1_0 {
    const TYPE: GgmlDType = GgmlDType::TQ1_0;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let qs = &b[0..48];
        let qh = &b[48..52];
        let d = f16_at(b, 52);
        for n in 0..5 {
            for m in 0..32 {
                y[32 * n + m] = (trit(qs[m], POW3[n]) - 1) as f32 * d;
            }
        }
        for n in 0..5 {
            for m in 0..16 {
                y[160 + 16 * n + m] = (trit(qs[32 + m], POW3[n]) - 1) as f32 * d;
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                y[240 + 4 * n + j] = (trit(qh[j], POW3[n]) - 1) as f32 * d;
            }
        }
    }
}

pub struct TQ2_0;
impl BlockFormat for TQ2_0 {
    const TYPE: GgmlDType = GgmlDType::TQ2_0;
    #[inline(always)]
    fn dequant_block(b: &[u8], y: &mut [f32]) {
        let qs = &b[0..64];
        let d = f16_at(b, 64);
        for g in 0..2 {
            for l in 0..4 {
                for m in 0..32 {
                    let t = ((qs[32 * g + m] >> (2 * l)) & 3) as i32;
                    y[128 * g + 32 * l + m] = (t - 1) as f32 * d;
                }
            }
        }
    }
}
