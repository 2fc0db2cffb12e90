//! Method registry and dispatch rules: which config class and quantizer a dict asks for.
//!
//! The rule that decides the method, applied the same way to dicts, JSON and config objects:
//! 1. `load_in_4bit` / `load_in_8bit` truthy → `bitsandbytes_4bit` / `bitsandbytes_8bit`, whatever
//!    `quant_method` says (4-bit is checked first; both set is refused by the bitsandbytes schema).
//! 2. Otherwise `quant_method` decides. `"bitsandbytes_4bit"`/`"bitsandbytes_8bit"` mean what they say;
//!    a plain `"bitsandbytes"` with neither flag is an error, never a silent 4-bit.
//! 3. Methods that are not built in come back as [`Method::External`] for the caller's run-time registry.

use crate::config::error::{wrong_type, ConfigError};
use crate::config::{parse, ConfigKind, Parsed};
use crate::value::Value;

/// The built-in methods: registry key → config class, and the quantizer class name (diffusers' names).
pub const BUILTIN: &[(&str, ConfigKind, &str)] = &[
    ("bitsandbytes_4bit", ConfigKind::BitsAndBytes, "BnB4BitDiffusersQuantizer"),
    ("bitsandbytes_8bit", ConfigKind::BitsAndBytes, "BnB8BitDiffusersQuantizer"),
    ("gguf", ConfigKind::Gguf, "GGUFQuantizer"),
    ("quanto", ConfigKind::Quanto, "QuantoQuantizer"),
    ("torchao", ConfigKind::TorchAo, "TorchAoHfQuantizer"),
    ("modelopt", ConfigKind::ModelOpt, "NVIDIAModelOptQuantizer"),
];

/// What a dict asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Method<'a> {
    Builtin {
        key: &'static str,
        kind: ConfigKind,
    },
    /// A `quant_method` that is not built in (maybe registered at run time by the caller).
    External(&'a str),
}

pub fn builtin(key: &str) -> Option<(&'static str, ConfigKind)> {
    BUILTIN.iter().find(|(k, _, _)| *k == key).map(|(k, kind, _)| (*k, *kind))
}

pub fn builtin_keys() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(k, _, _)| *k)
}

fn get<'a>(items: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Decide the method of a config dict (see the module docs).
pub fn resolve_method(items: &[(String, Value)]) -> Result<Method<'_>, ConfigError> {
    let flag = |k: &str| get(items, k).is_some_and(Value::truthy);
    if flag("load_in_4bit") {
        return Ok(Method::Builtin { key: "bitsandbytes_4bit", kind: ConfigKind::BitsAndBytes });
    }
    if flag("load_in_8bit") {
        return Ok(Method::Builtin { key: "bitsandbytes_8bit", kind: ConfigKind::BitsAndBytes });
    }
    let loc = vec!["quantization_config".to_string(), "quant_method".to_string()];
    let name = match get(items, "quant_method") {
        None | Some(Value::Null) => {
            return Err(ConfigError::value_error(
                loc,
                "quantization_config: no quant_method, and neither load_in_4bit nor load_in_8bit is set; \
                 cannot tell which quantization method this config is for"
                    .into(),
            ))
        }
        Some(Value::Str(s)) => s.as_str(),
        Some(v) => return Err(wrong_type(loc, "a str naming the method", v)),
    };
    if name == "bitsandbytes" {
        return Err(ConfigError::value_error(
            loc,
            "quantization_config: quant_method is 'bitsandbytes' but neither load_in_4bit nor load_in_8bit is True; \
             set one of them (or use quant_method 'bitsandbytes_4bit' / 'bitsandbytes_8bit')"
                .into(),
        ));
    }
    Ok(match builtin(name) {
        Some((key, kind)) => Method::Builtin { key, kind },
        None => Method::External(name),
    })
}

/// What [`parse_dict`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum DictOutcome {
    /// A built-in method: its registry key and the validated config.
    Parsed(&'static str, Parsed),
    /// A `quant_method` that is not built in; the caller's run-time registry may know it.
    External(String),
}

/// Resolve the method of a dict and, when it is built in, validate it (the items move into the config).
pub fn parse_dict(items: Vec<(String, Value)>) -> Result<DictOutcome, ConfigError> {
    match resolve_method(&items)? {
        Method::External(name) => Ok(DictOutcome::External(name.to_string())),
        Method::Builtin { key, kind } => {
            let parsed = parse(kind, items)?;
            // bitsandbytes: the config's own width is authoritative (it reads the flags the same way).
            let key = if kind == ConfigKind::BitsAndBytes { parsed.config.method_key() } else { key };
            Ok(DictOutcome::Parsed(key, parsed))
        }
    }
}

/// The "unknown method" error, listing what is available.
pub fn unknown_method(name: &str, available: &[String]) -> ConfigError {
    ConfigError::value_error(
        vec!["quantization_config".into(), "quant_method".into()],
        format!(
            "quantization_config: unknown quant_method {}; available: {}",
            Value::Str(name.to_string()).short_repr(),
            available.join(", ")
        ),
    )
    .with_type("unknown_method")
    .with_input(&Value::Str(name.to_string()))
}

/// `merge_quantization_configs`: configs of two different methods cannot be merged.
pub fn check_mergeable(model_key: &str, args_key: &str) -> Result<(), ConfigError> {
    if model_key != args_key {
        return Err(ConfigError::value_error(
            vec!["quantization_config".into()],
            format!(
                "the checkpoint is quantized with {model_key:?} but the quantization_config passed in asks for \
                 {args_key:?}; a model cannot be loaded with a different method than it was quantized with \
                 (pass a config of the same method, or none)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn flags_win_over_quant_method() {
        let items = d(&[("quant_method", Value::Str("torchao".into())), ("load_in_4bit", Value::Bool(true))]);
        assert_eq!(
            resolve_method(&items).unwrap(),
            Method::Builtin { key: "bitsandbytes_4bit", kind: ConfigKind::BitsAndBytes }
        );
        let items = d(&[("quant_method", Value::Str("bitsandbytes_8bit".into()))]);
        let DictOutcome::Parsed(key, _) = parse_dict(items).unwrap() else { panic!("built in") };
        assert_eq!(key, "bitsandbytes_8bit");
    }

    #[test]
    fn plain_bitsandbytes_is_refused() {
        let items = d(&[("quant_method", Value::Str("bitsandbytes".into())), ("load_in_4bit", Value::Bool(false))]);
        assert!(resolve_method(&items).is_err());
        assert!(resolve_method(&[]).is_err());
        assert_eq!(
            resolve_method(&d(&[("quant_method", Value::Str("sdnq".into()))])).unwrap(),
            Method::External("sdnq")
        );
    }
}

/// The keyword arguments a quantizer takes (`from_config(cfg, pre_quantized=..., modules_to_not_convert=...)`),
/// validated, with the skip list resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizerArgs {
    pub pre_quantized: bool,
    /// The `modules_to_not_convert` passed in, then the config's own skip list, without repeats. A new list.
    pub modules_to_not_convert: Vec<String>,
}

/// Validate quantizer keyword arguments. `pre_quantized_only` is set for methods that can only load
/// pre-quantized weights (GGUF, calibration-only methods): `pre_quantized=False` is refused for them.
pub fn quantizer_args(
    quantizer: &str,
    kwargs: &[(String, Value)],
    config_skip: Option<&Vec<String>>,
    pre_quantized_only: bool,
) -> Result<QuantizerArgs, ConfigError> {
    let mut pre_quantized = true;
    let mut modules: Vec<String> = Vec::new();
    let mut unexpected: Vec<&str> = Vec::new();
    for (k, v) in kwargs {
        match k.as_str() {
            "pre_quantized" => match v {
                Value::Bool(b) => pre_quantized = *b,
                v => return Err(wrong_type(vec![quantizer.into(), "pre_quantized".into()], "a bool", v)),
            },
            "modules_to_not_convert" => match v {
                Value::Null => {}
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            Value::Str(s) => {
                                if !modules.contains(s) {
                                    modules.push(s.clone())
                                }
                            }
                            v => {
                                return Err(wrong_type(
                                    vec![quantizer.into(), "modules_to_not_convert".into(), format!("[{i}]")],
                                    "a str (a module name)",
                                    v,
                                ))
                            }
                        }
                    }
                }
                Value::Str(s) => {
                    return Err(ConfigError::type_error(
                        vec![quantizer.into(), "modules_to_not_convert".into()],
                        format!("{quantizer}.modules_to_not_convert: expected a list of module names, got the str {s:?}; write [{s:?}]"),
                    ))
                }
                v => {
                    return Err(wrong_type(
                        vec![quantizer.into(), "modules_to_not_convert".into()],
                        "a list of str or None",
                        v,
                    ))
                }
            },
            other => unexpected.push(other),
        }
    }
    if !unexpected.is_empty() {
        return Err(ConfigError::type_error(
            vec![quantizer.into()],
            format!(
                "{quantizer}() got unexpected keyword argument{} {}; accepted: pre_quantized, modules_to_not_convert",
                if unexpected.len() == 1 { "" } else { "s" },
                unexpected.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if !pre_quantized && pre_quantized_only {
        return Err(ConfigError::value_error(
            vec![quantizer.into(), "pre_quantized".into()],
            format!("{quantizer} loads pre-quantized weights only; pre_quantized=False is not supported"),
        ));
    }
    if let Some(skip) = config_skip {
        for s in skip {
            if !modules.contains(s) {
                modules.push(s.clone());
            }
        }
    }
    Ok(QuantizerArgs { pre_quantized, modules_to_not_convert: modules })
}
