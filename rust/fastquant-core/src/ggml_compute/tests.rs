//! Unit tests of the ggml-order kernels: both builds agree bit for bit, every kernel decodes its layout
//! (checked against the crate's dequantizer in f64), the quantizers round as ggml's x86 code does, and bad
//! shapes are refused. The bit-for-bit comparison with llama.cpp itself lives in tests/test_ggml_compute.py.

use super::q8::{quantize_row_q8_0, quantize_row_q8_k, BlockQ8K, BlockQ8_0};
use super::*;
use crate::quants::{dequantize, GgmlDType};

/// A small deterministic generator (xorshift) so the tests need no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

const TYPES: [GgmlDType; 6] =
    [GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K, GgmlDType::IQ4XS];

/// Random packed rows whose f16 scales are finite and modest (random bytes elsewhere are all valid codes).
fn weights(ty: GgmlDType, n: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let (be, bb) = ty.block_geometry();
    let mut w: Vec<u8> = (0..n * k / be * bb).map(|_| rng.next() as u8).collect();
    let scale_offsets: &[usize] = match ty {
        GgmlDType::Q4_0 | GgmlDType::Q8_0 | GgmlDType::IQ4XS => &[0],
        GgmlDType::Q4K | GgmlDType::Q5K => &[0, 2],
        GgmlDType::Q6K => &[208],
        _ => unreachable!(),
    };
    for b in w.chunks_exact_mut(bb) {
        for &o in scale_offsets {
            let v = half::f16::from_f32(rng.f() * 0.01).to_bits().to_le_bytes();
            b[o..o + 2].copy_from_slice(&v);
        }
    }
    w
}

fn acts(m: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    (0..m * k).map(|i| rng.f() * if i % 97 == 0 { 8.0 } else { 1.0 }).collect()
}

#[test]
fn simd_and_portable_builds_agree_bit_for_bit() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for ty in TYPES {
        let (n, k, m) = (37, 512, 5);
        let w = weights(ty, n, k, &mut rng);
        let x = acts(m, k, &mut rng);
        let (mut a, mut b, mut c) = (vec![0f32; m * n], vec![0f32; m * n], vec![0f32; m * n]);
        linear_ggml_path(ty, &x, m, k, &w, n, &mut a, Some(1), true).unwrap();
        linear_ggml_path(ty, &x, m, k, &w, n, &mut b, Some(1), false).unwrap();
        linear_ggml_path(ty, &x, m, k, &w, n, &mut c, Some(2), true).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{ty}: portable vs simd");
        assert_eq!(bits(&a), bits(&c), "{ty}: 1 vs 2 threads");
    }
}

/// Each output is (up to float rounding) the exact product of the dequantized weight row with the
/// dequantized activation row: this checks every kernel reads its block layout as the dequantizer does.
#[test]
fn kernels_match_dequantized_product() {
    let mut rng = Rng(12345);
    for ty in TYPES {
        let (n, k, m) = (9, 768, 3);
        let w = weights(ty, n, k, &mut rng);
        let x = acts(m, k, &mut rng);
        let mut wf = vec![0f32; n * k];
        dequantize(ty, &w, &mut wf).unwrap();
        let mut xq = vec![0f64; m * k];
        if matches!(ty, GgmlDType::Q4_0 | GgmlDType::Q8_0) {
            let mut blocks = vec![BlockQ8_0::default(); k / 32];
            for j in 0..m {
                quantize_row_q8_0(&x[j * k..(j + 1) * k], &mut blocks);
                for (e, v) in xq[j * k..(j + 1) * k].iter_mut().enumerate() {
                    *v = blocks[e / 32].qs[e % 32] as f64 * blocks[e / 32].d as f64;
                }
            }
        } else {
            let mut blocks = vec![BlockQ8K::default(); k / 256];
            for j in 0..m {
                quantize_row_q8_k(&x[j * k..(j + 1) * k], &mut blocks);
                for (e, v) in xq[j * k..(j + 1) * k].iter_mut().enumerate() {
                    *v = blocks[e / 256].qs[e % 256] as f64 * blocks[e / 256].d as f64;
                }
            }
        }
        let mut out = vec![0f32; m * n];
        linear_ggml(ty, &x, m, k, &w, n, &mut out, Some(1)).unwrap();
        for j in 0..m {
            for i in 0..n {
                let exact: f64 = (0..k).map(|e| wf[i * k + e] as f64 * xq[j * k + e]).sum();
                let scale: f64 = (0..k).map(|e| (wf[i * k + e] as f64 * xq[j * k + e]).abs()).sum();
                let got = out[j * n + i] as f64;
                assert!((got - exact).abs() <= 1e-5 * scale + 1e-30, "{ty} [{j},{i}]: {got} vs {exact}");
            }
        }
    }
}

#[test]
fn q8_0_rounds_ties_to_even_with_127_over_amax() {
    // amax = 127 → id = 1: 2.5 → 2 and 3.5 → 4 (ties to even; the reference quantizer's roundf gives 3, 4).
    let mut x = [0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -2.5;
    let mut b = [BlockQ8_0::default()];
    quantize_row_q8_0(&x, &mut b);
    assert_eq!(&b[0].qs[..4], &[127, 2, 4, -2]);
    assert_eq!(b[0].d, half::f16::from_f32(1.0).to_f32());
    // All zeros: d = 0, quants 0.
    quantize_row_q8_0(&[0f32; 32], &mut b);
    assert_eq!(b[0], BlockQ8_0::default());
}

#[test]
fn q8_k_scale_sign_and_group_sums() {
    let mut rng = Rng(7);
    let mut x: Vec<f32> = (0..256).map(|_| rng.f()).collect();
    x[17] = -3.0; // the value of largest magnitude always maps to -127 (iscale = -127 / max)
    let mut b = [BlockQ8K::default()];
    quantize_row_q8_k(&x, &mut b);
    assert_eq!(b[0].qs[17], -127);
    assert_eq!(b[0].d, 1.0 / (-127.0f32 / -3.0));
    for g in 0..16 {
        let s: i32 = b[0].qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
        assert_eq!(b[0].bsums[g] as i32, s);
    }
    quantize_row_q8_k(&[0f32; 256], &mut b);
    assert_eq!(b[0].d, 0.0);
}

#[test]
fn bad_shapes_and_types_are_refused() {
    let mut out = vec![0f32; 4];
    let w = vec![0u8; 18 * 2];
    let e = linear_ggml(GgmlDType::Q4_0, &[0.0; 48], 1, 48, &w, 1, &mut out[..1], None).unwrap_err();
    assert!(matches!(e, GgmlComputeError::BadK { k: 48, .. }), "{e}");
    let e = linear_ggml(GgmlDType::Q4_0, &[0.0; 64], 1, 64, &w[..20], 1, &mut out[..1], None).unwrap_err();
    assert!(matches!(e, GgmlComputeError::Length { what: "w", .. }), "{e}");
    let e = linear_ggml(GgmlDType::Q4_0, &[0.0; 63], 1, 64, &w, 1, &mut out[..1], None).unwrap_err();
    assert!(matches!(e, GgmlComputeError::Length { what: "x", .. }), "{e}");
    let e = linear_ggml(GgmlDType::Q4_0, &[0.0; 64], 1, 64, &w, 1, &mut out, None).unwrap_err();
    assert!(matches!(e, GgmlComputeError::Length { what: "out", .. }), "{e}");
    let e = linear_ggml(GgmlDType::Q2K, &[0.0; 256], 1, 256, &[0u8; 84], 1, &mut out[..1], None).unwrap_err();
    assert!(matches!(e, GgmlComputeError::Unsupported { .. }), "{e}");
    assert!(!supports(GgmlDType::F16) && supports(GgmlDType::Q6K));
}
