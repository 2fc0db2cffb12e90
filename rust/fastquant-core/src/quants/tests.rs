//! Dequantizer tests: ggml golden vectors (bit-exact), SIMD vs scalar on adversarial random blocks, output
//! conversions, parallel split, and error cases.

use super::*;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/golden")
}

/// Equal as bit patterns. For the conversion types (F16, BF16, F32: no arithmetic) NaNs must match bit for
/// bit too (sign, quiet bit, payload). For the others a NaN result comes out of arithmetic on a NaN or
/// infinite scale, and which NaN pattern survives (an operand's, or x86's default NaN for `Inf * 0`) depends
/// on operand order, which the compiler may commute; there any NaN matches any NaN.
fn same_bits(ty: GgmlDType, a: f32, b: f32) -> bool {
    let exact_nans = matches!(ty, GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::F32);
    a.to_bits() == b.to_bits() || (!exact_nans && a.is_nan() && b.is_nan())
}

fn assert_same(ty: GgmlDType, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same_bits(ty, *g, *w),
            "{ty} {what}: element {i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

struct Golden {
    ty: GgmlDType,
    input: Vec<u8>,
    output: Vec<f32>,
}

fn golden() -> Vec<Golden> {
    let dir = golden_dir();
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("manifest.tsv");
    let mut v = Vec::new();
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let ty = GgmlDType::from_name(f[0]).unwrap_or_else(|| panic!("unknown type {}", f[0]));
        assert_eq!(ty.id(), f[1].parse::<u32>().unwrap());
        assert_eq!(ty.block_geometry(), (f[2].parse().unwrap(), f[3].parse().unwrap()));
        let input = std::fs::read(dir.join(f[6])).unwrap();
        let raw = std::fs::read(dir.join(f[7])).unwrap();
        let output = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        v.push(Golden { ty, input, output });
    }
    v
}

#[test]
fn golden_vectors_cover_26_types() {
    let g = golden();
    let mut names: Vec<_> = g.iter().map(|g| g.ty).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 26);
}

#[test]
fn golden_vectors_bit_exact_every_path() {
    for g in golden() {
        for path in [Path::Scalar, Path::Avx2, Path::Avx512, Path::Neon, Path::Auto] {
            if !path.available() {
                continue;
            }
            let mut out = vec![0f32; g.output.len()];
            dequantize_with(g.ty, &g.input, &mut out, path).unwrap();
            assert_same(g.ty, &format!("golden {path:?}"), &out, &g.output);
        }
    }
}

/// Small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

const SPECIAL_F16: [u16; 16] = [
    0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01,
    0x7C01, 0x3555,
];
const SPECIAL_F32: [u32; 12] = [
    0x0000_0000,
    0x8000_0000,
    0x0000_0001,
    0x8040_0000,
    0x7f7f_ffff,
    0xff7f_ffff,
    0x7f80_0000,
    0xff80_0000,
    0x7fc0_0000,
    0xffc0_0001,
    0x3f80_0000,
    0xbe00_0000,
];

/// Byte offsets of the f16 scale fields of each block type (empty: handled specially or no scale).
fn f16_scale_offsets(ty: GgmlDType) -> &'static [usize] {
    use GgmlDType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | Q1_0 | Q2_0 | IQ4NL | IQ2XXS | IQ2XS | IQ2S | IQ3XXS | IQ3S | IQ1S | IQ4XS => &[0],
        Q4_1 | Q5_1 | Q4K | Q5K => &[0, 2],
        Q2K => &[80, 82],
        Q3K => &[108],
        Q6K => &[208],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        _ => &[],
    }
}

/// `n` random blocks of `ty` where every block's scale is either random or one of the special values
/// (±0, subnormals, huge, ±Inf, NaN), per field independently.
fn adversarial_blocks(ty: GgmlDType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let (_, bb) = ty.block_geometry();
    let mut data = rng.bytes(n * bb);
    for (i, b) in data.chunks_exact_mut(bb).enumerate() {
        for (k, &off) in f16_scale_offsets(ty).iter().enumerate() {
            if !rng.next().is_multiple_of(4) {
                let v = SPECIAL_F16[(i + 5 * k + (rng.next() % 3) as usize) % SPECIAL_F16.len()];
                b[off..off + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        match ty {
            GgmlDType::Q8K => {
                let v = SPECIAL_F32[i % SPECIAL_F32.len()];
                b[0..4].copy_from_slice(&v.to_le_bytes());
            }
            GgmlDType::IQ1M => {
                // The f16 scale lives in the top nibbles of the four u16 words at 48..56.
                let v = SPECIAL_F16[i % SPECIAL_F16.len()];
                for w in 0..4 {
                    let o = 48 + 2 * w;
                    let word = u16::from_le_bytes([b[o], b[o + 1]]) & 0x0FFF | (((v >> (4 * w)) & 0xF) << 12);
                    b[o..o + 2].copy_from_slice(&word.to_le_bytes());
                }
            }
            GgmlDType::MXFP4 => {
                const E: [u8; 12] = [0, 1, 2, 3, 100, 126, 127, 128, 200, 253, 254, 255];
                b[0] = E[i % E.len()];
            }
            GgmlDType::NVFP4 => {
                const S: [u8; 8] = [0x00, 0x7F, 0x80, 0xFF, 0x01, 0x08, 0x77, 0x7E];
                for s in 0..4 {
                    if rng.next().is_multiple_of(2) {
                        b[s] = S[(i + s) % S.len()];
                    }
                }
            }
            _ => {}
        }
    }
    data
}

fn dequantizable() -> impl Iterator<Item = GgmlDType> {
    ALL_TYPES.into_iter().filter(|t| has_dequantizer(*t))
}

fn simd_paths() -> Vec<Path> {
    [Path::Avx2, Path::Avx512, Path::Neon].into_iter().filter(|p| p.available()).collect()
}

#[test]
fn this_machine_tests_simd() {
    // The CI/dev machine has AVX-512 (and aarch64 always has NEON); make sure the SIMD comparisons below are
    // not silently skipped there.
    if std::env::var_os("FASTQUANT_ALLOW_NO_SIMD").is_none() {
        #[cfg(target_arch = "x86_64")]
        assert!(Path::Avx2.available() && Path::Avx512.available(), "expected AVX2 and AVX-512 on this machine");
        #[cfg(target_arch = "aarch64")]
        assert!(Path::Neon.available(), "expected NEON");
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        assert_eq!(Path::Auto.resolve(), *simd_paths().last().unwrap());
    }
}

#[test]
fn simd_matches_scalar_on_adversarial_blocks() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for ty in dequantizable() {
        for path in simd_paths() {
            if !has_simd_kernel(ty, path) {
                continue;
            }
            for &n in &[1usize, 3, 17, 1000] {
                // Element types of size 1 get odd counts so vector tails are exercised.
                let n = if ty.block_elems() == 1 { n * 16 + 7 } else { n };
                let data = adversarial_blocks(ty, n, &mut rng);
                let len = decoded_len(ty, data.len()).unwrap();
                let mut want = vec![0f32; len];
                let mut got = vec![1f32; len];
                dequantize_with(ty, &data, &mut want, Path::Scalar).unwrap();
                dequantize_with(ty, &data, &mut got, path).unwrap();
                assert_same(ty, &format!("{path:?} vs scalar, {n} blocks"), &got, &want);
            }
            checked += 1;
        }
    }
    let expected: usize = simd_paths().into_iter().map(|p| simd_types(p).len()).sum();
    assert_eq!(checked, expected, "every SIMD kernel was compared");
}

/// The types with dedicated AVX2/AVX-512 kernels (so a dropped dispatch entry fails loudly, not silently scalar).
const SIMD_TYPES: [GgmlDType; 27] = {
    use GgmlDType::*;
    [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4K, Q5K, Q6K, TQ1_0, TQ2_0, F16, BF16, IQ4NL, IQ4XS, MXFP4, Q2K, Q3K, IQ1S,
        IQ1M, IQ2XXS, IQ2XS, IQ2S, IQ3XXS, IQ3S, NVFP4, Q1_0, Q2_0,
    ]
};

/// The types with dedicated kernels on `path`.
fn simd_types(path: Path) -> &'static [GgmlDType] {
    match path {
        Path::Avx2 | Path::Avx512 => &SIMD_TYPES,
        #[cfg(target_arch = "aarch64")]
        Path::Neon => &neon::TYPES,
        _ => &[],
    }
}

#[test]
fn simd_kernels_exist_for_listed_types() {
    for path in simd_paths() {
        assert!(!simd_types(path).is_empty());
        for ty in dequantizable() {
            let listed = simd_types(path).contains(&ty);
            assert_eq!(has_simd_kernel(ty, path), listed, "{ty} on {path:?}: kernel present = listed");
        }
    }
}

#[test]
fn special_scales_produce_specials() {
    // Sanity check that the generator reaches the interesting cases (so the comparison above means something).
    let mut rng = Rng(7);
    let data = adversarial_blocks(GgmlDType::Q4_0, 2000, &mut rng);
    let out = dequantize_to_vec(GgmlDType::Q4_0, &data).unwrap();
    assert!(out.iter().any(|v| v.is_nan()));
    assert!(out.iter().any(|v| v.is_infinite()));
    assert!(out.iter().any(|v| *v == 0.0 && v.is_sign_negative()));
    // f16-subnormal scales (f32 normals below 2^-14).
    assert!(out.iter().any(|v| *v != 0.0 && v.abs() < 6.1e-5));
    // MXFP4's e = 0/1 scales are binary32 subnormals.
    let data = adversarial_blocks(GgmlDType::MXFP4, 100, &mut rng);
    let out = dequantize_to_vec(GgmlDType::MXFP4, &data).unwrap();
    assert!(out.iter().any(|v| v.is_subnormal()));
    assert!(out.iter().any(|v| v.is_infinite()));
}

#[test]
fn half_outputs_are_the_f32_result_rounded_once() {
    let mut rng = Rng(42);
    for ty in dequantizable() {
        let n = if ty.block_elems() == 1 { 4099 } else { 37 };
        let data = adversarial_blocks(ty, n, &mut rng);
        let len = decoded_len(ty, data.len()).unwrap();
        let mut f = vec![0f32; len];
        dequantize_with(ty, &data, &mut f, Path::Scalar).unwrap();
        for path in [Path::Scalar, Path::Avx2, Path::Avx512, Path::Neon] {
            if !path.available() {
                continue;
            }
            let mut h = vec![half::f16::ZERO; len];
            let mut b = vec![half::bf16::ZERO; len];
            dequantize_with(ty, &data, &mut h, path).unwrap();
            dequantize_with(ty, &data, &mut b, path).unwrap();
            for i in 0..len {
                let wh = float::f32_to_f16(f[i]);
                let wb = float::f32_to_bf16(f[i]);
                if f[i].is_nan() {
                    assert!(h[i].is_nan() && b[i].is_nan(), "{ty} {path:?} #{i}");
                } else {
                    assert_eq!(h[i].to_bits(), wh, "{ty} {path:?} f16 #{i} from {:e}", f[i]);
                    assert_eq!(b[i].to_bits(), wb, "{ty} {path:?} bf16 #{i} from {:e}", f[i]);
                }
            }
        }
    }
}

#[test]
fn parallel_matches_serial() {
    let mut rng = Rng(3);
    for ty in [GgmlDType::Q4_0, GgmlDType::Q4K, GgmlDType::IQ2XXS, GgmlDType::F16, GgmlDType::TQ1_0] {
        // Enough for several 256 KiB tasks plus a ragged last one.
        let elems = 3 * PAR_TASK_BYTES / 4 * 3 + 5 * 256;
        let n = elems / ty.block_elems();
        let data = adversarial_blocks(ty, n, &mut rng);
        let len = decoded_len(ty, data.len()).unwrap();
        let mut want = vec![0f32; len];
        dequantize_with(ty, &data, &mut want, Path::Scalar).unwrap();
        for threads in [None, Some(1), Some(2), Some(3)] {
            let mut got = vec![0f32; len];
            dequantize_par(ty, &data, &mut got, Path::Auto, threads).unwrap();
            assert_same(ty, &format!("parallel {threads:?}"), &got, &want);
            let mut gb = vec![half::bf16::ZERO; len];
            dequantize_par(ty, &data, &mut gb, Path::Auto, threads).unwrap();
            for i in 0..len {
                assert!(gb[i].to_bits() == float::f32_to_bf16(want[i]) || want[i].is_nan() && gb[i].is_nan());
            }
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut out = vec![0f32; 32];
    assert_eq!(
        dequantize(GgmlDType::Q4_0, &[0u8; 17], &mut out),
        Err(DequantError::PartialBlock { ty: GgmlDType::Q4_0, len: 17, block_bytes: 18 })
    );
    assert_eq!(
        dequantize(GgmlDType::Q4_0, &[0u8; 36], &mut out),
        Err(DequantError::OutputLength { ty: GgmlDType::Q4_0, expected: 64, got: 32 })
    );
    assert_eq!(
        dequantize(GgmlDType::Q8_1, &[0u8; 36], &mut out),
        Err(DequantError::Unsupported { ty: GgmlDType::Q8_1 })
    );
    assert_eq!(
        dequantize_par(GgmlDType::Q4K, &[0u8; 145], &mut out, Path::Auto, Some(2)),
        Err(DequantError::PartialBlock { ty: GgmlDType::Q4K, len: 145, block_bytes: 144 })
    );
    assert!(decoded_len(GgmlDType::Q8_1, 36).is_err());
    // Empty input is zero blocks: fine.
    dequantize::<f32>(GgmlDType::Q6K, &[], &mut []).unwrap();
    let msg = DequantError::PartialBlock { ty: GgmlDType::Q4_0, len: 17, block_bytes: 18 }.to_string();
    assert!(msg.contains("Q4_0") && msg.contains("18-byte"), "{msg}");
}

#[test]
fn passthrough_types() {
    let d: Vec<u8> = [1.5f64, -2.25, f64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(dequantize_to_vec(GgmlDType::F64, &d).unwrap(), vec![1.5f32, -2.25, f32::INFINITY]);
    let d: Vec<u8> = [-128i8 as u8, 127, 0].to_vec();
    assert_eq!(dequantize_to_vec(GgmlDType::I8, &d).unwrap(), vec![-128f32, 127.0, 0.0]);
    let d: Vec<u8> = [16_777_217i32, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(dequantize_to_vec(GgmlDType::I32, &d).unwrap(), vec![16_777_216f32, -3.0]);
    let d: Vec<u8> = [0x7f80_0001u32, 0x3f80_0000].iter().flat_map(|v| v.to_le_bytes()).collect();
    let o = dequantize_to_vec(GgmlDType::F32, &d).unwrap();
    assert_eq!(o[0].to_bits(), 0x7f80_0001);
    assert_eq!(o[1], 1.0);
}

/// A 16-byte-aligned window of `len` f32 inside `buf` (what the streaming kernels require).
#[cfg(target_arch = "x86_64")]
fn aligned16(buf: &mut [f32], len: usize) -> &mut [f32] {
    let off = buf.as_ptr().align_offset(16);
    &mut buf[off..off + len]
}

#[cfg(target_arch = "x86_64")]
#[test]
fn streaming_store_kernels_match_scalar() {
    let mut rng = Rng(0x5eed);
    for ty in SIMD_TYPES {
        for path in simd_paths() {
            let k = x86::kernel_nt(ty, path).unwrap_or_else(|| panic!("{ty} has no {path:?} streaming kernel"));
            for &n in &[1usize, 3, 17, 300] {
                let n = if ty.block_elems() == 1 { n * 16 + 7 } else { n };
                let data = adversarial_blocks(ty, n, &mut rng);
                let len = decoded_len(ty, data.len()).unwrap();
                let mut want = vec![0f32; len];
                dequantize_with(ty, &data, &mut want, Path::Scalar).unwrap();
                let mut buf = vec![1f32; len + 4];
                let got = aligned16(&mut buf, len);
                // SAFETY: whole blocks, exact output length, 16-byte-aligned output, path available (simd_paths).
                unsafe {
                    k(&data, got);
                    std::arch::x86_64::_mm_sfence();
                }
                assert_same(ty, &format!("{path:?} streaming vs scalar, {n} blocks"), got, &want);
                // Half outputs stream through the L1 stage and whole-line copies, at any alignment.
                for shift in [0usize, 3, 13] {
                    let mut b = vec![half::bf16::from_bits(0xFFFF); len + 48];
                    let off = b.as_ptr().align_offset(64) + shift;
                    dequantize_par_stores(ty, &data, &mut b[off..off + len], path, Some(1), Stores::Streaming).unwrap();
                    let bits: Vec<u16> = b[off..off + len].iter().map(|v| v.to_bits()).collect();
                    assert_half_of(ty, &format!("{path:?} streaming bf16, shift {shift}"), &bits, &want, true);
                    assert!(
                        b[..off].iter().chain(&b[off + len..]).all(|v| v.to_bits() == 0xFFFF),
                        "{ty}: wrote outside"
                    );
                    let mut h = vec![half::f16::from_bits(0xFFFF); len + 48];
                    let off = h.as_ptr().align_offset(64) + shift;
                    dequantize_par_stores(ty, &data, &mut h[off..off + len], path, Some(1), Stores::Streaming).unwrap();
                    let bits: Vec<u16> = h[off..off + len].iter().map(|v| v.to_bits()).collect();
                    assert_half_of(ty, &format!("{path:?} streaming f16, shift {shift}"), &bits, &want, false);
                    assert!(
                        h[..off].iter().chain(&h[off + len..]).all(|v| v.to_bits() == 0xFFFF),
                        "{ty}: wrote outside"
                    );
                }
            }
        }
    }
}

/// The whole-line streaming copy: every length and alignment around a few lines, nothing written outside,
/// and exactly the whole 64-byte lines inside the window streamed.
#[cfg(target_arch = "x86_64")]
#[test]
fn stream_lines_copies_exactly() {
    if !Path::Avx2.available() {
        return;
    }
    let src: Vec<u16> = (0..200u16).map(|i| i.wrapping_mul(7919) | 1).collect();
    for len in 0..=200 {
        for shift in 0..40 {
            let mut buf = vec![0u16; 320];
            let off = buf.as_ptr().align_offset(64) + shift;
            let start = buf[off..].as_ptr() as usize;
            let (first, end) = (start.div_ceil(64) * 64, (start + 2 * len) / 64 * 64);
            let whole_lines = if end > first { (end - first) / 2 } else { 0 };
            // SAFETY: AVX2 checked above; the sfence orders the streaming stores before the reads below.
            let streamed = unsafe {
                let k = x86::stream_lines_u16(&src[..len], &mut buf[off..off + len]);
                std::arch::x86_64::_mm_sfence();
                k
            };
            assert_eq!(streamed, whole_lines, "len {len} shift {shift}");
            assert_eq!(&buf[off..off + len], &src[..len], "len {len} shift {shift}");
            assert!(buf[..off].iter().chain(&buf[off + len..]).all(|&v| v == 0), "len {len} shift {shift}");
        }
    }
}

/// `Stores::Streaming` stages every half output that has a direct kernel, on every x86 SIMD path.
#[cfg(target_arch = "x86_64")]
#[test]
fn streaming_half_outputs_are_staged() {
    for ty in SIMD_TYPES {
        for path in simd_paths() {
            let mut b = vec![half::bf16::ZERO; ty.block_elems() * 3 + 1];
            let (_, nt) = choose(ty, scalar_kernel(ty).unwrap(), path, &mut b[1..], Stores::Streaming);
            assert!(nt, "{ty} {path:?} bf16");
            let mut h = vec![half::f16::ZERO; ty.block_elems() * 3 + 1];
            let (_, nt) = choose(ty, scalar_kernel(ty).unwrap(), path, &mut h[1..], Stores::Streaming);
            assert!(nt, "{ty} {path:?} f16");
        }
    }
}

/// BF16 → bf16 is a NaN-quieting copy: every one of the 65536 patterns, exact bits (no NaN leniency), through
/// the vector loop at every start offset, the scalar tail alone, and the public API with both kinds of stores.
#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_to_bf16_is_exact_for_every_pattern() {
    let want: Vec<u16> = (0..=u16::MAX).map(|h| float::f32_to_bf16(f32::from_bits((h as u32) << 16))).collect();
    assert_eq!(want[0x7f80], 0x7f80, "+Inf stays Inf");
    assert_eq!(want[0x7f81], 0x7fc1, "signalling NaN is quieted");
    let data: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    for path in simd_paths() {
        let k = x86::kernel16(GgmlDType::BF16, path, true).expect("BF16 -> bf16 kernel");
        for start in 0..=16usize {
            let n = 65536 - start;
            let mut out = vec![0xAAAAu16; n + 1];
            // SAFETY: whole (1-element) blocks, exact output length, path available (simd_paths).
            unsafe { k(&data[2 * start..], &mut out[..n]) };
            let bad = (0..n).find(|&i| out[i] != want[start + i]);
            assert!(bad.is_none(), "{path:?} start {start}: pattern {:#06x}", start + bad.unwrap());
            assert_eq!(out[n], 0xAAAA, "wrote past the end");
        }
        for h in 0..65536usize {
            let mut o = [0u16; 1];
            // SAFETY: as above, one element, so only the scalar tail runs.
            unsafe { k(&data[2 * h..2 * h + 2], &mut o) };
            assert_eq!(o[0], want[h], "{path:?} tail, pattern {h:#06x}");
        }
        for stores in [Stores::Regular, Stores::Streaming] {
            let mut b = vec![half::bf16::ZERO; 65536 + 8];
            dequantize_par_stores(GgmlDType::BF16, &data, &mut b[5..65536 + 5], path, Some(2), stores).unwrap();
            let bad = (0..65536).find(|&i| b[5 + i].to_bits() != want[i]);
            assert!(bad.is_none(), "{path:?} {stores:?}: pattern {:#06x}", bad.unwrap());
        }
    }
}

/// Large half outputs stream under `Stores::Auto` for the byte-heavy types only, at any alignment.
#[test]
fn auto_streams_half_outputs_of_byte_heavy_types() {
    let simd = matches!(Path::Auto.resolve(), Path::Avx2 | Path::Avx512);
    let mut big = vec![half::bf16::ZERO; STREAM_MIN_BYTES / 2 + 64];
    for (ty, streams) in
        [(GgmlDType::F16, true), (GgmlDType::BF16, true), (GgmlDType::Q8_0, true), (GgmlDType::Q4K, false)]
    {
        for shift in [0usize, 1, 8] {
            let o = &mut big[shift..shift + STREAM_MIN_BYTES / 2];
            let (_, nt) = choose(ty, scalar_kernel(ty).unwrap(), Path::Auto.resolve(), o, Stores::Auto);
            assert_eq!(nt, streams && simd, "{ty} shift {shift}");
        }
        let small = &mut big[..1024];
        let (_, nt) = choose(ty, scalar_kernel(ty).unwrap(), Path::Auto.resolve(), small, Stores::Auto);
        assert!(!nt, "{ty}: small outputs use regular stores");
    }
}

#[test]
fn large_outputs_use_streaming_stores_only_when_aligned_and_match() {
    let mut rng = Rng(12);
    for ty in [GgmlDType::Q4K, GgmlDType::F16] {
        let n = STREAM_MIN_BYTES / 4 / ty.block_elems() + 3;
        let data = adversarial_blocks(ty, n, &mut rng);
        let len = decoded_len(ty, data.len()).unwrap();
        assert!(len * 4 >= STREAM_MIN_BYTES);
        let mut want = vec![0f32; len];
        dequantize_with(ty, &data, &mut want, Path::Scalar).unwrap();
        let mut buf = vec![0f32; len + 8];
        let base = buf.as_ptr().align_offset(16);
        for shift in [base, base + 1, base + 4] {
            let o = &mut buf[shift..shift + len];
            let (_, nt) = choose(ty, scalar_kernel(ty).unwrap(), Path::Auto.resolve(), o, Stores::Auto);
            assert_eq!(nt, shift != base + 1 && Path::Auto.resolve() != Path::Scalar);
            for threads in [Some(1), Some(2)] {
                o.fill(0.0);
                dequantize_par(ty, &data, o, Path::Auto, threads).unwrap();
                assert_same(ty, &format!("large, shift {shift}, {threads:?} threads"), o, &want);
            }
            o.fill(0.0);
            dequantize(ty, &data, o).unwrap();
            assert_same(ty, &format!("large, shift {shift}, serial"), o, &want);
        }
    }
}

fn assert_half_of(ty: GgmlDType, what: &str, got: &[u16], want: &[f32], bf16: bool) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = if bf16 { float::f32_to_bf16(w) } else { float::f32_to_f16(w) };
        let nan = if bf16 { half::bf16::from_bits(g).is_nan() } else { half::f16::from_bits(g).is_nan() };
        assert!(g == e || (w.is_nan() && nan), "{ty} {what}: element {i}: got {g:#06x}, want {e:#06x} from {w:e}");
    }
}

#[test]
fn every_store_choice_matches_scalar() {
    let mut rng = Rng(99);
    for ty in [GgmlDType::Q4_0, GgmlDType::Q3K, GgmlDType::Q6K, GgmlDType::IQ3S, GgmlDType::F16, GgmlDType::Q8K] {
        // Several parallel tasks' worth, ragged.
        let n = (3 * PAR_TASK_BYTES / 4 + 1000) / ty.block_elems() + 1;
        let data = adversarial_blocks(ty, n, &mut rng);
        let len = decoded_len(ty, data.len()).unwrap();
        let mut want = vec![0f32; len];
        dequantize_with(ty, &data, &mut want, Path::Scalar).unwrap();
        for stores in [Stores::Auto, Stores::Regular, Stores::Streaming] {
            for threads in [Some(1), Some(2)] {
                for shift in [0usize, 1, 4] {
                    let what = format!("{stores:?} {threads:?} shift {shift}");
                    let mut buf = vec![0f32; len + 8];
                    let off = buf.as_ptr().align_offset(16) + shift;
                    dequantize_par_stores(ty, &data, &mut buf[off..off + len], Path::Auto, threads, stores).unwrap();
                    assert_same(ty, &what, &buf[off..off + len], &want);
                    let mut b = vec![half::bf16::ZERO; len + 16];
                    let off = b.as_ptr().align_offset(16) + shift;
                    dequantize_par_stores(ty, &data, &mut b[off..off + len], Path::Auto, threads, stores).unwrap();
                    let bits: Vec<u16> = b[off..off + len].iter().map(|v| v.to_bits()).collect();
                    assert_half_of(ty, &what, &bits, &want, true);
                    let mut h = vec![half::f16::ZERO; len + 16];
                    let off = h.as_ptr().align_offset(16) + shift;
                    dequantize_par_stores(ty, &data, &mut h[off..off + len], Path::Auto, threads, stores).unwrap();
                    let bits: Vec<u16> = h[off..off + len].iter().map(|v| v.to_bits()).collect();
                    assert_half_of(ty, &what, &bits, &want, false);
                }
            }
        }
    }
}

/// Both AVX-512 bf16 roundings (integer sequence and the CPU's `vcvtneps2bf16`) against the scalar
/// reference: they are chosen by CPU, so each is exercised here explicitly.
#[cfg(target_arch = "x86_64")]
#[test]
fn both_avx512_bf16_roundings_match_scalar() {
    if !Path::Avx512.available() {
        return;
    }
    let natives: &[bool] = if x86::has_avx512bf16() { &[false, true] } else { &[false] };
    if std::env::var_os("FASTQUANT_ALLOW_NO_SIMD").is_none() {
        assert!(x86::has_avx512bf16(), "expected AVX512-BF16 on this machine");
    }
    let mut rng = Rng(0xbf16);
    let mut saw_subnormal = false;
    for ty in SIMD_TYPES {
        for &n in &[1usize, 3, 17, 300] {
            let n = if ty.block_elems() == 1 { n * 16 + 7 } else { n };
            let data = adversarial_blocks(ty, n, &mut rng);
            let len = decoded_len(ty, data.len()).unwrap();
            let mut want = vec![0f32; len];
            dequantize_with(ty, &data, &mut want, Path::Scalar).unwrap();
            saw_subnormal |= want.iter().any(|v| v.is_subnormal());
            for &native in natives {
                let k = x86::kernel16_with(ty, Path::Avx512, true, native).expect("bf16 kernel");
                let mut h = vec![0xFFFFu16; len];
                // SAFETY: whole blocks, exact output length, AVX-512 available (checked above) and AVX512-BF16
                // whenever `native`.
                unsafe { k(&data, &mut h) };
                assert_half_of(ty, &format!("native={native}"), &h, &want, true);
            }
        }
    }
    // MXFP4's E8M0 scales reach f32 subnormals, so the fallback around `vcvtneps2bf16` is exercised.
    assert!(saw_subnormal);
}

/// The f32 → bf16 slice conversion (scratch path) rounds subnormals, ±0, ±Inf and NaN as the reference does.
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_to_bf16_slices_match_scalar() {
    let mut rng = Rng(77);
    let mut src: Vec<f32> = (0..4099).map(|_| f32::from_bits(rng.next() as u32)).collect();
    src.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, -1e-40, f32::MIN_POSITIVE]);
    src.extend((0..64).map(|i| f32::from_bits(0x0000_8000 + i * 0x1_0000 - 1)));
    for path in simd_paths() {
        let mut dst = vec![half::bf16::ZERO; src.len()];
        half::bf16::from_f32_slice(&src, &mut dst, path);
        let bits: Vec<u16> = dst.iter().map(|v| v.to_bits()).collect();
        assert_half_of(GgmlDType::F32, &format!("{path:?} slice"), &bits, &src, true);
    }
}

/// F16 → f32 gives the same bits on the scalar and every SIMD path for all 65536 codes, NaNs included: a
/// signalling NaN comes back quiet with its payload everywhere (`vcvtph2ps` quiets, and so does the scalar
/// conversion), so `x86.rs`'s bit-identity claim holds for NaN inputs too.
#[test]
fn f16_to_f32_is_bit_identical_on_every_path_for_every_code() {
    let data: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let mut want = vec![0f32; 65536];
    dequantize_with(GgmlDType::F16, &data, &mut want, Path::Scalar).unwrap();
    assert_eq!(want[0x7c01].to_bits(), 0x7fc0_2000, "signalling NaN comes back quiet");
    assert_eq!(want[0xfe01].to_bits(), 0xffc0_2000, "quiet NaN keeps sign and payload");
    for path in simd_paths() {
        // Odd starts put every code in the vector loop and in the scalar tail.
        for start in [0usize, 1, 7] {
            let mut got = vec![0f32; 65536 - start];
            dequantize_with(GgmlDType::F16, &data[2 * start..], &mut got, path).unwrap();
            assert_same(GgmlDType::F16, &format!("{path:?} start {start}"), &got, &want[start..]);
        }
    }
}
