use fastquant_core::quants::{dequantize_with, GgmlType, Path};
use std::time::Instant;
fn main() {
    let n = 64usize << 10; // 256 KiB of f32: in L2
    let types: Vec<String> = std::env::args().skip(1).collect();
    let mut o32 = vec![0f32; n];
    for t in types {
        let ty = GgmlType::from_name(&t).unwrap();
        let (be, bb) = ty.block_geometry();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut v: Vec<u8> = (0..n / be * bb).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
        if bb > 2 { for b in v.chunks_exact_mut(bb) { b[1] &= 0x3b; b[bb-1] &= 0x3b; } }
        let mut best = f64::MAX;
        for _ in 0..200 {
            let s = Instant::now();
            dequantize_with(ty, &v, &mut o32, Path::Auto).unwrap();
            best = best.min(s.elapsed().as_secs_f64());
        }
        println!("{t:8} in-cache f32 {:.3} ns/el", best / n as f64 * 1e9);
    }
}
