use fastquant_core::quants::{dequantize_par, GgmlType, Path};
use std::time::Instant;
fn main() {
    let n = 16usize << 20;
    let types: Vec<String> = std::env::args().skip(1).collect();
    let mut o32 = vec![0f32; n];
    let mut o16 = vec![half::bf16::ZERO; n];
    for t in types {
        let ty = GgmlType::from_name(&t).unwrap();
        let (be, bb) = ty.block_geometry();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut v: Vec<u8> = (0..n / be * bb).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
        if bb > 2 { for b in v.chunks_exact_mut(bb) { b[1] &= 0x3b; b[bb-1] &= 0x3b; } }
        for th in [1usize, 2] {
            let mut best = [f64::MAX; 2];
            for _ in 0..15 {
                let s = Instant::now();
                dequantize_par(ty, &v, &mut o32, Path::Auto, Some(th)).unwrap();
                best[0] = best[0].min(s.elapsed().as_secs_f64());
                let s = Instant::now();
                dequantize_par(ty, &v, &mut o16, Path::Auto, Some(th)).unwrap();
                best[1] = best[1].min(s.elapsed().as_secs_f64());
            }
            println!("{t:8} {th}T f32 {:.3} ns/el  bf16 {:.3} ns/el", best[0] / n as f64 * 1e9, best[1] / n as f64 * 1e9);
        }
    }
}
