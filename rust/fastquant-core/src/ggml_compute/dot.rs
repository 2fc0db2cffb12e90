//! Row dot products of packed weights against Q8 activations, in the float order of ggml's x86 AVX2 /
//! AVX-512 CPU kernels (the `vec_dot` functions, and llamafile's tinyBLAS for Q4_0/Q8_0, which sums the same
//! way per output).
//!
//! The shape every x86 kernel shares: eight float lanes. Per block (or super-block) an exact int32 sum is
//! formed for each lane — lane `l` of a 32-byte group holds the products of bytes `4l..4l+4` — converted to
//! f32 (round to nearest even) and fused-multiply-added with the block's float scale into that lane's
//! accumulator. At the end the lanes are reduced as `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`. The integer
//! parts are exact whatever instructions compute them (VNNI `vpdpbusd`, or `pmaddubsw` + `pmaddwd`: no
//! intermediate saturates for these value ranges), so reproducing the lane assignment, the f32 scale
//! products and the FMA order reproduces the result bit for bit.
//!
//! Everything here is written once as plain Rust over `[f32; 8]`/`[i32; 8]` arrays; `mod.rs` compiles it
//! twice (portable, and with AVX2+FMA enabled so the compiler vectorises it). `f32::mul_add` is a true fused
//! multiply-add on every target, so both builds give identical bits.

use super::q8::{BlockQ8K, BlockQ8_0, QK_K};
use crate::quants::float::f16_to_f32;

type Lanes = [f32; 8];

#[inline(always)]
fn h(b: &[u8], o: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[o], b[o + 1]]))
}

/// `hsum_float_8`: high half plus low half, then the two pairs.
#[inline(always)]
fn hsum8(a: &Lanes) -> f32 {
    let r = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

#[inline(always)]
fn fma_lanes(acc: &mut Lanes, d: f32, v: &[i32; 8]) {
    for l in 0..8 {
        acc[l] = d.mul_add(v[l] as f32, acc[l]);
    }
}

/// Lane sums of 32 byte products: lane `l` gets `Σ_{t<4} x[4l+t]·y[4l+t]`.
#[inline(always)]
fn lane_dot32(x: &[i32; 32], y: &[i8]) -> [i32; 8] {
    let mut p = [0i32; 32];
    for e in 0..32 {
        p[e] = x[e] * y[e] as i32;
    }
    let mut s = [0i32; 8];
    for l in 0..8 {
        s[l] = (p[4 * l] + p[4 * l + 1]) + (p[4 * l + 2] + p[4 * l + 3]);
    }
    s
}

pub const Q4_0_BYTES: usize = 18;
pub const Q8_0_BYTES: usize = 34;
pub const Q4_K_BYTES: usize = 144;
pub const Q5_K_BYTES: usize = 176;
pub const Q6_K_BYTES: usize = 210;
pub const IQ4_XS_BYTES: usize = 136;

/// `ggml_vec_dot_q4_0_q8_0` (AVX2 path): `w` is one packed row of `a.len()` blocks.
#[inline(always)]
pub fn dot_q4_0(w: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, y) in w.chunks_exact(Q4_0_BYTES).zip(a) {
        let d = h(b, 0) * y.d;
        let mut x = [0i32; 32];
        for j in 0..16 {
            x[j] = (b[2 + j] & 15) as i32 - 8;
            x[j + 16] = (b[2 + j] >> 4) as i32 - 8;
        }
        fma_lanes(&mut acc, d, &lane_dot32(&x, &y.qs));
    }
    hsum8(&acc)
}

/// `ggml_vec_dot_q8_0_q8_0` (AVX2 path).
#[inline(always)]
pub fn dot_q8_0(w: &[u8], a: &[BlockQ8_0]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, y) in w.chunks_exact(Q8_0_BYTES).zip(a) {
        let d = h(b, 0) * y.d;
        let mut x = [0i32; 32];
        for j in 0..32 {
            x[j] = b[2 + j] as i8 as i32;
        }
        fma_lanes(&mut acc, d, &lane_dot32(&x, &y.qs));
    }
    hsum8(&acc)
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K super-block.
#[inline(always)]
fn scales_mins_k4(q: &[u8]) -> ([i32; 8], [i32; 8]) {
    let (mut sc, mut m) = ([0i32; 8], [0i32; 8]);
    for j in 0..8 {
        if j < 4 {
            sc[j] = (q[j] & 63) as i32;
            m[j] = (q[j + 4] & 63) as i32;
        } else {
            sc[j] = ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)) as i32;
            m[j] = ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as i32;
        }
    }
    (sc, m)
}

/// The four int32 lanes of `madd(mins, hadd(bsums))`: lane `p` = `m[2p]·(b[4p]+b[4p+1]) +
/// m[2p+1]·(b[4p+2]+b[4p+3])`.
#[inline(always)]
fn mins_prod(m: &[i32; 8], bsums: &[i16; 16]) -> [i32; 4] {
    let mut q8s = [0i32; 8];
    for k in 0..8 {
        q8s[k] = bsums[2 * k] as i32 + bsums[2 * k + 1] as i32;
    }
    let mut p = [0i32; 4];
    for i in 0..4 {
        p[i] = m[2 * i] * q8s[2 * i] + m[2 * i + 1] * q8s[2 * i + 1];
    }
    p
}

/// Integer lanes of the scaled sub-block sums of a Q4_K/Q5_K super-block: for each 64-value half `j`,
/// bytes of the low sub-block (scale `sc[2j]`) and the high one (`sc[2j+1]`).
#[inline(always)]
fn k4_lanes(vals: &[[i32; 32]; 8], y: &BlockQ8K, sc: &[i32; 8]) -> [i32; 8] {
    let mut sumi = [0i32; 8];
    for s in 0..8 {
        let l = lane_dot32(&vals[s], &y.qs[32 * s..32 * s + 32]);
        for i in 0..8 {
            sumi[i] += sc[s] * l[i];
        }
    }
    sumi
}

/// `ggml_vec_dot_q4_K_q8_K` (AVX2 path).
#[inline(always)]
pub fn dot_q4_k(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (b, y) in w.chunks_exact(Q4_K_BYTES).zip(a) {
        let d = y.d * h(b, 0);
        let dmin = -y.d * h(b, 2);
        let (sc, m) = scales_mins_k4(&b[4..16]);
        let p = mins_prod(&m, &y.bsums);
        for i in 0..4 {
            acc_m[i] = dmin.mul_add(p[i] as f32, acc_m[i]);
        }
        let qs = &b[16..144];
        let mut vals = [[0i32; 32]; 8];
        for j in 0..4 {
            for e in 0..32 {
                vals[2 * j][e] = (qs[32 * j + e] & 15) as i32;
                vals[2 * j + 1][e] = (qs[32 * j + e] >> 4) as i32;
            }
        }
        fma_lanes(&mut acc, d, &k4_lanes(&vals, y, &sc));
    }
    let m = (acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]);
    hsum8(&acc) + m
}

/// `ggml_vec_dot_q5_K_q8_K` (AVX2 path): the mins term is one integer per super-block, `summs += dmin ·
/// f32(Σ)` in scalar code (see `Q5K_MINS_FMA`).
#[inline(always)]
pub fn dot_q5_k(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (b, y) in w.chunks_exact(Q5_K_BYTES).zip(a) {
        let d = y.d * h(b, 0);
        let dmin = -y.d * h(b, 2);
        let (sc, m) = scales_mins_k4(&b[4..16]);
        let p = mins_prod(&m, &y.bsums);
        let tot = ((p[0] + p[1]) + (p[2] + p[3])) as f32;
        summs = if Q5K_MINS_FMA { dmin.mul_add(tot, summs) } else { summs + dmin * tot };
        let qh = &b[16..48];
        let qs = &b[48..176];
        let mut vals = [[0i32; 32]; 8];
        for j in 0..4 {
            for e in 0..32 {
                let hb = qh[e] as i32;
                vals[2 * j][e] = (qs[32 * j + e] & 15) as i32 | (((hb >> (2 * j)) & 1) << 4);
                vals[2 * j + 1][e] = (qs[32 * j + e] >> 4) as i32 | (((hb >> (2 * j + 1)) & 1) << 4);
            }
        }
        fma_lanes(&mut acc, d, &k4_lanes(&vals, y, &sc));
    }
    hsum8(&acc) + summs
}

/// Whether ggml's compiled Q5_K kernel fuses `summs += dmin * isum` into one FMA (the compiler may contract
/// that scalar expression; this follows the llama-cpp-python 0.3.36 build checked by the tests).
pub const Q5K_MINS_FMA: bool = true;

/// `ggml_vec_dot_q6_K_q8_K` (AVX2 path): unsigned 6-bit quants, the `-32` offset applied as
/// `32·Σ scale·bsum` per lane pair of groups.
#[inline(always)]
pub fn dot_q6_k(w: &[u8], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, y) in w.chunks_exact(Q6_K_BYTES).zip(a) {
        let ql = &b[0..128];
        let qh = &b[128..192];
        let sc: [i32; 16] = std::array::from_fn(|i| b[192 + i] as i8 as i32);
        let d = y.d * h(b, 208);
        let mut sumi = [0i32; 8];
        for j in 0..2 {
            let (l, hh) = (&ql[64 * j..64 * j + 64], &qh[32 * j..32 * j + 32]);
            for k in 0..4 {
                let mut v = [0i32; 32];
                for e in 0..32 {
                    let lo = match k {
                        0 => l[e] & 15,
                        1 => l[32 + e] & 15,
                        2 => l[e] >> 4,
                        _ => l[32 + e] >> 4,
                    } as i32;
                    v[e] = lo | ((((hh[e] >> (2 * k)) & 3) as i32) << 4);
                }
                let base = 128 * j + 32 * k;
                let lane = lane_dot32(&v, &y.qs[base..base + 32]);
                let g = base / 16;
                for i in 0..8 {
                    sumi[i] += lane[i] * if i < 4 { sc[g] } else { sc[g + 1] };
                }
            }
        }
        for i in 0..8 {
            let sub = (y.bsums[2 * i] as i32 * sc[2 * i] + y.bsums[2 * i + 1] as i32 * sc[2 * i + 1]) << 5;
            sumi[i] -= sub;
        }
        fma_lanes(&mut acc, d, &sumi);
    }
    hsum8(&acc)
}

/// Values per super-block, re-exported for the callers' shape checks.
pub const QK: usize = QK_K;
