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
// One value per dispatch, consumed at once: boxing the large variant would allocate on every call.
#[allow(clippy::large_enum_variant)]
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

/// The run-time method registry: which config class and which quantizer serve each method key, for the
/// built-in methods and for those a host registers at run time (`register_quantization_config` /
/// `register_quantizer` in Python). Generic over the host's handle `H` (the Python binding stores class
/// objects); built-in config classes are [`ConfigKind`]s and need no handle. The host supplies the built-in
/// quantizers' handles with [`Registry::set_quantizer`].
#[derive(Debug, Clone)]
pub struct Registry<H> {
    /// Config classes registered at run time, in registration order.
    configs: Vec<(String, H)>,
    /// Quantizers by method key (built-in keys included once the host has supplied them).
    quantizers: Vec<(String, H)>,
}

impl<H> Default for Registry<H> {
    fn default() -> Self {
        Registry { configs: Vec::new(), quantizers: Vec::new() }
    }
}

/// Which config class a method key names.
#[derive(Debug, PartialEq)]
pub enum ConfigTarget<'r, H> {
    Builtin(ConfigKind),
    Registered(&'r H),
}

/// What [`Registry::dispatch_dict`] found for a config dict.
// The parsed config moves out at once; boxing it would cost an allocation on every dispatch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Dispatch<'r, H> {
    /// A built-in method: its registry key and the validated config.
    Parsed(&'static str, Parsed),
    /// A method registered at run time: its key and the config class that builds it.
    Registered(String, &'r H),
}

fn already_registered(what: &str, key: &str) -> ConfigError {
    ConfigError::value_error(
        vec!["quantization_config".into(), "quant_method".into()],
        format!("a {what} is already registered for quant_method {}", Value::Str(key.into()).short_repr()),
    )
    .with_type("already_registered")
    .with_input(&Value::Str(key.into()))
}

impl<H> Registry<H> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a config class for a new method key (built-in keys and registered ones are refused).
    pub fn register_config(&mut self, key: &str, handle: H) -> Result<(), ConfigError> {
        if builtin(key).is_some() || self.configs.iter().any(|(k, _)| k == key) {
            return Err(already_registered("config", key));
        }
        self.configs.push((key.to_string(), handle));
        Ok(())
    }

    /// Register a quantizer for a method key that has none yet.
    pub fn register_quantizer(&mut self, key: &str, handle: H) -> Result<(), ConfigError> {
        if self.quantizers.iter().any(|(k, _)| k == key) {
            return Err(already_registered("quantizer", key));
        }
        self.quantizers.push((key.to_string(), handle));
        Ok(())
    }

    /// Set (or replace) the quantizer of a key, e.g. a built-in one. Returns the one it replaced.
    pub fn set_quantizer(&mut self, key: &str, handle: H) -> Option<H> {
        match self.quantizers.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => Some(std::mem::replace(&mut slot.1, handle)),
            None => {
                self.quantizers.push((key.to_string(), handle));
                None
            }
        }
    }

    /// Remove a registered config class (built-in ones cannot be removed: `None`).
    pub fn unregister_config(&mut self, key: &str) -> Option<H> {
        let i = self.configs.iter().position(|(k, _)| k == key)?;
        Some(self.configs.remove(i).1)
    }

    pub fn unregister_quantizer(&mut self, key: &str) -> Option<H> {
        let i = self.quantizers.iter().position(|(k, _)| k == key)?;
        Some(self.quantizers.remove(i).1)
    }

    /// The keys that have a config class: built-in ones first, then registered ones in order.
    pub fn config_keys(&self) -> Vec<&str> {
        let registered = self.configs.iter().map(|(k, _)| k.as_str());
        builtin_keys().map(|k| -> &str { k }).chain(registered).collect()
    }

    /// The registered config classes (built-in ones are [`ConfigKind`]s, see [`BUILTIN`]).
    pub fn registered_configs(&self) -> impl Iterator<Item = (&str, &H)> {
        self.configs.iter().map(|(k, h)| (k.as_str(), h))
    }

    pub fn quantizers(&self) -> impl Iterator<Item = (&str, &H)> {
        self.quantizers.iter().map(|(k, h)| (k.as_str(), h))
    }

    /// Method keys that have both a config class and a quantizer, sorted (what "available" lists).
    pub fn available(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .config_keys()
            .into_iter()
            .filter(|k| self.quantizers.iter().any(|(q, _)| q == k))
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    /// The config class of a key, or the unknown-method error.
    pub fn config_target(&self, key: &str) -> Result<ConfigTarget<'_, H>, ConfigError> {
        if let Some((_, kind)) = builtin(key) {
            return Ok(ConfigTarget::Builtin(kind));
        }
        match self.configs.iter().find(|(k, _)| k == key) {
            Some((_, h)) => Ok(ConfigTarget::Registered(h)),
            None => Err(unknown_method(key, &self.available())),
        }
    }

    /// The quantizer of a key, or the unknown-method error.
    pub fn quantizer(&self, key: &str) -> Result<&H, ConfigError> {
        match self.quantizers.iter().find(|(k, _)| k == key) {
            Some((_, h)) => Ok(h),
            None => Err(unknown_method(key, &self.available())),
        }
    }

    /// The key a registered config class was registered under (`is_it` tells the handles apart).
    pub fn key_of_config(&self, is_it: impl Fn(&H) -> bool) -> Option<&str> {
        self.configs.iter().find(|(_, h)| is_it(h)).map(|(k, _)| k.as_str())
    }

    /// The whole dict dispatch: the method rule (module docs), then a built-in method's validated config,
    /// or the registered config class of another method, or the unknown-method error.
    pub fn dispatch_dict(&self, items: Vec<(String, Value)>) -> Result<Dispatch<'_, H>, ConfigError> {
        match parse_dict(items)? {
            DictOutcome::Parsed(key, parsed) => Ok(Dispatch::Parsed(key, parsed)),
            DictOutcome::External(name) => match self.config_target(&name)? {
                ConfigTarget::Registered(h) => Ok(Dispatch::Registered(name, h)),
                ConfigTarget::Builtin(_) => unreachable!("parse_dict handles every built-in key"),
            },
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
    fn run_time_registry_dispatches_and_refuses_duplicates() {
        let mut r: Registry<&'static str> = Registry::new();
        for (k, _, q) in BUILTIN {
            r.set_quantizer(k, q);
        }
        assert_eq!(r.available(), ["bitsandbytes_4bit", "bitsandbytes_8bit", "gguf", "modelopt", "quanto", "torchao"]);
        r.register_config("sdnq", "SdnqConfig").unwrap();
        assert_eq!(r.register_config("gguf", "X").unwrap_err().type_, "already_registered");
        assert!(r.register_config("sdnq", "Y").is_err());
        // A config class without a quantizer is not available yet, but dicts of it still build configs.
        assert!(!r.available().contains(&"sdnq".to_string()));
        let items = d(&[("quant_method", Value::Str("sdnq".into()))]);
        assert_eq!(r.dispatch_dict(items).unwrap(), Dispatch::Registered("sdnq".into(), &"SdnqConfig"));
        r.register_quantizer("sdnq", "SdnqQuantizer").unwrap();
        assert!(r.register_quantizer("sdnq", "Z").is_err());
        assert_eq!(r.quantizer("sdnq"), Ok(&"SdnqQuantizer"));
        assert_eq!(r.key_of_config(|h| *h == "SdnqConfig"), Some("sdnq"));
        let e = r.dispatch_dict(d(&[("quant_method", Value::Str("nope".into()))])).unwrap_err();
        assert_eq!(e.type_, "unknown_method");
        assert!(e.message.contains("sdnq") && e.message.contains("gguf"), "{}", e.message);
        assert!(matches!(
            r.dispatch_dict(d(&[("load_in_8bit", Value::Bool(true))])).unwrap(),
            Dispatch::Parsed("bitsandbytes_8bit", _)
        ));
        assert_eq!(r.unregister_config("sdnq"), Some("SdnqConfig"));
        assert_eq!(r.unregister_config("gguf"), None, "built-in configs stay");
        assert!(r.quantizer("nope").is_err());
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
