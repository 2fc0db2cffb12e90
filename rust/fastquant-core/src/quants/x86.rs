//! x86-64 SIMD kernels (AVX2 and AVX-512) for every block type except Q8_K and the plain integer/f32/f64 ones.
//!
//! Each kernel decodes one block at a time. The quant unpacking is done on 128-bit vectors (16 values), and
//! a per-ISA `emit` step widens 16 values to f32 and applies the scale: one 512-bit store on AVX-512, two
//! 256-bit stores on AVX2. The arithmetic is the scalar reference's, operation for operation (separate
//! multiply and add, same operand order), so results are bit-identical. For NaNs precisely: the plain F16 and
//! BF16 conversions give identical bits for every input code, NaNs included (a signalling NaN comes back quiet
//! with its payload on every path, as `vcvtph2ps` and `float::f16_to_f32` both make it); where a NaN comes out
//! of arithmetic (a NaN or infinite scale meeting the other terms), every path gives a NaN, but which pattern
//! survives (an operand's payload, or x86's default NaN for `Inf * 0`) depends on the operand order the
//! compiler picks, so only NaN-ness is guaranteed there. `tests.rs` checks exactly that. Codebook types
//! (IQ1/IQ2/IQ3) look the grid rows up with scalar loads, place two (8-byte) or four (4-byte) rows in one
//! vector and apply signs by flipping the f32 sign bit, which is exactly the reference's negation.
//!
//! The kernels are generated from one body by `kernels!`, once per ISA and output kind, with
//! `#[target_feature]`. They are reached through [`kernel`], [`kernel_nt`] and [`kernel16`] (and the slice
//! helpers at the end), whose callers check the CPU's features first (`super::prepare`).

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{block, GgmlDType, Kernel, Kernel16, Path};

pub(crate) fn has_avx2() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    })
}

pub(crate) fn has_avx512() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// AVX-512 plus the BF16 conversion instruction (`vcvtneps2bf16`) and DQ (`vfpclassps`): Cooper Lake,
/// Sapphire Rapids and later Intel, AMD Zen 4 and later.
pub(crate) fn has_avx512bf16() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| has_avx512() && is_x86_feature_detected!("avx512dq") && is_x86_feature_detected!("avx512bf16"))
}

/// `Some($m::<kernel for ty> as $k)` for the types with kernels, else `None`.
macro_rules! pick {
    ($ty:expr, $m:ident, $k:ty) => {
        pick!(@ $ty, $m, $k;
            Q4_0 q4_0; Q4_1 q4_1; Q5_0 q5_0; Q5_1 q5_1; Q8_0 q8_0; Q4K q4_k; Q5K q5_k; Q6K q6_k; TQ1_0 tq1_0; TQ2_0 tq2_0;
            F16 f16; BF16 bf16; IQ4NL iq4_nl; IQ4XS iq4_xs; MXFP4 mxfp4; Q2K q2_k; Q3K q3_k; IQ1S iq1_s; IQ1M iq1_m;
            IQ2XXS iq2_xxs; IQ2XS iq2_xs; IQ2S iq2_s; IQ3XXS iq3_xxs; IQ3S iq3_s; NVFP4 nvfp4; Q1_0 q1_0; Q2_0 q2_0
        )
    };
    (@ $ty:expr, $m:ident, $k:ty; $($variant:ident $f:ident);*) => {
        match $ty {
            $(GgmlDType::$variant => Some($m::$f as $k),)*
            _ => None,
        }
    };
}

/// The dedicated f32-output kernel for `ty` on `path`, if any. Callers must only use `Avx2`/`Avx512` kernels
/// after `Path::available` said yes (enforced in `super::prepare`).
pub(crate) fn kernel(ty: GgmlDType, path: Path) -> Option<Kernel> {
    match path {
        Path::Avx2 => pick!(ty, avx2, Kernel),
        Path::Avx512 => pick!(ty, avx512, Kernel),
        _ => None,
    }
}

/// As [`kernel`], but writing the f32 output with non-temporal (streaming) stores. Extra contract: the output
/// slice starts 16-byte aligned, and the caller issues `sfence` before the output is handed to anyone else.
pub(crate) fn kernel_nt(ty: GgmlDType, path: Path) -> Option<Kernel> {
    match path {
        Path::Avx2 => pick!(ty, avx2_nt, Kernel),
        Path::Avx512 => pick!(ty, avx512_nt, Kernel),
        _ => None,
    }
}

/// The kernel for `ty` on `path` that writes f16 (`bf16 == false`) or bf16 bit patterns directly: the exact
/// f32 value of each element rounded once, as `float::f32_to_f16`/`f32_to_bf16` do. Same contract as [`kernel`].
/// (Half outputs are streamed by staging these kernels' results in L1 and copying whole lines with
/// [`stream_lines_u16`], not by streaming kernels of their own; see `super::stream_staged`.)
pub(crate) fn kernel16(ty: GgmlDType, path: Path, bf16: bool) -> Option<Kernel16> {
    kernel16_with(ty, path, bf16, has_avx512bf16())
}

/// As [`kernel16`]; `native_bf16` picks, for bf16 output on the AVX-512 path, the kernels that round with the
/// CPU's `vcvtneps2bf16` instead of integer arithmetic. Both round the same way (tests check each against the
/// scalar reference); callers must only ask for `native_bf16` when [`has_avx512bf16`] is true.
pub(crate) fn kernel16_with(ty: GgmlDType, path: Path, bf16: bool, native_bf16: bool) -> Option<Kernel16> {
    match (path, bf16) {
        (Path::Avx2 | Path::Avx512, true) if ty == GgmlDType::BF16 => Some(bf16_to_bf16 as Kernel16),
        (Path::Avx512, true) if native_bf16 && may_be_subnormal(ty) => pick!(ty, avx512_bf16ne, Kernel16),
        (Path::Avx512, true) if native_bf16 => pick!(ty, avx512_bf16nx, Kernel16),
        (Path::Avx2, false) => pick!(ty, avx2_f16, Kernel16),
        (Path::Avx2, true) => pick!(ty, avx2_bf16, Kernel16),
        (Path::Avx512, false) => pick!(ty, avx512_f16, Kernel16),
        (Path::Avx512, true) => pick!(ty, avx512_bf16, Kernel16),
        _ => None,
    }
}

/// Copy `src` into `dst` (same length), writing every whole 64-byte line of `dst` with two back-to-back
/// 32-byte streaming stores and the partial lines at either end with regular ones, so no line is ever written
/// partly by each kind. Whole-line bursts matter: on the dev VM's CPU, streaming 16 or 32 bytes of a line at a
/// time from inside a dequantization kernel (so that a line fills over several kernel steps) ran 1.3-1.9x
/// slower than regular stores, while staging and bursting full lines ran faster than either. The caller
/// issues `sfence` before the output is handed to anyone else. Returns how many elements went out with
/// streaming stores (for the tests).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn stream_lines_u16(src: &[u16], dst: &mut [u16]) -> usize {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        debug_assert_eq!(src.len(), dst.len());
        let n = src.len().min(dst.len());
        // `dst` is 2-byte aligned (a u16 slice), so the head is a whole number of elements.
        let head = (dst.as_ptr().align_offset(64)).min(n);
        dst[..head].copy_from_slice(&src[..head]);
        let lines = (n - head) / 32;
        let s = src.as_ptr().add(head);
        let d = dst.as_mut_ptr().add(head);
        for l in 0..lines {
            // SAFETY: `d + 32 l` is 64-byte aligned (after the head) and the line's 32 elements lie inside both
            // slices (l < lines); the loads are unaligned loads from `src`.
            let a = _mm256_loadu_si256(s.add(32 * l) as *const __m256i);
            let b = _mm256_loadu_si256(s.add(32 * l + 16) as *const __m256i);
            _mm256_stream_si256(d.add(32 * l) as *mut __m256i, a);
            _mm256_stream_si256(d.add(32 * l + 16) as *mut __m256i, b);
        }
        let done = head + 32 * lines;
        dst[done..n].copy_from_slice(&src[done..n]);
        32 * lines
    }
}

/// BF16 tensor → bf16 output. Widening a bf16 to f32 and rounding it back is the identity on every non-NaN
/// (the dropped low half is zero, so nothing rounds; subnormals and infinities included), and NaNs come back
/// quiet (`| 0x0040`), as `float::f32_to_bf16` makes them. So this is a copy that sets the quiet bit of NaNs:
/// no float arithmetic, and none of the subnormal checks the `vcvtneps2bf16` kernels need (random BF16 data
/// has a subnormal in about one vector in sixteen, which made that kernel compute-bound).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn bf16_to_bf16(data: &[u8], out: &mut [u16]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        let n = (data.len() / 2).min(out.len());
        let s = data.as_ptr();
        let d = out.as_mut_ptr();
        let abs_mask = _mm256_set1_epi16(0x7fff);
        let inf = _mm256_set1_epi16(0x7f80);
        let quiet = _mm256_set1_epi16(0x0040);
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: elements i..i + 16 lie inside both slices (2 bytes each in `data`); unaligned accesses.
            let h = _mm256_loadu_si256(s.add(2 * i) as *const __m256i);
            // |h| <= 0x7fff, so the signed 16-bit compare is the unsigned one: NaN when |h| > 0x7f80.
            let nan = _mm256_cmpgt_epi16(_mm256_and_si256(h, abs_mask), inf);
            _mm256_storeu_si256(d.add(i) as *mut __m256i, _mm256_or_si256(h, _mm256_and_si256(nan, quiet)));
            i += 16;
        }
        for k in i..n {
            let h = u16::from_le_bytes([*s.add(2 * k), *s.add(2 * k + 1)]);
            *d.add(k) = if h & 0x7fff > 0x7f80 { h | 0x0040 } else { h };
        }
    }
}

/// Whether `ty` can decode to f32 subnormals. Every other kernel type multiplies an f16 scale (a multiple of
/// 2^-24, or of 2^-24 times a power of two no smaller than 2^-3 for the i-quants' fixed factors) by small
/// integers or table values, and adds or subtracts such products, so each nonzero result is at least 2^-27 in
/// magnitude, far above f32's subnormal range (< 2^-126). MXFP4's E8M0 scales reach 2^-127, BF16 input holds
/// subnormals itself, and NVFP4 is kept on the checked path as well rather than argued about. The tests feed
/// every type subnormal, zero, huge, infinite and NaN scales and compare with the scalar path.
fn may_be_subnormal(ty: GgmlDType) -> bool {
    matches!(ty, GgmlDType::MXFP4 | GgmlDType::NVFP4 | GgmlDType::BF16)
}

/// Generate one ISA's kernels. `$tf` is the feature list; the `emit_*` helpers differ per ISA.
macro_rules! kernels {
    ($name:ident, $tf:literal, $helpers:ident) => {
        pub(crate) mod $name {
            use super::*;
            use super::$helpers::*;

            /// Exact f16 → f32 of one scale with F16C.
            ///
            /// The scale enters the vector register through `vmovd` in inline assembly. Written with
            /// `_mm_cvtsi32_si128`, LLVM sees that only lane 0 matters and emits `vpinsrw` from memory, which
            /// merges into whatever the register last held; in a block loop that register is often the previous
            /// block's output, so every block waited for the one before (Q8_0 → bf16 ran at 0.16 ns/element in
            /// cache instead of about 0.05). `vmovd` writes the whole register and starts a fresh chain.
            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn h2f(b: *const u8) -> f32 {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let h = u16::from_le_bytes([*b, *b.add(1)]) as u32;
                let x: __m128i;
                // SAFETY: `vmovd xmm, r32` (AVX, which every kernel here requires) only moves a register into another; it
                // touches no memory or stack and has no other effect.
                std::arch::asm!("vmovd {x}, {h:e}", x = out(xmm_reg) x, h = in(reg) h, options(pure, nomem, nostack, preserves_flags));
                _mm_cvtss_f32(_mm_cvtph_ps(x))
            }
}

            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn load16(p: *const u8) -> __m128i {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                _mm_loadu_si128(p as *const __m128i)
            }
}

            /// out[i] = f32(q[i] as i8) * d for 16 lanes, always f32 (per-block scale tables, not output).
            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn scales16(q: __m128i, d: f32, out: *mut f32) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let dv = _mm256_set1_ps(d);
                let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
                _mm256_storeu_ps(out, _mm256_mul_ps(a, dv));
                _mm256_storeu_ps(out.add(8), _mm256_mul_ps(b, dv));
            }
}

            /// out[i] = f32(q[i] as i8) * (i < 8 ? d_lo : d_hi) for 16 lanes (always f32).
            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn scales16_2(q: __m128i, d_lo: f32, d_hi: f32, out: *mut f32) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
                _mm256_storeu_ps(out, _mm256_mul_ps(a, _mm256_set1_ps(d_lo)));
                _mm256_storeu_ps(out.add(8), _mm256_mul_ps(b, _mm256_set1_ps(d_hi)));
            }
}

            /// The 8 (scale, min) pairs of Q4_K/Q5_K's 12-byte packed array as [d * scale[0..8], dmin * min[0..8]]
            /// (the values of `kquants::scale_min_k4`, unpacked four at a time with 32-bit masks).
            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn k4_scales(s: *const u8, d: f32, dmin: f32, out: *mut f32) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let a = (s as *const u32).read_unaligned().to_le();
                let b = (s.add(4) as *const u32).read_unaligned().to_le();
                let c = (s.add(8) as *const u32).read_unaligned().to_le();
                let sc_lo = a & 0x3f3f_3f3f;
                let sc_hi = (c & 0x0f0f_0f0f) | ((a >> 2) & 0x3030_3030);
                let m_lo = b & 0x3f3f_3f3f;
                let m_hi = ((c >> 4) & 0x0f0f_0f0f) | ((b >> 2) & 0x3030_3030);
                let q = _mm_setr_epi32(sc_lo as i32, sc_hi as i32, m_lo as i32, m_hi as i32);
                scales16_2(q, d, dmin, out);
            }
}

            /// `_mm_srli_epi16` with a run-time count (the immediate form needs a constant).
            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn srli16_var(v: __m128i, n: i32) -> __m128i {

                _mm_srl_epi16(v, _mm_cvtsi32_si128(n))

}

            /// 16 bits → 16 bytes: byte j = 0x10 if bit j is set, else 0 (the Q5 high bit, shifted into place).
            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn bits16_to_0x10(bits: u32) -> __m128i {

                let v = _mm_set1_epi16(bits as u16 as i16);
                let v = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
                let m = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
                _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(v, m), m), _mm_set1_epi8(0x10))

}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q4_0(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let k8 = _mm_set1_epi8(8);
                blocks!(data, out, block::Q4_0.bytes, block::Q4_0.elems, |b, y| {
                    let d = splat(h2f(b));
                    let q = load16(b.add(2));
                    let lo = _mm_sub_epi8(_mm_and_si128(q, m4), k8);
                    let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), k8);
                    emit_i8_mul(lo, d, y);
                    emit_i8_mul(hi, d, y.add(16));
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q4_1(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                blocks!(data, out, block::Q4_1.bytes, block::Q4_1.elems, |b, y| {
                    let d = splat(h2f(b));
                    let m = splat(h2f(b.add(2)));
                    let q = load16(b.add(4));
                    emit_u8_mul_add(_mm_and_si128(q, m4), d, m, y);
                    emit_u8_mul_add(_mm_and_si128(_mm_srli_epi16(q, 4), m4), d, m, y.add(16));
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q5_0(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let k16 = _mm_set1_epi8(16);
                blocks!(data, out, block::Q5_0.bytes, block::Q5_0.elems, |b, y| {
                    let d = splat(h2f(b));
                    let qh = (b.add(2) as *const u32).read_unaligned().to_le();
                    let q = load16(b.add(6));
                    let lo = _mm_or_si128(_mm_and_si128(q, m4), bits16_to_0x10(qh & 0xFFFF));
                    let hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), m4), bits16_to_0x10(qh >> 16));
                    emit_i8_mul(_mm_sub_epi8(lo, k16), d, y);
                    emit_i8_mul(_mm_sub_epi8(hi, k16), d, y.add(16));
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q5_1(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                blocks!(data, out, block::Q5_1.bytes, block::Q5_1.elems, |b, y| {
                    let d = splat(h2f(b));
                    let m = splat(h2f(b.add(2)));
                    let qh = (b.add(4) as *const u32).read_unaligned().to_le();
                    let q = load16(b.add(8));
                    let lo = _mm_or_si128(_mm_and_si128(q, m4), bits16_to_0x10(qh & 0xFFFF));
                    let hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), m4), bits16_to_0x10(qh >> 16));
                    emit_u8_mul_add(lo, d, m, y);
                    emit_u8_mul_add(hi, d, m, y.add(16));
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q8_0(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                blocks!(data, out, block::Q8_0.bytes, block::Q8_0.elems, |b, y| {
                    let d = splat(h2f(b));
                    emit_i8_mul(load16(b.add(2)), d, y);
                    emit_i8_mul(load16(b.add(18)), d, y.add(16));
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq4_nl(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let lut = load16(crate::quants::tables::KVALUES_IQ4NL.as_ptr() as *const u8);
                blocks!(data, out, block::IQ4_NL.bytes, block::IQ4_NL.elems, |b, y| {
                    // Reference order d * k; multiplication commutes exactly, so k * d is the same bits.
                    let d = splat(h2f(b));
                    let q = load16(b.add(2));
                    emit_i8_mul(_mm_shuffle_epi8(lut, _mm_and_si128(q, m4)), d, y);
                    emit_i8_mul(_mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), m4)), d, y.add(16));
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn mxfp4(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let lut = load16(crate::quants::tables::KVALUES_FP4.as_ptr() as *const u8);
                blocks!(data, out, block::MXFP4.bytes, block::MXFP4.elems, |b, y| {
                    let d = splat(crate::quants::fp4::e8m0_half(*b));
                    let q = load16(b.add(1));
                    emit_i8_mul(_mm_shuffle_epi8(lut, _mm_and_si128(q, m4)), d, y);
                    emit_i8_mul(_mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), m4)), d, y.add(16));
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq4_xs(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let lut = load16(crate::quants::tables::KVALUES_IQ4NL.as_ptr() as *const u8);
                blocks!(data, out, block::IQ4_XS.bytes, block::IQ4_XS.elems, |b, y| {
                    let d = h2f(b);
                    let sh = u16::from_le_bytes([*b.add(2), *b.add(3)]);
                    for ib in 0..8 {
                        let sl = (*b.add(4 + ib / 2) >> (4 * (ib % 2))) & 0xF;
                        let ls = (sl as i32) | ((((sh >> (2 * ib)) & 3) as i32) << 4);
                        let dl = splat(d * (ls - 32) as f32);
                        let q = load16(b.add(8 + 16 * ib));
                        emit_i8_mul(_mm_shuffle_epi8(lut, _mm_and_si128(q, m4)), dl, y.add(32 * ib));
                        emit_i8_mul(
                            _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), m4)),
                            dl,
                            y.add(32 * ib + 16),
                        );
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q4_k(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                blocks!(data, out, block::Q4_K.bytes, block::Q4_K.elems, |b, y| {
                    let d = h2f(b);
                    let dmin = h2f(b.add(2));
                    let mut dm = [0f32; 16];
                    k4_scales(b.add(4), d, dmin, dm.as_mut_ptr());
                    for j in 0..4 {
                        let qa = load16(b.add(16 + 32 * j));
                        let qb = load16(b.add(32 + 32 * j));
                        for h in 0..2 {
                            let d1 = splat_at(dm.as_ptr().add(2 * j + h));
                            let m1 = splat_at(dm.as_ptr().add(8 + 2 * j + h));
                            let (a, c) = if h == 0 {
                                (_mm_and_si128(qa, m4), _mm_and_si128(qb, m4))
                            } else {
                                (_mm_and_si128(_mm_srli_epi16(qa, 4), m4), _mm_and_si128(_mm_srli_epi16(qb, 4), m4))
                            };
                            let o = y.add(64 * j + 32 * h);
                            emit_u8_mul_sub(a, d1, m1, o);
                            emit_u8_mul_sub(c, d1, m1, o.add(16));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q5_k(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let k16 = _mm_set1_epi8(0x10);
                blocks!(data, out, block::Q5_K.bytes, block::Q5_K.elems, |b, y| {
                    let d = h2f(b);
                    let dmin = h2f(b.add(2));
                    let mut dm = [0f32; 16];
                    k4_scales(b.add(4), d, dmin, dm.as_mut_ptr());
                    let qha = load16(b.add(16));
                    let qhb = load16(b.add(32));
                    for j in 0..4 {
                        let qa = load16(b.add(48 + 32 * j));
                        let qb = load16(b.add(64 + 32 * j));
                        for h in 0..2 {
                            let d1 = splat_at(dm.as_ptr().add(2 * j + h));
                            let m1 = splat_at(dm.as_ptr().add(8 + 2 * j + h));
                            let bit = _mm_set1_epi8((1u8 << (2 * j + h)) as i8);
                            let ha = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(qha, bit), bit), k16);
                            let hb = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(qhb, bit), bit), k16);
                            let (a, c) = if h == 0 {
                                (_mm_and_si128(qa, m4), _mm_and_si128(qb, m4))
                            } else {
                                (_mm_and_si128(_mm_srli_epi16(qa, 4), m4), _mm_and_si128(_mm_srli_epi16(qb, 4), m4))
                            };
                            let o = y.add(64 * j + 32 * h);
                            emit_u8_mul_sub(_mm_or_si128(a, ha), d1, m1, o);
                            emit_u8_mul_sub(_mm_or_si128(c, hb), d1, m1, o.add(16));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q6_k(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let m2 = _mm_set1_epi8(0x03);
                let k32 = _mm_set1_epi8(32);
                blocks!(data, out, block::Q6_K.bytes, block::Q6_K.elems, |b, y| {
                    let d = h2f(b.add(208));
                    // Output written in address order (streaming stores need whole lines filled in sequence).
                    for n in 0..2 {
                        let ql = b.add(64 * n);
                        let qh = b.add(128 + 32 * n);
                        let sc = b.add(192 + 8 * n);
                        let qh_v = [load16(qh), load16(qh.add(16))];
                        let ql_v = [load16(ql), load16(ql.add(16)), load16(ql.add(32)), load16(ql.add(48))];
                        for k in 0..4 {
                            for half in 0..2 {
                                // l in 16*half .. 16*half+16
                                let src = ql_v[2 * (k & 1) + half];
                                let lo = if k >> 1 == 0 {
                                    _mm_and_si128(src, m4)
                                } else {
                                    _mm_and_si128(_mm_srli_epi16(src, 4), m4)
                                };
                                let hi = _mm_and_si128(srli16_var(qh_v[half], 2 * k as i32), m2);
                                let q = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), k32);
                                let s = *sc.add(half + 2 * k) as i8;
                                let ds = splat(d * s as f32);
                                emit_i8_mul(q, ds, y.add(128 * n + 32 * k + 16 * half));
                            }
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn tq2_0(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m2 = _mm_set1_epi8(3);
                let one = _mm_set1_epi8(1);
                blocks!(data, out, block::TQ2_0.bytes, block::TQ2_0.elems, |b, y| {
                    let d = splat(h2f(b.add(64)));
                    for g in 0..2 {
                        let qa = load16(b.add(32 * g));
                        let qb = load16(b.add(32 * g + 16));
                        for l in 0..4 {
                            let sh = 2 * l as i32;
                            let a = _mm_sub_epi8(_mm_and_si128(srli16_var(qa, sh), m2), one);
                            let c = _mm_sub_epi8(_mm_and_si128(srli16_var(qb, sh), m2), one);
                            let o = y.add(128 * g + 32 * l);
                            emit_i8_mul(a, d, o);
                            emit_i8_mul(c, d, o.add(16));
                        }
                    }
                });
            }
}

            /// TQ1_0. Each 16 input bytes are widened to 32-bit lanes once and reused for all five base-3
            /// digits: digit = ((x * 3^n mod 256) * 3) >> 8, computed with 16-bit multiplies (the products fit
            /// in the low 16 bits of each lane, the high halves stay zero).
            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn tq1_0(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                const P3: [i32; 5] = [1, 3, 9, 27, 81];
                blocks!(data, out, block::TQ1_0.bytes, block::TQ1_0.elems, |b, y| {
                    let d = splat(h2f(b.add(52)));
                    let wa = widen_u8(load16(b));
                    let wb = widen_u8(load16(b.add(16)));
                    let wc = widen_u8(load16(b.add(32)));
                    for n in 0..5 {
                        let p = pow_lanes(P3[n], P3[n]);
                        emit_trit(wa, p, d, y.add(32 * n));
                        emit_trit(wb, p, d, y.add(32 * n + 16));
                        emit_trit(wc, p, d, y.add(160 + 16 * n));
                    }
                    // qh: 4 bytes, digits 0..4 → lanes [q0..q3]*1, [q0..q3]*3, *9, *27.
                    let qh = (b.add(48) as *const u32).read_unaligned();
                    emit_trit(widen_u8(_mm_set1_epi32(qh as i32)), pow_qh(), d, y.add(240));
                });
            }
}

            /// Q2_K. The 16 sub-block factors `d * (s & 15)` and `dmin * (s >> 4)` are computed once per block
            /// with vector multiplies (same products as the reference's scalar ones) and broadcast from memory.
            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q2_k(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let m2 = _mm_set1_epi8(3);
                blocks!(data, out, block::Q2_K.bytes, block::Q2_K.elems, |b, y| {
                    let d = h2f(b.add(80));
                    let dmin = h2f(b.add(82));
                    let sc = load16(b);
                    let mut dl = [0f32; 16];
                    let mut ml = [0f32; 16];
                    scales16(_mm_and_si128(sc, m4), d, dl.as_mut_ptr());
                    scales16(_mm_and_si128(_mm_srli_epi16(sc, 4), m4), dmin, ml.as_mut_ptr());
                    // Output written in address order (streaming stores need whole lines filled in sequence).
                    for n in 0..2 {
                        let qv = [load16(b.add(16 + 32 * n)), load16(b.add(32 + 32 * n))];
                        for j in 0..4 {
                            for h in 0..2 {
                                let k = 8 * n + 2 * j + h;
                                let v = _mm_and_si128(srli16_var(qv[h], 2 * j as i32), m2);
                                emit_u8_mul_sub(
                                    v,
                                    splat_at(dl.as_ptr().add(k)),
                                    splat_at(ml.as_ptr().add(k)),
                                    y.add(128 * n + 32 * j + 16 * h),
                                );
                            }
                        }
                    }
                });
            }
}

            /// Q3_K: 2 low bits minus 4 where the hmask bit is clear, times `d * scale` (16 factors per block).
            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q3_k(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m2 = _mm_set1_epi8(3);
                let k4 = _mm_set1_epi8(4);
                blocks!(data, out, block::Q3_K.bytes, block::Q3_K.elems, |b, y| {
                    let d = h2f(b.add(108));
                    // 16 six-bit scales: low nibbles from bytes 0..8 (then their high nibbles), 2 high bits
                    // from bytes 8..12 (scale i: byte 8 + i % 4, bits 2 * (i / 4)), minus 32.
                    let lo8 = _mm_loadl_epi64(b.add(96) as *const __m128i);
                    let lo = _mm_unpacklo_epi64(_mm_and_si128(lo8, _mm_set1_epi8(0x0F)), _mm_and_si128(_mm_srli_epi16(lo8, 4), _mm_set1_epi8(0x0F)));
                    let hb = _mm_set1_epi32((b.add(104) as *const u32).read_unaligned().to_le() as i32);
                    let hi = _mm_and_si128(_mm_srlv_epi32(hb, _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
                    let sc = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
                    let mut dl = [0f32; 16];
                    scales16(sc, d, dl.as_mut_ptr());
                    // Output written in address order (streaming stores need whole lines filled in sequence).
                    let hmv = [load16(b), load16(b.add(16))];
                    for n in 0..2 {
                        let qv = [load16(b.add(32 + 32 * n)), load16(b.add(48 + 32 * n))];
                        for j in 0..4 {
                            let bit = _mm_set1_epi8((1u8 << (4 * n + j)) as i8);
                            for h in 0..2 {
                                let set = _mm_cmpeq_epi8(_mm_and_si128(hmv[h], bit), bit);
                                let v = _mm_sub_epi8(
                                    _mm_and_si128(srli16_var(qv[h], 2 * j as i32), m2),
                                    _mm_andnot_si128(set, k4),
                                );
                                emit_i8_mul(v, splat_at(dl.as_ptr().add(8 * n + 2 * j + h)), y.add(128 * n + 32 * j + 16 * h));
                            }
                        }
                    }
                });
            }
}

            /// Two 8-byte grid rows as one 16-byte vector (row `a` first).
            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn rows2(a: u64, b: u64) -> __m128i {

                _mm_set_epi64x(b as i64, a as i64)

}

            /// Four 4-byte grid rows as one 16-byte vector.
            #[target_feature(enable = $tf)]
            #[inline]
            unsafe fn rows4(a: u32, b: u32, c: u32, e: u32) -> __m128i {

                _mm_setr_epi32(a as i32, b as i32, c as i32, e as i32)

}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq1_s(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let grid = crate::quants::tables::IQ1S_GRID.as_ptr();
                blocks!(data, out, block::IQ1_S.bytes, block::IQ1_S.elems, |b, y| {
                    let d = h2f(b);
                    for ib in 0..8 {
                        let h = u16::from_le_bytes([*b.add(34 + 2 * ib), *b.add(35 + 2 * ib)]);
                        let dl = splat(d * (2 * ((h >> 12) & 7) + 1) as f32);
                        // ±0.125 without a branch (the sign bit is the data's, so a branch would mispredict half the time).
                        let delta = f32::from_bits(0x3e00_0000 | ((h as u32 & 0x8000) << 16));
                        for p in 0..2 {
                            let l = 2 * p;
                            let i0 = *b.add(2 + 4 * ib + l) as usize | ((((h >> (3 * l)) & 7) as usize) << 8);
                            let i1 = *b.add(3 + 4 * ib + l) as usize | ((((h >> (3 * l + 3)) & 7) as usize) << 8);
                            let q = rows2(*grid.add(i0), *grid.add(i1));
                            emit_i8_add_mul(q, delta, delta, dl, y.add(32 * ib + 16 * p));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq1_m(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let grid = crate::quants::tables::IQ1S_GRID.as_ptr();
                blocks!(data, out, block::IQ1_M.bytes, block::IQ1_M.elems, |b, y| {
                    let sc = [
                        u16::from_le_bytes([*b.add(48), *b.add(49)]),
                        u16::from_le_bytes([*b.add(50), *b.add(51)]),
                        u16::from_le_bytes([*b.add(52), *b.add(53)]),
                        u16::from_le_bytes([*b.add(54), *b.add(55)]),
                    ];
                    let bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000);
                    let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
                    for ib in 0..8 {
                        let w = sc[ib / 2];
                        let sh = 6 * (ib % 2);
                        let dls = [d * (2 * ((w >> sh) & 7) + 1) as f32, d * (2 * ((w >> (sh + 3)) & 7) + 1) as f32];
                        for p in 0..2 {
                            let hb = *b.add(32 + 2 * ib + p);
                            let i0 = *b.add(4 * ib + 2 * p) as usize | (((hb & 7) as usize) << 8);
                            let i1 = *b.add(4 * ib + 2 * p + 1) as usize | ((((hb >> 4) & 7) as usize) << 8);
                            // ±0.125 from bit 3 / bit 7 of `hb`, without branches.
                            let d0 = f32::from_bits(0x3e00_0000 | ((hb as u32 & 0x08) << 28));
                            let d1 = f32::from_bits(0x3e00_0000 | ((hb as u32 & 0x80) << 24));
                            let q = rows2(*grid.add(i0), *grid.add(i1));
                            emit_i8_add_mul(q, d0, d1, splat(dls[p]), y.add(32 * ib + 16 * p));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq2_xxs(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let grid = crate::quants::tables::IQ2XXS_GRID.as_ptr();
                let signs = crate::quants::tables::KSIGNS_IQ2XS.as_ptr();
                blocks!(data, out, block::IQ2_XXS.bytes, block::IQ2_XXS.elems, |b, y| {
                    let d = h2f(b);
                    for ib in 0..8 {
                        let a0 = (b.add(2 + 8 * ib) as *const u32).read_unaligned().to_le();
                        let a1 = (b.add(6 + 8 * ib) as *const u32).read_unaligned().to_le();
                        let db = splat(d * (0.5 + (a1 >> 28) as f32) * 0.25);
                        for p in 0..2 {
                            let l = 2 * p as u32;
                            let g0 = *grid.add(((a0 >> (8 * l)) & 0xFF) as usize);
                            let g1 = *grid.add(((a0 >> (8 * l + 8)) & 0xFF) as usize);
                            let s0 = *signs.add(((a1 >> (7 * l)) & 127) as usize) as u32;
                            let s1 = *signs.add(((a1 >> (7 * l + 7)) & 127) as usize) as u32;
                            emit_u8_mul_sign(rows2(g0, g1), db, s0 | (s1 << 8), y.add(32 * ib + 16 * p));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq2_xs(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let grid = crate::quants::tables::IQ2XS_GRID.as_ptr();
                let signs = crate::quants::tables::KSIGNS_IQ2XS.as_ptr();
                blocks!(data, out, block::IQ2_XS.bytes, block::IQ2_XS.elems, |b, y| {
                    let d = h2f(b);
                    for ib in 0..8 {
                        let s = *b.add(66 + ib);
                        let dbs = [d * (0.5 + (s & 0xF) as f32) * 0.25, d * (0.5 + (s >> 4) as f32) * 0.25];
                        for p in 0..2 {
                            let o = b.add(2 + 2 * (4 * ib + 2 * p));
                            let q0 = u16::from_le_bytes([*o, *o.add(1)]);
                            let q1 = u16::from_le_bytes([*o.add(2), *o.add(3)]);
                            let g = rows2(*grid.add((q0 & 511) as usize), *grid.add((q1 & 511) as usize));
                            let sg = *signs.add((q0 >> 9) as usize) as u32 | ((*signs.add((q1 >> 9) as usize) as u32) << 8);
                            emit_u8_mul_sign(g, splat(dbs[p]), sg, y.add(32 * ib + 16 * p));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq2_s(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let grid = crate::quants::tables::IQ2S_GRID.as_ptr();
                blocks!(data, out, block::IQ2_S.bytes, block::IQ2_S.elems, |b, y| {
                    let d = h2f(b);
                    for ib in 0..8 {
                        let s = *b.add(74 + ib);
                        let qh = *b.add(66 + ib) as usize;
                        let dbs = [d * (0.5 + (s & 0xF) as f32) * 0.25, d * (0.5 + (s >> 4) as f32) * 0.25];
                        for p in 0..2 {
                            let l = 2 * p;
                            let i0 = *b.add(2 + 4 * ib + l) as usize | (((qh >> (2 * l)) & 3) << 8);
                            let i1 = *b.add(3 + 4 * ib + l) as usize | (((qh >> (2 * l + 2)) & 3) << 8);
                            let sg = u16::from_le_bytes([*b.add(34 + 4 * ib + l), *b.add(35 + 4 * ib + l)]) as u32;
                            emit_u8_mul_sign(rows2(*grid.add(i0), *grid.add(i1)), splat(dbs[p]), sg, y.add(32 * ib + 16 * p));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq3_xxs(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let grid = crate::quants::tables::IQ3XXS_GRID.as_ptr();
                let signs = crate::quants::tables::KSIGNS_IQ2XS.as_ptr();
                blocks!(data, out, block::IQ3_XXS.bytes, block::IQ3_XXS.elems, |b, y| {
                    let d = h2f(b);
                    for ib in 0..8 {
                        let a = (b.add(66 + 4 * ib) as *const u32).read_unaligned().to_le();
                        let db = splat(d * (0.5 + (a >> 28) as f32) * 0.5);
                        let qs = b.add(2 + 8 * ib);
                        for p in 0..2 {
                            let l = 2 * p;
                            let g = rows4(
                                *grid.add(*qs.add(2 * l) as usize),
                                *grid.add(*qs.add(2 * l + 1) as usize),
                                *grid.add(*qs.add(2 * l + 2) as usize),
                                *grid.add(*qs.add(2 * l + 3) as usize),
                            );
                            let s0 = *signs.add(((a >> (7 * l)) & 127) as usize) as u32;
                            let s1 = *signs.add(((a >> (7 * l + 7)) & 127) as usize) as u32;
                            emit_u8_mul_sign(g, db, s0 | (s1 << 8), y.add(32 * ib + 16 * p));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn iq3_s(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let grid = crate::quants::tables::IQ3S_GRID.as_ptr();
                blocks!(data, out, block::IQ3_S.bytes, block::IQ3_S.elems, |b, y| {
                    let d = h2f(b);
                    for ib in 0..8 {
                        let db = splat(d * (1 + 2 * ((*b.add(106 + ib / 2) >> (4 * (ib % 2))) & 0xF) as i32) as f32);
                        let qh = *b.add(66 + ib) as usize;
                        let qs = b.add(2 + 8 * ib);
                        for m in 0..2 {
                            let i = 4 * m;
                            let ix = |k: usize| *qs.add(i + k) as usize | (((qh >> (i + k)) & 1) << 8);
                            let g = rows4(*grid.add(ix(0)), *grid.add(ix(1)), *grid.add(ix(2)), *grid.add(ix(3)));
                            let sg = u16::from_le_bytes([*b.add(74 + 4 * ib + 2 * m), *b.add(75 + 4 * ib + 2 * m)]) as u32;
                            emit_u8_mul_sign(g, db, sg, y.add(32 * ib + 16 * m));
                        }
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn nvfp4(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let m4 = _mm_set1_epi8(0x0F);
                let lut = load16(crate::quants::tables::KVALUES_FP4.as_ptr() as *const u8);
                blocks!(data, out, block::NVFP4.bytes, block::NVFP4.elems, |b, y| {
                    for s in 0..4 {
                        let ds = splat(crate::quants::fp4::ue4m3_half(*b.add(s)));
                        let q = _mm_loadl_epi64(b.add(4 + 8 * s) as *const __m128i);
                        let v = _mm_unpacklo_epi64(_mm_and_si128(q, m4), _mm_and_si128(_mm_srli_epi16(q, 4), m4));
                        emit_i8_mul(_mm_shuffle_epi8(lut, v), ds, y.add(16 * s));
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q1_0(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                blocks!(data, out, block::Q1_0.bytes, block::Q1_0.elems, |b, y| {
                    let d = h2f(b);
                    for g in 0..8 {
                        let bits = u16::from_le_bytes([*b.add(2 + 2 * g), *b.add(3 + 2 * g)]) as u32;
                        emit_pm(d, bits, y.add(16 * g));
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn q2_0(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                blocks!(data, out, block::Q2_0.bytes, block::Q2_0.elems, |b, y| {
                    let d = splat(h2f(b));
                    for g in 0..4 {
                        let x = (b.add(2 + 4 * g) as *const u32).read_unaligned().to_le();
                        emit_2bit(x, d, y.add(16 * g));
                    }
                });
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn f16(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let n = data.len() / 2;
                let src = data.as_ptr();
                let dst = out.as_mut_ptr();
                let mut i = 0;
                while i + 16 <= n {
                    emit_f16x16(src.add(2 * i), dst.add(i));
                    i += 16;
                }
                for k in i..n {
                    put1(h2f(src.add(2 * k)), dst.add(k));
                }
            }
}

            #[target_feature(enable = $tf)]
            pub(crate) unsafe fn bf16(data: &[u8], out: &mut [O]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
                let n = data.len() / 2;
                let src = data.as_ptr();
                let dst = out.as_mut_ptr();
                let mut i = 0;
                while i + 16 <= n {
                    emit_bf16x16(src.add(2 * i), dst.add(i));
                    i += 16;
                }
                for k in i..n {
                    let h = u16::from_le_bytes([*src.add(2 * k), *src.add(2 * k + 1)]);
                    put1(f32::from_bits((h as u32) << 16), dst.add(k));
                }
            }
}
        }
    };
}

kernels!(avx2, "avx2,fma,f16c", h_avx2);
kernels!(avx512, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", h_avx512);
kernels!(avx2_nt, "avx2,fma,f16c", h_avx2_nt);
kernels!(avx512_nt, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", h_avx512_nt);
kernels!(avx2_f16, "avx2,fma,f16c", h_avx2_f16);
kernels!(avx2_bf16, "avx2,fma,f16c", h_avx2_bf16);
kernels!(avx512_f16, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", h_avx512_f16);
kernels!(avx512_bf16, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", h_avx512_bf16);
kernels!(avx512_bf16ne, "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c", h_avx512_bf16ne);
kernels!(avx512_bf16nx, "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c", h_avx512_bf16nx);

/// Final stores of 16 results: as f32, or rounded once to f16 / bf16 (nearest even; NaN stays NaN, as
/// `float::f32_to_f16` / `f32_to_bf16`). Rounding the exact f32 value is what makes direct half output equal
/// to converting the f32 output afterwards.
mod put_avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn f32(a: __m256, b: __m256, out: *mut f32) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm256_storeu_ps(out, a);
            _mm256_storeu_ps(out.add(8), b);
        }
    }

    /// As [`f32`] with non-temporal stores; `out` must be 16-byte aligned.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn f32_nt(a: __m256, b: __m256, out: *mut f32) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm_stream_ps(out, _mm256_castps256_ps128(a));
            _mm_stream_ps(out.add(4), _mm256_extractf128_ps(a, 1));
            _mm_stream_ps(out.add(8), _mm256_castps256_ps128(b));
            _mm_stream_ps(out.add(12), _mm256_extractf128_ps(b, 1));
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn f16(a: __m256, b: __m256, out: *mut u16) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm_storeu_si128(out as *mut __m128i, _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
            _mm_storeu_si128(out.add(8) as *mut __m128i, _mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT));
        }
    }

    /// Round-to-nearest-even bf16 of 8 floats as 8 u32 lanes (NaN → quiet NaN), same as `f32_to_bf16`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn bf16x8(v: __m256i) -> __m256i {
        let lsb = _mm256_and_si256(_mm256_srli_epi32(v, 16), _mm256_set1_epi32(1));
        let rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(v, _mm256_set1_epi32(0x7fff)), lsb), 16);
        let abs = _mm256_and_si256(v, _mm256_set1_epi32(0x7fff_ffff));
        let is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
        let nan = _mm256_or_si256(_mm256_srli_epi32(v, 16), _mm256_set1_epi32(64));
        _mm256_blendv_epi8(rounded, nan, is_nan)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn bf16x16(a: __m256, b: __m256) -> __m256i {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            let a = bf16x8(_mm256_castps_si256(a));
            let b = bf16x8(_mm256_castps_si256(b));
            // packus works per 128-bit lane: [a0 b0 a1 b1] → reorder the 64-bit quarters to [a0 a1 b0 b1].
            let p = _mm256_packus_epi32(a, b);
            _mm256_permute4x64_epi64(p, 0b11_01_10_00)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn bf16(a: __m256, b: __m256, out: *mut u16) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm256_storeu_si256(out as *mut __m256i, bf16x16(a, b));
        }
    }
}

mod put_avx512 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    pub unsafe fn f32(v: __m512, out: *mut f32) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm512_storeu_ps(out, v);
        }
    }

    /// As [`f32`] with non-temporal stores; `out` must be 16-byte aligned (numpy's large arrays are 16-byte
    /// but not 64-byte aligned, so 128-bit streaming stores are used; the four fill whole cache lines).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    pub unsafe fn f32_nt(v: __m512, out: *mut f32) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm_stream_ps(out, _mm512_castps512_ps128(v));
            _mm_stream_ps(out.add(4), _mm512_extractf32x4_ps(v, 1));
            _mm_stream_ps(out.add(8), _mm512_extractf32x4_ps(v, 2));
            _mm_stream_ps(out.add(12), _mm512_extractf32x4_ps(v, 3));
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    pub unsafe fn f16(v: __m512, out: *mut u16) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            let h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm256_storeu_si256(out as *mut __m256i, h);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    pub unsafe fn bf16(v: __m512, out: *mut u16) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm256_storeu_si256(out as *mut __m256i, bf16x16(v));
        }
    }

    /// bf16 of 16 floats with `vcvtneps2bf16`. The instruction rounds to nearest even and quiets NaNs exactly
    /// as `f32_to_bf16` does, but treats subnormal inputs as zero, where the reference rounds them (to a
    /// subnormal bf16 or ±0 by magnitude). Vectors holding a subnormal are rare (no f16-scaled format can
    /// produce one), so they take the integer sequence instead; the result is the reference's in every case.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")]
    #[inline]
    unsafe fn bf16x16_native(v: __m512) -> __m256i {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            let r: __m256i = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            // fpclass category 0x20: denormal (either sign).
            if _mm512_fpclass_ps_mask::<0x20>(v) != 0 {
                return bf16x16(v);
            }
            r
        }
    }

    /// `vcvtneps2bf16` alone, for kernels whose results are never subnormal (see `may_be_subnormal`); the
    /// check above costs about a quarter of the time of a memory-bound kernel at one thread.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")]
    #[inline]
    unsafe fn bf16x16_native_normal(v: __m512) -> __m256i {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v)) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")]
    #[inline]
    pub unsafe fn bf16nx(v: __m512, out: *mut u16) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm256_storeu_si256(out as *mut __m256i, bf16x16_native_normal(v));
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")]
    #[inline]
    pub unsafe fn bf16ne(v: __m512, out: *mut u16) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            _mm256_storeu_si256(out as *mut __m256i, bf16x16_native(v));
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[inline]
    unsafe fn bf16x16(v: __m512) -> __m256i {
        let v = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32(v, 16), _mm512_set1_epi32(1));
        let rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(v, _mm512_set1_epi32(0x7fff)), lsb), 16);
        let abs = _mm512_and_si512(v, _mm512_set1_epi32(0x7fff_ffff));
        let is_nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
        let nan = _mm512_or_si512(_mm512_srli_epi32(v, 16), _mm512_set1_epi32(64));
        let r = _mm512_mask_blend_epi32(is_nan, rounded, nan);
        _mm512_cvtepi32_epi16(r)
    }
}

/// Scalar tail stores (F16/BF16 passthrough kernels whose length is not a multiple of 16).
mod put1 {
    /// # Safety
    /// `out` is valid for one write.
    #[inline(always)]
    pub unsafe fn f32(v: f32, out: *mut f32) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            *out = v;
        }
    }
    /// # Safety
    /// `out` is valid for one write.
    #[inline(always)]
    pub unsafe fn f16(v: f32, out: *mut u16) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            *out = crate::quants::float::f32_to_f16(v);
        }
    }
    /// # Safety
    /// `out` is valid for one write.
    #[inline(always)]
    pub unsafe fn bf16(v: f32, out: *mut u16) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            *out = crate::quants::float::f32_to_bf16(v);
        }
    }
}

/// AVX2 widening/scaling helpers: 16 values as two 256-bit vectors, stored through `$put`.
macro_rules! helpers_avx2 {
    ($name:ident, $O:ty, $put:path, $put1:path) => {
        mod $name {
            pub type O = $O;
            use std::arch::x86_64::*;
            #[allow(unused_imports)]
            pub use $put1 as put1;

            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn splat(x: f32) -> __m256 {
                _mm256_set1_ps(x)
            }

            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn splat_at(p: *const f32) -> __m256 {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe { _mm256_broadcast_ss(&*p) }
            }

            /// Lane i (of 8) all-ones where bit i of `bits` is set.
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn lanes8(bits: u32) -> __m256i {
                let m = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
                _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits as i32), m), m)
            }

            /// 16 bytes zero-extended to 32-bit lanes.
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn widen_u8(q: __m128i) -> (__m256i, __m256i) {
                (_mm256_cvtepu8_epi32(q), _mm256_cvtepu8_epi32(_mm_srli_si128(q, 8)))
            }

            /// Per-lane TQ1_0 multipliers: `lo` for lanes 0..8, `hi` for 8..16.
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn pow_lanes(lo: i32, hi: i32) -> (__m256i, __m256i) {
                (_mm256_set1_epi32(lo), _mm256_set1_epi32(hi))
            }

            /// Multipliers 1,1,1,1,3,3,3,3,9,9,9,9,27,27,27,27 (TQ1_0's qh bytes).
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn pow_qh() -> (__m256i, __m256i) {
                (_mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3), _mm256_setr_epi32(9, 9, 9, 9, 27, 27, 27, 27))
            }

            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn trit8(w: __m256i, p: __m256i) -> __m256 {
                let q = _mm256_and_si256(_mm256_mullo_epi16(w, p), _mm256_set1_epi32(0xFF));
                let t = _mm256_srli_epi32(_mm256_mullo_epi16(q, _mm256_set1_epi32(3)), 8);
                _mm256_cvtepi32_ps(_mm256_sub_epi32(t, _mm256_set1_epi32(1)))
            }

            /// out[i] = f32((((w[i] * p[i]) & 255) * 3 >> 8) - 1) * d: one base-3 digit of each widened byte.
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_trit(w: (__m256i, __m256i), p: (__m256i, __m256i), d: __m256, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    $put(_mm256_mul_ps(trit8(w.0, p.0), d), _mm256_mul_ps(trit8(w.1, p.1), d), out);
                }
            }

            /// out[i] = (f32(q[i] as i8) + delta) * d, delta = `dlo` for lanes 0..8 and `dhi` for 8..16.
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_i8_add_mul(q: __m128i, dlo: f32, dhi: f32, d: __m256, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                    let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
                    $put(
                        _mm256_mul_ps(_mm256_add_ps(a, _mm256_set1_ps(dlo)), d),
                        _mm256_mul_ps(_mm256_add_ps(b, _mm256_set1_ps(dhi)), d),
                        out,
                    );
                }
            }

            /// out[i] = f32(q[i] as u8) * d, negated (sign bit flipped) where bit i of `signs` is set.
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_u8_mul_sign(q: __m128i, d: __m256, signs: u32, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let sb = _mm256_set1_ps(-0.0);
                    let a = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), d);
                    let b = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(q, 8))), d);
                    let na = _mm256_and_ps(_mm256_castsi256_ps(lanes8(signs & 0xFF)), sb);
                    let nb = _mm256_and_ps(_mm256_castsi256_ps(lanes8((signs >> 8) & 0xFF)), sb);
                    $put(_mm256_xor_ps(a, na), _mm256_xor_ps(b, nb), out);
                }
            }

            /// out[i] = bit i of `bits` ? d : -d (i < 16).
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_pm(d: f32, bits: u32, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let p = _mm256_set1_ps(d);
                    let n = _mm256_set1_ps(-d);
                    $put(
                        _mm256_blendv_ps(n, p, _mm256_castsi256_ps(lanes8(bits & 0xFF))),
                        _mm256_blendv_ps(n, p, _mm256_castsi256_ps(lanes8((bits >> 8) & 0xFF))),
                        out,
                    );
                }
            }

            /// out[i] = f32(((x >> 2i) & 3) - 1) * d (i < 16).
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_2bit(x: u32, d: __m256, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let v = _mm256_set1_epi32(x as i32);
                    let m3 = _mm256_set1_epi32(3);
                    let one = _mm256_set1_epi32(1);
                    let a = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
                    let b = _mm256_srlv_epi32(v, _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30));
                    let a = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(a, m3), one));
                    let b = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(b, m3), one));
                    $put(_mm256_mul_ps(a, d), _mm256_mul_ps(b, d), out);
                }
            }

            /// out[0..16] = f32(q[i] as i8) * d
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_i8_mul(q: __m128i, d: __m256, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                    let b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
                    $put(_mm256_mul_ps(a, d), _mm256_mul_ps(b, d), out);
                }
            }

            /// out[0..16] = f32(q[i] as u8) * d + m (separate multiply and add, as the reference)
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_u8_mul_add(q: __m128i, d: __m256, m: __m256, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
                    let b = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(q, 8)));
                    $put(_mm256_add_ps(_mm256_mul_ps(a, d), m), _mm256_add_ps(_mm256_mul_ps(b, d), m), out);
                }
            }

            /// out[0..16] = d * f32(q[i] as u8) - m
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_u8_mul_sub(q: __m128i, d: __m256, m: __m256, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
                    let b = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(q, 8)));
                    $put(_mm256_sub_ps(_mm256_mul_ps(d, a), m), _mm256_sub_ps(_mm256_mul_ps(d, b), m), out);
                }
            }

            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_f16x16(src: *const u8, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let h = _mm256_loadu_si256(src as *const __m256i);
                    $put(
                        _mm256_cvtph_ps(_mm256_castsi256_si128(h)),
                        _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)),
                        out,
                    );
                }
            }

            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            pub unsafe fn emit_bf16x16(src: *const u8, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let a = _mm256_cvtepu16_epi32(_mm_loadu_si128(src as *const __m128i));
                    let b = _mm256_cvtepu16_epi32(_mm_loadu_si128(src.add(16) as *const __m128i));
                    $put(
                        _mm256_castsi256_ps(_mm256_slli_epi32(a, 16)),
                        _mm256_castsi256_ps(_mm256_slli_epi32(b, 16)),
                        out,
                    );
                }
            }
        }
    };
}

/// AVX-512 helpers: 16 values as one 512-bit vector.
macro_rules! helpers_avx512 {
    ($name:ident, $O:ty, $put:path, $put1:path, $tf:literal) => {
        mod $name {
            pub type O = $O;
            use std::arch::x86_64::*;
            #[allow(unused_imports)]
            pub use $put1 as put1;

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn splat(x: f32) -> __m512 {
                _mm512_set1_ps(x)
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn splat_at(p: *const f32) -> __m512 {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe { _mm512_set1_ps(*p) }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn widen_u8(q: __m128i) -> __m512i {
                _mm512_cvtepu8_epi32(q)
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn pow_lanes(lo: i32, hi: i32) -> __m512i {
                _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(lo), _mm512_set1_epi32(hi))
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn pow_qh() -> __m512i {
                _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27)
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_trit(w: __m512i, p: __m512i, d: __m512, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let q = _mm512_and_si512(_mm512_mullo_epi16(w, p), _mm512_set1_epi32(0xFF));
                    let t = _mm512_srli_epi32(_mm512_mullo_epi16(q, _mm512_set1_epi32(3)), 8);
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(t, _mm512_set1_epi32(1)));
                    $put(_mm512_mul_ps(v, d), out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_i8_add_mul(q: __m128i, dlo: f32, dhi: f32, d: __m512, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let delta = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(dlo), _mm512_set1_ps(dhi));
                    let a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
                    $put(_mm512_mul_ps(_mm512_add_ps(a, delta), d), out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_u8_mul_sign(q: __m128i, d: __m512, signs: u32, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let v = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q)), d));
                    let r = _mm512_mask_xor_epi32(v, signs as u16 as __mmask16, v, _mm512_set1_epi32(i32::MIN));
                    $put(_mm512_castsi512_ps(r), out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_pm(d: f32, bits: u32, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let r = _mm512_mask_blend_ps(bits as u16 as __mmask16, _mm512_set1_ps(-d), _mm512_set1_ps(d));
                    $put(r, out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_2bit(x: u32, d: __m512, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                    let v = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(x as i32), sh), _mm512_set1_epi32(3));
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(v, _mm512_set1_epi32(1)));
                    $put(_mm512_mul_ps(v, d), out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_i8_mul(q: __m128i, d: __m512, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    $put(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d), out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_u8_mul_add(q: __m128i, d: __m512, m: __m512, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let a = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
                    $put(_mm512_add_ps(_mm512_mul_ps(a, d), m), out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_u8_mul_sub(q: __m128i, d: __m512, m: __m512, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let a = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
                    $put(_mm512_sub_ps(_mm512_mul_ps(d, a), m), out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_f16x16(src: *const u8, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    $put(_mm512_cvtph_ps(_mm256_loadu_si256(src as *const __m256i)), out);
                }
            }

            #[target_feature(enable = $tf)]
            #[inline]
            pub unsafe fn emit_bf16x16(src: *const u8, out: *mut O) {
                // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
                unsafe {
                    let v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(src as *const __m256i));
                    $put(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), out);
                }
            }
        }
    };
}

helpers_avx2!(h_avx2, f32, super::put_avx2::f32, super::put1::f32);
helpers_avx2!(h_avx2_nt, f32, super::put_avx2::f32_nt, super::put1::f32);
helpers_avx2!(h_avx2_f16, u16, super::put_avx2::f16, super::put1::f16);
helpers_avx2!(h_avx2_bf16, u16, super::put_avx2::bf16, super::put1::bf16);
helpers_avx512!(h_avx512, f32, super::put_avx512::f32, super::put1::f32, "avx512f,avx512bw,avx512vl,avx2,fma,f16c");
helpers_avx512!(
    h_avx512_nt,
    f32,
    super::put_avx512::f32_nt,
    super::put1::f32,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
);
helpers_avx512!(h_avx512_f16, u16, super::put_avx512::f16, super::put1::f16, "avx512f,avx512bw,avx512vl,avx2,fma,f16c");
helpers_avx512!(
    h_avx512_bf16,
    u16,
    super::put_avx512::bf16,
    super::put1::bf16,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
);
helpers_avx512!(
    h_avx512_bf16ne,
    u16,
    super::put_avx512::bf16ne,
    super::put1::bf16,
    "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c"
);
helpers_avx512!(
    h_avx512_bf16nx,
    u16,
    super::put_avx512::bf16nx,
    super::put1::bf16,
    "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c"
);

/// Plain f32 → f16 / bf16 slice conversions (the scratch path for types without a direct kernel).
macro_rules! convert {
    ($fname:ident, $tf:literal, $vec:ident, $put:path, $put1:path, $half:ty) => {
        /// # Safety
        /// The CPU supports `$tf`.
        #[target_feature(enable = $tf)]
        unsafe fn $fname(src: &[f32], dst: &mut [$half]) {
// SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
unsafe {
            let n = src.len().min(dst.len());
            let s = src.as_ptr();
            let o = dst.as_mut_ptr() as *mut u16;
            let mut i = 0;
            while i + 16 <= n {
                convert!(@$vec s, i, o, $put);
                i += 16;
            }
            for k in i..n {
                $put1(*s.add(k), o.add(k));
            }
        }
}
    };
    (@avx2 $s:ident, $i:ident, $o:ident, $put:path) => {
        $put(_mm256_loadu_ps($s.add($i)), _mm256_loadu_ps($s.add($i + 8)), $o.add($i))
    };
    (@avx512 $s:ident, $i:ident, $o:ident, $put:path) => {
        $put(_mm512_loadu_ps($s.add($i)), $o.add($i))
    };
}
convert!(to_f16_avx2, "avx2,fma,f16c", avx2, put_avx2::f16, put1::f16, half::f16);
convert!(to_bf16_avx2, "avx2,fma,f16c", avx2, put_avx2::bf16, put1::bf16, half::bf16);
convert!(to_f16_avx512, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", avx512, put_avx512::f16, put1::f16, half::f16);
convert!(to_bf16_avx512, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", avx512, put_avx512::bf16, put1::bf16, half::bf16);
convert!(
    to_bf16_avx512ne,
    "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c",
    avx512,
    put_avx512::bf16ne,
    put1::bf16,
    half::bf16
);

/// Convert f32 → f16 (round to nearest even) with `path`'s instructions.
///
/// # Safety
/// `path` must be `Avx2` or `Avx512` and available on this CPU.
pub(crate) unsafe fn f32_to_f16_slice(src: &[f32], dst: &mut [half::f16], path: Path) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        match path {
            Path::Avx512 => to_f16_avx512(src, dst),
            _ => to_f16_avx2(src, dst),
        }
    }
}

/// Convert f32 → bf16 (round to nearest even, NaN kept NaN) with `path`'s instructions.
///
/// # Safety
/// `path` must be `Avx2` or `Avx512` and available on this CPU.
pub(crate) unsafe fn f32_to_bf16_slice(src: &[f32], dst: &mut [half::bf16], path: Path) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        match path {
            Path::Avx512 if has_avx512bf16() => to_bf16_avx512ne(src, dst),
            Path::Avx512 => to_bf16_avx512(src, dst),
            _ => to_bf16_avx2(src, dst),
        }
    }
}
