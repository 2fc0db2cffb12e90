//! Fused dequantize + matrix multiply for small activation batches: `out = x · Wᵀ` where `W` (`n × k`) stays
//! packed in ggml blocks.
//!
//! The float weight is never materialised. The output rows (`n`) are split into tasks of whole groups of 4
//! weight rows; a task walks its groups, and for each group dequantizes a chunk of at most [`CHUNK`] values of
//! each of the 4 rows with the regular (bit-exact) block kernels into a 16 KiB buffer that stays in L1, then
//! multiplies that chunk with the same columns of every activation row, keeping 16 lane-wise f32 partial sums
//! per (activation row, weight row) pair. The packed bytes are read once, straight from memory; the decoded
//! values never leave the L1 cache. For one or two activation rows on AVX-512, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K and
//! IQ4_XS skip even that buffer: `matmul_x86_fused.rs` decodes each block into registers and multiplies there,
//! with the same per-lane operation sequence (bit-identical results). Extra memory: that buffer and the partial sums per worker thread (kept in
//! thread-local storage, so reused across calls), plus an f32 copy of `x` when it is not f32.
//!
//! The dot products accumulate in f32 with fused multiply-adds on the SIMD paths (a separate multiply and add
//! on the scalar path), then add the 16 lanes pairwise, so results differ from a BLAS `x · Wᵀ` only by
//! summation order: both are within the usual `k·u·Σ|x_i·w_i|` bound (u = 2⁻²⁴). The result does not depend
//! on the thread count. A non-f32 output is the f32 result rounded once to nearest-even.

use super::{prepare, DequantError, GgmlDType, Kernel, OutElem, Path};
use std::cell::RefCell;

/// Values of each weight row decoded per step (a multiple of every block size: 256). Four rows of it are the
/// 16 KiB decode buffer.
pub const CHUNK: usize = 1024;

/// Weight rows decoded and multiplied together.
pub const GROUP: usize = 4;

/// Below this many weight values (`n·k`), a call runs on the calling thread: waking the pool costs more.
pub const PAR_MIN_VALUES: usize = 1 << 18;

/// Tasks per thread of a parallel call.
const TASKS_PER_THREAD: usize = 8;

/// Output rows staged in f32 before they are written out (converted to the output type).
const STAGE: usize = 64;

/// Batches up to this many rows use the register-fused kernels where they exist (AVX-512: Q4_0, Q8_0, Q4_K,
/// Q5_K, Q6_K, IQ4_XS); larger ones decode each chunk once into L1 for all rows.
pub const ROW_KERNEL_MAX_M: usize = 2;

/// Lanes of every partial sum (one 512-bit vector, two 256-bit ones).
pub(crate) const LANES: usize = 16;

/// Why a fused product was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FusedError {
    #[error(transparent)]
    Dequant(#[from] DequantError),
    #[error("{ty}: in_features {k} is not a multiple of the {block}-element block")]
    Features { ty: GgmlDType, k: usize, block: usize },
    #[error("{ty}: packed weight is {got} bytes, expected {expected} for {n} rows of {k} values")]
    WeightLength { ty: GgmlDType, n: usize, k: usize, expected: usize, got: usize },
    #[error("activations hold {got} values, expected {expected} ({m} rows of {k})")]
    InputLength { m: usize, k: usize, expected: usize, got: usize },
    #[error("output holds {got} values, expected {expected} ({m} rows of {n})")]
    OutputLength { m: usize, n: usize, expected: usize, got: usize },
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An activation element type: f32, f16 or bf16 (widened to f32 exactly). Sealed.
pub trait InElem: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The slice itself when `Self` is f32.
    fn as_f32(x: &[Self]) -> Option<&[f32]>;
    /// Widen `x` into `dst` (same length).
    fn widen(x: &[Self], dst: &mut [f32]);
}

impl InElem for f32 {
    fn as_f32(x: &[f32]) -> Option<&[f32]> {
        Some(x)
    }
    fn widen(x: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(x);
    }
}

impl InElem for half::f16 {
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn widen(x: &[Self], dst: &mut [f32]) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(x, dst);
    }
}

impl InElem for half::bf16 {
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn widen(x: &[Self], dst: &mut [f32]) {
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(x, dst);
    }
}

/// `out[i][j] = Σ_l x[i][l] · W[j][l]` for `x` (`m × k`, row-major f32), `W` (`n × k`, packed `ty` blocks,
/// each row `k / block_elems` whole blocks) and `out` (`m × n`, row-major f32).
/// `threads`: `None` = rayon's global pool, `Some(1)` = the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn linear_fused(
    ty: GgmlDType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    out: &mut [f32],
    threads: Option<usize>,
) -> Result<(), FusedError> {
    linear_fused_with(ty, x, m, k, w, n, out, Path::Auto, threads)
}

/// As [`linear_fused`], for f32/f16/bf16 activations and outputs, on a chosen code path (`Auto`: the best
/// this CPU has; a forced path selects both the block decoder and the multiply kernel; a path the CPU lacks
/// is refused).
#[allow(clippy::too_many_arguments)]
pub fn linear_fused_with<X: InElem, Y: OutElem>(
    ty: GgmlDType,
    x: &[X],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    out: &mut [Y],
    path: Path,
    threads: Option<usize>,
) -> Result<(), FusedError> {
    let (be, bb) = ty.block_geometry();
    if !k.is_multiple_of(be) {
        return Err(FusedError::Features { ty, k, block: be });
    }
    let row_bytes = k / be * bb;
    let expected = n.saturating_mul(row_bytes);
    if w.len() != expected {
        return Err(FusedError::WeightLength { ty, n, k, expected, got: w.len() });
    }
    let xe = m.saturating_mul(k);
    if x.len() != xe {
        return Err(FusedError::InputLength { m, k, expected: xe, got: x.len() });
    }
    let oe = m.saturating_mul(n);
    if out.len() != oe {
        return Err(FusedError::OutputLength { m, n, expected: oe, got: out.len() });
    }
    if threads == Some(0) {
        return Err(DequantError::ThreadPool("threads must be at least 1".into()).into());
    }
    // One chunk for short rows; otherwise whole blocks and whole vectors, so only the last chunk has a tail.
    let unit = be * LANES / gcd(be, LANES);
    let chunk = if k <= CHUNK { k.max(be) } else { (CHUNK / unit).max(1) * unit };
    // Validates the type (has a dequantizer) and the path, and picks the block kernel for one chunk.
    let (kernel, path) = prepare(ty, chunk / be * bb, chunk, path)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        let zeros = vec![0f32; n];
        for o in out.chunks_mut(n) {
            Y::from_f32_slice(&zeros, o, path);
        }
        return Ok(());
    }
    let widened;
    let xf: &[f32] = match X::as_f32(x) {
        Some(s) => s,
        None => {
            let mut v = vec![0f32; x.len()];
            X::widen(x, &mut v);
            widened = v;
            &widened
        }
    };
    let rowk = if m <= ROW_KERNEL_MAX_M { row_kernel(ty, path) } else { None };
    let job = Job { kernel, mul: pick_mul(path), rowk, path, x: xf, m, k, w, row_bytes, be, bb, chunk };
    let groups = n.div_ceil(GROUP);
    let n_threads = match threads {
        Some(t) => t,
        None => rayon::current_num_threads(),
    };
    let out_ptr = SendPtr(out.as_mut_ptr());
    if n_threads <= 1 || n * k < PAR_MIN_VALUES || groups < 2 {
        // SAFETY: rows 0..n are this call's whole output; `out` is exclusively borrowed for the call.
        unsafe { job.run(0, n, n, out_ptr) };
        return Ok(());
    }
    // A few tasks per thread, so that a thread slowed by other load does not hold up the whole call. The
    // calling thread takes tasks too, with `threads - 1` persistent helpers (`fused_pool.rs`): it never
    // waits for a helper to wake, only for tasks a helper has started (right after torch's own parallel ops
    // its OpenMP workers still spin for a while, and a helper may get its core late).
    let tasks = (n_threads * TASKS_PER_THREAD).min(groups);
    let per = groups.div_ceil(tasks) * GROUP;
    let ntask = n.div_ceil(per);
    let task = |t: usize| {
        let (j0, j1) = (t * per, ((t + 1) * per).min(n));
        // SAFETY: `fused_pool::run` runs each task index once, tasks own disjoint row ranges `j0..j1`, so
        // every output element is written by one task; `out` is exclusively borrowed until `run` returns.
        unsafe { job.run(j0, j1, n, out_ptr) };
    };
    super::fused_pool::run(n_threads - 1, ntask, &task);
    Ok(())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A raw output pointer shared by the tasks, which write disjoint elements.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: only used to write disjoint elements from different tasks while the owner waits (see above).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

struct Job<'a> {
    kernel: Kernel,
    mul: MulFn,
    /// The register-fused kernel, when the type and path have one and the batch is small.
    rowk: Option<RowFn>,
    path: Path,
    x: &'a [f32],
    m: usize,
    k: usize,
    w: &'a [u8],
    row_bytes: usize,
    be: usize,
    bb: usize,
    chunk: usize,
}

thread_local! {
    /// Per-thread decode buffer, partial sums and result staging, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Job<'_> {
    /// Compute output rows `j0..j1` into `out` (`m × n`).
    ///
    /// # Safety
    /// `out` points at `m × n` elements; no other thread writes rows `j0..j1` of any output row meanwhile.
    unsafe fn run<Y: OutElem>(&self, j0: usize, j1: usize, n: usize, out: SendPtr<Y>) {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            let (m, k, chunk) = (self.m, self.k, self.chunk);
            let need = GROUP * chunk + m * GROUP * LANES + m * STAGE;
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < need {
                    s.resize(need, 0.0);
                }
                let (buf, rest) = s.split_at_mut(GROUP * chunk);
                let (acc, res) = rest.split_at_mut(m * GROUP * LANES);
                let res = &mut res[..m * STAGE];
                let mut s0 = j0;
                while s0 < j1 {
                    let s1 = (s0 + STAGE).min(j1);
                    let rows = s1 - s0;
                    let mut r = s0;
                    while r < s1 {
                        let rb = (s1 - r).min(GROUP);
                        if let Some(f) = self.rowk {
                            let wp = self.w[r * self.row_bytes..].as_ptr();
                            // SAFETY: `rowk` exists only for a path whose features `prepare` confirmed; rows r..r + rb
                            // hold `k / be` whole blocks each, x rows `k` values, acc `m × GROUP × LANES`.
                            f(self.x.as_ptr(), k, m, wp, self.row_bytes, rb, k / self.be, acc.as_mut_ptr());
                            for i in 0..m {
                                for q in 0..rb {
                                    let lanes: &[f32; LANES] =
                                        acc[(i * GROUP + q) * LANES..][..LANES].try_into().unwrap();
                                    res[i * STAGE + (r - s0) + q] = hsum(lanes);
                                }
                            }
                            r += rb;
                            continue;
                        }
                        acc.fill(0.0);
                        let mut c0 = 0;
                        while c0 < k {
                            let len = chunk.min(k - c0);
                            let (b0, b1) = (c0 / self.be * self.bb, (c0 + len) / self.be * self.bb);
                            for q in 0..rb {
                                let src = &self.w[(r + q) * self.row_bytes..][b0..b1];
                                // SAFETY: `src` is whole blocks decoding to `len` values (k and the chunk are
                                // multiples of the block size), `buf` rows hold `chunk >= len` values; `prepare`
                                // checked the kernel's CPU features.
                                (self.kernel)(src, &mut buf[q * chunk..q * chunk + len]);
                            }
                            let lv = len / LANES * LANES;
                            // SAFETY: `mul` belongs to `path`, whose features `prepare` confirmed; x rows hold `k`
                            // values from `c0` (`c0 + lv <= k`), buf rows `lv`, acc `m × GROUP × LANES`.
                            (self.mul)(self.x.as_ptr().add(c0), k, m, buf.as_ptr(), chunk, rb, lv, acc.as_mut_ptr());
                            if c0 + len == k {
                                // Last chunk (only it can end in a partial vector): lane sums plus that tail.
                                for i in 0..m {
                                    for q in 0..rb {
                                        let lanes: &[f32; LANES] =
                                            acc[(i * GROUP + q) * LANES..][..LANES].try_into().unwrap();
                                        let mut v = hsum(lanes);
                                        for t in lv..len {
                                            v = fma(self.path, self.x[i * k + c0 + t], buf[q * chunk + t], v);
                                        }
                                        res[i * STAGE + (r - s0) + q] = v;
                                    }
                                }
                            }
                            c0 += len;
                        }
                        r += rb;
                    }
                    for i in 0..m {
                        // SAFETY: row i's elements s0..s1 lie inside `out` (m × n) and belong to this task alone.
                        let o = { std::slice::from_raw_parts_mut(out.0.add(i * n + s0), rows) };
                        Y::from_f32_slice(&res[i * STAGE..i * STAGE + rows], o, self.path);
                    }
                    s0 = s1;
                }
            });
        }
    }
}

/// The tail multiply-add: fused on the x86 SIMD paths (as their vector lanes are), separate elsewhere (the
/// portable multiply kernel, which the other paths use).
#[inline]
fn fma(path: Path, a: f32, b: f32, c: f32) -> f32 {
    match path {
        Path::Avx2 | Path::Avx512 => a.mul_add(b, c),
        _ => a * b + c,
    }
}

/// The multiply kernel: for activation rows `i < m` and weight rows `q < rb`, lane-wise
/// `acc[(i·GROUP + q)·LANES + t] += Σ_{l ≡ t} x[i·xs + l] · w[q·ws + l]` over `l < len` (a multiple of
/// `LANES`), one (fused) multiply-add per element in order of `l`.
/// `unsafe`: SIMD variants need their CPU features, and the pointers must cover those ranges.
pub(crate) type MulFn = unsafe fn(*const f32, usize, usize, *const f32, usize, usize, usize, *mut f32);

/// Stand-in type off x86-64 (no register-fused kernels there).
#[cfg(not(target_arch = "x86_64"))]
type RowFn = unsafe fn(*const f32, usize, usize, *const u8, usize, usize, usize, *mut f32);
#[cfg(target_arch = "x86_64")]
use super::matmul_x86_fused::RowFn;

fn row_kernel(ty: GgmlDType, path: Path) -> Option<RowFn> {
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => super::matmul_x86_fused::row_kernel(ty),
        _ => {
            let _ = ty;
            None
        }
    }
}

fn pick_mul(path: Path) -> MulFn {
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx512 => super::matmul_x86::mul_avx512,
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => super::matmul_x86::mul_avx2,
        _ => mul_scalar,
    }
}

/// Pairwise sum of the 16 lanes (a fixed order, the same on every path).
#[inline(always)]
pub(crate) fn hsum(a: &[f32; LANES]) -> f32 {
    let mut v = *a;
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            v[l] += v[l + w];
        }
        w /= 2;
    }
    v[0]
}

/// Shared portable body; `f(a, b, c) = a·b + c`.
///
/// # Safety
/// As [`MulFn`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn mul_body<F: Fn(f32, f32, f32) -> f32 + Copy>(
    x: *const f32,
    xs: usize,
    m: usize,
    w: *const f32,
    ws: usize,
    rb: usize,
    len: usize,
    acc: *mut f32,
    f: F,
) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        for i in 0..m {
            // SAFETY: the caller guarantees these ranges.
            let xr = { std::slice::from_raw_parts(x.add(i * xs), len) };
            for q in 0..rb {
                // SAFETY: as above.
                let wr = { std::slice::from_raw_parts(w.add(q * ws), len) };
                // SAFETY: as above.
                let a = { std::slice::from_raw_parts_mut(acc.add((i * GROUP + q) * LANES), LANES) };
                let mut lanes: [f32; LANES] = a.try_into().unwrap();
                for (xv, wv) in xr.chunks_exact(LANES).zip(wr.chunks_exact(LANES)) {
                    for t in 0..LANES {
                        lanes[t] = f(xv[t], wv[t], lanes[t]);
                    }
                }
                a.copy_from_slice(&lanes);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn mul_scalar(
    x: *const f32,
    xs: usize,
    m: usize,
    w: *const f32,
    ws: usize,
    rb: usize,
    len: usize,
    acc: *mut f32,
) {
    // SAFETY: forwarded contract.
    unsafe { mul_body(x, xs, m, w, ws, rb, len, acc, |a, b, c| a * b + c) }
}

/// The portable body with fused multiply-adds: what the SIMD kernels compute, bit for bit (tests only).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mul_scalar_fma(
    x: *const f32,
    xs: usize,
    m: usize,
    w: *const f32,
    ws: usize,
    rb: usize,
    len: usize,
    acc: *mut f32,
) {
    // SAFETY: forwarded contract.
    unsafe { mul_body(x, xs, m, w, ws, rb, len, acc, |a: f32, b: f32, c: f32| a.mul_add(b, c)) }
}

#[cfg(test)]
#[path = "matmul_tests.rs"]
mod tests;
