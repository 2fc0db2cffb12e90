//! Python face of the dispatcher: `DiffusersAutoQuantizer.from_dict` / `from_json_string` / `from_config`
//! and the run-time registry behind `AUTO_QUANTIZER_MAPPING`, `AUTO_QUANTIZATION_CONFIG_MAPPING`,
//! `register_quantization_config` and `register_quantizer`.
//!
//! Every decision (which method a dict asks for, which config class and quantizer serve it, what is
//! available, what counts as a duplicate registration) is `fastquant_core::registry`'s. This module keeps the
//! core's [`Registry`] of Python class objects, converts arguments, calls the chosen Python classes and maps
//! errors.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

use fastquant_core::config::QuantConfig;
use fastquant_core::registry::{self, Registry};
use fastquant_core::value::Value;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};

use crate::config::{
    config_class, config_err, config_of, dict_items, json_object, make_config_arc, py_to_value, value_to_py,
    warn_unknown,
};

struct State {
    /// The core's registry of Python classes (built-in quantizers included, supplied by `_set_registry`).
    reg: Mutex<Registry<Py<PyAny>>>,
    /// The built-in quantizer classes, whose `__init__` is `DiffusersQuantizer.__init__` (= `quantizer_init`),
    /// with whether each loads pre-quantized weights only: these are built without a Python `__init__` call.
    builtin: Vec<(Py<PyAny>, bool)>,
    /// `QuantizationConfigMixin`: user configs name their method with a `quant_method` attribute.
    mixin: Py<PyAny>,
}

static STATE: PyOnceLock<State> = PyOnceLock::new();

fn state(py: Python<'_>) -> PyResult<&State> {
    STATE.get(py).ok_or_else(|| PyTypeError::new_err("fastquant's method registry is not initialised"))
}

fn lock(st: &State) -> MutexGuard<'_, Registry<Py<PyAny>>> {
    // A panic while the lock was held cannot leave the registry half-updated (each update is one push or
    // remove), so a poisoned lock is still usable.
    st.reg.lock().unwrap_or_else(|e| e.into_inner())
}

/// Called once by `fastquant.quantizers.auto`: the built-in quantizer classes (matched to the core's
/// built-in table by class name) and `QuantizationConfigMixin`.
#[pyfunction]
fn _set_registry(py: Python<'_>, builtin_quantizers: Vec<Bound<'_, PyAny>>, mixin: Py<PyAny>) -> PyResult<()> {
    let mut reg = Registry::new();
    let mut builtin = Vec::new();
    for (key, _, qname) in registry::BUILTIN {
        let cls = builtin_quantizers
            .iter()
            .find(|c| class_name(c) == *qname)
            .ok_or_else(|| PyTypeError::new_err(format!("_set_registry: no quantizer class named {qname}")))?;
        reg.set_quantizer(key, cls.clone().unbind());
        if !builtin.iter().any(|(b, _): &(Py<PyAny>, bool)| b.bind(py).is(cls)) {
            builtin.push((cls.clone().unbind(), pre_quantized_only(cls)?));
        }
    }
    let _ = STATE.set(py, State { reg: Mutex::new(reg), builtin, mixin });
    Ok(())
}

fn class_name(obj: &Bound<'_, PyAny>) -> String {
    obj.getattr("__name__").and_then(|n| n.extract::<String>()).unwrap_or_else(|_| "quantizer".into())
}

fn pre_quantized_only(qclass: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = qclass.py();
    Ok(qclass.getattr(intern!(py, "requires_pre_quantized"))?.is_truthy()?
        || qclass.getattr(intern!(py, "requires_calibration"))?.is_truthy()?)
}

// ---------------------------------------------------------------------------------------------------------
// The registry as Python sees it

fn check_kind(kind: &str) -> PyResult<bool> {
    match kind {
        "config" => Ok(true),
        "quantizer" => Ok(false),
        _ => Err(PyValueError::new_err(format!("registry kind must be 'config' or 'quantizer', got {kind:?}"))),
    }
}

/// Register `cls` under `key`; a key that already has one is a `ValueError` (`replace=True` replaces a
/// quantizer or a registered config class instead; built-in config classes cannot be replaced).
#[pyfunction]
#[pyo3(signature = (kind, key, cls, replace=false))]
fn registry_add(py: Python<'_>, kind: &str, key: &str, cls: Py<PyAny>, replace: bool) -> PyResult<()> {
    let is_config = check_kind(kind)?;
    let st = state(py)?;
    let old = {
        let mut reg = lock(st);
        match (is_config, replace) {
            (true, true) => {
                let old = reg.unregister_config(key);
                reg.register_config(key, cls).map(|_| old)
            }
            (true, false) => reg.register_config(key, cls).map(|_| None),
            (false, true) => Ok(reg.set_quantizer(key, cls)),
            (false, false) => reg.register_quantizer(key, cls).map(|_| None),
        }
    };
    // The replaced class (if any) is dropped here, outside the lock.
    old.map(|_| ()).map_err(config_err)
}

/// Remove and return the class under `key` (None when there is none; built-in config classes stay).
#[pyfunction]
fn registry_remove(py: Python<'_>, kind: &str, key: &str) -> PyResult<Option<Py<PyAny>>> {
    let is_config = check_kind(kind)?;
    let st = state(py)?;
    let mut reg = lock(st);
    Ok(if is_config { reg.unregister_config(key) } else { reg.unregister_quantizer(key) })
}

/// `[(key, class)]` in order: for configs the built-in classes first.
#[pyfunction]
fn registry_items(py: Python<'_>, kind: &str) -> PyResult<Vec<(String, Py<PyAny>)>> {
    let is_config = check_kind(kind)?;
    let st = state(py)?;
    let reg = lock(st);
    let mut out = Vec::new();
    if is_config {
        for (key, kind, _) in registry::BUILTIN {
            out.push((key.to_string(), config_class(py, *kind).into_any().unbind()));
        }
        out.extend(reg.registered_configs().map(|(k, h)| (k.to_string(), h.clone_ref(py))));
    } else {
        out.extend(reg.quantizers().map(|(k, h)| (k.to_string(), h.clone_ref(py))));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// Configs from dicts and JSON

/// What a dict asks for, resolved by the core: a built-in config object, or a registered config class
/// with its key.
enum Found {
    Builtin(Py<PyAny>, Arc<QuantConfig>),
    Registered(String, Py<PyAny>),
}

fn dispatch_items(py: Python<'_>, items: Vec<(String, Value)>) -> PyResult<Found> {
    // The method rule and the built-in schemas need no registry state: only a method that is not built in
    // is looked up (under the lock) among the registered ones.
    match registry::parse_dict(items).map_err(config_err)? {
        registry::DictOutcome::Parsed(_, parsed) => {
            warn_unknown(py, parsed.config.class_name(), &parsed.unknown_keys)?;
            let own = Arc::new(parsed.config);
            Ok(Found::Builtin(make_config_arc(py, own.clone())?, own))
        }
        registry::DictOutcome::External(name) => {
            let st = state(py)?;
            let reg = lock(st);
            match reg.config_target(&name).map_err(config_err)? {
                registry::ConfigTarget::Registered(h) => Ok(Found::Registered(name, h.clone_ref(py))),
                registry::ConfigTarget::Builtin(_) => unreachable!("parse_dict handles every built-in key"),
            }
        }
    }
}

/// `DiffusersAutoQuantizer.from_dict`: the config object of the method a dict asks for (a registered
/// method's config class builds its own from the same dict).
#[pyfunction]
fn config_from_dict(py: Python<'_>, config_dict: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    match dispatch_items(py, dict_items(config_dict, "quantization_config")?)? {
        Found::Builtin(obj, _) => Ok(obj),
        Found::Registered(_, cls) => Ok(cls.bind(py).call_method1(intern!(py, "from_dict"), (config_dict,))?.unbind()),
    }
}

/// `DiffusersAutoQuantizer.from_json_string`: as `config_from_dict`, the text parsed once.
#[pyfunction]
fn config_from_json(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    let items = json_object(py, text, "quantization_config")?;
    let dict = if registry::resolve_method(&items).is_ok_and(|m| matches!(m, registry::Method::External(_))) {
        Some(value_to_py(py, &Value::Dict(items.clone()), false)?)
    } else {
        None
    };
    match dispatch_items(py, items)? {
        Found::Builtin(obj, _) => Ok(obj),
        Found::Registered(_, cls) => {
            let dict = dict.expect("a registered method is an external one");
            Ok(cls.bind(py).call_method1(intern!(py, "from_dict"), (dict,))?.unbind())
        }
    }
}

/// The method key of a config object: built-in configs know theirs; a registered config class was
/// registered under one; any other `QuantizationConfigMixin` names it in `quant_method`.
fn method_key_of(py: Python<'_>, st: &State, config: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Some(c) = config_of(config) {
        return Ok(c.method_key().to_string());
    }
    let ty = config.get_type();
    if let Some(key) = lock(st).key_of_config(|h| h.bind(py).is(&ty)) {
        return Ok(key.to_string());
    }
    if config.is_instance(st.mixin.bind(py))? {
        let qm = config.getattr_opt(intern!(py, "quant_method"))?;
        return match qm {
            Some(qm) if !qm.is_none() => {
                let v = qm.getattr_opt(intern!(py, "value"))?.unwrap_or(qm);
                Ok(v.str()?.to_string())
            }
            _ => Err(PyValueError::new_err(format!(
                "{} has no quant_method; cannot tell which quantizer it is for",
                ty.qualname()?
            ))),
        };
    }
    Err(PyTypeError::new_err(format!(
        "quantization_config: expected a dict or a quantization config object (BitsAndBytesConfig, \
         GGUFQuantizationConfig, ...), got {}",
        ty.qualname()?
    )))
}

/// The method key of a config object (for `merge_quantization_configs`).
#[pyfunction]
fn method_key(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<String> {
    method_key_of(py, state(py)?, config)
}

/// Raise `ValueError` when two method keys differ (merging configs of different methods).
#[pyfunction]
fn check_mergeable(model_key: &str, args_key: &str) -> PyResult<()> {
    registry::check_mergeable(model_key, args_key).map_err(config_err)
}

// ---------------------------------------------------------------------------------------------------------
// Quantizers

/// Validate the keyword arguments and set `quantization_config`, `pre_quantized` and
/// `modules_to_not_convert` on a new quantizer object.
fn init_quantizer(
    obj: &Bound<'_, PyAny>,
    qclass: &Bound<'_, PyAny>,
    pre_only: bool,
    config: &Bound<'_, PyAny>,
    config_skip: Option<&Vec<String>>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let py = obj.py();
    let items = match kwargs {
        Some(kw) => dict_items(kw.as_any(), "quantizer keyword arguments")?,
        None => Vec::new(),
    };
    let args = match registry::quantizer_args("", &items, config_skip, pre_only) {
        Ok(a) => a,
        // Re-run with the class name only when there is an error to report.
        Err(_) => registry::quantizer_args(&class_name(qclass), &items, config_skip, pre_only).map_err(config_err)?,
    };
    obj.setattr(intern!(py, "quantization_config"), config)?;
    obj.setattr(intern!(py, "pre_quantized"), args.pre_quantized)?;
    obj.setattr(intern!(py, "modules_to_not_convert"), PyList::new(py, args.modules_to_not_convert)?)?;
    Ok(())
}

/// The body of `DiffusersQuantizer.__init__`.
#[pyfunction]
#[pyo3(signature = (quantizer, quantization_config, kwargs=None))]
fn quantizer_init(
    quantizer: &Bound<'_, PyAny>,
    quantization_config: &Bound<'_, PyAny>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let qclass = quantizer.get_type();
    let expected = qclass.getattr("config_class")?;
    if !expected.is_none() && !quantization_config.is_instance(&expected)? {
        return Err(PyTypeError::new_err(format!(
            "{} needs a {}, got {}",
            class_name(qclass.as_any()),
            class_name(&expected),
            quantization_config.get_type().qualname()?
        )));
    }
    let own = config_of(quantization_config);
    let skip = match &own {
        Some(c) => c.skip_modules().cloned(),
        None => match quantization_config.getattr("modules_to_not_convert") {
            Ok(v) if !v.is_none() => match py_to_value(&v, 1)? {
                Value::List(items) => Some(items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()),
                _ => None,
            },
            _ => None,
        },
    };
    let pre_only = pre_quantized_only(qclass.as_any())?;
    init_quantizer(quantizer, qclass.as_any(), pre_only, quantization_config, skip.as_ref(), kwargs)
}

/// `DiffusersAutoQuantizer.from_config`: the quantizer for a config dict or object, any method.
#[pyfunction]
#[pyo3(signature = (_cls, quantization_config, **kwargs))]
fn auto_from_config(
    py: Python<'_>,
    _cls: &Bound<'_, PyAny>,
    quantization_config: &Bound<'_, PyAny>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let st = state(py)?;
    // The config object, its method key, and (for built-in configs) the core's config.
    let (config_obj, key, own): (Py<PyAny>, Cow<'static, str>, Option<Arc<QuantConfig>>) =
        if quantization_config.is_instance_of::<PyDict>() {
            match dispatch_items(py, dict_items(quantization_config, "quantization_config")?)? {
                Found::Builtin(obj, own) => (obj, Cow::Borrowed(own.method_key()), Some(own)),
                Found::Registered(key, cls) => {
                    let obj = cls.bind(py).call_method1(intern!(py, "from_dict"), (quantization_config,))?;
                    (obj.unbind(), Cow::Owned(key), None)
                }
            }
        } else if let Some(own) = config_of(quantization_config) {
            (quantization_config.clone().unbind(), Cow::Borrowed(own.method_key()), Some(own))
        } else {
            let key = method_key_of(py, st, quantization_config)?;
            (quantization_config.clone().unbind(), Cow::Owned(key), None)
        };
    let target = lock(st).quantizer(&key).map(|h| h.clone_ref(py)).map_err(config_err)?;
    let target = target.bind(py);
    match (&own, st.builtin.iter().find(|(b, _)| b.bind(py).is(target))) {
        (Some(own), Some((_, pre_only))) => {
            // A built-in quantizer for a built-in config: built here, without a Python `__init__` call.
            let obj = target.call_method1(intern!(py, "__new__"), (target,))?;
            init_quantizer(&obj, target, *pre_only, config_obj.bind(py), own.skip_modules(), kwargs)?;
            Ok(obj.unbind())
        }
        _ => Ok(target.call((config_obj,), kwargs)?.unbind()),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_set_registry, m)?)?;
    m.add_function(wrap_pyfunction!(registry_add, m)?)?;
    m.add_function(wrap_pyfunction!(registry_remove, m)?)?;
    m.add_function(wrap_pyfunction!(registry_items, m)?)?;
    m.add_function(wrap_pyfunction!(config_from_dict, m)?)?;
    m.add_function(wrap_pyfunction!(config_from_json, m)?)?;
    m.add_function(wrap_pyfunction!(method_key, m)?)?;
    m.add_function(wrap_pyfunction!(check_mergeable, m)?)?;
    m.add_function(wrap_pyfunction!(quantizer_init, m)?)?;
    m.add_function(wrap_pyfunction!(auto_from_config, m)?)?;
    Ok(())
}
