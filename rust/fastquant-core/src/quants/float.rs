//! Exact scalar conversions between binary16/bfloat16 and binary32, and the passthrough "block" types
//! (F32, F16, BF16, I8..I64, F64), whose blocks are single elements.

use super::{BlockFormat, GgmlDType};

/// Exact IEEE binary16 → binary32 (normals, subnormals, ±0, ±Inf). A NaN comes back quiet with its payload
/// (a signalling NaN gets the quiet bit), as `vcvtph2ps`, NEON's `fcvtl`, ggml and the `half` crate make it,
/// so the scalar and SIMD paths agree on every one of the 65536 codes (the tests compare it with `half` on
/// all of them). Kept here rather than calling `half`: this branch-light form is about 1.4× faster in the
/// scalar decoders' inner loops.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        // Zero or subnormal: the value is man * 2^-24, which binary32 represents exactly.
        let v = man as f32 * (1.0 / 16_777_216.0);
        v.to_bits() | sign
    } else if exp == 31 {
        let quiet = if man != 0 { 0x0040_0000 } else { 0 };
        sign | 0x7f80_0000 | quiet | (man << 13)
    } else {
        sign | ((exp + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// binary32 → binary16, rounded once to nearest-even; overflow goes to ±Inf; NaN becomes a quiet NaN that
/// keeps the top payload bits (what `vcvtps2ph` does). The `half` crate's conversion.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// binary32 → bfloat16, rounded once to nearest-even; NaN becomes a quiet NaN (`| 0x0040`, ggml's
/// `ggml_compute_fp32_to_bf16`, also gguf-py's `BF16.quantize_blocks`). The `half` crate's conversion.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

macro_rules! passthrough {
    ($name:ident, $ty:expr, $elem:ty, |$b:ident| $conv:expr) => {
        pub struct $name;
        // The element type's size is the block size of `types::block`.
        const _: () = assert!(std::mem::size_of::<$elem>() == $ty.block_bytes() && $ty.block_elems() == 1);
        impl BlockFormat for $name {
            const TYPE: GgmlDType = $ty;
            #[inline(always)]
            fn dequant_block(block: &[u8], out: &mut [f32]) {
                let $b: [u8; std::mem::size_of::<$elem>()] = block[..std::mem::size_of::<$elem>()].try_into().unwrap();
                out[0] = $conv;
            }
        }
    };
}

passthrough!(F32, GgmlDType::F32, f32, |b| f32::from_le_bytes(b));
passthrough!(F16, GgmlDType::F16, u16, |b| f16_to_f32(u16::from_le_bytes(b)));
passthrough!(BF16, GgmlDType::BF16, u16, |b| bf16_to_f32(u16::from_le_bytes(b)));
passthrough!(I8, GgmlDType::I8, i8, |b| b[0] as i8 as f32);
passthrough!(I16, GgmlDType::I16, i16, |b| i16::from_le_bytes(b) as f32);
// Integers beyond 2^24 and F64 values are rounded once to the nearest binary32 (ties to even).
passthrough!(I32, GgmlDType::I32, i32, |b| i32::from_le_bytes(b) as f32);
passthrough!(I64, GgmlDType::I64, i64, |b| i64::from_le_bytes(b) as f32);
passthrough!(F64, GgmlDType::F64, f64, |b| f64::from_le_bytes(b) as f32);

#[cfg(test)]
mod tests {
    //! f32 → f16/bf16 are `half`'s, f16 → f32 is ours; these tests pin the bits all of them must give (an
    //! independent reference written out below, ggml's behaviour, and `half` itself), NaNs included.
    use super::*;

    /// Reference binary16 → binary32: exact, NaNs quieted with their payload kept.
    fn ref_f16_to_f32(h: u16) -> u32 {
        let sign = ((h as u32) & 0x8000) << 16;
        let exp = ((h >> 10) & 0x1f) as u32;
        let man = (h & 0x3ff) as u32;
        if exp == 0 {
            // man * 2^-24, exact in binary32.
            (man as f32 * (1.0 / 16_777_216.0)).to_bits() | sign
        } else if exp == 31 {
            sign | 0x7f80_0000 | (man << 13) | if man != 0 { 0x0040_0000 } else { 0 }
        } else {
            sign | ((exp + 112) << 23) | (man << 13)
        }
    }

    /// Reference binary32 → binary16: one round to nearest-even, NaN → quiet NaN with the top payload bits.
    fn ref_f32_to_f16(x: f32) -> u16 {
        let b = x.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32;
        let man = b & 0x7f_ffff;
        if exp == 0xff {
            return if man == 0 { sign | 0x7c00 } else { sign | 0x7e00 | (man >> 13) as u16 };
        }
        let e = exp - 127 + 15;
        if e >= 31 {
            return sign | 0x7c00;
        }
        if e <= 0 {
            if e < -10 {
                return sign;
            }
            let full = man | 0x80_0000;
            let shift = (14 - e) as u32;
            let q = full >> shift;
            let rem = full & ((1 << shift) - 1);
            let half = 1 << (shift - 1);
            let q = if rem > half || (rem == half && q & 1 == 1) { q + 1 } else { q };
            return sign | q as u16;
        }
        let q = ((e as u32) << 10) | (man >> 13);
        let rem = man & 0x1fff;
        let q = if rem > 0x1000 || (rem == 0x1000 && q & 1 == 1) { q + 1 } else { q };
        sign | q as u16
    }

    /// Reference binary32 → bfloat16: one round to nearest-even, NaN → `| 0x0040`.
    fn ref_f32_to_bf16(x: f32) -> u16 {
        let b = x.to_bits();
        if b & 0x7fff_ffff > 0x7f80_0000 {
            return ((b >> 16) | 64) as u16;
        }
        ((b as u64 + 0x7fff + ((b as u64 >> 16) & 1)) >> 16) as u16
    }

    /// Bit patterns that matter: NaNs (quiet, signalling, with payloads, both signs), infinities, zeros,
    /// subnormals, the f16/bf16 rounding boundaries and exact ties, then a pseudo-random sweep.
    fn f32_patterns() -> Vec<u32> {
        let mut v: Vec<u32> = vec![
            0x7f80_0001,
            0x7f80_2000,
            0x7fa0_0000,
            0x7fbf_ffff,
            0xff80_0001,
            0x7fc0_0000,
            0xffc0_0001,
            0x7fff_ffff,
            0x7f80_0000,
            0xff80_0000,
            0,
            0x8000_0000,
            1,
            0x8000_0001,
            0x007f_ffff,
            0x0080_0000,
            0x3380_0000,
            0x3300_0000,
            0x3300_0001,
            0x477f_f000,
            0x477f_efff,
            0x477f_e000,
            0x3f80_8000,
            0x3f81_8000,
            0x7f7f_ffff,
        ];
        for h in 0..=u16::MAX as u32 {
            // Every f16 value, and the midpoints to its neighbour (exact f16 ties) with a nudge either way.
            let f = ref_f16_to_f32(h as u16);
            v.push(f);
            v.push(f.wrapping_add(0x1000));
            v.push(f.wrapping_add(0x0fff));
            v.push(f.wrapping_add(0x1001));
            v.push(h << 16 | 0x8000); // bf16 ties
            v.push(h << 16 | 0x7fff);
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..3_000_000u32 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            v.push(x);
        }
        v
    }

    #[test]
    fn f16_to_f32_bits_on_all_codes() {
        for h in 0..=u16::MAX {
            assert_eq!(f16_to_f32(h).to_bits(), ref_f16_to_f32(h), "{h:#06x}");
            assert_eq!(f16_to_f32(h).to_bits(), half::f16::from_bits(h).to_f32().to_bits(), "half, {h:#06x}");
        }
        assert_eq!(f16_to_f32(0x7c01).to_bits(), 0x7fc0_2000, "signalling NaN comes back quiet");
    }

    #[test]
    fn f32_to_f16_and_bf16_bits() {
        for bits in f32_patterns() {
            let f = f32::from_bits(bits);
            assert_eq!(f32_to_f16(f), ref_f32_to_f16(f), "f16 of {bits:#010x}");
            assert_eq!(f32_to_bf16(f), ref_f32_to_bf16(f), "bf16 of {bits:#010x}");
        }
    }

    #[test]
    fn f32_to_bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even stays
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd rounds up
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f7f_ffff)), 0x7f80); // overflow to inf
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0); // sNaN is quieted
    }
}
