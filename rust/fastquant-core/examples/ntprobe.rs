use std::arch::x86_64::*;
use std::time::Instant;
extern "C" { fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32; }

#[target_feature(enable = "avx512f,avx512bw,f16c")]
unsafe fn q8(data: &[u8], y0: *mut f32, mode: u32) {
    let n = data.len() / 34;
    for i in 0..n {
        let b = data.as_ptr().add(i * 34);
        let h = u16::from_le_bytes([*b, *b.add(1)]);
        let d = _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32))));
        let y = y0.add(i * 32);
        let a = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(2) as *const _))), d);
        let c = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(18) as *const _))), d);
        match mode {
            0 => { _mm512_storeu_ps(y, a); _mm512_storeu_ps(y.add(16), c); }
            1 => { _mm512_stream_ps(y, a); _mm512_stream_ps(y.add(16), c); }
            _ => {
                for (k, v) in [(0, a), (16, c)] {
                    _mm_stream_ps(y.add(k), _mm512_castps512_ps128(v));
                    _mm_stream_ps(y.add(k + 4), _mm512_extractf32x4_ps(v, 1));
                    _mm_stream_ps(y.add(k + 8), _mm512_extractf32x4_ps(v, 2));
                    _mm_stream_ps(y.add(k + 12), _mm512_extractf32x4_ps(v, 3));
                }
            }
        }
    }
    if mode > 0 { _mm_sfence(); }
}

fn main() {
    let n = 16usize << 20;
    let data: Vec<u8> = (0..n / 32 * 34).map(|i| (i * 7 % 251) as u8 & 0x3b).collect();
    let layout = std::alloc::Layout::from_size_align(n * 4 + (4 << 20), 2 << 20).unwrap();
    let base = unsafe { std::alloc::alloc(layout) };
    unsafe { madvise(base, n * 4 + (4 << 20), 14) };
    for (mode, off) in [(0u32, 0usize), (0, 16), (1, 0), (2, 16), (0, 16), (2, 16), (1, 0)] {
        let y = unsafe { base.add(off) as *mut f32 };
        let mut best = f64::MAX;
        for _ in 0..15 {
            let s = Instant::now();
            unsafe { q8(&data, y, mode) };
            best = best.min(s.elapsed().as_secs_f64());
        }
        println!("mode={mode} off={off} {:.3} ns/el", best / n as f64 * 1e9);
    }
    println!("{}", std::fs::read_to_string("/proc/self/smaps_rollup").unwrap().lines().filter(|l| l.contains("AnonHuge")).collect::<String>());
}
