//! Every SIMD path this CPU has, checked bit for bit against the scalar reference through the public API, on
//! one thread (no test harness, no thread pool). The unit tests do this and more; this program exists for
//! targets where threads cannot run, such as aarch64 binaries under Debian 12's qemu-user, whose thread
//! creation hangs (`scripts/test-aarch64.sh`).
//!
//! Checks: the ggml golden vectors (tests/data/golden) on every path; for every dequantizable type, random
//! blocks biased towards bytes that form ±0, subnormal, huge, ±Inf and NaN scales, in runs of 1, 3, 17 and 300
//! blocks, into f32, f16 and bf16; exits non-zero on any difference.
//!
//!     cargo run --release -p fastquant-core --example simd_check

use fastquant_core::quants::{
    decoded_len, dequantize_with, has_dequantizer, has_simd_kernel, GgmlDType, Path, ALL_TYPES,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A random byte, half the time one of a few that make special f16/f32 scales when two or four of them meet
/// (0x0000 / 0x8000: ±0, 0x7C00 / 0xFC00: ±Inf, 0x7E00: NaN, 0x0001 / 0x03FF: subnormal, 0x7BFF: largest).
fn special_byte(rng: &mut Rng) -> u8 {
    const SPECIAL: [u8; 8] = [0x00, 0x80, 0x7C, 0xFC, 0x7E, 0x01, 0x03, 0xFF];
    let r = rng.next();
    if r & 1 == 0 {
        SPECIAL[(r >> 1) as usize % 8]
    } else {
        (r >> 8) as u8
    }
}

fn same_bits(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn compare(what: &str, got: &[f32], want: &[f32]) -> usize {
    let bad = got.iter().zip(want).position(|(g, w)| !same_bits(*g, *w));
    if let Some(i) = bad {
        eprintln!("MISMATCH {what}: element {i}: got {:#010x}, want {:#010x}", got[i].to_bits(), want[i].to_bits());
        return 1;
    }
    0
}

fn main() {
    let paths: Vec<Path> = [Path::Avx2, Path::Avx512, Path::Neon].into_iter().filter(|p| p.available()).collect();
    println!("SIMD paths on this CPU: {paths:?} (auto = {:?})", Path::Auto.resolve());
    if paths.is_empty() {
        eprintln!("no SIMD path on this CPU: nothing to check");
        std::process::exit(2);
    }
    let mut failures = 0;
    let mut checks = 0;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/golden");
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("tests/data/golden/manifest.tsv");
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let ty = GgmlDType::from_name(f[0]).expect("known type");
        let input = std::fs::read(dir.join(f[6])).unwrap();
        let want: Vec<f32> = std::fs::read(dir.join(f[7]))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for &path in &paths {
            let mut got = vec![0f32; want.len()];
            dequantize_with(ty, &input, &mut got, path).unwrap();
            failures += compare(&format!("golden {} {ty} {path:?}", f[6]), &got, &want);
            checks += 1;
        }
    }

    let mut rng = Rng(0x51_3d);
    let mut kernels = 0;
    for ty in ALL_TYPES.into_iter().filter(|t| has_dequantizer(*t)) {
        let (be, bb) = ty.block_geometry();
        for &path in &paths {
            kernels += has_simd_kernel(ty, path) as usize;
            for &n in &[1usize, 3, 17, 300] {
                let n = if be == 1 { n * 16 + 7 } else { n };
                let data: Vec<u8> = (0..n * bb).map(|_| special_byte(&mut rng)).collect();
                let len = decoded_len(ty, data.len()).unwrap();
                let mut want = vec![0f32; len];
                let mut got = vec![1f32; len];
                dequantize_with(ty, &data, &mut want, Path::Scalar).unwrap();
                dequantize_with(ty, &data, &mut got, path).unwrap();
                failures += compare(&format!("{ty} {path:?} {n} blocks f32"), &got, &want);
                let mut h = vec![half::f16::ZERO; len];
                let mut hw = vec![half::f16::ZERO; len];
                dequantize_with(ty, &data, &mut h, path).unwrap();
                dequantize_with(ty, &data, &mut hw, Path::Scalar).unwrap();
                let (h, hw): (Vec<f32>, Vec<f32>) =
                    (h.iter().map(|v| v.to_f32()).collect(), hw.iter().map(|v| v.to_f32()).collect());
                failures += compare(&format!("{ty} {path:?} {n} blocks f16"), &h, &hw);
                let mut b = vec![half::bf16::ZERO; len];
                let mut bw = vec![half::bf16::ZERO; len];
                dequantize_with(ty, &data, &mut b, path).unwrap();
                dequantize_with(ty, &data, &mut bw, Path::Scalar).unwrap();
                let (b, bw): (Vec<f32>, Vec<f32>) =
                    (b.iter().map(|v| v.to_f32()).collect(), bw.iter().map(|v| v.to_f32()).collect());
                failures += compare(&format!("{ty} {path:?} {n} blocks bf16"), &b, &bw);
                checks += 3;
            }
        }
    }
    println!("{checks} comparisons, {kernels} (type, path) pairs with a dedicated SIMD kernel, {failures} mismatches");
    if failures > 0 || kernels == 0 {
        std::process::exit(1);
    }
}
