//! GGUF binding: `_GGUFReader` (an open, memory-mapped file), `_RawBuffer` (a zero-copy, read-only buffer
//! over one tensor's bytes that keeps the mapping alive), `_write_gguf`, and the `GGUFError` exception.
//! Conversion and error mapping only; all parsing and validation is in `fastquant_core::gguf`.

use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::Arc;

use fastquant_core::gguf::{
    self, ArrayView, ErrorKind, GgufError, GgufFile, MetaValue, OwnedValue, TensorSpec, ValueType,
};
use fastquant_core::quants::GgmlDType;
use numpy::PyReadonlyArray1;
use pyo3::exceptions::{PyBufferError, PyIndexError, PyKeyError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{ffi, IntoPyObjectExt};

pyo3::create_exception!(
    fastquant.gguf,
    GGUFError,
    PyValueError,
    "A malformed or unsupported GGUF file. The message names the byte offset and the field; they are also \
     the attributes `offset` (int, or None) and `field` (str, or None)."
);

fn to_py_err(e: GgufError) -> PyErr {
    let msg = e.to_string();
    match e.kind {
        ErrorKind::Malformed | ErrorKind::Unsupported => gguf_error(msg, e.offset, &e.field),
        ErrorKind::NotFound => PyKeyError::new_err(msg),
        ErrorKind::InvalidInput => PyValueError::new_err(msg),
        ErrorKind::Io => os_error(&e),
    }
}

/// A `GGUFError` with `.offset` (byte offset or None) and `.field` (the field read, or None); the message is
/// the full text.
fn gguf_error(msg: String, offset: Option<u64>, field: &str) -> PyErr {
    Python::attach(|py| {
        let err = GGUFError::new_err(msg);
        let v = err.value(py);
        let field = if field.is_empty() { None } else { Some(field) };
        if v.setattr("offset", offset).and_then(|_| v.setattr("field", field)).is_err() {
            return err;
        }
        err
    })
}

/// `OSError(errno, strerror, filename)`, which Python turns into the matching subclass
/// (`FileNotFoundError`, `IsADirectoryError`, `PermissionError`, ...) with `errno` and `filename` set.
fn os_error(e: &GgufError) -> PyErr {
    let errno = e.errno.unwrap_or(gguf::EIO);
    // std's messages end in " (os error N)": the errno attribute says that.
    let strerror = match e.message.rfind(" (os error ") {
        Some(i) if e.message.ends_with(')') => &e.message[..i],
        _ => &e.message,
    };
    match &e.path {
        Some(p) => PyOSError::new_err((errno, strerror.to_string(), p.clone())),
        None => PyOSError::new_err((errno, format!("{}: {strerror}", e.field))),
    }
}

fn meta_to_py<'py>(py: Python<'py>, v: MetaValue<'_>, field: &str) -> PyResult<Bound<'py, PyAny>> {
    use MetaValue as M;
    match v {
        M::U8(x) => x.into_bound_py_any(py),
        M::I8(x) => x.into_bound_py_any(py),
        M::U16(x) => x.into_bound_py_any(py),
        M::I16(x) => x.into_bound_py_any(py),
        M::U32(x) => x.into_bound_py_any(py),
        M::I32(x) => x.into_bound_py_any(py),
        M::F32(x) => (x as f64).into_bound_py_any(py),
        M::Bool(x) => x.into_bound_py_any(py),
        M::U64(x) => x.into_bound_py_any(py),
        M::I64(x) => x.into_bound_py_any(py),
        M::F64(x) => x.into_bound_py_any(py),
        M::Str(s) => Ok(PyString::new(py, s.to_str(field).map_err(to_py_err)?).into_any()),
        M::Array(a) => array_to_py(py, a, field),
    }
}

fn array_to_py<'py>(py: Python<'py>, a: ArrayView<'_>, field: &str) -> PyResult<Bound<'py, PyAny>> {
    let mut items = Vec::with_capacity(a.iter().size_hint().0);
    for x in a.iter() {
        items.push(meta_to_py(py, x.map_err(to_py_err)?, field)?);
    }
    Ok(PyList::new(py, items)?.into_any())
}

/// An open GGUF file (memory-mapped and validated on construction).
#[pyclass(frozen, name = "_GGUFReader", module = "fastquant._core")]
pub struct PyGgufReader {
    file: Arc<GgufFile>,
}

impl PyGgufReader {
    fn entry(&self, key: &str) -> PyResult<&gguf::KvEntry> {
        self.file.kv(key).ok_or_else(|| PyKeyError::new_err(gguf::short_name(key).into_owned()))
    }
}

#[pymethods]
impl PyGgufReader {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let file = py.detach(|| GgufFile::open(&path)).map_err(to_py_err)?;
        Ok(PyGgufReader { file: Arc::new(file) })
    }

    /// Parse bytes held in memory (used by tests and for small files).
    #[staticmethod]
    fn from_bytes(data: Vec<u8>) -> PyResult<Self> {
        let file = GgufFile::from_bytes(data).map_err(to_py_err)?;
        Ok(PyGgufReader { file: Arc::new(file) })
    }

    #[getter]
    fn version(&self) -> u32 {
        self.file.version()
    }

    #[getter]
    fn alignment(&self) -> u64 {
        self.file.alignment()
    }

    #[getter]
    fn data_offset(&self) -> u64 {
        self.file.data_offset()
    }

    #[getter]
    fn file_size(&self) -> u64 {
        self.file.file_size()
    }

    /// Metadata keys in file order.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.file.metadata().iter().map(|e| &*e.key))
    }

    /// The value of `key` as a Python object (arrays as lists).
    fn value<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let e = self.entry(key)?;
        let field = format!("metadata key '{}'", gguf::short_name(key));
        meta_to_py(py, self.file.value(e).map_err(to_py_err)?, &field)
    }

    /// `"u32"`, `"str"`, `"array[str]"`, ...
    fn value_type(&self, key: &str) -> PyResult<String> {
        Ok(self.entry(key)?.type_name())
    }

    /// Offset of the record in the file.
    fn key_offset(&self, key: &str) -> PyResult<u64> {
        Ok(self.entry(key)?.offset)
    }

    /// `(element type, length)` for an array, `None` otherwise.
    fn array_info(&self, key: &str) -> PyResult<Option<(&'static str, u64)>> {
        Ok(self.entry(key)?.array_header().map(|(t, n)| (t.name(), n)))
    }

    /// The packed little-endian bytes of a fixed-size-element array (one copy into `bytes`), else `None`.
    fn array_bytes<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let e = self.entry(key)?;
        match self.file.value(e).map_err(to_py_err)? {
            MetaValue::Array(a) => Ok(a.raw_elements().map(|b| PyBytes::new(py, b))),
            _ => Ok(None),
        }
    }

    /// Element `i` of an array (negative indexes count from the end). String arrays build their offset
    /// table on first use.
    fn array_item<'py>(&self, py: Python<'py>, key: &str, i: i64) -> PyResult<Bound<'py, PyAny>> {
        let e = self.entry(key)?;
        let MetaValue::Array(a) = self.file.value(e).map_err(to_py_err)? else {
            return Err(PyTypeError::new_err(format!("metadata key '{}' is not an array", gguf::short_name(key))));
        };
        let n = a.len() as i128;
        let j = if i < 0 { n + i as i128 } else { i as i128 };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err(format!("index {i} out of range for an array of {n}")));
        }
        let field = format!("metadata key '{}'[{j}]", gguf::short_name(key));
        match a.get(j as u64) {
            Some(v) => meta_to_py(py, v.map_err(to_py_err)?, &field),
            None => Err(PyIndexError::new_err(format!("index {i} out of range"))),
        }
    }

    /// One tuple per tensor, in file order:
    /// `(name, type_name, type_id, ne, n_elements, nbytes or None, absolute offset)`.
    fn tensor_infos<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::with_capacity(self.file.tensors().len());
        for t in self.file.tensors() {
            let ne = PyTuple::new(py, &t.ne)?;
            let tup =
                (&*t.name, t.type_name(), t.type_id, ne, t.n_elements, t.nbytes, t.abs_offset).into_pyobject(py)?;
            out.push(tup);
        }
        PyList::new(py, out)
    }

    /// A zero-copy read-only buffer over the packed bytes of tensor `name`.
    fn raw(&self, name: &str) -> PyResult<PyRawBuffer> {
        let t = self.file.tensor(name).ok_or_else(|| PyKeyError::new_err(name.to_string()))?;
        let data = self.file.tensor_data(t).map_err(to_py_err)?;
        let start = data.as_ptr() as usize - self.file.bytes().as_ptr() as usize;
        Ok(PyRawBuffer { file: Arc::clone(&self.file), start, len: data.len() })
    }
}

/// Read-only bytes of one tensor, exported through the buffer protocol. Holds the file (and so the
/// mapping) alive for as long as any view of it exists.
#[pyclass(frozen, name = "_RawBuffer", module = "fastquant._core")]
pub struct PyRawBuffer {
    file: Arc<GgufFile>,
    start: usize,
    len: usize,
}

#[pymethods]
impl PyRawBuffer {
    fn __len__(&self) -> usize {
        self.len
    }

    /// # Safety
    /// Called by CPython with a valid `view` pointer.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        // SAFETY: per this function's contract, its caller checked the CPU features and passes valid pointers/lengths.
        unsafe {
            if view.is_null() {
                return Err(PyBufferError::new_err("view is null"));
            }
            if (flags & ffi::PyBUF_WRITABLE) == ffi::PyBUF_WRITABLE {
                return Err(PyBufferError::new_err("GGUF tensor data is read-only"));
            }
            let this = slf.get();
            let bytes = &this.file.bytes()[this.start..this.start + this.len];
            // SAFETY: `view` is non-null and CPython hands us a writable Py_buffer struct to fill. The data
            // pointer stays valid while `view.obj` (a strong reference to this object, which owns an `Arc` of
            // the mapping) is alive; the mapping never moves and is never written, and the buffer is marked
            // read-only so numpy/memoryview refuse writes. `format` points to a static C string; `shape` and
            // `strides` point into the view itself, as CPython allows for 1-D buffers.
            {
                (*view).obj = slf.clone().into_any().into_ptr();
                (*view).buf = bytes.as_ptr() as *mut std::ffi::c_void;
                (*view).len = bytes.len() as isize;
                (*view).readonly = 1;
                (*view).itemsize = 1;
                (*view).format = if (flags & ffi::PyBUF_FORMAT) == ffi::PyBUF_FORMAT {
                    c"B".as_ptr() as *mut std::ffi::c_char
                } else {
                    std::ptr::null_mut()
                };
                (*view).ndim = 1;
                (*view).shape =
                    if (flags & ffi::PyBUF_ND) == ffi::PyBUF_ND { &mut (*view).len } else { std::ptr::null_mut() };
                (*view).strides = if (flags & ffi::PyBUF_STRIDES) == ffi::PyBUF_STRIDES {
                    &mut (*view).itemsize
                } else {
                    std::ptr::null_mut()
                };
                (*view).suboffsets = std::ptr::null_mut();
                (*view).internal = std::ptr::null_mut();
            }
            Ok(())
        }
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

fn scalar_from_py(t: ValueType, v: &Bound<'_, PyAny>, field: &str) -> PyResult<OwnedValue> {
    use OwnedValue as O;
    let conv =
        |e: PyErr| PyValueError::new_err(format!("{field}: cannot store {} as {}: {e}", short_repr(v), t.name()));
    Ok(match t {
        ValueType::U8 => O::U8(v.extract().map_err(conv)?),
        ValueType::I8 => O::I8(v.extract().map_err(conv)?),
        ValueType::U16 => O::U16(v.extract().map_err(conv)?),
        ValueType::I16 => O::I16(v.extract().map_err(conv)?),
        ValueType::U32 => O::U32(v.extract().map_err(conv)?),
        ValueType::I32 => O::I32(v.extract().map_err(conv)?),
        ValueType::U64 => O::U64(v.extract().map_err(conv)?),
        ValueType::I64 => O::I64(v.extract().map_err(conv)?),
        ValueType::F32 => O::F32(v.extract::<f64>().map_err(conv)? as f32),
        ValueType::F64 => O::F64(v.extract().map_err(conv)?),
        ValueType::Bool => O::Bool(v.extract().map_err(conv)?),
        ValueType::String => O::Str(v.extract().map_err(conv)?),
        ValueType::Array => {
            return Err(PyValueError::new_err(format!("{field}: nested arrays cannot be written (ggml rejects them)")))
        }
    })
}

fn short_repr(v: &Bound<'_, PyAny>) -> String {
    let s = v.repr().map(|r| r.to_string()).unwrap_or_else(|_| "<object>".into());
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

fn owned_from_py(vtype: &str, v: &Bound<'_, PyAny>, key: &str) -> PyResult<OwnedValue> {
    let field = format!("metadata key '{}'", gguf::short_name(key));
    let bad = || PyValueError::new_err(format!("{field}: unknown value type {vtype:?}"));
    if let Some(inner) = vtype.strip_prefix("array[").and_then(|s| s.strip_suffix(']')) {
        let et = ValueType::from_name(inner).ok_or_else(bad)?;
        if et == ValueType::Array {
            return Err(PyValueError::new_err(format!("{field}: nested arrays cannot be written (ggml rejects them)")));
        }
        if let Ok(b) = v.cast::<PyBytes>() {
            if et.fixed_size().is_none() {
                return Err(PyValueError::new_err(format!("{field}: packed bytes given for an array of {inner}")));
            }
            return Ok(OwnedValue::ScalarArray { elem_type: et, bytes: b.as_bytes().to_vec() });
        }
        if et == ValueType::String {
            let mut out = Vec::new();
            for (i, x) in v.try_iter()?.enumerate() {
                let x = x?;
                out.push(x.extract::<String>().map_err(|_| {
                    PyValueError::new_err(format!("{field}[{i}]: expected str, got {}", short_repr(&x)))
                })?);
            }
            return Ok(OwnedValue::StrArray(out));
        }
        let sz = et.fixed_size().unwrap_or(1);
        let mut bytes = Vec::new();
        for (i, x) in v.try_iter()?.enumerate() {
            let x = x?;
            let o = scalar_from_py(et, &x, &format!("{field}[{i}]"))?;
            let mut one = Vec::with_capacity(sz);
            write_scalar(&mut one, &o);
            bytes.extend_from_slice(&one);
        }
        return Ok(OwnedValue::ScalarArray { elem_type: et, bytes });
    }
    let t = ValueType::from_name(vtype).ok_or_else(bad)?;
    scalar_from_py(t, v, &field)
}

fn write_scalar(out: &mut Vec<u8>, v: &OwnedValue) {
    use OwnedValue as O;
    match v {
        O::U8(x) => out.push(*x),
        O::I8(x) => out.push(*x as u8),
        O::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        O::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        O::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        O::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        O::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        O::Bool(x) => out.push(*x as u8),
        O::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        O::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        O::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        O::Str(_) | O::StrArray(_) | O::ScalarArray { .. } => {}
    }
}

/// Write a GGUF file. `kvs`: `(key, value type, value)` with value types `u8 .. f64, bool, str` or
/// `array[<type>]` (value: a list, or packed little-endian `bytes`). `tensors`: `(name, ggml type name,
/// ne in GGUF order, packed bytes as a 1-D uint8 numpy array)`. Returns the file size.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn _write_gguf(
    py: Python<'_>,
    path: PathBuf,
    kvs: Vec<(String, String, Bound<'_, PyAny>)>,
    tensors: Vec<(String, String, Vec<u64>, PyReadonlyArray1<'_, u8>)>,
) -> PyResult<u64> {
    let mut owned = Vec::with_capacity(kvs.len());
    for (k, t, v) in &kvs {
        owned.push((k.clone(), owned_from_py(t, v, k)?));
    }
    let mut specs = Vec::with_capacity(tensors.len());
    for (name, tname, ne, arr) in &tensors {
        let ggml_type = GgmlDType::from_name(tname)
            .ok_or_else(|| PyValueError::new_err(format!("tensor '{name}': unknown ggml type {tname:?}")))?;
        let data = arr
            .as_slice()
            .map_err(|e| PyValueError::new_err(format!("tensor '{name}': data is not contiguous ({e})")))?;
        specs.push(TensorSpec { name: name.clone(), ggml_type, ne: ne.clone(), data });
    }
    // The GIL is released while the file is written (other Python threads keep running). The arrays stay
    // borrowed (read-only) until this returns.
    py.detach(|| gguf::write_file(&path, &owned, &specs)).map_err(to_py_err)
}

/// ggml type table as `{name: (id, block elements, block bytes)}`.
#[pyfunction]
fn _ggml_types(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    let d = pyo3::types::PyDict::new(py);
    for t in fastquant_core::quants::ALL_TYPES {
        let (be, bb) = t.block_geometry();
        d.set_item(t.name(), (t.id(), be, bb))?;
    }
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let err_type = m.py().get_type::<GGUFError>();
    err_type.setattr("offset", m.py().None())?;
    err_type.setattr("field", m.py().None())?;
    m.add("GGUFError", err_type)?;
    m.add_class::<PyGgufReader>()?;
    m.add_class::<PyRawBuffer>()?;
    m.add_function(wrap_pyfunction!(_write_gguf, m)?)?;
    m.add_function(wrap_pyfunction!(_ggml_types, m)?)?;
    m.add("GGUF_MAX_ARRAY_DEPTH", gguf::MAX_ARRAY_DEPTH)?;
    m.add("GGUF_MAX_ALIGNMENT", gguf::MAX_ALIGNMENT)?;
    Ok(())
}
