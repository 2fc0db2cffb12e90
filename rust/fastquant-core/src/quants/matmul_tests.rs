use super::*;

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn uniform(seed: &mut u64, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng(seed) % 2001) as f32 / 1000.0 - 1.0).collect()
}

/// Packed weights of `n × k` for `ty`: quantized random values, or (types without a quantizer) random
/// blocks whose f16 scale is a small finite value.
fn weights(ty: GgmlDType, n: usize, k: usize, seed: &mut u64) -> Vec<u8> {
    if crate::quants::has_quantizer(ty) {
        return crate::quants::quantize(ty, &uniform(seed, n * k)).unwrap();
    }
    let (be, bb) = ty.block_geometry();
    let mut w: Vec<u8> = (0..n * k / be * bb).map(|_| rng(seed) as u8).collect();
    let scale_at = match ty {
        GgmlDType::IQ4XS | GgmlDType::IQ4NL => 0,
        _ => panic!("no test weights for {ty}"),
    };
    for b in w.chunks_exact_mut(bb) {
        let h = 0x2000u16 | (rng(seed) as u16 & 0x3ff); // about 0.008 .. 0.016
        b[scale_at..scale_at + 2].copy_from_slice(&h.to_le_bytes());
    }
    w
}

fn paths() -> Vec<Path> {
    [Path::Auto, Path::Scalar, Path::Avx2, Path::Avx512, Path::Neon].into_iter().filter(|p| p.available()).collect()
}

/// Every available path against an f64 reference on the exact dequantized weight, within the bound; SIMD
/// paths bit-identical to each other where they share the fused multiply-add order.
fn check(ty: GgmlDType, m: usize, k: usize, n: usize) {
    let mut seed = 0x9E3779B97F4A7C15u64 ^ (m * 131 + k * 7 + n) as u64;
    let w = weights(ty, n, k, &mut seed);
    let wf = crate::quants::dequantize_to_vec(ty, &w).unwrap();
    let x = uniform(&mut seed, m * k);
    let mut simd: Option<Vec<u32>> = None;
    for path in paths() {
        let mut out = vec![f32::NAN; m * n];
        linear_fused_with(ty, &x, m, k, &w, n, &mut out, path, Some(1)).unwrap();
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut a) = (0f64, 0f64);
                for l in 0..k {
                    let p = x[i * k + l] as f64 * wf[j * k + l] as f64;
                    s += p;
                    a += p.abs();
                }
                let got = out[i * n + j] as f64;
                let bound = k as f64 * 2f64.powi(-24) * a + 1e-30;
                assert!(
                    (got - s).abs() <= bound,
                    "{ty} {path:?} m={m} k={k} n={n} [{i},{j}]: {got} vs {s} (bound {bound})"
                );
            }
        }
        let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        if matches!(path.resolve(), Path::Avx2 | Path::Avx512) {
            // SIMD paths: same decoded values (bit-exact decoders), same per-lane FMA order.
            match &simd {
                None => simd = Some(bits),
                Some(s) => assert_eq!(s, &bits, "{ty} {path:?} m={m} k={k} n={n}"),
            }
        }
    }
}

#[test]
fn fused_matches_f64_reference_on_every_path() {
    let types = [GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K, GgmlDType::IQ4XS];
    for &ty in &types {
        let be = ty.block_elems();
        // k: one block row, not a multiple of 256 where the block allows, longer than a chunk
        let ks: Vec<usize> = if be == 32 { vec![96, 1056, 2080] } else { vec![256, 1280] };
        for &m in &[1usize, 2, 3, 4, 7, 16, 17, 48] {
            for &k in &ks {
                for &n in &[9usize, 70] {
                    if m * k * n > 48 * 1280 * 70 / 2 && m > 17 {
                        continue; // keep the largest batch to the smaller shapes
                    }
                    check(ty, m, k, n);
                }
            }
        }
    }
    for &ty in &[GgmlDType::F16, GgmlDType::BF16, GgmlDType::Q5_0, GgmlDType::Q4_1] {
        check(ty, 3, 512, 33);
    }
    check(GgmlDType::F32, 3, 37, 11); // k not a multiple of 16: the scalar tail
    check(GgmlDType::F32, 2, 2000 + 5, 6); // several chunks, a tail in the last one
}

#[test]
fn threads_do_not_change_results() {
    let (ty, m, k, n) = (GgmlDType::Q4K, 3, 1024, 301);
    assert!(n * k >= PAR_MIN_VALUES);
    let mut seed = 7u64;
    let w = weights(ty, n, k, &mut seed);
    let x = uniform(&mut seed, m * k);
    let run = |t: Option<usize>| {
        let mut out = vec![0f32; m * n];
        linear_fused(ty, &x, m, k, &w, n, &mut out, t).unwrap();
        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let one = run(Some(1));
    assert_eq!(one, run(Some(2)));
    assert_eq!(one, run(Some(3)));
    assert_eq!(one, run(None));
}

#[test]
fn half_inputs_and_outputs() {
    let (ty, m, k, n) = (GgmlDType::Q8_0, 5, 320, 70);
    let mut seed = 11u64;
    let w = weights(ty, n, k, &mut seed);
    let x: Vec<half::bf16> = uniform(&mut seed, m * k).into_iter().map(half::bf16::from_f32).collect();
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let xh: Vec<half::f16> = xf.iter().map(|&v| half::f16::from_f32(v)).collect();
    let mut want = vec![0f32; m * n];
    linear_fused(ty, &xf, m, k, &w, n, &mut want, Some(1)).unwrap();
    let mut got32 = vec![0f32; m * n];
    linear_fused_with(ty, &x, m, k, &w, n, &mut got32, Path::Auto, Some(2)).unwrap();
    assert_eq!(got32, want, "bf16 input widens exactly");
    let mut got16 = vec![half::bf16::ZERO; m * n];
    linear_fused_with(ty, &x, m, k, &w, n, &mut got16, Path::Auto, Some(1)).unwrap();
    for (g, v) in got16.iter().zip(&want) {
        assert_eq!(g.to_bits(), crate::quants::float::f32_to_bf16(*v), "one rounding to bf16");
    }
    // f16 activations: each value is exactly representable (bf16 values in range), so same result
    let mut goth = vec![half::f16::ZERO; m * n];
    linear_fused_with(ty, &xh, m, k, &w, n, &mut goth, Path::Scalar, Some(1)).unwrap();
    let mut want_s = vec![0f32; m * n];
    linear_fused_with(ty, &xf, m, k, &w, n, &mut want_s, Path::Scalar, Some(1)).unwrap();
    for (g, v) in goth.iter().zip(&want_s) {
        assert_eq!(g.to_bits(), crate::quants::float::f32_to_f16(*v));
    }
}

#[test]
fn simd_multiply_kernels_match_the_fma_body_bitwise() {
    let mut seed = 42u64;
    let len = 256 + 64;
    let ws = len + 32;
    let w = uniform(&mut seed, GROUP * ws);
    for m in 1..=9usize {
        let xs = len + 16;
        let x = uniform(&mut seed, m * xs);
        for rb in 1..=GROUP {
            let init = uniform(&mut seed, m * GROUP * LANES);
            let mut want = init.clone();
            // SAFETY: the ranges cover m rows of xs, GROUP rows of ws and the m × GROUP × LANES sums.
            unsafe { mul_scalar_fma(x.as_ptr(), xs, m, w.as_ptr(), ws, rb, len, want.as_mut_ptr()) };
            for path in [Path::Avx2, Path::Avx512] {
                if !path.available() {
                    continue;
                }
                let mut got = init.clone();
                // SAFETY: `path.available()` confirmed the features; ranges as above.
                unsafe { pick_mul(path)(x.as_ptr(), xs, m, w.as_ptr(), ws, rb, len, got.as_mut_ptr()) };
                for (idx, (g, e)) in got.iter().zip(&want).enumerate() {
                    let (i, q) = (idx / LANES / GROUP, idx / LANES % GROUP);
                    if q < rb {
                        assert_eq!(g.to_bits(), e.to_bits(), "{path:?} m={m} rb={rb} slot {idx}");
                    } else {
                        assert_eq!(g.to_bits(), init[idx].to_bits(), "{path:?}: row {i} slot {q} beyond rb");
                    }
                }
            }
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    let w = vec![0u8; 34 * 2];
    let mut out = vec![0f32; 2];
    assert!(matches!(
        linear_fused(GgmlDType::Q8_0, &[0.0; 32], 1, 32, &w, 3, &mut [0f32; 3], None),
        Err(FusedError::WeightLength { .. })
    ));
    assert!(matches!(
        linear_fused(GgmlDType::Q8_0, &[0.0; 30], 1, 30, &w, 2, &mut out, None),
        Err(FusedError::Features { .. })
    ));
    assert!(matches!(
        linear_fused(GgmlDType::Q8_1, &[0.0; 32], 1, 32, &[0u8; 36 * 2], 2, &mut out, None),
        Err(FusedError::Dequant(DequantError::Unsupported { .. }))
    ));
    assert!(matches!(
        linear_fused(GgmlDType::Q8_0, &[0.0; 31], 1, 32, &w, 2, &mut out, None),
        Err(FusedError::InputLength { .. })
    ));
    assert!(linear_fused(GgmlDType::Q8_0, &[0.0; 64], 1, 64, &w, 1, &mut out[..1], Some(0)).is_err());
    let unavailable = [Path::Avx2, Path::Avx512, Path::Neon].into_iter().find(|p| !p.available());
    if let Some(p) = unavailable {
        let r = linear_fused_with(GgmlDType::Q8_0, &[0.0f32; 32], 1, 32, &w, 2, &mut out, p, None);
        assert!(matches!(r, Err(FusedError::Dequant(DequantError::PathUnavailable { .. }))));
    }
    // k == 0: zeros
    let mut z = vec![1f32; 6];
    linear_fused(GgmlDType::F32, &[], 2, 0, &[], 3, &mut z, None).unwrap();
    assert_eq!(z, vec![0f32; 6]);
}
