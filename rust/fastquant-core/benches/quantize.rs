//! Criterion benchmarks: quantization throughput per type and code path (one thread), plus the 2-thread
//! split. Run: cargo bench -p fastquant-core --bench quantize [-- <filter>]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastquant_core::quants::{quantize_into_with, Path, QUANTIZE_TYPES};

const ELEMS: usize = 1 << 20; // 1 Mi values per call (4 MiB of f32 input)

/// A normal-ish signal (sum of uniforms) with a per-256-value scale, like a weight matrix's rows.
fn input() -> Vec<f32> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut uniform = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..ELEMS)
        .map(|i| {
            let scale = 0.01 + ((i / 256) % 17) as f32;
            (uniform() + uniform() + uniform()) * scale
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = input();
    let mut g = c.benchmark_group("quantize");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((ELEMS * 4) as u64));
    for ty in QUANTIZE_TYPES {
        let (be, bb) = ty.block_geometry();
        let mut out = vec![0u8; ELEMS / be * bb];
        for path in [Path::Scalar, Path::Avx2, Path::Avx512, Path::Neon] {
            if !path.available() {
                continue;
            }
            g.bench_function(BenchmarkId::new(format!("{ty}"), format!("{path:?}")), |b| {
                b.iter(|| quantize_into_with(ty, &x, &mut out, path, Some(1)).unwrap())
            });
        }
        g.bench_function(BenchmarkId::new(format!("{ty}"), "Auto/2 threads"), |b| {
            b.iter(|| quantize_into_with(ty, &x, &mut out, Path::Auto, Some(2)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
