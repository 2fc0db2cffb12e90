//! Criterion benchmarks: dequantization throughput per block type and code path (f32 output, one thread),
//! plus bf16 output and the 2-thread split for a few memory-bound types.
//! Run: cargo bench -p fastquant-core --bench dequant [-- <filter>]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastquant_core::quants::{dequantize_par, dequantize_with, has_dequantizer, GgmlDType, Path, ALL_TYPES};

const ELEMS: usize = 1 << 22; // 4 Mi elements per call (16 MiB of f32 output)

fn input(ty: GgmlDType) -> Vec<u8> {
    let (be, bb) = ty.block_geometry();
    let n = ELEMS / be;
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut v: Vec<u8> = (0..n * bb)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // Keep f16 scales finite so the timing is not of NaN/Inf arithmetic (which is not slower on x86 anyway).
    for b in v.chunks_exact_mut(bb) {
        for byte in b.iter_mut().skip(1).step_by(2).take(1) {
            *byte &= 0x3b;
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dequant_f32");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((ELEMS * 4) as u64));
    let mut out = vec![0f32; ELEMS];
    for ty in ALL_TYPES.into_iter().filter(|t| has_dequantizer(*t)) {
        let data = input(ty);
        for path in [Path::Scalar, Path::Avx2, Path::Avx512, Path::Neon] {
            if !path.available() {
                continue;
            }
            g.bench_with_input(BenchmarkId::new(ty.name(), format!("{path:?}")), &data, |b, d| {
                b.iter(|| dequantize_with(ty, d, &mut out, path).unwrap())
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("dequant_bf16_and_threads");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ELEMS as u64));
    let mut out16 = vec![half::bf16::ZERO; ELEMS];
    for ty in [GgmlDType::F16, GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::TQ1_0] {
        let data = input(ty);
        g.bench_with_input(BenchmarkId::new(ty.name(), "bf16"), &data, |b, d| {
            b.iter(|| dequantize_with(ty, d, &mut out16, Path::Auto).unwrap())
        });
        g.bench_with_input(BenchmarkId::new(ty.name(), "f32x2threads"), &data, |b, d| {
            b.iter(|| dequantize_par(ty, d, &mut out, Path::Auto, Some(2)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
