//! Criterion benchmarks of the fused packed linear product (`quants::linear_fused_with`): per block type,
//! shape, activation batch and code path, bytes/s of the packed weight read. One thread unless the id says
//! `x2threads`. Run: cargo bench -p fastquant-core --bench fused [-- <filter>]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastquant_core::quants::{linear_fused_with, GgmlDType, Path};

/// Random blocks whose f16 scales (the first two bytes of each block, and Q6_K's last two) are finite.
fn packed(ty: GgmlDType, n: usize, k: usize) -> Vec<u8> {
    let (be, bb) = ty.block_geometry();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut v: Vec<u8> = (0..n * k / be * bb)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for b in v.chunks_exact_mut(bb) {
        b[1] &= 0x3b;
        b[3] &= 0x3b;
        b[bb - 1] &= 0x3b;
    }
    v
}

fn bench(c: &mut Criterion) {
    let types = [GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K, GgmlDType::IQ4XS];
    let mut g = c.benchmark_group("linear_fused");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_secs(1));
    for ty in types {
        // (out, in): a 7B-class square layer, and a 135M-class MLP layer (in = 1536 fits 256-blocks)
        for (n, k) in [(4096usize, 4096usize), (576, 1536)] {
            let w = packed(ty, n, k);
            g.throughput(Throughput::Bytes(w.len() as u64));
            for m in [1usize, 4, 16] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32 - 48.0) / 64.0).collect();
                let mut out = vec![0f32; m * n];
                for path in [Path::Scalar, Path::Avx2, Path::Avx512, Path::Neon] {
                    if !path.available() || (path == Path::Scalar && m > 1) {
                        continue;
                    }
                    let id = BenchmarkId::new(format!("{}/{n}x{k}", ty.name()), format!("m{m}/{path:?}"));
                    g.bench_function(id, |b| {
                        b.iter(|| linear_fused_with(ty, &x, m, k, &w, n, &mut out, path, Some(1)).unwrap())
                    });
                }
                if m == 1 {
                    let id = BenchmarkId::new(format!("{}/{n}x{k}", ty.name()), "m1/Auto/x2threads");
                    g.bench_function(id, |b| {
                        b.iter(|| linear_fused_with(ty, &x, m, k, &w, n, &mut out, Path::Auto, Some(2)).unwrap())
                    });
                }
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
