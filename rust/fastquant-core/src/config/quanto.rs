//! `QuantoConfig`: optimum-quanto weight quantization.

use super::bnb::str_list;
use super::error::ConfigError;
use super::fields::Fields;
use crate::value::Value;

pub const CLASS: &str = "QuantoConfig";
pub const WEIGHTS_DTYPES: &[&str] = &["float8", "int8", "int4", "int2"];
pub const POSITIONAL: &[&str] = &["weights_dtype", "modules_to_not_convert"];

#[derive(Debug, Clone, PartialEq)]
pub struct QuantoConfig {
    pub weights_dtype: &'static str,
    pub modules_to_not_convert: Option<Vec<String>>,
}

impl QuantoConfig {
    pub fn parse(f: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(QuantoConfig {
            weights_dtype: f.choice("weights_dtype", "int8", WEIGHTS_DTYPES),
            modules_to_not_convert: f.opt_str_list("modules_to_not_convert"),
        })
    }

    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("weights_dtype", Value::Str(self.weights_dtype.into())),
            ("modules_to_not_convert", str_list(&self.modules_to_not_convert)),
        ]
    }
}
