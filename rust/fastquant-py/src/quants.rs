//! Bindings for ggml block dequantization/quantization. Conversion and error mapping only; the work is in
//! `fastquant_core::quants`, run with the GIL released.

use fastquant_core::quants::{self, DequantError, GgmlDType, Path, QuantizeError};
use numpy::{
    Element, PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn ty_from_id(id: u32) -> PyResult<GgmlDType> {
    GgmlDType::from_id(id).ok_or_else(|| PyValueError::new_err(format!("unknown ggml type id {id}")))
}

fn dq_err(e: DequantError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn q_err(e: QuantizeError) -> PyErr {
    match e {
        QuantizeError::ThreadPool(_) => pyo3::exceptions::PyRuntimeError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

fn parse_path(path: &str) -> PyResult<Path> {
    Ok(match path {
        "auto" => Path::Auto,
        "scalar" => Path::Scalar,
        "avx2" => Path::Avx2,
        "avx512" => Path::Avx512,
        "neon" => Path::Neon,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown code path {path:?} (expected auto, scalar, avx2, avx512 or neon)"
            )))
        }
    })
}

/// (id, name, block_elems, block_bytes, has_dequantizer) for a ggml type id or name.
#[pyfunction]
fn ggml_type_info(key: &Bound<'_, PyAny>) -> PyResult<(u32, &'static str, usize, usize, bool)> {
    let ty = if let Ok(id) = key.extract::<u32>() {
        ty_from_id(id)?
    } else {
        let name: String = key.extract()?;
        GgmlDType::from_name(&name).ok_or_else(|| PyValueError::new_err(format!("unknown ggml type {name:?}")))?
    };
    let (be, bb) = ty.block_geometry();
    Ok((ty.id(), ty.name(), be, bb, quants::has_dequantizer(ty)))
}

/// numpy allows arrays whose data is not aligned to their elements (`np.frombuffer(b, np.float32, offset=1)`)
/// and rust-numpy builds slices over them without checking (its issue #523); a misaligned `&[f32]` is undefined
/// behaviour, so every non-byte array is checked before it is viewed as a slice.
fn check_aligned<T: Element>(a: &Bound<'_, PyArrayDyn<T>>, what: &str) -> PyResult<()> {
    let align = std::mem::align_of::<T>();
    if !(a.data() as usize).is_multiple_of(align) {
        return Err(PyValueError::new_err(format!(
            "{what} is not aligned to its {align}-byte elements; pass an aligned copy (e.g. a.copy())"
        )));
    }
    Ok(())
}

/// Refuse an `out` array that overlaps `src` or whose memory this process cannot write. numpy's WRITEABLE
/// flag is not enough: `torch.from_numpy` of a read-only array (a tensor over a read-only file mapping)
/// gives a tensor whose `.numpy()` claims to be writeable, and writing there is a SIGSEGV.
fn check_out(src: &[u8], out: &Bound<'_, PyAny>) -> PyResult<()> {
    let Ok(a) = out.cast::<PyUntypedArray>() else {
        return Ok(()); // not an array: the typed extraction that follows gives the error
    };
    // SAFETY: `a` is a live numpy array; its `data` field is read, not dereferenced.
    let ptr = unsafe { (*a.as_array_ptr()).fields.data } as usize;
    let len = a.len().saturating_mul(a.dtype().itemsize());
    let (s0, s1) = (src.as_ptr() as usize, src.as_ptr() as usize + src.len());
    if len > 0 && !src.is_empty() && ptr < s1 && s0 < ptr + len {
        return Err(PyValueError::new_err(
            "out overlaps data: dequantizing in place would overwrite blocks before they are read; pass a separate out",
        ));
    }
    if len > 0 && !memory_is_writable(ptr as *mut u8, len) {
        return Err(PyValueError::new_err(
            "out is not writable memory (e.g. a tensor over a read-only file mapping such as GGUFFile.raw()); \
             pass a writable array or tensor",
        ));
    }
    Ok(())
}

/// Whether every page of `[ptr, ptr + len)` can be written, found without writing anything new: one byte of
/// each page is copied into a pipe and read back into place; the kernel answers EFAULT (rather than
/// faulting) for memory that cannot be read or written. 1024 pages per system call.
#[cfg(unix)]
fn memory_is_writable(ptr: *mut u8, len: usize) -> bool {
    const PAGE: usize = 4096;
    const BATCH: usize = 1024;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return true; // cannot probe (out of descriptors): keep the old behaviour
    }
    let mut ok = true;
    let end = ptr as usize + len;
    let mut next = ptr as usize;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    while ok && next < end {
        iov.clear();
        while iov.len() < BATCH && next < end {
            iov.push(libc::iovec { iov_base: next as *mut libc::c_void, iov_len: 1 });
            next = (next / PAGE + 1) * PAGE; // the start of the following page: every page is touched once
        }
        let n = iov.len() as libc::c_int;
        // SAFETY: the iovecs point at single bytes inside `out`'s range; writev only reads them (and the
        // kernel reports EFAULT for unreadable ones) into our own pipe, which holds 64 KiB > BATCH + 1 bytes.
        let w = unsafe { libc::writev(fds[1], iov.as_ptr(), n) };
        // SAFETY: readv writes the same bytes back to the same places; memory that cannot be written gives
        // EFAULT or a short count instead of a fault. Nothing else holds a reference into these bytes now.
        let r = if w == n as isize { unsafe { libc::readv(fds[0], iov.as_ptr(), n) } } else { -1 };
        ok = w == n as isize && r == n as isize;
    }
    // SAFETY: closing the two descriptors pipe(2) gave us.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    ok
}

#[cfg(not(unix))]
fn memory_is_writable(_ptr: *mut u8, _len: usize) -> bool {
    true
}

/// Dequantize the contiguous uint8 array `data` into the contiguous array `out`: float32 for
/// `kind == "float32"`, or a uint16 view holding float16/bfloat16 bits for `"float16"`/`"bfloat16"`.
/// `stores`: "auto" (streaming stores for large outputs where they pay, see `Stores::Auto`), "regular" (for
/// freshly allocated outputs) or "streaming".
#[pyfunction]
#[pyo3(signature = (data, ggml_type, out, kind, threads=None, path="auto", stores="auto"))]
#[allow(clippy::too_many_arguments)]
fn dequantize_into(
    py: Python<'_>,
    data: PyReadonlyArrayDyn<'_, u8>,
    ggml_type: u32,
    out: &Bound<'_, PyAny>,
    kind: &str,
    threads: Option<usize>,
    path: &str,
    stores: &str,
) -> PyResult<()> {
    let ty = ty_from_id(ggml_type)?;
    let path = parse_path(path)?;
    let stores = match stores {
        "auto" => quants::Stores::Auto,
        "regular" => quants::Stores::Regular,
        "streaming" => quants::Stores::Streaming,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown stores {stores:?}; expected auto, regular or streaming"
            )))
        }
    };
    if threads == Some(0) {
        return Err(PyValueError::new_err("threads must be at least 1"));
    }
    let src = data.as_slice().map_err(|_| PyValueError::new_err("data must be C-contiguous"))?;
    check_out(src, out)?;
    match kind {
        "float32" => {
            let mut o: PyReadwriteArrayDyn<'_, f32> = out.extract()?;
            check_aligned(&o, "out")?;
            let dst = o.as_slice_mut().map_err(|_| PyValueError::new_err("out must be C-contiguous"))?;
            py.detach(|| quants::dequantize_par_stores(ty, src, dst, path, threads, stores)).map_err(dq_err)
        }
        "float16" | "bfloat16" => {
            let mut o: PyReadwriteArrayDyn<'_, u16> = out.extract()?;
            check_aligned(&o, "out")?;
            let dst = o.as_slice_mut().map_err(|_| PyValueError::new_err("out must be C-contiguous"))?;
            let (ptr, len) = (dst.as_mut_ptr(), dst.len());
            if kind == "float16" {
                // SAFETY: half::f16 is #[repr(transparent)] over u16, so the same memory, length and
                // alignment describe a valid [f16]; `dst`'s exclusive borrow is moved into this slice.
                let h = unsafe { std::slice::from_raw_parts_mut(ptr as *mut half::f16, len) };
                py.detach(|| quants::dequantize_par_stores(ty, src, h, path, threads, stores)).map_err(dq_err)
            } else {
                // SAFETY: as above, half::bf16 is #[repr(transparent)] over u16.
                let h = unsafe { std::slice::from_raw_parts_mut(ptr as *mut half::bf16, len) };
                py.detach(|| quants::dequantize_par_stores(ty, src, h, path, threads, stores)).map_err(dq_err)
            }
        }
        _ => Err(PyValueError::new_err(format!("unsupported output kind {kind:?}"))),
    }
}

/// Quantize a contiguous float32 array (flattened) to raw blocks of `ggml_type`, on `threads` threads
/// (`None`: one per core) with the GIL released. (Named for what it makes: `fastquant.quantize` quantizes a model,
/// `fastquant.gguf.quantize` is the public, row-aware form of this function.)
#[pyfunction]
#[pyo3(signature = (src, ggml_type, threads=None))]
fn quantize_blocks<'py>(
    py: Python<'py>,
    src: PyReadonlyArrayDyn<'py, f32>,
    ggml_type: u32,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let ty = ty_from_id(ggml_type)?;
    if threads == Some(0) {
        return Err(PyValueError::new_err("threads must be at least 1"));
    }
    check_aligned(&src, "array")?;
    let s = src.as_slice().map_err(|_| PyValueError::new_err("array must be C-contiguous"))?;
    let n_bytes = quants::quantized_len(ty, s.len()).map_err(q_err)?;
    // The output is allocated by numpy: it asks the kernel for huge pages on large arrays (a Vec's 4 KiB pages
    // cost 1.2 ns per BF16 value in first-touch faults at 16 Mi values on the dev VM, 4x the work), and
    // through a Python call a failed allocation is a MemoryError rather than a panic.
    let out = py
        .import("numpy")?
        .call_method1("zeros", (n_bytes, "uint8"))?
        .cast_into::<PyArray1<u8>>()
        .map_err(|e| PyValueError::new_err(format!("internal: numpy.zeros gave {e}")))?;
    {
        let mut rw = out.readwrite();
        let o = rw.as_slice_mut().map_err(|_| PyValueError::new_err("internal: new array not contiguous"))?;
        py.detach(|| quants::quantize_into_with(ty, s, o, Path::Auto, threads)).map_err(q_err)?;
    }
    Ok(out)
}

/// `out = x · Wᵀ` with `W` (`n × k`) kept packed: `x` a contiguous array of `m × k` activations, `w` the
/// packed rows (contiguous uint8), `out` a contiguous array of `m × n` values. `kind` is the dtype of both `x`
/// and `out`: "float32" (float32 arrays) or "float16"/"bfloat16" (uint16 arrays of those bits); the product is
/// computed in f32 and rounded once. Chunks of 4 weight rows are decoded into a per-thread L1 buffer; the GIL
/// is released. `path` forces a code path as for `dequantize_into`.
#[pyfunction]
#[pyo3(signature = (x, w, ggml_type, n, k, out, threads=None, path="auto", kind="float32"))]
#[allow(clippy::too_many_arguments)]
fn linear_fused(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    w: PyReadonlyArrayDyn<'_, u8>,
    ggml_type: u32,
    n: usize,
    k: usize,
    out: &Bound<'_, PyAny>,
    threads: Option<usize>,
    path: &str,
    kind: &str,
) -> PyResult<()> {
    let ty = ty_from_id(ggml_type)?;
    let path = parse_path(path)?;
    let ws = w.as_slice().map_err(|_| PyValueError::new_err("w must be C-contiguous"))?;
    let fused_err = |e: quants::FusedError| match e {
        quants::FusedError::Dequant(DequantError::ThreadPool(_)) => {
            pyo3::exceptions::PyRuntimeError::new_err(e.to_string())
        }
        _ => PyValueError::new_err(e.to_string()),
    };
    let rows = |len: usize| -> PyResult<usize> {
        if k == 0 || !len.is_multiple_of(k) {
            return Err(PyValueError::new_err(format!("x holds {len} values, not whole rows of {k}")));
        }
        Ok(len / k)
    };
    match kind {
        "float32" => {
            let x: PyReadonlyArrayDyn<'_, f32> = x.extract()?;
            let mut o: PyReadwriteArrayDyn<'_, f32> = out.extract()?;
            check_aligned(&x, "x")?;
            check_aligned(&o, "out")?;
            let xs = x.as_slice().map_err(|_| PyValueError::new_err("x must be C-contiguous"))?;
            let os = o.as_slice_mut().map_err(|_| PyValueError::new_err("out must be C-contiguous"))?;
            let m = rows(xs.len())?;
            py.detach(|| quants::linear_fused_with(ty, xs, m, k, ws, n, os, path, threads)).map_err(fused_err)
        }
        "float16" | "bfloat16" => {
            let x: PyReadonlyArrayDyn<'_, u16> = x.extract()?;
            let mut o: PyReadwriteArrayDyn<'_, u16> = out.extract()?;
            check_aligned(&x, "x")?;
            check_aligned(&o, "out")?;
            let xs = x.as_slice().map_err(|_| PyValueError::new_err("x must be C-contiguous"))?;
            let os = o.as_slice_mut().map_err(|_| PyValueError::new_err("out must be C-contiguous"))?;
            let m = rows(xs.len())?;
            let (xp, xl, op, ol) = (xs.as_ptr(), xs.len(), os.as_mut_ptr(), os.len());
            if kind == "float16" {
                // SAFETY: half::f16 is #[repr(transparent)] over u16: the same memory, length and alignment
                // describe valid [f16] slices; `xs`/`os` borrows move into them.
                let (xh, oh) = unsafe {
                    (
                        std::slice::from_raw_parts(xp as *const half::f16, xl),
                        std::slice::from_raw_parts_mut(op as *mut half::f16, ol),
                    )
                };
                py.detach(|| quants::linear_fused_with(ty, xh, m, k, ws, n, oh, path, threads)).map_err(fused_err)
            } else {
                // SAFETY: as above, half::bf16 is #[repr(transparent)] over u16.
                let (xh, oh) = unsafe {
                    (
                        std::slice::from_raw_parts(xp as *const half::bf16, xl),
                        std::slice::from_raw_parts_mut(op as *mut half::bf16, ol),
                    )
                };
                py.detach(|| quants::linear_fused_with(ty, xh, m, k, ws, n, oh, path, threads)).map_err(fused_err)
            }
        }
        _ => Err(PyValueError::new_err(format!("unsupported kind {kind:?} (expected float32, float16 or bfloat16)"))),
    }
}

/// The SIMD path `auto` resolves to on this CPU ("avx512", "avx2", "neon" or "scalar").
#[pyfunction]
fn simd_path() -> &'static str {
    match Path::Auto.resolve() {
        Path::Avx512 => "avx512",
        Path::Avx2 => "avx2",
        Path::Neon => "neon",
        _ => "scalar",
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ggml_type_info, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize_into, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_blocks, m)?)?;
    m.add_function(wrap_pyfunction!(simd_path, m)?)?;
    m.add_function(wrap_pyfunction!(linear_fused, m)?)?;
    // Tables the torch decoders need, from their one definition in the core.
    m.add("KVALUES_IQ4NL", fastquant_core::quants::tables::KVALUES_IQ4NL.to_vec())?;
    m.add("KVALUES_FP4", fastquant_core::quants::tables::KVALUES_FP4.to_vec())?;
    Ok(())
}
