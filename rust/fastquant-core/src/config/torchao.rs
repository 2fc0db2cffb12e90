//! `TorchAoConfig`: torchao's `AOBaseConfig`s in their serialized form, plus the legacy string shorthands.
//!
//! A live torchao object is never needed to build or check a config: the serialized form
//! `{"default": {"_type": ..., "_version": N, "_data": {...}}}` is checked structurally, and a shorthand
//! (`"int8wo"`) is mapped to the torchao class it meant, as the same serialized form. Turning either into a
//! torchao object happens in Python, only when a model is quantized.

use super::bnb::str_list;
use super::error::{loc_str, not_allowed, wrong_type, ConfigError};
use super::fields::Fields;
use crate::value::Value;

pub const CLASS: &str = "TorchAoConfig";
pub const POSITIONAL: &[&str] = &["quant_type", "modules_to_not_convert"];

#[derive(Debug, Clone, PartialEq)]
pub enum QuantType {
    /// A legacy string shorthand, kept as written, with its keyword arguments.
    Shorthand { name: String, kwargs: Vec<(String, Value)> },
    /// The serialized `AOBaseConfig` (the value under `"default"`).
    Serialized(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TorchAoConfig {
    pub quant_type: QuantType,
    pub modules_to_not_convert: Option<Vec<String>>,
}

fn dtype_obj(name: &str) -> Value {
    Value::Dict(vec![("_type".into(), Value::Str("torch.dtype".into())), ("_data".into(), Value::Str(name.into()))])
}

fn object(ty: &str, version: i64, data: Vec<(String, Value)>) -> Value {
    Value::Dict(vec![
        ("_type".into(), Value::Str(ty.into())),
        ("_version".into(), Value::Int(version)),
        ("_data".into(), Value::Dict(data)),
    ])
}

/// The shorthands diffusers accepted before it dropped them (docs/compatibility.md, `D-torchao-shorthand`),
/// as (torchao class name, fixed keyword arguments).
pub fn shorthand(name: &str) -> Option<(&'static str, Vec<(String, Value)>)> {
    let e4m3 = || dtype_obj("float8_e4m3fn");
    let e5m2 = || dtype_obj("float8_e5m2");
    let r = match name {
        "int4wo" | "int4_weight_only" => ("Int4WeightOnlyConfig", vec![]),
        "int4dq" | "int8_dynamic_activation_int4_weight" => ("Int8DynamicActivationInt4WeightConfig", vec![]),
        "int8wo" | "int8_weight_only" => ("Int8WeightOnlyConfig", vec![]),
        "int8dq" | "int8_dynamic_activation_int8_weight" => ("Int8DynamicActivationInt8WeightConfig", vec![]),
        "float8wo" | "float8wo_e5m2" => ("Float8WeightOnlyConfig", vec![("weight_dtype".into(), e5m2())]),
        "float8_weight_only" | "float8wo_e4m3" => ("Float8WeightOnlyConfig", vec![("weight_dtype".into(), e4m3())]),
        "float8dq" | "float8_dynamic_activation_float8_weight" | "float8dq_e4m3" => (
            "Float8DynamicActivationFloat8WeightConfig",
            vec![("activation_dtype".into(), e4m3()), ("weight_dtype".into(), e4m3())],
        ),
        "float8dq_e4m3_tensor" | "float8dq_e4m3_row" => {
            let gran = if name.ends_with("tensor") { "PerTensor" } else { "PerRow" };
            (
                "Float8DynamicActivationFloat8WeightConfig",
                vec![
                    ("activation_dtype".into(), e4m3()),
                    ("weight_dtype".into(), e4m3()),
                    ("granularity".into(), object(gran, 1, vec![])),
                ],
            )
        }
        "float8_static_activation_float8_weight" => ("Float8StaticActivationFloat8WeightConfig", vec![]),
        "uintx_weight_only" => ("UIntXWeightOnlyConfig", vec![]),
        _ => {
            if let Some(bits) = name.strip_prefix("uint").and_then(|r| r.strip_suffix("wo")) {
                let b: u32 = bits.parse().ok().filter(|b| (1..=7).contains(b))?;
                return Some(("UIntXWeightOnlyConfig", vec![("dtype".into(), dtype_obj(&format!("uint{b}")))]));
            }
            let (ebits, mbits) = parse_fpx(name)?;
            return Some((
                "FPXWeightOnlyConfig",
                vec![("ebits".into(), Value::Int(ebits)), ("mbits".into(), Value::Int(mbits))],
            ));
        }
    };
    Some(r)
}

/// `fpX` or `fpX_eAmB`, X in 3..=7, X = A + B + 1, A >= 1.
fn parse_fpx(name: &str) -> Option<(i64, i64)> {
    let rest = name.strip_prefix("fp")?;
    let (bits, suffix) = match rest.split_once('_') {
        Some((b, s)) => (b, Some(s)),
        None => (rest, None),
    };
    let bits: i64 = bits.parse().ok().filter(|b| (3..=7).contains(b))?;
    match suffix {
        None => {
            let ebits = bits / 2;
            Some((ebits, bits - 1 - ebits))
        }
        Some(s) => {
            let (e, m) = s.strip_prefix('e')?.split_once('m')?;
            let (e, m): (i64, i64) = (e.parse().ok()?, m.parse().ok()?);
            (e >= 1 && m >= 0 && e.checked_add(m).and_then(|x| x.checked_add(1)) == Some(bits)).then_some((e, m))
        }
    }
}

const SHORTHAND_HELP: &str = "int4wo, int4_weight_only, int4dq, int8wo, int8_weight_only, int8dq, float8wo, \
float8wo_e5m2, float8wo_e4m3, float8_weight_only, float8dq, float8dq_e4m3, float8dq_e4m3_tensor, float8dq_e4m3_row, \
float8_static_activation_float8_weight, uintx_weight_only, uint1wo..uint7wo, fpX, fpX_eAmB (X in 3..7)";

/// A location inside a nested value, built on the stack and rendered only when there is an error.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(&'a [String]),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> Vec<String> {
        match self {
            Path::Root(r) => r.to_vec(),
            Path::Key(p, k) => {
                let mut v = p.render();
                v.push(k.to_string());
                v
            }
            Path::Index(p, i) => {
                let mut v = p.render();
                v.push(format!("[{i}]"));
                v
            }
        }
    }
}

/// Check a serialized torchao object (`{"_type", "_version", "_data"}`), recursively.
fn check_object(v: &Value, path: &Path<'_>, top: bool) -> Result<(), ConfigError> {
    let Value::Dict(items) = v else {
        return Err(wrong_type(path.render(), "a serialized torchao config dict {'_type', '_version', '_data'}", v));
    };
    let sub = |k: &'static str| Path::Key(path, k).render();
    match v.get("_type") {
        Some(Value::Str(s)) if !s.is_empty() => {}
        Some(t) => return Err(wrong_type(sub("_type"), "a non-empty str (the torchao class name)", t)),
        None => {
            let loc = path.render();
            return Err(ConfigError::value_error(
                loc.clone(),
                format!("{}: a serialized torchao object needs a '_type' key", loc_str(&loc)),
            ));
        }
    }
    match v.get("_version") {
        Some(Value::Int(n)) if *n >= 1 => {}
        Some(Value::Int(n)) => return Err(not_allowed(sub("_version"), &Value::Int(*n), "an int >= 1")),
        Some(t) => return Err(wrong_type(sub("_version"), "an int", t)),
        None if top => {
            let loc = path.render();
            return Err(ConfigError::value_error(
                loc.clone(),
                format!("{}: a serialized torchao config needs '_version' (torchao writes 2)", loc_str(&loc)),
            ));
        }
        None => {}
    }
    match v.get("_data") {
        None => {
            let loc = path.render();
            return Err(ConfigError::value_error(
                loc.clone(),
                format!("{}: a serialized torchao object needs a '_data' key", loc_str(&loc)),
            ));
        }
        Some(d) if top && !matches!(d, Value::Dict(_)) => {
            return Err(wrong_type(sub("_data"), "a dict of the config's fields", d))
        }
        Some(d) => check_nested(d, &Path::Key(path, "_data"))?,
    }
    if let Some((k, _)) = items.iter().find(|(k, _)| !matches!(k.as_str(), "_type" | "_version" | "_data")) {
        let loc = Path::Key(path, k).render();
        return Err(ConfigError::value_error(
            loc.clone(),
            format!(
                "{}: unexpected key in a serialized torchao object (allowed: _type, _version, _data)",
                loc_str(&loc)
            ),
        ));
    }
    Ok(())
}

fn check_nested(v: &Value, path: &Path<'_>) -> Result<(), ConfigError> {
    match v {
        Value::Dict(items) => {
            if v.get("_type").is_some() {
                return check_object(v, path, false);
            }
            for (k, item) in items {
                check_nested(item, &Path::Key(path, k))?;
            }
            Ok(())
        }
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                check_nested(item, &Path::Index(path, i))?;
            }
            Ok(())
        }
        Value::Opaque(_) => {
            Err(wrong_type(path.render(), "JSON-like data (str, int, float, bool, None, list, dict)", v))
        }
        _ => Ok(()),
    }
}

impl TorchAoConfig {
    /// `quant_type` is passed by value (moved out of the dict by the caller).
    pub fn parse(f: &mut Fields<'_>, quant_type: Option<Value>) -> Result<Self, ConfigError> {
        let loc = f.loc("quant_type");
        let kwargs = match f.get_some("quant_type_kwargs") {
            None => None,
            Some(Value::Dict(items)) => Some(items.clone()),
            Some(v) => {
                f.report(wrong_type(f.loc("quant_type_kwargs"), "a dict of keyword arguments", v));
                None
            }
        };
        let fr: &Fields<'_> = f;
        let quant_type = (|| -> Result<QuantType, ConfigError> {
            let f = fr;
            Ok(match quant_type {
            None | Some(Value::Null) => {
                return Err(ConfigError::type_error(
                    loc.clone(),
                    format!(
                        "{}: missing required argument: a serialized torchao config {{'default': {{'_type': ..., '_version': 2, '_data': {{...}}}}}}, a torchao config object, or a shorthand such as 'int8wo'",
                        loc_str(&loc)
                    ),
                ))
            }
            Some(Value::Str(s)) => {
                if shorthand(&s).is_none() {
                    return Err(not_allowed(loc, &Value::Str(s), SHORTHAND_HELP));
                }
                QuantType::Shorthand { name: s, kwargs: kwargs.clone().unwrap_or_default() }
            }
            Some(v @ Value::Dict(_)) => {
                let inner = if v.get("_type").is_some() {
                    // A bare serialized object (what torchao's config_to_dict returns).
                    check_object(&v, &Path::Root(&loc), true)?;
                    v
                } else {
                    let Value::Dict(mut items) = v else { unreachable!("matched a dict") };
                    if items.len() != 1 || items[0].0 != "default" {
                        let keys: Vec<_> = items.iter().map(|(k, _)| format!("{k:?}")).collect();
                        return Err(ConfigError::value_error(
                            loc.clone(),
                            format!(
                                "{}: a serialized torchao config has exactly one key, 'default'; got keys [{}]",
                                loc_str(&loc),
                                keys.join(", ")
                            ),
                        ));
                    }
                    let root = Path::Root(&loc);
                    check_object(&items[0].1, &Path::Key(&root, "default"), true)?;
                    items.swap_remove(0).1
                };
                if kwargs.as_ref().is_some_and(|k| !k.is_empty()) {
                    let l = f.loc("quant_type_kwargs");
                    return Err(ConfigError::value_error(
                        l.clone(),
                        format!("{}: keyword arguments apply only to string shorthands; put them in '_data'", loc_str(&l)),
                    ));
                }
                QuantType::Serialized(inner)
            }
            Some(v) => {
                return Err(wrong_type(
                    loc,
                    "a serialized torchao config dict, a torchao config object, or a shorthand str such as 'int8wo'",
                    &v,
                ))
            }
        })
        })();
        // A refused quant_type is reported; the placeholder never leaves `parse` (the errors do).
        let quant_type = f.or(quant_type, QuantType::Shorthand { name: String::new(), kwargs: Vec::new() });
        Ok(TorchAoConfig { quant_type, modules_to_not_convert: f.opt_str_list("modules_to_not_convert") })
    }

    /// The torchao class this config asks for (`"Int8WeightOnlyConfig"`).
    pub fn class_name(&self) -> String {
        match &self.quant_type {
            QuantType::Shorthand { name, .. } => shorthand(name).map(|(c, _)| c.to_string()).unwrap_or_default(),
            QuantType::Serialized(v) => v.get("_type").and_then(Value::as_str).unwrap_or_default().to_string(),
        }
    }

    /// The serialized torchao object to build at quantization time: shorthands are expanded (their
    /// keyword arguments override the fixed ones).
    pub fn resolved(&self) -> Value {
        match &self.quant_type {
            QuantType::Serialized(v) => v.clone(),
            QuantType::Shorthand { name, kwargs } => {
                let (class, mut data) = shorthand(name).unwrap_or(("", vec![]));
                for (k, v) in kwargs {
                    if let Some(slot) = data.iter_mut().find(|(dk, _)| dk == k) {
                        slot.1 = v.clone();
                    } else {
                        data.push((k.clone(), v.clone()));
                    }
                }
                object(class, 2, data)
            }
        }
    }

    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::with_capacity(3);
        match &self.quant_type {
            QuantType::Shorthand { name, kwargs } => {
                out.push(("quant_type", Value::Str(name.clone())));
                out.push(("quant_type_kwargs", Value::Dict(kwargs.clone())));
            }
            QuantType::Serialized(v) => {
                out.push(("quant_type", Value::Dict(vec![("default".into(), v.clone())])));
            }
        }
        out.push(("modules_to_not_convert", str_list(&self.modules_to_not_convert)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpx_names() {
        assert_eq!(parse_fpx("fp6_e3m2"), Some((3, 2)));
        assert_eq!(parse_fpx("fp4"), Some((2, 1)));
        assert_eq!(parse_fpx("fp3_e1m1"), Some((1, 1)));
        assert_eq!(parse_fpx("fp3_e2m0"), Some((2, 0)));
        assert_eq!(parse_fpx("fp6_e3m3"), None);
        assert_eq!(parse_fpx("fp8_e4m3"), None);
        assert_eq!(parse_fpx("fp2"), None);
        assert_eq!(parse_fpx("fp5_e9223372036854775807m0"), None);
    }

    #[test]
    fn shorthands_map_to_classes() {
        assert_eq!(shorthand("int8wo").unwrap().0, "Int8WeightOnlyConfig");
        assert_eq!(shorthand("uint4wo").unwrap().0, "UIntXWeightOnlyConfig");
        assert!(shorthand("uint8wo").is_none());
        assert!(shorthand("int3wo").is_none());
    }
}
