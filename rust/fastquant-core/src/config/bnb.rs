//! `BitsAndBytesConfig`: bitsandbytes 4-bit (fp4/nf4) and 8-bit (LLM.int8).

use super::error::{loc_str, not_allowed, wrong_type, ConfigError};
use super::fields::{Fields, FLOAT_DTYPES};
use crate::value::Value;

pub const CLASS: &str = "BitsAndBytesConfig";
pub const QUANT_TYPES: &[&str] = &["fp4", "nf4"];
pub const STORAGE_DTYPES: &[&str] = &["float16", "float32", "int8", "uint8", "float64", "bfloat16"];
/// Positional order of diffusers' `BitsAndBytesConfig.__init__`.
pub const POSITIONAL: &[&str] = &[
    "load_in_8bit",
    "load_in_4bit",
    "llm_int8_threshold",
    "llm_int8_skip_modules",
    "llm_int8_enable_fp32_cpu_offload",
    "llm_int8_has_fp16_weight",
    "bnb_4bit_compute_dtype",
    "bnb_4bit_quant_type",
    "bnb_4bit_use_double_quant",
    "bnb_4bit_quant_storage",
];

#[derive(Debug, Clone, PartialEq)]
pub struct BnbConfig {
    pub load_in_8bit: bool,
    pub load_in_4bit: bool,
    pub llm_int8_threshold: f64,
    pub llm_int8_skip_modules: Option<Vec<String>>,
    pub llm_int8_enable_fp32_cpu_offload: bool,
    pub llm_int8_has_fp16_weight: bool,
    pub bnb_4bit_compute_dtype: &'static str,
    pub bnb_4bit_quant_type: &'static str,
    pub bnb_4bit_use_double_quant: bool,
    pub bnb_4bit_quant_storage: &'static str,
}

impl BnbConfig {
    pub fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let errors_before = f.error_count();
        let mut load_in_8bit = f.bool("load_in_8bit", false);
        let mut load_in_4bit = f.bool("load_in_4bit", false);
        // diffusers' to_dict() also writes the private `_load_in_*` attributes; accept them when they agree.
        for (private, public, value) in
            [("_load_in_8bit", "load_in_8bit", &mut load_in_8bit), ("_load_in_4bit", "load_in_4bit", &mut load_in_4bit)]
        {
            if let Some(v) = f.get(private) {
                let b = match v {
                    Value::Bool(b) => *b,
                    v => {
                        f.report(wrong_type(f.loc(private), "a bool (True or False)", v));
                        continue;
                    }
                };
                if f.get(public).is_some() && b != *value {
                    let loc = f.loc(private);
                    let message = format!("{}: {} contradicts {public}={}", loc_str(&loc), py_bool(b), py_bool(*value));
                    f.report(ConfigError::value_error(loc, message).with_input(v));
                    continue;
                }
                *value = b;
            }
        }
        // `quant_method` may name the bit width; the flags win when set.
        if let Some(v) = f.get("quant_method") {
            if !load_in_4bit && !load_in_8bit {
                match v.as_str() {
                    Some("bitsandbytes_8bit") => load_in_8bit = true,
                    Some("bitsandbytes_4bit") => load_in_4bit = true,
                    Some("bitsandbytes") => {}
                    Some(_) => f.report(not_allowed(
                        f.loc("quant_method"),
                        v,
                        "bitsandbytes, bitsandbytes_4bit, bitsandbytes_8bit",
                    )),
                    None => f.report(wrong_type(f.loc("quant_method"), "a str", v)),
                }
            }
        }
        // A flag that was refused above says nothing about the width: do not add a second error for it.
        let flags_valid = f.error_count() == errors_before;
        if flags_valid && load_in_4bit && load_in_8bit {
            f.report(ConfigError::value_error(
                vec![CLASS.into(), "load_in_4bit".into()],
                format!("{CLASS}: load_in_4bit and load_in_8bit are both True; choose one"),
            ));
        }
        if flags_valid && !load_in_4bit && !load_in_8bit {
            f.report(
                ConfigError::value_error(
                    vec![CLASS.into(), "load_in_4bit".into()],
                    format!(
                        "{CLASS}: neither load_in_4bit nor load_in_8bit is True, so no quantization is chosen; \
                         set load_in_4bit=True or load_in_8bit=True (or quant_method='bitsandbytes_4bit'/'bitsandbytes_8bit')"
                    ),
                )
                .with_type("missing"),
            );
        }
        let llm_int8_threshold = f.float("llm_int8_threshold", 6.0);
        if !(llm_int8_threshold.is_finite() && llm_int8_threshold >= 0.0) {
            f.report(not_allowed(
                f.loc("llm_int8_threshold"),
                &Value::Float(llm_int8_threshold),
                "a finite float >= 0 (the outlier threshold; 0 disables outlier decomposition)",
            ));
        }
        Ok(BnbConfig {
            load_in_8bit,
            load_in_4bit,
            llm_int8_threshold,
            llm_int8_skip_modules: f.opt_str_list("llm_int8_skip_modules"),
            llm_int8_enable_fp32_cpu_offload: f.bool("llm_int8_enable_fp32_cpu_offload", false),
            llm_int8_has_fp16_weight: f.bool("llm_int8_has_fp16_weight", false),
            bnb_4bit_compute_dtype: f.dtype("bnb_4bit_compute_dtype", "float32", FLOAT_DTYPES),
            bnb_4bit_quant_type: f.choice("bnb_4bit_quant_type", "fp4", QUANT_TYPES),
            bnb_4bit_use_double_quant: f.bool("bnb_4bit_use_double_quant", false),
            bnb_4bit_quant_storage: f.dtype("bnb_4bit_quant_storage", "uint8", STORAGE_DTYPES),
        })
    }

    pub fn method_key(&self) -> &'static str {
        if self.load_in_8bit {
            "bitsandbytes_8bit"
        } else {
            "bitsandbytes_4bit"
        }
    }

    /// diffusers' `quantization_method()`: `"llm_int8"`, `"fp4"` or `"nf4"`.
    pub fn quantization_method(&self) -> &'static str {
        if self.load_in_8bit {
            "llm_int8"
        } else {
            self.bnb_4bit_quant_type
        }
    }

    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("load_in_8bit", Value::Bool(self.load_in_8bit)),
            ("load_in_4bit", Value::Bool(self.load_in_4bit)),
            ("llm_int8_threshold", Value::Float(self.llm_int8_threshold)),
            ("llm_int8_skip_modules", str_list(&self.llm_int8_skip_modules)),
            ("llm_int8_enable_fp32_cpu_offload", Value::Bool(self.llm_int8_enable_fp32_cpu_offload)),
            ("llm_int8_has_fp16_weight", Value::Bool(self.llm_int8_has_fp16_weight)),
            ("bnb_4bit_compute_dtype", Value::Dtype(self.bnb_4bit_compute_dtype.into())),
            ("bnb_4bit_quant_type", Value::Str(self.bnb_4bit_quant_type.into())),
            ("bnb_4bit_use_double_quant", Value::Bool(self.bnb_4bit_use_double_quant)),
            ("bnb_4bit_quant_storage", Value::Dtype(self.bnb_4bit_quant_storage.into())),
        ]
    }
}

pub(crate) fn str_list(v: &Option<Vec<String>>) -> Value {
    match v {
        None => Value::Null,
        Some(items) => Value::List(items.iter().map(|s| Value::Str(s.clone())).collect()),
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}
