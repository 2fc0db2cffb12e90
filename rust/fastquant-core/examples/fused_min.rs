use fastquant_core::quants::{dequantize_with, linear_fused_with, GgmlType, Path};
use std::time::Instant;
fn packed(ty: GgmlType, n: usize, k: usize) -> Vec<u8> {
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
fn main() {
    let (n, k) = (512usize, 4096usize);
    let args: Vec<String> = std::env::args().collect();
    let m: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1);
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K, GgmlType::IQ4XS] {
        let w = packed(ty, n, k);
        let x: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32 - 48.0) / 64.0).collect();
        let mut out = vec![0f32; m * n];
        let mut deq = vec![0f32; n * k];
        let mut best = f64::MAX;
        let mut bestd = f64::MAX;
        let mut bestdot = f64::MAX;
        for _ in 0..300 {
            let t = Instant::now();
            linear_fused_with(ty, &x, m, k, &w, n, &mut out, Path::Auto, Some(1)).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            dequantize_with(ty, &w[..w.len() / 8], &mut deq[..n * k / 8], Path::Auto).unwrap();
            bestd = bestd.min(t.elapsed().as_secs_f64() * 8.0);
            let t = Instant::now();
            let mut s = 0f32;
            for j in 0..n / 8 {
                let r = &deq[j * k..(j + 1) * k];
                for l in 0..k {
                    s += r[l] * x[l];
                }
            }
            std::hint::black_box(s);
            bestdot = bestdot.min(t.elapsed().as_secs_f64() * 8.0);
        }
        let el = (n * k) as f64;
        println!(
            "{:7} m={m} fused {:.3} ns/el ({:.1} GB/s packed)  dequant-only(L2) {:.3} ns/el  f32 dot(L2) {:.3} ns/el",
            ty.name(),
            best / el * 1e9,
            w.len() as f64 / best / 1e9,
            bestd / el * 1e9,
            bestdot / el * 1e9
        );
    }
}
