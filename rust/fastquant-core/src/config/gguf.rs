//! `GGUFQuantizationConfig`: weights that arrive pre-quantized in a `.gguf` file.

use super::bnb::str_list;
use super::error::{loc_str, ConfigError};
use super::fields::Fields;
use crate::value::Value;

pub const CLASS: &str = "GGUFQuantizationConfig";
pub const COMPUTE_DTYPES: &[&str] = &["float16", "bfloat16", "float32"];
pub const POSITIONAL: &[&str] = &["compute_dtype", "modules_to_not_convert"];

#[derive(Debug, Clone, PartialEq)]
pub struct GgufConfig {
    pub compute_dtype: &'static str,
    pub modules_to_not_convert: Option<Vec<String>>,
}

impl GgufConfig {
    pub fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        // diffusers writes `pre_quantized: true`; GGUF weights are always pre-quantized.
        if !f.bool("pre_quantized", true) {
            let loc = f.loc("pre_quantized");
            let message =
                format!("{}: GGUF weights are always pre-quantized; pre_quantized=False is not allowed", loc_str(&loc));
            f.report(ConfigError::value_error(loc, message).with_input(&Value::Bool(false)));
        }
        Ok(GgufConfig {
            compute_dtype: f.dtype("compute_dtype", "float32", COMPUTE_DTYPES),
            modules_to_not_convert: f.opt_str_list("modules_to_not_convert"),
        })
    }

    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("compute_dtype", Value::Dtype(self.compute_dtype.into())),
            ("pre_quantized", Value::Bool(true)),
            ("modules_to_not_convert", str_list(&self.modules_to_not_convert)),
        ]
    }
}
