//! aarch64 NEON kernels for the memory-bound block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS, MXFP4,
//! Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, TQ1_0, TQ2_0, F16 and BF16 (the codebook i-quants, NVFP4, Q1_0, Q2_0 and Q8_K
//! run the scalar reference on aarch64).
//!
//! Same scheme as the x86 kernels: each block's quants are unpacked 16 at a time into a byte vector, then
//! widened to four f32x4 vectors and scaled with the reference's operations (separate multiply and add/sub,
//! same operands; Rust never contracts them into a fused multiply-add), so the results are bit-identical to the
//! scalar path, which `tests.rs` checks on every kernel (NaNs as described in `x86.rs`: exact bits for the F16
//! and BF16 conversions, NaN-ness where a NaN comes out of arithmetic). Only f32 output is written directly; f16/bf16 outputs
//! go through the crate's scratch conversion. NEON is part of the aarch64 baseline, so the kernels need no
//! `#[target_feature]`; [`has_neon`] still asks the CPU.
//!
//! Cross-checked on x86-64 hosts by building the tests for `aarch64-unknown-linux-gnu` and running them under
//! qemu-user (`scripts/test-aarch64.sh`).

use std::arch::aarch64::*;

use super::{block, GgmlDType, Kernel};

pub(crate) fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// The NEON kernel for `ty`, if there is one. Callers must only run it after [`has_neon`] said yes.
pub(crate) fn kernel(ty: GgmlDType) -> Option<Kernel> {
    use GgmlDType::*;
    let k: Kernel = match ty {
        Q4_0 => q4_0,
        Q4_1 => q4_1,
        Q5_0 => q5_0,
        Q5_1 => q5_1,
        Q8_0 => q8_0,
        IQ4NL => iq4_nl,
        IQ4XS => iq4_xs,
        MXFP4 => mxfp4,
        Q2K => q2_k,
        Q3K => q3_k,
        Q4K => q4_k,
        Q5K => q5_k,
        Q6K => q6_k,
        TQ1_0 => tq1_0,
        TQ2_0 => tq2_0,
        F16 => f16,
        BF16 => bf16,
        _ => return None,
    };
    Some(k)
}

/// The types [`kernel`] covers (tests check the list against the dispatch).
#[cfg(test)]
pub(crate) const TYPES: [GgmlDType; 17] = {
    use GgmlDType::*;
    [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4NL, IQ4XS, MXFP4, Q2K, Q3K, Q4K, Q5K, Q6K, TQ1_0, TQ2_0, F16, BF16]
};

/// Exact f16 → f32 of the two bytes at `b` (one scale per block: the scalar conversion is cheap here).
#[inline(always)]
unsafe fn h2f(b: *const u8) -> f32 {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe { crate::quants::float::f16_to_f32(u16::from_le_bytes([*b, *b.add(1)])) }
}

#[inline(always)]
unsafe fn load16(p: *const u8) -> uint8x16_t {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe { vld1q_u8(p) }
}

#[inline(always)]
unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe { vreinterpretq_s8_u8(v) }
}

/// 16 signed bytes as four f32x4 (exact).
#[inline(always)]
unsafe fn i8_to_f32(q: int8x16_t) -> [float32x4_t; 4] {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let lo = vmovl_s8(vget_low_s8(q));
        let hi = vmovl_high_s8(q);
        [
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
            vcvtq_f32_s32(vmovl_high_s16(lo)),
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
            vcvtq_f32_s32(vmovl_high_s16(hi)),
        ]
    }
}

/// 16 unsigned bytes as four f32x4 (exact).
#[inline(always)]
unsafe fn u8_to_f32(q: uint8x16_t) -> [float32x4_t; 4] {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let lo = vmovl_u8(vget_low_u8(q));
        let hi = vmovl_high_u8(q);
        [
            vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))),
            vcvtq_f32_u32(vmovl_high_u16(lo)),
            vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))),
            vcvtq_f32_u32(vmovl_high_u16(hi)),
        ]
    }
}

/// out[0..16] = f32(q[i] as i8) * d
#[inline(always)]
unsafe fn emit_i8_mul(q: int8x16_t, d: float32x4_t, out: *mut f32) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let v = i8_to_f32(q);
        for (k, x) in v.into_iter().enumerate() {
            vst1q_f32(out.add(4 * k), vmulq_f32(x, d));
        }
    }
}

/// out[0..16] = f32(q[i] as u8) * d + m (multiply, then add: the reference's two roundings)
#[inline(always)]
unsafe fn emit_u8_mul_add(q: uint8x16_t, d: float32x4_t, m: float32x4_t, out: *mut f32) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let v = u8_to_f32(q);
        for (k, x) in v.into_iter().enumerate() {
            vst1q_f32(out.add(4 * k), vaddq_f32(vmulq_f32(x, d), m));
        }
    }
}

/// out[0..16] = d * f32(q[i] as u8) - m
#[inline(always)]
unsafe fn emit_u8_mul_sub(q: uint8x16_t, d: float32x4_t, m: float32x4_t, out: *mut f32) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let v = u8_to_f32(q);
        for (k, x) in v.into_iter().enumerate() {
            vst1q_f32(out.add(4 * k), vsubq_f32(vmulq_f32(d, x), m));
        }
    }
}

/// 16 bits → 16 bytes: byte j = 0x10 if bit j is set, else 0 (the Q5 high bit, shifted into place).
#[inline(always)]
unsafe fn bits16_to_0x10(bits: u32) -> uint8x16_t {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        const LANE_BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let v = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
        vandq_u8(vtstq_u8(v, vld1q_u8(LANE_BIT.as_ptr())), vdupq_n_u8(0x10))
    }
}

/// Bytes shifted right by a run-time count (`vshlq_u8` with a negative count is a logical right shift).
#[inline(always)]
unsafe fn shr_var(v: uint8x16_t, n: usize) -> uint8x16_t {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe { vshlq_u8(v, vdupq_n_s8(-(n as i8))) }
}

unsafe fn q4_0(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let k8 = vdupq_n_s8(8);
        blocks!(data, out, block::Q4_0.bytes, block::Q4_0.elems, |b, y| {
            let d = vdupq_n_f32(h2f(b));
            let q = load16(b.add(2));
            emit_i8_mul(vsubq_s8(s8(vandq_u8(q, m4)), k8), d, y);
            emit_i8_mul(vsubq_s8(s8(vshrq_n_u8::<4>(q)), k8), d, y.add(16));
        });
    }
}

unsafe fn q4_1(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        blocks!(data, out, block::Q4_1.bytes, block::Q4_1.elems, |b, y| {
            let d = vdupq_n_f32(h2f(b));
            let m = vdupq_n_f32(h2f(b.add(2)));
            let q = load16(b.add(4));
            emit_u8_mul_add(vandq_u8(q, m4), d, m, y);
            emit_u8_mul_add(vshrq_n_u8::<4>(q), d, m, y.add(16));
        });
    }
}

unsafe fn q5_0(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let k16 = vdupq_n_s8(16);
        blocks!(data, out, block::Q5_0.bytes, block::Q5_0.elems, |b, y| {
            let d = vdupq_n_f32(h2f(b));
            let qh = (b.add(2) as *const u32).read_unaligned().to_le();
            let q = load16(b.add(6));
            let lo = vorrq_u8(vandq_u8(q, m4), bits16_to_0x10(qh & 0xFFFF));
            let hi = vorrq_u8(vshrq_n_u8::<4>(q), bits16_to_0x10(qh >> 16));
            emit_i8_mul(vsubq_s8(s8(lo), k16), d, y);
            emit_i8_mul(vsubq_s8(s8(hi), k16), d, y.add(16));
        });
    }
}

unsafe fn q5_1(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        blocks!(data, out, block::Q5_1.bytes, block::Q5_1.elems, |b, y| {
            let d = vdupq_n_f32(h2f(b));
            let m = vdupq_n_f32(h2f(b.add(2)));
            let qh = (b.add(4) as *const u32).read_unaligned().to_le();
            let q = load16(b.add(8));
            let lo = vorrq_u8(vandq_u8(q, m4), bits16_to_0x10(qh & 0xFFFF));
            let hi = vorrq_u8(vshrq_n_u8::<4>(q), bits16_to_0x10(qh >> 16));
            emit_u8_mul_add(lo, d, m, y);
            emit_u8_mul_add(hi, d, m, y.add(16));
        });
    }
}

unsafe fn q8_0(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        blocks!(data, out, block::Q8_0.bytes, block::Q8_0.elems, |b, y| {
            let d = vdupq_n_f32(h2f(b));
            emit_i8_mul(s8(load16(b.add(2))), d, y);
            emit_i8_mul(s8(load16(b.add(18))), d, y.add(16));
        });
    }
}

/// Table-lookup types with 16 signed byte values per nibble (IQ4_NL, MXFP4): `d * table[q]` per element.
/// The reference computes `d * k`; multiplication commutes exactly, so `k * d` is the same bits.
#[inline(always)]
unsafe fn emit_lut_pair(lut: int8x16_t, q: uint8x16_t, d: float32x4_t, y: *mut f32) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        emit_i8_mul(vqtbl1q_s8(lut, vandq_u8(q, vdupq_n_u8(0x0F))), d, y);
        emit_i8_mul(vqtbl1q_s8(lut, vshrq_n_u8::<4>(q)), d, y.add(16));
    }
}

unsafe fn iq4_nl(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let lut = vld1q_s8(crate::quants::tables::KVALUES_IQ4NL.as_ptr());
        blocks!(data, out, block::IQ4_NL.bytes, block::IQ4_NL.elems, |b, y| {
            emit_lut_pair(lut, load16(b.add(2)), vdupq_n_f32(h2f(b)), y);
        });
    }
}

unsafe fn mxfp4(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let lut = vld1q_s8(crate::quants::tables::KVALUES_FP4.as_ptr());
        blocks!(data, out, block::MXFP4.bytes, block::MXFP4.elems, |b, y| {
            emit_lut_pair(lut, load16(b.add(1)), vdupq_n_f32(crate::quants::fp4::e8m0_half(*b)), y);
        });
    }
}

unsafe fn iq4_xs(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let lut = vld1q_s8(crate::quants::tables::KVALUES_IQ4NL.as_ptr());
        blocks!(data, out, block::IQ4_XS.bytes, block::IQ4_XS.elems, |b, y| {
            let d = h2f(b);
            let sh = u16::from_le_bytes([*b.add(2), *b.add(3)]);
            for ib in 0..8 {
                let sl = (*b.add(4 + ib / 2) >> (4 * (ib % 2))) & 0xF;
                let ls = (sl as i32) | ((((sh >> (2 * ib)) & 3) as i32) << 4);
                let dl = vdupq_n_f32(d * (ls - 32) as f32);
                emit_lut_pair(lut, load16(b.add(8 + 16 * ib)), dl, y.add(32 * ib));
            }
        });
    }
}

/// The 8 (d * scale, dmin * min) factors of a Q4_K/Q5_K block, as the reference computes them.
#[inline(always)]
unsafe fn k4_factors(b: *const u8) -> ([f32; 8], [f32; 8]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let d = h2f(b);
        let dmin = h2f(b.add(2));
        let s = std::slice::from_raw_parts(b.add(4), 12);
        let mut dl = [0f32; 8];
        let mut ml = [0f32; 8];
        for i in 0..8 {
            let (sc, m) = crate::quants::kquants::scale_min_k4(i, s);
            dl[i] = d * sc as f32;
            ml[i] = dmin * m as f32;
        }
        (dl, ml)
    }
}

unsafe fn q4_k(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        blocks!(data, out, block::Q4_K.bytes, block::Q4_K.elems, |b, y| {
            let (dl, ml) = k4_factors(b);
            for j in 0..4 {
                let qa = load16(b.add(16 + 32 * j));
                let qb = load16(b.add(32 + 32 * j));
                for h in 0..2 {
                    let d1 = vdupq_n_f32(dl[2 * j + h]);
                    let m1 = vdupq_n_f32(ml[2 * j + h]);
                    let (a, c) = if h == 0 {
                        (vandq_u8(qa, m4), vandq_u8(qb, m4))
                    } else {
                        (vshrq_n_u8::<4>(qa), vshrq_n_u8::<4>(qb))
                    };
                    let o = y.add(64 * j + 32 * h);
                    emit_u8_mul_sub(a, d1, m1, o);
                    emit_u8_mul_sub(c, d1, m1, o.add(16));
                }
            }
        });
    }
}

unsafe fn q5_k(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let k16 = vdupq_n_u8(0x10);
        blocks!(data, out, block::Q5_K.bytes, block::Q5_K.elems, |b, y| {
            let (dl, ml) = k4_factors(b);
            let qha = load16(b.add(16));
            let qhb = load16(b.add(32));
            for j in 0..4 {
                let qa = load16(b.add(48 + 32 * j));
                let qb = load16(b.add(64 + 32 * j));
                for h in 0..2 {
                    let d1 = vdupq_n_f32(dl[2 * j + h]);
                    let m1 = vdupq_n_f32(ml[2 * j + h]);
                    let bit = vdupq_n_u8(1u8 << (2 * j + h));
                    let ha = vandq_u8(vtstq_u8(qha, bit), k16);
                    let hb = vandq_u8(vtstq_u8(qhb, bit), k16);
                    let (a, c) = if h == 0 {
                        (vandq_u8(qa, m4), vandq_u8(qb, m4))
                    } else {
                        (vshrq_n_u8::<4>(qa), vshrq_n_u8::<4>(qb))
                    };
                    let o = y.add(64 * j + 32 * h);
                    emit_u8_mul_sub(vorrq_u8(a, ha), d1, m1, o);
                    emit_u8_mul_sub(vorrq_u8(c, hb), d1, m1, o.add(16));
                }
            }
        });
    }
}

unsafe fn q6_k(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m4 = vdupq_n_u8(0x0F);
        let m2 = vdupq_n_u8(0x03);
        let k32 = vdupq_n_s8(32);
        blocks!(data, out, block::Q6_K.bytes, block::Q6_K.elems, |b, y| {
            let d = h2f(b.add(208));
            for n in 0..2 {
                let ql = b.add(64 * n);
                let qh = b.add(128 + 32 * n);
                let sc = b.add(192 + 8 * n);
                let qh_v = [load16(qh), load16(qh.add(16))];
                let ql_v = [load16(ql), load16(ql.add(16)), load16(ql.add(32)), load16(ql.add(48))];
                for k in 0..4 {
                    for half in 0..2 {
                        let src = ql_v[2 * (k & 1) + half];
                        let lo = if k >> 1 == 0 { vandq_u8(src, m4) } else { vshrq_n_u8::<4>(src) };
                        let hi = vandq_u8(shr_var(qh_v[half], 2 * k), m2);
                        let q = vsubq_s8(s8(vorrq_u8(lo, vshlq_n_u8::<4>(hi))), k32);
                        // Reference order: (d * scale) * q.
                        let s = *sc.add(half + 2 * k) as i8;
                        emit_i8_mul(q, vdupq_n_f32(d * s as f32), y.add(128 * n + 32 * k + 16 * half));
                    }
                }
            }
        });
    }
}

unsafe fn q2_k(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m2 = vdupq_n_u8(3);
        blocks!(data, out, block::Q2_K.bytes, block::Q2_K.elems, |b, y| {
            let d = h2f(b.add(80));
            let dmin = h2f(b.add(82));
            let mut dl = [0f32; 16];
            let mut ml = [0f32; 16];
            for k in 0..16 {
                let s = *b.add(k);
                dl[k] = d * (s & 0xF) as f32;
                ml[k] = dmin * (s >> 4) as f32;
            }
            for n in 0..2 {
                let qv = [load16(b.add(16 + 32 * n)), load16(b.add(32 + 32 * n))];
                for j in 0..4 {
                    for h in 0..2 {
                        let k = 8 * n + 2 * j + h;
                        let v = vandq_u8(shr_var(qv[h], 2 * j), m2);
                        emit_u8_mul_sub(v, vdupq_n_f32(dl[k]), vdupq_n_f32(ml[k]), y.add(128 * n + 32 * j + 16 * h));
                    }
                }
            }
        });
    }
}

unsafe fn q3_k(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m2 = vdupq_n_u8(3);
        let k4 = vdupq_n_u8(4);
        blocks!(data, out, block::Q3_K.bytes, block::Q3_K.elems, |b, y| {
            let d = h2f(b.add(108));
            let sc = crate::quants::kquants::q3k_scales(std::slice::from_raw_parts(b.add(96), 12));
            let hm = [load16(b), load16(b.add(16))];
            for n in 0..2 {
                let qv = [load16(b.add(32 + 32 * n)), load16(b.add(48 + 32 * n))];
                for j in 0..4 {
                    let bit = vdupq_n_u8(1u8 << (4 * n + j));
                    for h in 0..2 {
                        // low 2 bits, minus 4 where the hmask bit is clear
                        let set = vtstq_u8(hm[h], bit);
                        let v = vsubq_s8(s8(vandq_u8(shr_var(qv[h], 2 * j), m2)), s8(vbicq_u8(k4, set)));
                        let dl = d * sc[8 * n + 2 * j + h] as f32;
                        emit_i8_mul(v, vdupq_n_f32(dl), y.add(128 * n + 32 * j + 16 * h));
                    }
                }
            }
        });
    }
}

/// One base-3 digit of each byte: ((x * 3^n mod 256) * 3) >> 8, minus 1 (TQ1_0's `trit(x, 3^n) - 1`).
#[inline(always)]
unsafe fn trits(x: uint8x16_t, pow: uint8x16_t) -> int8x16_t {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let q = vmulq_u8(x, pow);
        let three = vdupq_n_u8(3);
        let lo = vshrn_n_u16::<8>(vmull_u8(vget_low_u8(q), vget_low_u8(three)));
        let t = vshrn_high_n_u16::<8>(lo, vmull_high_u8(q, three));
        vsubq_s8(s8(t), vdupq_n_s8(1))
    }
}

unsafe fn tq1_0(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        const P3: [u8; 5] = [1, 3, 9, 27, 81];
        const PQH: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
        blocks!(data, out, block::TQ1_0.bytes, block::TQ1_0.elems, |b, y| {
            let d = vdupq_n_f32(h2f(b.add(52)));
            let qa = load16(b);
            let qb = load16(b.add(16));
            let qc = load16(b.add(32));
            for (n, &p) in P3.iter().enumerate() {
                let pv = vdupq_n_u8(p);
                emit_i8_mul(trits(qa, pv), d, y.add(32 * n));
                emit_i8_mul(trits(qb, pv), d, y.add(32 * n + 16));
                emit_i8_mul(trits(qc, pv), d, y.add(160 + 16 * n));
            }
            // qh: 4 bytes; lane 4n + j holds digit n of byte j (n < 4).
            let qh = vreinterpretq_u8_u32(vdupq_n_u32((b.add(48) as *const u32).read_unaligned()));
            emit_i8_mul(trits(qh, vld1q_u8(PQH.as_ptr())), d, y.add(240));
        });
    }
}

unsafe fn tq2_0(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let m2 = vdupq_n_u8(3);
        let one = vdupq_n_s8(1);
        blocks!(data, out, block::TQ2_0.bytes, block::TQ2_0.elems, |b, y| {
            let d = vdupq_n_f32(h2f(b.add(64)));
            for g in 0..2 {
                let qa = load16(b.add(32 * g));
                let qb = load16(b.add(32 * g + 16));
                for l in 0..4 {
                    let a = vsubq_s8(s8(vandq_u8(shr_var(qa, 2 * l), m2)), one);
                    let c = vsubq_s8(s8(vandq_u8(shr_var(qb, 2 * l), m2)), one);
                    let o = y.add(128 * g + 32 * l);
                    emit_i8_mul(a, d, o);
                    emit_i8_mul(c, d, o.add(16));
                }
            }
        });
    }
}

/// Four f16 → four f32 with `fcvtl` (baseline AArch64 FP; exact for every code, subnormals included: Linux
/// and macOS run with FPCR's flush-to-zero bits clear).
#[inline(always)]
unsafe fn cvt_f16x4(h: uint16x4_t) -> float32x4_t {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let r: float32x4_t;
        // SAFETY: a register-to-register conversion with no memory access or flag side effects.
        std::arch::asm!("fcvtl {r:v}.4s, {h:v}.4h", h = in(vreg) h, r = lateout(vreg) r, options(pure, nomem, nostack, preserves_flags));
        r
    }
}

unsafe fn f16(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let n = data.len() / 2;
        let src = data.as_ptr();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i + 8 <= n {
            // Byte loads (the input may sit at any address); lanes are little-endian u16.
            let h = vreinterpretq_u16_u8(vld1q_u8(src.add(2 * i)));
            vst1q_f32(dst.add(i), cvt_f16x4(vget_low_u16(h)));
            vst1q_f32(dst.add(i + 4), cvt_f16x4(vget_high_u16(h)));
            i += 8;
        }
        for k in i..n {
            *dst.add(k) = h2f(src.add(2 * k));
        }
    }
}

unsafe fn bf16(data: &[u8], out: &mut [f32]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let n = data.len() / 2;
        let src = data.as_ptr();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i + 8 <= n {
            let h = vreinterpretq_u16_u8(vld1q_u8(src.add(2 * i)));
            vst1q_f32(dst.add(i), vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))));
            vst1q_f32(dst.add(i + 4), vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)));
            i += 8;
        }
        for k in i..n {
            let h = u16::from_le_bytes([*src.add(2 * k), *src.add(2 * k + 1)]);
            *dst.add(k) = f32::from_bits((h as u32) << 16);
        }
    }
}
