//! Exact scalar conversions between binary16/bfloat16 and binary32, and the passthrough "block" types
//! (F32, F16, BF16, I8..I64, F64), whose blocks are single elements.

use super::{BlockFormat, GgmlType};

/// Exact IEEE binary16 → binary32 (normals, subnormals, ±0, ±Inf; NaN stays NaN with its payload).
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
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// binary32 → binary16, rounded once to nearest-even; overflow goes to ±Inf; NaN becomes a quiet NaN that
/// keeps the top payload bits (what `vcvtps2ph` does).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
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
        // Result is subnormal (or zero): shift the full significand (with the implicit bit) into place.
        if e < -10 {
            return sign; // below half the smallest subnormal: rounds to zero
        }
        let full = man | 0x80_0000;
        let shift = (14 - e) as u32; // 24-bit significand down to the 10-bit subnormal field
        let q = full >> shift;
        let rem = full & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        let q = if rem > half || (rem == half && q & 1 == 1) { q + 1 } else { q };
        return sign | q as u16;
    }
    let q = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let q = if rem > 0x1000 || (rem == 0x1000 && q & 1 == 1) { q + 1 } else { q };
    // A carry out of the mantissa correctly bumps the exponent (up to Inf).
    sign | q as u16
}

/// binary32 → bfloat16, rounded once to nearest-even; NaN becomes a quiet NaN (ggml's
/// `ggml_compute_fp32_to_bf16`, also gguf-py's `BF16.quantize_blocks`).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 64) as u16;
    }
    ((b as u64 + 0x7fff + ((b as u64 >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

macro_rules! passthrough {
    ($name:ident, $ty:expr, $bytes:expr, |$b:ident| $conv:expr) => {
        pub struct $name;
        impl BlockFormat for $name {
            const TYPE: GgmlType = $ty;
            const ELEMS: usize = 1;
            const BYTES: usize = $bytes;
            #[inline(always)]
            fn dequant_block(block: &[u8], out: &mut [f32]) {
                let $b: [u8; $bytes] = block[..$bytes].try_into().unwrap();
                out[0] = $conv;
            }
        }
    };
}

passthrough!(F32, GgmlType::F32, 4, |b| f32::from_le_bytes(b));
passthrough!(F16, GgmlType::F16, 2, |b| f16_to_f32(u16::from_le_bytes(b)));
passthrough!(BF16, GgmlType::BF16, 2, |b| bf16_to_f32(u16::from_le_bytes(b)));
passthrough!(I8, GgmlType::I8, 1, |b| b[0] as i8 as f32);
passthrough!(I16, GgmlType::I16, 2, |b| i16::from_le_bytes(b) as f32);
// Integers beyond 2^24 and F64 values are rounded once to the nearest binary32 (ties to even).
passthrough!(I32, GgmlType::I32, 4, |b| i32::from_le_bytes(b) as f32);
passthrough!(I64, GgmlType::I64, 8, |b| i64::from_le_bytes(b) as f32);
passthrough!(F64, GgmlType::F64, 8, |b| f64::from_le_bytes(b) as f32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_to_f32_matches_half_crate_on_all_codes() {
        for h in 0..=u16::MAX {
            let a = f16_to_f32(h);
            let b = half::f16::from_bits(h).to_f32();
            if b.is_nan() {
                assert!(a.is_nan());
            } else {
                assert_eq!(a.to_bits(), b.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn f32_to_f16_matches_half_crate() {
        // Every f16 round-trips, plus a sweep of f32 bit patterns (with ties and subnormal results).
        for h in 0..=u16::MAX {
            let f = half::f16::from_bits(h);
            if !f.is_nan() {
                assert_eq!(f32_to_f16(f.to_f32()), h);
            }
        }
        let mut x: u32 = 0x1234_5678;
        for i in 0..2_000_000u32 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let bits = if i % 3 == 0 { x & 0xffff_e000 | 0x1000 } else { x }; // many exact ties
            let f = f32::from_bits(bits);
            let want = half::f16::from_f32(f);
            let got = f32_to_f16(f);
            if f.is_nan() {
                assert!(half::f16::from_bits(got).is_nan());
            } else {
                assert_eq!(got, want.to_bits(), "{bits:#010x}");
            }
        }
    }

    #[test]
    fn f32_to_bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even stays
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd rounds up
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f7f_ffff)), 0x7f80); // overflow to inf
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        assert!(bf16_to_f32(f32_to_bf16(f32::from_bits(0x7f80_0001))).is_nan()); // sNaN stays NaN
        let mut x: u32 = 99;
        for _ in 0..1_000_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let f = f32::from_bits(x);
            let want = half::bf16::from_f32(f);
            if !f.is_nan() {
                assert_eq!(f32_to_bf16(f), want.to_bits());
            }
        }
    }
}
