//! Quantization-config schema, parsing and validation.
//!
//! Configs arrive as dicts (a checkpoint's `quantization_config`), as keyword arguments, or as JSON text.
//! Each class has a schema ([`bnb`], [`gguf`], [`quanto`], [`torchao`], [`modelopt`]) written with the
//! [`fields::Fields`] reader. Parsing returns the typed config and the keys it did not know (the caller
//! warns about those once). Field names, defaults and dict layouts follow diffusers so that existing
//! `config.json` files work; where diffusers silently misreads input, fastquant refuses it
//! (docs/compatibility.md lists every difference).

pub mod bnb;
pub mod error;
pub mod fields;
pub mod gguf;
pub mod modelopt;
pub mod quanto;
pub mod torchao;

pub use bnb::BnbConfig;
pub use error::{ConfigError, ErrorKind};
pub use gguf::GgufConfig;
pub use modelopt::ModelOptConfig;
pub use quanto::QuantoConfig;
pub use torchao::TorchAoConfig;

use crate::value::Value;
use fields::Fields;

/// The config classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    BitsAndBytes,
    Gguf,
    Quanto,
    TorchAo,
    ModelOpt,
}

pub const ALL_KINDS: [ConfigKind; 5] =
    [ConfigKind::BitsAndBytes, ConfigKind::Gguf, ConfigKind::Quanto, ConfigKind::TorchAo, ConfigKind::ModelOpt];

impl ConfigKind {
    pub fn class_name(self) -> &'static str {
        match self {
            ConfigKind::BitsAndBytes => bnb::CLASS,
            ConfigKind::Gguf => gguf::CLASS,
            ConfigKind::Quanto => quanto::CLASS,
            ConfigKind::TorchAo => torchao::CLASS,
            ConfigKind::ModelOpt => modelopt::CLASS,
        }
    }

    /// The `quant_method` value the class writes (`QuantizationMethod`).
    pub fn quant_method(self) -> &'static str {
        match self {
            ConfigKind::BitsAndBytes => "bitsandbytes",
            ConfigKind::Gguf => "gguf",
            ConfigKind::Quanto => "quanto",
            ConfigKind::TorchAo => "torchao",
            ConfigKind::ModelOpt => "modelopt",
        }
    }

    /// Names of the constructor's parameters, in positional order (as diffusers declares them). The binding's
    /// constructors declare these names, checked against this list at compile time.
    pub const fn positional(self) -> &'static [&'static str] {
        match self {
            ConfigKind::BitsAndBytes => bnb::POSITIONAL,
            ConfigKind::Gguf => gguf::POSITIONAL,
            ConfigKind::Quanto => quanto::POSITIONAL,
            ConfigKind::TorchAo => torchao::POSITIONAL,
            ConfigKind::ModelOpt => modelopt::POSITIONAL,
        }
    }

    pub fn from_class_name(name: &str) -> Option<ConfigKind> {
        ALL_KINDS.iter().copied().find(|k| k.class_name() == name)
    }

    /// Keys that may appear in a dict of this class without being fields of it.
    fn known_extra(self) -> &'static [&'static str] {
        match self {
            // bnb reads quant_method itself (it may name the bit width).
            ConfigKind::BitsAndBytes => &[],
            _ => &["quant_method"],
        }
    }
}

/// A validated config.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantConfig {
    BitsAndBytes(BnbConfig),
    Gguf(GgufConfig),
    Quanto(QuantoConfig),
    TorchAo(TorchAoConfig),
    ModelOpt(ModelOptConfig),
}

/// The result of parsing: the config and the keys that were not recognised, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub config: QuantConfig,
    pub unknown_keys: Vec<String>,
}

/// Validate the keys of a dict as a config of class `kind`. Takes the items by value so that large
/// free-form payloads (a serialized torchao config, a ModelOpt config dict) move into the config uncopied.
pub fn parse(kind: ConfigKind, mut items: Vec<(String, Value)>) -> Result<Parsed, ConfigError> {
    let payload_key = match kind {
        ConfigKind::TorchAo => Some("quant_type"),
        ConfigKind::ModelOpt => Some("modelopt_config"),
        _ => None,
    };
    let payload = payload_key.and_then(|key| {
        let idx = items.iter().position(|(k, _)| k == key)?;
        Some(items.remove(idx).1)
    });
    let items = &items[..];
    let mut f = Fields::new(kind.class_name(), items, kind.known_extra());
    if kind != ConfigKind::BitsAndBytes {
        let r = check_quant_method(&mut f, kind);
        f.or(r, ());
    }
    let config = match kind {
        ConfigKind::BitsAndBytes => BnbConfig::parse(&mut f).map(QuantConfig::BitsAndBytes),
        ConfigKind::Gguf => GgufConfig::parse(&mut f).map(QuantConfig::Gguf),
        ConfigKind::Quanto => QuantoConfig::parse(&mut f).map(QuantConfig::Quanto),
        ConfigKind::TorchAo => TorchAoConfig::parse(&mut f, payload).map(QuantConfig::TorchAo),
        ConfigKind::ModelOpt => ModelOptConfig::parse(&mut f, payload).map(QuantConfig::ModelOpt),
    };
    // Every problem the schema found, in order (a schema may also stop with one of its own).
    let mut errors = f.take_errors();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            errors.push(e);
            return Err(ConfigError::combine(errors).expect("at least one error"));
        }
    };
    if let Some(e) = ConfigError::combine(errors) {
        return Err(e);
    }
    Ok(Parsed { config, unknown_keys: f.unknown_keys() })
}

/// `from_dict(d, **kwargs)`: keyword arguments replace the dict's keys (in place) or are added after them.
pub fn merge_overrides(items: &mut Vec<(String, Value)>, overrides: Vec<(String, Value)>) {
    for (k, v) in overrides {
        match items.iter_mut().find(|(ik, _)| *ik == k) {
            Some(slot) => slot.1 = v,
            None => items.push((k, v)),
        }
    }
}

/// A `quant_method` key given to a class must name that class's method.
fn check_quant_method(f: &mut Fields<'_>, kind: ConfigKind) -> Result<(), ConfigError> {
    match f.get("quant_method") {
        None => Ok(()),
        Some(Value::Str(s)) if s == kind.quant_method() => Ok(()),
        Some(v @ Value::Str(_)) => {
            Err(error::not_allowed(f.loc("quant_method"), v, &format!("'{}'", kind.quant_method())))
        }
        Some(v) => Err(error::wrong_type(f.loc("quant_method"), "a str", v)),
    }
}

/// Parse JSON text as a dict of class `kind`.
pub fn parse_json(kind: ConfigKind, text: &str) -> Result<Parsed, ConfigError> {
    match crate::value::parse_json(text) {
        Ok(Value::Dict(items)) => parse(kind, items),
        Ok(v) => Err(error::wrong_type(vec![kind.class_name().into()], "a JSON object", &v)),
        Err(e) => Err(ConfigError::value_error(vec![kind.class_name().into()], format!("{}: {e}", kind.class_name()))),
    }
}

impl QuantConfig {
    pub fn kind(&self) -> ConfigKind {
        match self {
            QuantConfig::BitsAndBytes(_) => ConfigKind::BitsAndBytes,
            QuantConfig::Gguf(_) => ConfigKind::Gguf,
            QuantConfig::Quanto(_) => ConfigKind::Quanto,
            QuantConfig::TorchAo(_) => ConfigKind::TorchAo,
            QuantConfig::ModelOpt(_) => ConfigKind::ModelOpt,
        }
    }

    pub fn class_name(&self) -> &'static str {
        self.kind().class_name()
    }

    pub fn quant_method(&self) -> &'static str {
        self.kind().quant_method()
    }

    /// The registry key that picks the quantizer (`"bitsandbytes_4bit"`, `"gguf"`, ...).
    pub fn method_key(&self) -> &'static str {
        match self {
            QuantConfig::BitsAndBytes(b) => b.method_key(),
            other => other.quant_method(),
        }
    }

    /// The config's fields as attributes: name → value (dtypes as [`Value::Dtype`]), without `quant_method`.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        match self {
            QuantConfig::BitsAndBytes(c) => c.fields(),
            QuantConfig::Gguf(c) => c.fields(),
            QuantConfig::Quanto(c) => c.fields(),
            QuantConfig::TorchAo(c) => c.fields(),
            QuantConfig::ModelOpt(c) => c.fields(),
        }
    }

    /// The modules to leave unquantized, as the config names them (`llm_int8_skip_modules` for
    /// bitsandbytes, `modules_to_not_convert` otherwise).
    pub fn skip_modules(&self) -> Option<&Vec<String>> {
        match self {
            QuantConfig::BitsAndBytes(c) => c.llm_int8_skip_modules.as_ref(),
            QuantConfig::Gguf(c) => c.modules_to_not_convert.as_ref(),
            QuantConfig::Quanto(c) => c.modules_to_not_convert.as_ref(),
            QuantConfig::TorchAo(c) => c.modules_to_not_convert.as_ref(),
            QuantConfig::ModelOpt(c) => c.modules_to_not_convert.as_ref(),
        }
    }

    /// One attribute by name.
    pub fn field(&self, name: &str) -> Option<Value> {
        if name == "quant_method" {
            return Some(Value::Str(self.quant_method().into()));
        }
        self.fields().into_iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The dict form (`to_dict()`): `quant_method` first, dtypes as name strings. A ModelOpt
    /// `forward_loop` is included only when set (it is a callable, not data).
    pub fn to_dict(&self) -> Value {
        let mut items = vec![("quant_method".to_string(), Value::Str(self.quant_method().into()))];
        for (k, v) in self.fields() {
            let v = match v {
                Value::Dtype(d) => Value::Str(d),
                Value::Null if k == "forward_loop" => continue,
                v => v,
            };
            items.push((k.to_string(), v));
        }
        Value::Dict(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn bnb_flags_and_method() {
        let p =
            parse(ConfigKind::BitsAndBytes, dict(&[("quant_method", Value::Str("bitsandbytes_8bit".into()))])).unwrap();
        assert_eq!(p.config.method_key(), "bitsandbytes_8bit");
        let e = parse(ConfigKind::BitsAndBytes, vec![]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Value);
        assert!(e.message.contains("neither load_in_4bit nor load_in_8bit"));
        let e = parse(
            ConfigKind::BitsAndBytes,
            dict(&[("load_in_4bit", Value::Bool(true)), ("bnb_4bit_quant_type", Value::Str("nf5".into()))]),
        )
        .unwrap_err();
        assert!(
            e.message.contains("bnb_4bit_quant_type") && e.message.contains("'nf5'") && e.message.contains("nf4"),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_location_type_and_input() {
        let e = parse(
            ConfigKind::BitsAndBytes,
            dict(&[
                ("load_in_4bit", Value::Bool(true)),
                ("llm_int8_threshold", Value::Str("high".into())),
                ("bnb_4bit_quant_type", Value::Str("nf5".into())),
                ("llm_int8_skip_modules", Value::List(vec![Value::Str("a".into()), Value::Int(3)])),
            ]),
        )
        .unwrap_err();
        let all: Vec<_> = e.errors().map(|e| (e.loc.join("/"), e.type_, e.input.as_deref().cloned())).collect();
        assert_eq!(
            all,
            vec![
                ("BitsAndBytesConfig/llm_int8_threshold".into(), "wrong_type", Some(Value::Str("high".into()))),
                ("BitsAndBytesConfig/llm_int8_skip_modules/[1]".into(), "wrong_type", Some(Value::Int(3))),
                ("BitsAndBytesConfig/bnb_4bit_quant_type".into(), "not_allowed", Some(Value::Str("nf5".into()))),
            ]
        );
        assert_eq!(e.kind, ErrorKind::Type, "the first problem decides the kind");
        assert_eq!(e.msg(), "expected a float, got 'high' (str)");
        let text = e.to_string();
        assert!(text.starts_with("BitsAndBytesConfig.llm_int8_threshold: expected a float"), "{text}");
        assert!(text.contains("(2 more problems in the same config:)") && text.contains("'nf5' is not allowed"));
        // One problem: the message alone, as before.
        let e = parse(ConfigKind::Quanto, dict(&[("weights_dtype", Value::Str("int3".into()))])).unwrap_err();
        assert!(e.also.is_empty());
        assert_eq!(e.to_string(), e.message);
        // A refused flag does not also count as "no width chosen".
        let e = parse(ConfigKind::BitsAndBytes, dict(&[("load_in_4bit", Value::Str("yes".into()))])).unwrap_err();
        assert_eq!(e.errors().count(), 1);
        // ModelOpt: the steps each report.
        let e = parse(
            ConfigKind::ModelOpt,
            dict(&[
                ("quant_type", Value::Str("FP9".into())),
                ("block_quantize", Value::Int(0)),
                ("algorithm", Value::Int(1)),
            ]),
        )
        .unwrap_err();
        let locs: Vec<_> = e.errors().map(|e| e.loc[1].clone()).collect();
        assert_eq!(locs, ["quant_type", "block_quantize", "algorithm"]);
    }

    #[test]
    fn overrides_replace_or_append() {
        let mut items = dict(&[("a", Value::Int(1)), ("b", Value::Int(2))]);
        merge_overrides(&mut items, dict(&[("b", Value::Int(3)), ("c", Value::Int(4))]));
        assert_eq!(items, dict(&[("a", Value::Int(1)), ("b", Value::Int(3)), ("c", Value::Int(4))]));
    }

    #[test]
    fn round_trip_through_dict() {
        let p = parse(
            ConfigKind::BitsAndBytes,
            dict(&[
                ("load_in_4bit", Value::Bool(true)),
                ("bnb_4bit_compute_dtype", Value::Dtype("bfloat16".into())),
                ("llm_int8_skip_modules", Value::List(vec![Value::Str("proj_out".into())])),
            ]),
        )
        .unwrap();
        let Value::Dict(items) = p.config.to_dict() else { panic!() };
        let again = parse(ConfigKind::BitsAndBytes, items).unwrap();
        assert_eq!(again.config, p.config);
        assert!(again.unknown_keys.is_empty());
    }

    #[test]
    fn unknown_keys_are_reported() {
        let p = parse(
            ConfigKind::Quanto,
            dict(&[("weights_dtype", Value::Str("int4".into())), ("wieghts", Value::Int(1))]),
        )
        .unwrap();
        assert_eq!(p.unknown_keys, vec!["wieghts".to_string()]);
    }

    #[test]
    fn modelopt_quant_types() {
        for ok in ["FP8", "nvfp4", "INT4_FP8", "NF4_INT8"] {
            parse(ConfigKind::ModelOpt, dict(&[("quant_type", Value::Str(ok.into()))])).unwrap();
        }
        for bad in ["FP9", "FP8_INT8_INT4", "", "W_A"] {
            let e = parse(ConfigKind::ModelOpt, dict(&[("quant_type", Value::Str(bad.into()))])).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Value, "{bad}");
        }
    }

    #[test]
    fn torchao_structure() {
        let good = crate::value::parse_json(
            r#"{"quant_type": {"default": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"group_size": null}}}}"#,
        )
        .unwrap();
        let Value::Dict(items) = good else { panic!() };
        let p = parse(ConfigKind::TorchAo, items).unwrap();
        let QuantConfig::TorchAo(t) = &p.config else { panic!() };
        assert_eq!(t.class_name(), "Int8WeightOnlyConfig");
        for bad in [
            r#"{"quant_type": {"default": {"_type": "X", "_data": {}}}}"#,
            r#"{"quant_type": {"a": {}, "default": {}}}"#,
            r#"{"quant_type": {"default": {"_type": 3, "_version": 2, "_data": {}}}}"#,
            r#"{"quant_type": "int9wo"}"#,
            r#"{"quant_type": 5}"#,
        ] {
            let Value::Dict(items) = crate::value::parse_json(bad).unwrap() else { panic!() };
            assert!(parse(ConfigKind::TorchAo, items).is_err(), "{bad}");
        }
    }
}
