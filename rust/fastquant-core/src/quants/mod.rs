//! ggml block formats: the type table, dequantization (scalar reference + SIMD) and quantization.
//!
//! Every block type implements [`BlockFormat`] with a scalar reference decoder that follows ggml's
//! operation order exactly (docs/gguf-format.md §3). SIMD kernels sit beside the scalar code and are tested
//! bit-for-bit against it: AVX2 and AVX-512 on x86-64 for all block types but Q8_K, NEON on aarch64 for the
//! legacy, k-quant (but Q8_K), ternary, IQ4, MXFP4 and F16/BF16 types. [`dequantize`] picks the
//! best kernel for this CPU; [`dequantize_with`] forces one (for tests and benchmarks);
//! [`dequantize_par`] splits large tensors over a rayon pool.

pub mod float;
mod fp4;
mod fused_pool;
mod iquants;
mod kquants;
mod legacy;
pub mod matmul;
#[cfg(target_arch = "x86_64")]
mod matmul_x86;
#[cfg(target_arch = "x86_64")]
mod matmul_x86_fused;
pub mod quantize;
#[rustfmt::skip] // generated tables: one row per line as the generator writes them
pub mod tables;
mod ternary;
pub mod types;
/// Loop over the whole blocks of a SIMD kernel's input: `$b` points at each block, `$y` at its output.
/// Contract shared by every SIMD kernel: `data.len()` is a whole number of blocks, `out.len()` is exactly the
/// decoded length, and the CPU supports the kernel's features (the dispatcher checks all three first).
#[allow(unused_macros)]
macro_rules! blocks {
    ($data:ident, $out:ident, $bb:expr, $be:expr, |$b:ident, $y:ident| $body:block) => {{
        debug_assert_eq!($data.len() % $bb, 0);
        debug_assert_eq!($data.len() / $bb * $be, $out.len());
        let n = ($data.len() / $bb).min($out.len() / $be);
        let src = $data.as_ptr();
        let dst = $out.as_mut_ptr();
        for i in 0..n {
            let $b = src.add(i * $bb);
            let $y = dst.add(i * $be);
            $body
        }
    }};
}

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

pub use matmul::{linear_fused, linear_fused_with, FusedError, InElem};
pub use quantize::{
    has_quantizer, quantize, quantize_into, quantize_into_with, quantize_with, quantized_len, QuantizeError,
    QUANTIZE_TYPES,
};
pub use types::{block, BlockType, GgmlDType, ALL_TYPES};

/// One ggml block layout: `ELEMS` values stored in `BYTES` bytes.
pub trait BlockFormat {
    const TYPE: GgmlDType;
    /// Elements per block: the type's [`types::block`] definition.
    const ELEMS: usize = Self::TYPE.block_elems();
    /// Bytes per block: the type's [`types::block`] definition.
    const BYTES: usize = Self::TYPE.block_bytes();
    /// Decode one block (`block.len() >= BYTES`) into `out[..ELEMS]`, in ggml's exact arithmetic.
    fn dequant_block(block: &[u8], out: &mut [f32]);

    /// Scalar reference over a run of whole blocks.
    fn dequant_blocks_scalar(data: &[u8], out: &mut [f32]) {
        for (b, o) in data.chunks_exact(Self::BYTES).zip(out.chunks_exact_mut(Self::ELEMS)) {
            Self::dequant_block(b, o);
        }
    }
}

#[inline(always)]
pub(crate) fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
#[inline(always)]
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], o: usize) -> f32 {
    float::f16_to_f32(u16_at(b, o))
}

/// Why a dequantization was refused. Nothing here panics on bad input; every check happens up front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    #[error("{ty}: input is {len} bytes, not a whole number of {block_bytes}-byte blocks")]
    PartialBlock { ty: GgmlDType, len: usize, block_bytes: usize },
    #[error("{ty}: output buffer holds {got} elements but the input decodes to {expected}")]
    OutputLength { ty: GgmlDType, expected: usize, got: usize },
    #[error("{ty} has no dequantizer (ggml defines none for it)")]
    Unsupported { ty: GgmlDType },
    #[error("code path {path:?} is not available on this CPU or build")]
    PathUnavailable { path: Path },
    #[error("could not build a thread pool: {0}")]
    ThreadPool(String),
}

/// Which implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// The best one this CPU supports.
    Auto,
    /// The scalar reference.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) + AVX2 + F16C (bf16 output also uses AVX512-BF16 where present).
    Avx512,
    /// aarch64 Advanced SIMD (NEON).
    Neon,
}

impl Path {
    /// Whether this CPU (and build) can run the path.
    pub fn available(self) -> bool {
        match self {
            Path::Auto | Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => x86::has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Avx2 | Path::Avx512 => false,
            #[cfg(target_arch = "aarch64")]
            Path::Neon => neon::has_neon(),
            #[cfg(not(target_arch = "aarch64"))]
            Path::Neon => false,
        }
    }

    /// `Auto` resolved to a concrete path.
    pub fn resolve(self) -> Path {
        match self {
            Path::Auto => {
                if Path::Avx512.available() {
                    Path::Avx512
                } else if Path::Avx2.available() {
                    Path::Avx2
                } else if Path::Neon.available() {
                    Path::Neon
                } else {
                    Path::Scalar
                }
            }
            p => p,
        }
    }
}

/// `unsafe` because SIMD kernels require their CPU features. Contract for callers: `data.len()` is a whole
/// number of blocks, `out.len()` equals the decoded element count, and the kernel's path is available.
pub(crate) type Kernel = unsafe fn(&[u8], &mut [f32]);
/// As [`Kernel`], writing f16 or bf16 bit patterns (the exact f32 result rounded once to nearest-even).
pub(crate) type Kernel16 = unsafe fn(&[u8], &mut [u16]);

macro_rules! scalar_table {
    ($ty:expr; $($variant:ident => $fmt:path),* $(,)?) => {
        match $ty {
            $(GgmlDType::$variant => Some(<$fmt as BlockFormat>::dequant_blocks_scalar as Kernel),)*
            GgmlDType::Q8_1 => None,
        }
    };
}

fn scalar_kernel(ty: GgmlDType) -> Option<Kernel> {
    scalar_table!(ty;
        F32 => float::F32, F16 => float::F16, BF16 => float::BF16, I8 => float::I8, I16 => float::I16,
        I32 => float::I32, I64 => float::I64, F64 => float::F64,
        Q4_0 => legacy::Q4_0, Q4_1 => legacy::Q4_1, Q5_0 => legacy::Q5_0, Q5_1 => legacy::Q5_1,
        Q8_0 => legacy::Q8_0, Q1_0 => legacy::Q1_0, Q2_0 => legacy::Q2_0,
        Q2K => kquants::Q2K, Q3K => kquants::Q3K, Q4K => kquants::Q4K, Q5K => kquants::Q5K,
        Q6K => kquants::Q6K, Q8K => kquants::Q8K,
        IQ2XXS => iquants::IQ2XXS, IQ2XS => iquants::IQ2XS, IQ2S => iquants::IQ2S, IQ3XXS => iquants::IQ3XXS,
        IQ3S => iquants::IQ3S, IQ1S => iquants::IQ1S, IQ1M => iquants::IQ1M, IQ4NL => iquants::IQ4NL,
        IQ4XS => iquants::IQ4XS,
        TQ1_0 => ternary::TQ1_0, TQ2_0 => ternary::TQ2_0, MXFP4 => fp4::MXFP4, NVFP4 => fp4::NVFP4,
    )
}

/// Whether `ty` can be dequantized at all (everything but Q8_1).
pub fn has_dequantizer(ty: GgmlDType) -> bool {
    scalar_kernel(ty).is_some()
}

/// Whether a dedicated SIMD kernel exists for `ty` on `path` (otherwise that path runs the scalar code).
pub fn has_simd_kernel(ty: GgmlDType, path: Path) -> bool {
    simd_kernel(ty, path.resolve()).is_some()
}

fn simd_kernel(ty: GgmlDType, path: Path) -> Option<Kernel> {
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 | Path::Avx512 => x86::kernel(ty, path),
        #[cfg(target_arch = "aarch64")]
        Path::Neon => neon::kernel(ty),
        _ => None,
    }
}

/// Validate lengths and pick the kernel. Returns (kernel, resolved path).
fn prepare(ty: GgmlDType, data_len: usize, out_len: usize, path: Path) -> Result<(Kernel, Path), DequantError> {
    let scalar = scalar_kernel(ty).ok_or(DequantError::Unsupported { ty })?;
    let (be, bb) = ty.block_geometry();
    if !data_len.is_multiple_of(bb) {
        return Err(DequantError::PartialBlock { ty, len: data_len, block_bytes: bb });
    }
    let expected = data_len / bb * be;
    if out_len != expected {
        return Err(DequantError::OutputLength { ty, expected, got: out_len });
    }
    if !path.available() {
        return Err(DequantError::PathUnavailable { path });
    }
    let path = path.resolve();
    Ok((simd_kernel(ty, path).unwrap_or(scalar), path))
}

/// Number of elements `data` decodes to, or an error if it is not whole blocks of a dequantizable type.
pub fn decoded_len(ty: GgmlDType, data_len: usize) -> Result<usize, DequantError> {
    scalar_kernel(ty).ok_or(DequantError::Unsupported { ty })?;
    let (be, bb) = ty.block_geometry();
    if !data_len.is_multiple_of(bb) {
        return Err(DequantError::PartialBlock { ty, len: data_len, block_bytes: bb });
    }
    Ok(data_len / bb * be)
}

mod sealed {
    /// Only the crate's own output types implement [`super::OutElem`]: the SIMD kernels trust its methods.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An output element type: f32, or f16/bf16 holding the exact f32 result rounded once to nearest-even.
/// Sealed: implemented for `f32`, `half::f16` and `half::bf16` only.
pub trait OutElem: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Convert `src` into `dst` (same length) using `path`'s instructions.
    fn from_f32_slice(src: &[f32], dst: &mut [Self], path: Path);
    /// The slice itself when `Self` is f32 (so kernels can write straight into it).
    fn as_f32_slice(dst: &mut [Self]) -> Option<&mut [f32]>;
    /// A kernel writing `Self` directly (f16/bf16 on SIMD paths, regular stores), and the slice as its bit
    /// patterns.
    fn direct(_ty: GgmlDType, _path: Path, _dst: &mut [Self]) -> Option<(Kernel16, &mut [u16])> {
        None
    }
}

impl OutElem for f32 {
    fn from_f32_slice(src: &[f32], dst: &mut [f32], _path: Path) {
        dst.copy_from_slice(src);
    }
    fn as_f32_slice(dst: &mut [f32]) -> Option<&mut [f32]> {
        Some(dst)
    }
}

impl OutElem for half::f16 {
    fn from_f32_slice(src: &[f32], dst: &mut [half::f16], path: Path) {
        #[cfg(target_arch = "x86_64")]
        if matches!(path, Path::Avx2 | Path::Avx512) && path.available() && src.len() == dst.len() {
            // SAFETY: the CPU has `path`'s instructions (checked just above) and both slices have the same length.
            unsafe { x86::f32_to_f16_slice(src, dst, path) };
            return;
        }
        let _ = path;
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = half::f16::from_bits(float::f32_to_f16(s));
        }
    }
    fn as_f32_slice(_dst: &mut [half::f16]) -> Option<&mut [f32]> {
        None
    }
    fn direct(ty: GgmlDType, path: Path, dst: &mut [half::f16]) -> Option<(Kernel16, &mut [u16])> {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86::kernel16(ty, path, false) {
            return Some((k, half::slice::HalfFloatSliceExt::reinterpret_cast_mut(dst)));
        }
        let _ = (ty, path, dst);
        None
    }
}

impl OutElem for half::bf16 {
    fn from_f32_slice(src: &[f32], dst: &mut [half::bf16], path: Path) {
        #[cfg(target_arch = "x86_64")]
        if matches!(path, Path::Avx2 | Path::Avx512) && path.available() && src.len() == dst.len() {
            // SAFETY: as for f16 above.
            unsafe { x86::f32_to_bf16_slice(src, dst, path) };
            return;
        }
        let _ = path;
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = half::bf16::from_bits(float::f32_to_bf16(s));
        }
    }
    fn as_f32_slice(_dst: &mut [half::bf16]) -> Option<&mut [f32]> {
        None
    }
    fn direct(ty: GgmlDType, path: Path, dst: &mut [half::bf16]) -> Option<(Kernel16, &mut [u16])> {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86::kernel16(ty, path, true) {
            return Some((k, half::slice::HalfFloatSliceExt::reinterpret_cast_mut(dst)));
        }
        let _ = (ty, path, dst);
        None
    }
}

/// f32 values decoded per scratch round when the output is not f32 (16 KiB, stays in L1).
const SCRATCH_ELEMS: usize = 4096;

/// Outputs at least this large (bytes, whole call) are written with non-temporal stores under
/// [`Stores::Auto`]: they do not stay in cache anyway, and streaming stores skip the read-for-ownership of every
/// output line (dev VM, 64 MiB numpy output, Q4_0/Q4_K/Q5_0 at one thread: 0.19 -> 0.15 ns/element).
pub const STREAM_MIN_BYTES: usize = 8 << 20;

/// f16/bf16 results staged per round before they are streamed out as whole lines (4 KiB, stays in L1).
const STAGE_ELEMS: usize = 2048;

/// Which stores the SIMD kernels use for the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Stores {
    /// Streaming (non-temporal) stores when the output is at least [`STREAM_MIN_BYTES`] and either f32
    /// starting 16-byte aligned, or f16/bf16 from a type stored in at least a byte per element (F16, BF16,
    /// Q8_0); regular stores otherwise. Staging half outputs costs a little compute, which only pays where
    /// the kernel is cheap next to the bytes it moves (dev VM, 16 Mi elements to bf16 at one thread, caches
    /// flushed: F16 0.139 -> 0.103, Q8_0 0.109 -> 0.093 ns/element, but Q4_K 0.114 -> 0.125, Q5_1 0.131 -> 0.145).
    #[default]
    Auto,
    /// Regular stores. Better for freshly allocated, never-touched outputs: the kernel zeroes each page on the
    /// first write fault, which leaves its lines in cache, where regular stores hit and streaming ones evict.
    Regular,
    /// Streaming stores at any size, on the x86 SIMD paths: f32 outputs when they start 16-byte aligned,
    /// f16/bf16 outputs (any alignment) of the types with a direct half kernel (not Q8_K or the plain
    /// integer/f32/f64 types, which go through f32 scratch with regular stores).
    Streaming,
}

/// Whether to use streaming stores for `out`, and the f32 kernel to run. f32 outputs stream from inside the
/// kernels (four 16-byte stores fill each line at once); f16/bf16 outputs are staged in L1 by the regular
/// direct kernels and streamed out a whole line at a time (see `stream_staged`).
fn choose<T: OutElem>(ty: GgmlDType, kernel: Kernel, path: Path, out: &mut [T], stores: Stores) -> (Kernel, bool) {
    let big = std::mem::size_of_val(out) >= STREAM_MIN_BYTES;
    let is_f32 = T::as_f32_slice(out).is_some();
    let want = matches!(path, Path::Avx2 | Path::Avx512)
        && match stores {
            Stores::Auto => big && (is_f32 || ty.block_bytes() >= ty.block_elems()),
            Stores::Regular => false,
            Stores::Streaming => true,
        };
    if !want {
        return (kernel, false);
    }
    if is_f32 {
        #[cfg(target_arch = "x86_64")]
        if (out.as_ptr() as usize).is_multiple_of(16) {
            if let Some(k) = x86::kernel_nt(ty, path) {
                return (k, true);
            }
        }
        return (kernel, false);
    }
    let direct = ty.block_elems() <= STAGE_ELEMS && T::direct(ty, path, out).is_some();
    (kernel, direct)
}

/// Run `kernel` over `data` into `out`. `nt`: the output is written with streaming stores (`kernel` is then
/// the streaming f32 kernel, or the half output is staged and streamed out by whole lines), chosen by `choose`.
fn run_serial<T: OutElem>(ty: GgmlDType, kernel: Kernel, path: Path, data: &[u8], out: &mut [T], nt: bool) {
    let (be, bb) = ty.block_geometry();
    if let Some(o) = T::as_f32_slice(out) {
        // SAFETY: `prepare` checked whole blocks, the matching output length and the path's CPU features; a
        // streaming kernel was only chosen by `choose` for a 16-byte-aligned output, and every task boundary
        // is a whole number of 16-byte groups, so each of its stores stays aligned.
        unsafe { kernel(data, o) };
        fence(nt);
        return;
    }
    if let Some((k16, o)) = T::direct(ty, path, out) {
        #[cfg(target_arch = "x86_64")]
        if nt {
            // SAFETY: `prepare` checked whole blocks, the matching output length and the path's CPU features;
            // `kernel16` only hands out kernels for that (x86, so AVX2-including) path; `o` is `out` viewed as
            // its u16 bit patterns; `choose` only streams half outputs of types whose blocks fit the stage.
            unsafe { stream_staged(k16, be, bb, data, o) };
            return;
        }
        // SAFETY: as for the f32 kernel above; `o` is `out` viewed as its u16 bit patterns (same length).
        unsafe { k16(data, o) };
        return;
    }
    let blocks = (SCRATCH_ELEMS / be).max(1);
    let mut scratch = [0f32; SCRATCH_ELEMS];
    for (d, o) in data.chunks(blocks * bb).zip(out.chunks_mut(blocks * be)) {
        let s = &mut scratch[..o.len()];
        // SAFETY: `d` is a whole number of blocks decoding to exactly `o.len()` elements; features checked.
        unsafe { kernel(d, s) };
        T::from_f32_slice(s, o, path);
    }
}

/// Half-output streaming (chosen by `choose`): the regular direct kernel `k16` fills an L1 stage, which goes
/// out a whole line at a time with streaming stores. Kept out of `run_serial`: with the stage in its frame,
/// the f32 path at two threads ran up to 2.4x slower (Q6_K, 16 Mi elements, dev VM).
///
/// # Safety
/// `k16` is a direct kernel from `kernel16` for a path the CPU has (every such path includes AVX2); `data` is
/// whole blocks of `be` elements in `bb` bytes decoding to exactly `out.len()` elements; `be <= STAGE_ELEMS`.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
unsafe fn stream_staged(k16: Kernel16, be: usize, bb: usize, data: &[u8], out: &mut [u16]) {
    // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
    unsafe {
        debug_assert!(be <= STAGE_ELEMS);
        #[repr(align(64))]
        struct Stage([u16; STAGE_ELEMS]);
        let mut stage = Stage([0; STAGE_ELEMS]);
        // `choose` only streams types whose blocks fit the stage.
        let blocks = STAGE_ELEMS / be;
        for (d, o) in data.chunks(blocks * bb).zip(out.chunks_mut(blocks * be)) {
            let s = &mut stage.0[..o.len()];
            // SAFETY: `d` is a whole number of blocks decoding to exactly `o.len()` (= `s.len()`) elements, and
            // the CPU has `k16`'s features, AVX2 included (this function's contract).
            {
                k16(d, s);
                x86::stream_lines_u16(s, o);
            }
        }
        fence(true);
    }
}

/// Order this thread's streaming stores before whatever it does next (returning, or rayon's join).
#[inline]
fn fence(nt: bool) {
    #[cfg(target_arch = "x86_64")]
    if nt {
        // SAFETY: `sfence` (SSE, baseline on x86-64) has no preconditions.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
    let _ = nt;
}

/// Dequantize whole blocks of `ty` into `out` (f32, f16 or bf16) with the best kernel for this CPU.
pub fn dequantize<T: OutElem>(ty: GgmlDType, data: &[u8], out: &mut [T]) -> Result<(), DequantError> {
    dequantize_with(ty, data, out, Path::Auto)
}

/// As [`dequantize`], on a chosen code path. A path without a dedicated kernel for `ty` runs the scalar
/// reference; a path the CPU lacks is refused with [`DequantError::PathUnavailable`].
pub fn dequantize_with<T: OutElem>(ty: GgmlDType, data: &[u8], out: &mut [T], path: Path) -> Result<(), DequantError> {
    let (kernel, path) = prepare(ty, data.len(), out.len(), path)?;
    let (kernel, nt) = choose(ty, kernel, path, out, Stores::Auto);
    run_serial(ty, kernel, path, data, out, nt);
    Ok(())
}

/// Output bytes per parallel task (whole blocks, at least this much).
pub const PAR_TASK_BYTES: usize = 256 * 1024;

/// Most worker threads one call may ask for (more are clamped): each distinct count keeps its own pool.
pub const MAX_THREADS: usize = 256;

pub(crate) fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, DequantError> {
    let threads = threads.clamp(1, MAX_THREADS);
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut map = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&threads) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fastquant-dequant-{i}"))
            .build()
            .map_err(|e| DequantError::ThreadPool(e.to_string()))?,
    );
    map.insert(threads, p.clone());
    Ok(p)
}

/// Parallel dequantization: `out` is split into tasks of whole blocks (≥ [`PAR_TASK_BYTES`] of output each)
/// run on `threads` threads (`None` = rayon's global pool, one thread per core). Small tensors and
/// `threads == Some(1)` run on the calling thread.
pub fn dequantize_par<T: OutElem>(
    ty: GgmlDType,
    data: &[u8],
    out: &mut [T],
    path: Path,
    threads: Option<usize>,
) -> Result<(), DequantError> {
    dequantize_par_stores(ty, data, out, path, threads, Stores::Auto)
}

/// As [`dequantize_par`], choosing the kind of stores (see [`Stores`]).
pub fn dequantize_par_stores<T: OutElem>(
    ty: GgmlDType,
    data: &[u8],
    out: &mut [T],
    path: Path,
    threads: Option<usize>,
    stores: Stores,
) -> Result<(), DequantError> {
    let (kernel, path) = prepare(ty, data.len(), out.len(), path)?;
    let (be, bb) = ty.block_geometry();
    let n_threads = threads.unwrap_or_else(rayon::current_num_threads).max(1);
    let task_blocks = (PAR_TASK_BYTES / (be * std::mem::size_of::<T>())).max(1);
    let (kernel, nt) = choose(ty, kernel, path, out, stores);
    if n_threads == 1 || out.len() <= task_blocks * be {
        run_serial(ty, kernel, path, data, out, nt);
        return Ok(());
    }
    let work = |data: &[u8], out: &mut [T]| {
        data.par_chunks(task_blocks * bb)
            .zip(out.par_chunks_mut(task_blocks * be))
            .for_each(|(d, o)| run_serial(ty, kernel, path, d, o, nt));
    };
    match threads {
        None => work(data, out),
        Some(n) => pool(n)?.install(|| work(data, out)),
    }
    Ok(())
}

/// Convenience: dequantize into a new f32 vector (sized from the input, which bounds the allocation).
pub fn dequantize_to_vec(ty: GgmlDType, data: &[u8]) -> Result<Vec<f32>, DequantError> {
    let n = decoded_len(ty, data.len())?;
    let mut out = vec![0f32; n];
    dequantize(ty, data, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
