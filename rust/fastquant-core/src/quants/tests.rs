//! Dequantizer tests: ggml golden vectors (bit-exact), SIMD vs scalar on adversarial random blocks, output
//! conversions, parallel split, and error cases.

use super::*;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/golden")
}

/// Equal as bit patterns, except that any NaN matches any NaN.
fn same_bits(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn assert_same(ty: GgmlType, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same_bits(*g, *w),
            "{ty} {what}: element {i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

struct Golden {
    ty: GgmlType,
    input: Vec<u8>,
    output: Vec<f32>,
}

fn golden() -> Vec<Golden> {
    let dir = golden_dir();
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).expect("manifest.tsv");
    let mut v = Vec::new();
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let ty = GgmlType::from_name(f[0]).unwrap_or_else(|| panic!("unknown type {}", f[0]));
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
        for path in [Path::Scalar, Path::Avx2, Path::Avx512, Path::Auto] {
            if !path.available() {
                continue;
            }
            let mut out = vec![0f32; g.output.len()];
            dequantize_with(g.ty, &g.input, &mut out, path).unwrap();
            assert_same(g.ty, &format!("golden {path:?}"), &out, &g.output);
        }
    }
}
