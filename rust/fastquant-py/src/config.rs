//! Python face of the config core: converts Python objects to `Value`s and back, maps `ConfigError`s to
//! `TypeError`/`ValueError`, and wraps `QuantConfig` in one Python class per config kind.

use std::ffi::CString;
use std::sync::Arc;

use fastquant_core::config::{self, ConfigError, ConfigKind, ErrorKind, QuantConfig};
use fastquant_core::json::JsonErrorKind;
use fastquant_core::value::{Opaque, Value};
use pyo3::exceptions::{PyTypeError, PyUserWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::IntoPyObjectExt;

// ---------------------------------------------------------------------------------------------------------
// Errors and warnings

/// `fastquant.errors.ConfigError` / `ConfigTypeError` (ValueError / ValueError + TypeError subclasses with
/// `.errors()`), or the plain built-ins when the Python package is not importable.
static ERROR_CLASSES: PyOnceLock<Option<(Py<PyAny>, Py<PyAny>)>> = PyOnceLock::new();

/// A `ConfigError` as a Python exception carrying every problem (`.errors()`: `loc`, `type`, `msg`, `input`).
pub fn config_err(e: ConfigError) -> PyErr {
    Python::attach(|py| match build_config_err(py, &e) {
        Ok(err) => err,
        Err(err) => err,
    })
}

fn build_config_err(py: Python<'_>, e: &ConfigError) -> PyResult<PyErr> {
    let classes = ERROR_CLASSES.get_or_init(py, || {
        let m = py.import("fastquant.errors").ok()?;
        Some((m.getattr("ConfigError").ok()?.unbind(), m.getattr("ConfigTypeError").ok()?.unbind()))
    });
    let message = e.to_string();
    let Some((value_cls, type_cls)) = classes else {
        return Ok(match e.kind {
            ErrorKind::Type => PyTypeError::new_err(message),
            ErrorKind::Value => PyValueError::new_err(message),
        });
    };
    let details = PyList::empty(py);
    for err in e.errors() {
        let d = PyDict::new(py);
        let loc: Vec<Py<PyAny>> = err
            .loc
            .iter()
            .map(|part| {
                match part.strip_prefix('[').and_then(|p| p.strip_suffix(']')).and_then(|p| p.parse::<i64>().ok()) {
                    Some(i) => i.into_py_any(py),
                    None => part.into_py_any(py),
                }
            })
            .collect::<PyResult<_>>()?;
        d.set_item("loc", PyTuple::new(py, loc)?)?;
        d.set_item("type", err.type_)?;
        d.set_item("msg", err.msg())?;
        match &err.input {
            Some(v) => d.set_item("input", value_to_py(py, v, false)?)?,
            None => d.set_item("input", py.None())?,
        }
        details.append(d)?;
    }
    let cls = match e.kind {
        ErrorKind::Type => type_cls,
        ErrorKind::Value => value_cls,
    };
    Ok(PyErr::from_value(cls.bind(py).call1((message, details))?))
}

pub(crate) fn warn_unknown(py: Python<'_>, class: &str, keys: &[String]) -> PyResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "{class}: ignoring unknown key{} {}; check the spelling against the {class} fields",
        if keys.len() == 1 { "" } else { "s" },
        keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
    );
    let msg = CString::new(msg.replace('\0', "")).expect("no NUL bytes left");
    PyErr::warn(py, &py.get_type::<PyUserWarning>(), &msg, 2)
}

// ---------------------------------------------------------------------------------------------------------
// Python -> Value

static TORCHAO_TO_DICT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

const MAX_DEPTH: usize = 64;

fn opaque(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let type_name = obj.get_type().qualname()?.to_string();
    Ok(Value::Opaque(Opaque {
        type_name,
        callable: obj.is_callable(),
        id: obj.as_ptr() as usize,
        handle: Arc::new(obj.clone().unbind()),
        eq: Some(py_equal),
    }))
}

/// Python's `==` between two opaque objects (errors count as unequal).
fn py_equal(a: &Opaque, b: &Opaque) -> bool {
    match (a.handle.downcast_ref::<Py<PyAny>>(), b.handle.downcast_ref::<Py<PyAny>>()) {
        (Some(x), Some(y)) => Python::attach(|py| x.bind(py).eq(y.bind(py)).unwrap_or(false)),
        _ => false,
    }
}

/// Convert a Python object into a `Value`. Lists and tuples become lists, dicts with string keys become
/// dicts (copied, so the caller's objects are never shared or mutated); a `torch.dtype` becomes a dtype;
/// a live torchao config object becomes its serialized dict; anything else is kept opaque.
pub fn py_to_value(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    let mut saw_tuple = false;
    convert(obj, depth, &mut saw_tuple)
}

/// `saw_tuple` is set when a tuple was turned into a list; a dict whose contents (outside nested dicts)
/// held a tuple is kept whole instead, so that no data changes shape.
fn convert(obj: &Bound<'_, PyAny>, depth: usize, saw_tuple: &mut bool) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err("config value nested more than 64 levels deep"));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // `is_instance_of` is a flag check; a failed `cast` would build an error object each time.
    if obj.is_instance_of::<PyString>() {
        // A str holding a lone surrogate (`json.loads('"\\ud800"')`) has no UTF-8 form: kept as it is.
        return match obj.cast::<PyString>()?.to_str() {
            Ok(s) => Ok(Value::Str(s.to_owned())),
            Err(_) => opaque(obj),
        };
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.is_truthy()?));
    }
    if obj.is_instance_of::<PyInt>() {
        return match obj.extract::<i64>() {
            Ok(v) => Ok(Value::Int(v)),
            Err(_) => opaque(obj),
        };
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(obj.cast::<PyFloat>()?.value()));
    }
    if obj.is_instance_of::<PyDict>() {
        let d = obj.cast::<PyDict>()?;
        let mut items = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = match k.cast::<PyString>().ok().and_then(|k| k.to_str().ok()) {
                Some(key) => key.to_owned(),
                None => {
                    // Keys that are not strings (e.g. ModelOpt's `block_sizes = {-1: 16}`) or hold a lone
                    // surrogate: keep the dict whole, as a private deep copy.
                    let copy = py_deepcopy(obj)?;
                    return opaque(&copy);
                }
            };
            let mut child_tuple = false;
            items.push((key, convert(&v, depth + 1, &mut child_tuple)?));
            if child_tuple {
                let copy = py_deepcopy(obj)?;
                return opaque(&copy);
            }
        }
        return Ok(Value::Dict(items));
    }
    if obj.is_instance_of::<PyList>() {
        let l = obj.cast::<PyList>()?;
        return l.iter().map(|v| convert(&v, depth + 1, saw_tuple)).collect::<PyResult<Vec<_>>>().map(Value::List);
    }
    if obj.is_instance_of::<PyTuple>() {
        *saw_tuple = true;
        let t = obj.cast::<PyTuple>()?;
        return t.iter().map(|v| convert(&v, depth + 1, saw_tuple)).collect::<PyResult<Vec<_>>>().map(Value::List);
    }
    let ty = obj.get_type();
    let module = ty.module()?;
    let module = module.to_str()?;
    if module == "torch" && ty.name()?.to_str()? == "dtype" {
        let s = obj.str()?;
        let s = s.to_str()?;
        return Ok(Value::Dtype(s.strip_prefix("torch.").unwrap_or(s).to_owned()));
    }
    if module.starts_with("torchao") && obj.hasattr("version").unwrap_or(false) {
        // A live AOBaseConfig: store its serialized form (torchao is already imported by the caller).
        let py = obj.py();
        let f = TORCHAO_TO_DICT.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py.import("torchao.core.config")?.getattr("config_to_dict")?.unbind())
        })?;
        let d = f.bind(py).call1((obj,))?;
        return convert(&d, depth + 1, saw_tuple);
    }
    opaque(obj)
}

pub(crate) fn py_deepcopy<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    obj.py().import("copy")?.getattr("deepcopy")?.call1((obj,))
}

// ---------------------------------------------------------------------------------------------------------
// Value -> Python

static TORCH: PyOnceLock<Option<Py<PyModule>>> = PyOnceLock::new();
static METHOD_ENUM: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `torch.<name>` when torch can be imported, else the name as a string.
fn dtype_to_py(py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
    let torch = TORCH.get_or_init(py, || py.import("torch").ok().map(Bound::unbind));
    match torch {
        Some(t) => Ok(t.bind(py).getattr(name)?.unbind()),
        None => name.into_py_any(py),
    }
}

/// Convert a `Value` to a fresh Python object (dtypes as `torch.dtype` when `torch_dtypes`).
pub fn value_to_py(py: Python<'_>, v: &Value, torch_dtypes: bool) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_py_any(py)?,
        Value::Int(i) => i.into_py_any(py)?,
        Value::Float(f) => f.into_py_any(py)?,
        Value::Str(s) => s.into_py_any(py)?,
        Value::Dtype(d) if torch_dtypes => dtype_to_py(py, d)?,
        Value::Dtype(d) => d.into_py_any(py)?,
        Value::List(items) => {
            let l = PyList::empty(py);
            for item in items {
                l.append(value_to_py(py, item, torch_dtypes)?)?;
            }
            l.into_any().unbind()
        }
        Value::Dict(items) => {
            let d = PyDict::new(py);
            for (k, item) in items {
                d.set_item(k, value_to_py(py, item, torch_dtypes)?)?;
            }
            d.into_any().unbind()
        }
        Value::Opaque(o) => match o.handle.downcast_ref::<Py<PyAny>>() {
            Some(obj) if o.type_name == "dict" => py_deepcopy(obj.bind(py))?.unbind(),
            Some(obj) => obj.clone_ref(py),
            None => return Err(PyTypeError::new_err(format!("cannot convert a {} back to Python", o.type_name))),
        },
    })
}

fn method_to_py(py: Python<'_>, method: &str) -> PyResult<Py<PyAny>> {
    match METHOD_ENUM.get(py) {
        Some(e) => Ok(e.bind(py).call1((method,))?.unbind()),
        None => method.into_py_any(py),
    }
}

/// Called once by the Python package: attribute reads of `quant_method` return this enum's members.
#[pyfunction]
fn _set_method_enum(py: Python<'_>, enum_type: Py<PyAny>) -> PyResult<()> {
    let _ = METHOD_ENUM.set(py, enum_type);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Arguments -> dict items

pub(crate) fn dict_items(d: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<(String, Value)>> {
    if !d.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!("{what}: expected a dict, got {}", d.get_type().qualname()?)));
    }
    let d = d.cast::<PyDict>()?;
    let mut items = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        if !k.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(format!(
                "{what}: keys must be str, got {} ({})",
                k.repr()?,
                k.get_type().qualname()?
            )));
        }
        items.push((k.cast::<PyString>()?.to_str()?.to_owned(), py_to_value(&v, 1)?));
    }
    Ok(items)
}

/// One constructor argument: the object the caller passed (`None` included), or `Absent` when the caller left
/// it out. The schemas tell the two apart (an explicit `load_in_8bit=False` must agree with a private
/// `_load_in_8bit` key, a missing one takes its value), so the defaults are never filled in here: the core does
/// that, exactly as for a dict without the key.
pub(crate) enum Arg<'py> {
    Absent,
    Given(Bound<'py, PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Arg<'py> {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Arg::Given(obj.to_owned()))
    }
}

/// The arguments of a constructor call as dict items: the named parameters that were given, in the class's
/// parameter order, then the other keyword arguments in call order. Python has already bound the call to the
/// signature (too many positional arguments, a name given twice); the values are converted here and checked
/// by the core.
fn call_items(
    named: Vec<(&'static str, Arg<'_>)>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<(String, Value)>> {
    let mut items = Vec::with_capacity(named.len() + kwargs.map_or(0, |kw| kw.len()));
    for (name, arg) in named {
        if let Arg::Given(obj) = arg {
            items.push((name.to_owned(), py_to_value(&obj, 1)?));
        }
    }
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            items.push((k.extract::<String>()?, py_to_value(&v, 1)?));
        }
    }
    Ok(items)
}

/// Compile-time check that a constructor's parameters are the core's names in the core's order
/// (`ConfigKind::positional`, diffusers' order).
const fn same_names(a: &[&str], b: &[&str]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        let (x, y) = (a[i].as_bytes(), b[i].as_bytes());
        if x.len() != y.len() {
            return false;
        }
        let mut j = 0;
        while j < x.len() {
            if x[j] != y[j] {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

// ---------------------------------------------------------------------------------------------------------
// The config classes

/// Shared behaviour of the five config classes.
trait ConfigClass: Sized {
    const KIND: ConfigKind;
    fn wrap(inner: Arc<QuantConfig>) -> Self;
}

fn parse_items(
    py: Python<'_>,
    kind: ConfigKind,
    items: &[(String, Value)],
    warn: bool,
) -> PyResult<(QuantConfig, Vec<String>)> {
    let parsed = config::parse(kind, items.to_vec()).map_err(config_err)?;
    if warn {
        warn_unknown(py, kind.class_name(), &parsed.unknown_keys)?;
    }
    Ok((parsed.config, parsed.unknown_keys))
}

/// Build the Python object for a parsed config.
pub fn make_config(py: Python<'_>, cfg: QuantConfig) -> PyResult<Py<PyAny>> {
    make_config_arc(py, Arc::new(cfg))
}

/// The config inside any of our config objects, if `obj` is one.
pub fn config_of(obj: &Bound<'_, PyAny>) -> Option<Arc<QuantConfig>> {
    if obj.is_instance_of::<PyDict>() || obj.is_instance_of::<PyString>() {
        return None;
    }
    if let Ok(c) = obj.cast::<BitsAndBytesConfig>() {
        return Some(c.get().inner.clone());
    }
    if let Ok(c) = obj.cast::<GGUFQuantizationConfig>() {
        return Some(c.get().inner.clone());
    }
    if let Ok(c) = obj.cast::<QuantoConfig>() {
        return Some(c.get().inner.clone());
    }
    if let Ok(c) = obj.cast::<TorchAoConfig>() {
        return Some(c.get().inner.clone());
    }
    if let Ok(c) = obj.cast::<NVIDIAModelOptConfig>() {
        return Some(c.get().inner.clone());
    }
    None
}

/// The field `name` of `cfg` as a fresh Python object (dtypes as `torch.dtype`).
fn field_to_py(py: Python<'_>, cfg: &QuantConfig, name: &str) -> PyResult<Py<PyAny>> {
    match cfg.field(name) {
        Some(v) => value_to_py(py, &v, true),
        None => Err(pyo3::exceptions::PyAttributeError::new_err(format!(
            "'{}' object has no attribute '{}'",
            cfg.class_name(),
            name
        ))),
    }
}

fn full_repr(py: Python<'_>, cfg: &QuantConfig) -> PyResult<String> {
    let mut parts = Vec::new();
    for (k, v) in cfg.fields() {
        let r = match &v {
            Value::Dtype(d) => format!("torch.{d}"),
            Value::Opaque(_) => value_to_py(py, &v, false)?.bind(py).repr()?.to_string(),
            v => v.repr(),
        };
        parts.push(format!("{k}={r}"));
    }
    Ok(format!("{}({})", cfg.class_name(), parts.join(", ")))
}

/// One config class. `($($param),*)` are the constructor's named parameters (the core's positional order,
/// checked at compile time) and `$text_signature` is the signature Python shows for it (`inspect.signature`,
/// `help`, stubtest): the defaults there are what the core fills in for a missing argument.
macro_rules! config_class {
    ($name:ident, $kind:expr, $doc:literal, ($($param:ident),*), $text_signature:literal $(, { $($extra:tt)* })?) => {
        #[doc = $doc]
        #[pyclass(frozen, subclass, module = "fastquant")]
        pub struct $name {
            inner: Arc<QuantConfig>,
        }

        impl ConfigClass for $name {
            const KIND: ConfigKind = $kind;
            fn wrap(inner: Arc<QuantConfig>) -> Self {
                $name { inner }
            }
        }

        #[pymethods]
        impl $name {
            #[new]
            #[pyo3(signature = ($($param = Arg::Absent,)* **kwargs), text_signature = $text_signature)]
            #[allow(clippy::too_many_arguments)]
            fn new<'py>(py: Python<'py>, $($param: Arg<'py>,)* kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Self> {
                const _: () = assert!(
                    same_names(&[$(stringify!($param)),*], $kind.positional()),
                    concat!(stringify!($name), ": the constructor's parameters differ from the core's positional order")
                );
                let items = call_items(vec![$((stringify!($param), $param)),*], kwargs)?;
                let (cfg, _) = parse_items(py, Self::KIND, &items, true)?;
                Ok(Self::wrap(Arc::new(cfg)))
            }

            /// Build from a dict (a checkpoint's `quantization_config`). Keyword arguments override keys of
            /// the dict. With `return_unused_kwargs=True`, returns `(config, {unknown keys: values})`
            /// instead of warning about unknown keys.
            #[classmethod]
            #[pyo3(signature = (config_dict, return_unused_kwargs=false, **kwargs))]
            fn from_dict(
                cls: &Bound<'_, PyType>,
                config_dict: &Bound<'_, PyAny>,
                return_unused_kwargs: bool,
                kwargs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<Py<PyAny>> {
                let py = cls.py();
                let mut items = dict_items(config_dict, concat!(stringify!($name), ".from_dict"))?;
                if let Some(kw) = kwargs {
                    config::merge_overrides(&mut items, dict_items(kw.as_any(), concat!(stringify!($name), ".from_dict"))?);
                }
                let (cfg, unknown) = parse_items(py, Self::KIND, &items, !return_unused_kwargs)?;
                let obj = if cls.is(&py.get_type::<$name>()) {
                    Py::new(py, Self::wrap(Arc::new(cfg)))?.into_any()
                } else {
                    // A Python subclass: let its own constructor run.
                    let kw = PyDict::new(py);
                    for (k, v) in &items {
                        if !unknown.contains(k) {
                            kw.set_item(k, value_to_py(py, v, false)?)?;
                        }
                    }
                    cls.call((), Some(&kw))?.unbind()
                };
                if return_unused_kwargs {
                    let unused = PyDict::new(py);
                    for (k, v) in &items {
                        if unknown.contains(k) {
                            unused.set_item(k, value_to_py(py, v, false)?)?;
                        }
                    }
                    return Ok(PyTuple::new(py, [obj, unused.into_any().unbind()])?.into_any().unbind());
                }
                Ok(obj)
            }

            /// Parse a JSON object (the text of a `quantization_config`).
            #[classmethod]
            fn from_json_string(cls: &Bound<'_, PyType>, text: &str) -> PyResult<Py<PyAny>> {
                let py = cls.py();
                let items = json_object(py, text, Self::KIND.class_name())?;
                let (cfg, _) = parse_items(py, Self::KIND, &items, true)?;
                make_config(py, cfg)
            }

            /// The config as a plain dict; `from_dict(cfg.to_dict()) == cfg`. Dtypes are written as names
            /// (`"bfloat16"`). A fresh dict every call.
            fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                value_to_py(py, &self.inner.to_dict(), false)
            }

            /// The config as JSON text (sorted by schema order, 2-space indent). `use_diff` is accepted for
            /// diffusers compatibility and ignored: fastquant always writes every field.
            #[pyo3(signature = (use_diff=true, indent=2))]
            fn to_json_string(&self, use_diff: bool, indent: Option<usize>) -> PyResult<String> {
                let _ = use_diff;
                let mut v = self.inner.to_dict();
                if let Value::Dict(items) = &mut v {
                    items.retain(|(k, _)| k != "forward_loop");
                }
                let mut s = v.to_json(indent).map_err(|e| PyTypeError::new_err(format!("{}: {e}", self.inner.class_name())))?;
                s.push('\n');
                Ok(s)
            }

            /// Write `to_json_string()` to a file.
            #[pyo3(signature = (json_file_path, use_diff=true))]
            fn to_json_file(&self, py: Python<'_>, json_file_path: &Bound<'_, PyAny>, use_diff: bool) -> PyResult<()> {
                let text = self.to_json_string(use_diff, Some(2))?;
                let path: std::path::PathBuf = json_file_path.extract()?;
                py.detach(|| std::fs::write(&path, text))
                    .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", path.display())))
            }

            /// The registry key that picks the quantizer (`"bitsandbytes_4bit"`, `"gguf"`, ...).
            #[getter]
            fn _method_key(&self) -> &'static str {
                self.inner.method_key()
            }

            /// The config's skip list (`llm_int8_skip_modules` for bitsandbytes, else
            /// `modules_to_not_convert`), as a new list, or None.
            #[getter]
            fn _skip_modules(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                match self.inner.skip_modules() {
                    Some(v) => v.clone().into_py_any(py),
                    None => Ok(py.None()),
                }
            }

            #[getter]
            fn quant_method(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                method_to_py(py, self.inner.quant_method())
            }

            // One read-only attribute per constructor parameter (a fresh object each read; dtypes as
            // `torch.dtype`). Fields that are not parameters get theirs in the class's extra block.
            $(
                #[getter]
                fn $param(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                    field_to_py(py, &self.inner, stringify!($param))
                }
            )*

            /// Only reached for a name that is not an attribute: the message names the class as before the
            /// fields had getters.
            fn __getattr__(&self, name: &str) -> PyResult<Py<PyAny>> {
                Err(pyo3::exceptions::PyAttributeError::new_err(format!(
                    "'{}' object has no attribute '{}'",
                    self.inner.class_name(),
                    name
                )))
            }

            fn __dir__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                let mut names: Vec<&str> = vec!["quant_method", "to_dict", "to_json_string", "to_json_file", "from_dict", "from_json_string"];
                names.extend(self.inner.fields().iter().map(|(k, _)| *k));
                names.into_py_any(py)
            }

            fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                match config_of(other) {
                    Some(o) => (*self.inner == *o).into_py_any(py),
                    None => Ok(py.NotImplemented()),
                }
            }

            fn __ne__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                match config_of(other) {
                    Some(o) => (*self.inner != *o).into_py_any(py),
                    None => Ok(py.NotImplemented()),
                }
            }

            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                full_repr(py, &self.inner)
            }

            fn __copy__(slf: Py<Self>) -> Py<Self> {
                slf
            }

            fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
                slf
            }

            fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (Py<PyAny>,))> {
                let py = slf.py();
                let ctor = slf.get_type().getattr("from_dict")?;
                Ok((ctor, (value_to_py(py, &slf.get().inner.to_dict(), false)?,)))
            }

            $($($extra)*)?
        }
    };
}

config_class!(
    BitsAndBytesConfig,
    ConfigKind::BitsAndBytes,
    "bitsandbytes 4-bit (fp4/nf4) or 8-bit (LLM.int8) quantization. Exactly one of `load_in_4bit` / `load_in_8bit` must be True.",
    (
        load_in_8bit,
        load_in_4bit,
        llm_int8_threshold,
        llm_int8_skip_modules,
        llm_int8_enable_fp32_cpu_offload,
        llm_int8_has_fp16_weight,
        bnb_4bit_compute_dtype,
        bnb_4bit_quant_type,
        bnb_4bit_use_double_quant,
        bnb_4bit_quant_storage
    ),
    "(load_in_8bit=False, load_in_4bit=False, llm_int8_threshold=6.0, llm_int8_skip_modules=None, llm_int8_enable_fp32_cpu_offload=False, llm_int8_has_fp16_weight=False, bnb_4bit_compute_dtype=None, bnb_4bit_quant_type='fp4', bnb_4bit_use_double_quant=False, bnb_4bit_quant_storage=None, **kwargs)",
    {
/// `True`: a valid bitsandbytes config always quantizes.
    fn is_quantizable(&self) -> bool {
        true
    }

    /// `"llm_int8"`, `"fp4"` or `"nf4"`.
    fn quantization_method(&self) -> &'static str {
        match &*self.inner {
            QuantConfig::BitsAndBytes(b) => b.quantization_method(),
            _ => unreachable!("BitsAndBytesConfig always wraps a bitsandbytes config"),
        }
    }
    }
);
config_class!(
    GGUFQuantizationConfig,
    ConfigKind::Gguf,
    "Weights that arrive pre-quantized in a GGUF file; `compute_dtype` is the dtype they are dequantized to.",
    (compute_dtype, modules_to_not_convert),
    "(compute_dtype=None, modules_to_not_convert=None, **kwargs)",
    {
        /// Always `True`: GGUF weights arrive quantized (diffusers writes the key).
        #[getter]
        fn pre_quantized(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
            field_to_py(py, &self.inner, "pre_quantized")
        }
    }
);
config_class!(
    QuantoConfig,
    ConfigKind::Quanto,
    "optimum-quanto weight quantization (`weights_dtype`: float8, int8, int4, int2).",
    (weights_dtype, modules_to_not_convert),
    "(weights_dtype='int8', modules_to_not_convert=None, **kwargs)"
);
config_class!(
    TorchAoConfig,
    ConfigKind::TorchAo,
    "torchao quantization: a serialized AOBaseConfig, a live torchao config object, or a legacy shorthand such as 'int8wo'.",
    (quant_type, modules_to_not_convert),
    "(quant_type, modules_to_not_convert=None, **kwargs)",
    {
/// The keyword arguments of a shorthand `quant_type` (`{}` for a serialized config).
    #[getter]
    fn quant_type_kwargs(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        field_to_py(py, &self.inner, "quant_type_kwargs")
    }

/// The torchao class this config asks for (`"Int8WeightOnlyConfig"`), known without torchao.
    #[getter]
    fn quant_type_name(&self) -> String {
        match &*self.inner {
            QuantConfig::TorchAo(t) => t.class_name(),
            _ => unreachable!("TorchAoConfig always wraps a torchao config"),
        }
    }

    /// The serialized torchao object (`{"_type", "_version", "_data"}`) to build when quantizing;
    /// shorthands are expanded to it.
    fn _resolved_quant_type(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &*self.inner {
            QuantConfig::TorchAo(t) => value_to_py(py, &t.resolved(), false),
            _ => unreachable!("TorchAoConfig always wraps a torchao config"),
        }
    }
    }
);
config_class!(
    NVIDIAModelOptConfig,
    ConfigKind::ModelOpt,
    "NVIDIA ModelOpt quantization: `quant_type` 'W' or 'W_A' with W, A in FP8, INT8, INT4, NF4, NVFP4.",
    (
        quant_type,
        modules_to_not_convert,
        weight_only,
        channel_quantize,
        block_quantize,
        scale_channel_quantize,
        scale_block_quantize,
        algorithm,
        forward_loop,
        modelopt_config,
        disable_conv_quantization
    ),
    "(quant_type, modules_to_not_convert=None, weight_only=True, channel_quantize=None, block_quantize=None, scale_channel_quantize=None, scale_block_quantize=None, algorithm='max', forward_loop=None, modelopt_config=None, disable_conv_quantization=False, **kwargs)"
);

pub fn make_config_arc(py: Python<'_>, inner: Arc<QuantConfig>) -> PyResult<Py<PyAny>> {
    Ok(match inner.kind() {
        ConfigKind::BitsAndBytes => Py::new(py, BitsAndBytesConfig::wrap(inner))?.into_any(),
        ConfigKind::Gguf => Py::new(py, GGUFQuantizationConfig::wrap(inner))?.into_any(),
        ConfigKind::Quanto => Py::new(py, QuantoConfig::wrap(inner))?.into_any(),
        ConfigKind::TorchAo => Py::new(py, TorchAoConfig::wrap(inner))?.into_any(),
        ConfigKind::ModelOpt => Py::new(py, NVIDIAModelOptConfig::wrap(inner))?.into_any(),
    })
}

/// JSON text → the items of its top-level object, read as Python's `json.loads` reads it. The core's parser
/// does the work; the rare text it cannot represent exactly (integers beyond 64 bits, lone surrogate escapes)
/// is read by Python's `json` instead, so nothing changes on the way.
pub(crate) fn json_object(py: Python<'_>, text: &str, what: &str) -> PyResult<Vec<(String, Value)>> {
    let v = match fastquant_core::json::parse_json(text) {
        Ok(v) => v,
        Err(e) if e.kind == JsonErrorKind::Unrepresentable => {
            let obj = py
                .import("json")?
                .getattr("loads")?
                .call1((text,))
                .map_err(|err| PyValueError::new_err(format!("{what}: invalid JSON: {err}")))?;
            py_to_value(&obj, 0)?
        }
        Err(e) => return Err(PyValueError::new_err(format!("{what}: {e}"))),
    };
    match v {
        Value::Dict(items) => Ok(items),
        // Python's json read it, but a key holds a lone surrogate (`"\ud800"`), which no config key can be.
        Value::Opaque(o) if o.type_name == "dict" => Err(PyValueError::new_err(format!(
            "{what}: a top-level key holds a lone UTF-16 surrogate escape; config keys must be valid Unicode text"
        ))),
        v => Err(PyTypeError::new_err(format!("{what}: expected a JSON object, got {}", v.type_name()))),
    }
}

/// The class object of a built-in config kind.
pub fn config_class(py: Python<'_>, kind: ConfigKind) -> Bound<'_, PyType> {
    match kind {
        ConfigKind::BitsAndBytes => py.get_type::<BitsAndBytesConfig>(),
        ConfigKind::Gguf => py.get_type::<GGUFQuantizationConfig>(),
        ConfigKind::Quanto => py.get_type::<QuantoConfig>(),
        ConfigKind::TorchAo => py.get_type::<TorchAoConfig>(),
        ConfigKind::ModelOpt => py.get_type::<NVIDIAModelOptConfig>(),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BitsAndBytesConfig>()?;
    m.add_class::<GGUFQuantizationConfig>()?;
    m.add_class::<QuantoConfig>()?;
    m.add_class::<TorchAoConfig>()?;
    m.add_class::<NVIDIAModelOptConfig>()?;
    m.add_function(wrap_pyfunction!(_set_method_enum, m)?)?;
    Ok(())
}
