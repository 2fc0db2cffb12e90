//! `NVIDIAModelOptConfig`: NVIDIA ModelOpt fake/real quantization (`W` or `W_A` quant types).

use super::bnb::str_list;
use super::error::{loc_str, not_allowed, wrong_type, ConfigError};
use super::fields::Fields;
use crate::value::Value;

pub const CLASS: &str = "NVIDIAModelOptConfig";
pub const NUM_TYPES: &[&str] = &["FP8", "INT8", "INT4", "NF4", "NVFP4"];
/// Types whose block scales are themselves quantized (scale_* options apply).
pub const SCALED_TYPES: &[&str] = &["NF4", "NVFP4"];
/// Calibration algorithms of nvidia-modelopt (`mtq.config` `method` literals).
pub const ALGORITHMS: &[&str] = &[
    "max",
    "mse",
    "local_hessian",
    "smoothquant",
    "awq_lite",
    "awq_clip",
    "awq_full",
    "svdquant",
    "gptq",
    "nvfp4_act_headroom",
    "lsq",
];
pub const POSITIONAL: &[&str] = &[
    "quant_type",
    "modules_to_not_convert",
    "weight_only",
    "channel_quantize",
    "block_quantize",
    "scale_channel_quantize",
    "scale_block_quantize",
    "algorithm",
    "forward_loop",
    "modelopt_config",
    "disable_conv_quantization",
];

#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptConfig {
    /// Normalized `W` or `W_A`, upper case.
    pub quant_type: String,
    pub modules_to_not_convert: Option<Vec<String>>,
    pub weight_only: bool,
    pub channel_quantize: Option<i64>,
    pub block_quantize: Option<i64>,
    pub scale_channel_quantize: Option<i64>,
    pub scale_block_quantize: Option<i64>,
    pub algorithm: String,
    /// A calibration callable (opaque to the core).
    pub forward_loop: Option<Value>,
    pub modelopt_config: Option<Value>,
    pub disable_conv_quantization: bool,
}

fn allowed_quant_types() -> String {
    format!("'W' or 'W_A' with W and A each one of {}", NUM_TYPES.join(", "))
}

impl ModelOptConfig {
    /// `modelopt_config` is passed by value (moved out of the dict by the caller).
    pub fn parse(f: &mut Fields<'_>, modelopt_config: Option<Value>) -> Result<Self, ConfigError> {
        let loc = f.loc("quant_type");
        let quant_type = match f.get("quant_type") {
            None | Some(Value::Null) => {
                return Err(ConfigError::type_error(
                    loc.clone(),
                    format!("{}: missing required argument ({})", loc_str(&loc), allowed_quant_types()),
                ))
            }
            Some(v @ Value::Str(s)) => {
                let upper = s.to_ascii_uppercase();
                let parts: Vec<&str> = upper.split('_').collect();
                if parts.len() > 2 || parts.iter().any(|p| !NUM_TYPES.contains(p)) {
                    return Err(not_allowed(loc, v, &allowed_quant_types()));
                }
                upper
            }
            Some(v) => return Err(wrong_type(loc, &format!("a str ({})", allowed_quant_types()), v)),
        };
        let w_type = quant_type.split('_').next().unwrap_or_default().to_string();

        let channel_quantize = f.opt_int("channel_quantize")?;
        let block_quantize = f.opt_int("block_quantize")?;
        let scale_channel_quantize = f.opt_int("scale_channel_quantize")?;
        let scale_block_quantize = f.opt_int("scale_block_quantize")?;
        for (key, v) in [("block_quantize", block_quantize), ("scale_block_quantize", scale_block_quantize)] {
            if let Some(n) = v {
                if n <= 0 {
                    return Err(not_allowed(f.loc(key), &Value::Int(n), "a block size > 0"));
                }
            }
        }
        for (key, v) in [("channel_quantize", channel_quantize), ("scale_channel_quantize", scale_channel_quantize)] {
            if let Some(n) = v {
                if !(-4..=3).contains(&n) {
                    return Err(not_allowed(f.loc(key), &Value::Int(n), "a tensor axis in -4..3 (usually -1)"));
                }
            }
        }
        if block_quantize.is_some() && channel_quantize.is_none() {
            let l = f.loc("block_quantize");
            return Err(ConfigError::value_error(
                l.clone(),
                format!(
                    "{}: block quantization needs channel_quantize (the axis the blocks run along, e.g. -1)",
                    loc_str(&l)
                ),
            ));
        }
        if scale_channel_quantize.is_some() != scale_block_quantize.is_some() {
            let l = f.loc("scale_block_quantize");
            return Err(ConfigError::value_error(
                l.clone(),
                format!(
                    "{}: scale_channel_quantize and scale_block_quantize go together; set both or neither",
                    loc_str(&l)
                ),
            ));
        }
        if scale_block_quantize.is_some() {
            let l = f.loc("scale_block_quantize");
            if !SCALED_TYPES.contains(&w_type.as_str()) {
                return Err(ConfigError::value_error(
                    l.clone(),
                    format!(
                        "{}: quantized block scales apply only to weight types {}; quant_type is {:?}",
                        loc_str(&l),
                        SCALED_TYPES.join(", "),
                        quant_type
                    ),
                ));
            }
            if block_quantize.is_none() {
                return Err(ConfigError::value_error(
                    l.clone(),
                    format!(
                        "{}: quantized block scales need block quantization (block_quantize and channel_quantize)",
                        loc_str(&l)
                    ),
                ));
            }
        }

        // `algorithm`, or diffusers' stored form `calib_cfg = {"method": ...}`.
        let mut algorithm = match f.get("algorithm") {
            None => None,
            Some(v @ Value::Str(s)) => {
                if !ALGORITHMS.contains(&s.as_str()) {
                    return Err(not_allowed(f.loc("algorithm"), v, &ALGORITHMS.join(", ")));
                }
                Some(s.clone())
            }
            Some(v) => return Err(wrong_type(f.loc("algorithm"), "a str", v)),
        };
        if let Some(cc) = f.get_some("calib_cfg") {
            let l = f.loc("calib_cfg");
            let method = match cc {
                Value::Dict(items) if items.len() == 1 && items[0].0 == "method" => &items[0].1,
                v => return Err(wrong_type(l, "a dict {'method': <algorithm>}", v)),
            };
            let mut ml = l.clone();
            ml.push("method".into());
            let m = match method {
                Value::Str(s) if ALGORITHMS.contains(&s.as_str()) => s.clone(),
                v @ Value::Str(_) => return Err(not_allowed(ml, v, &ALGORITHMS.join(", "))),
                v => return Err(wrong_type(ml, "a str", v)),
            };
            if let Some(a) = &algorithm {
                if *a != m {
                    return Err(ConfigError::value_error(
                        l.clone(),
                        format!("{}: method {:?} contradicts algorithm={:?}", loc_str(&l), m, a),
                    ));
                }
            }
            algorithm = Some(m);
        }

        let forward_loop = match f.get("forward_loop") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Opaque(o)) if o.callable => Some(v.clone()),
            Some(v) => return Err(wrong_type(f.loc("forward_loop"), "a callable (forward_loop(model)) or None", v)),
        };

        Ok(ModelOptConfig {
            quant_type,
            modules_to_not_convert: f.opt_str_list("modules_to_not_convert")?,
            weight_only: f.bool("weight_only", true)?,
            channel_quantize,
            block_quantize,
            scale_channel_quantize,
            scale_block_quantize,
            algorithm: algorithm.unwrap_or_else(|| "max".into()),
            forward_loop,
            modelopt_config: match modelopt_config {
                None | Some(Value::Null) => None,
                Some(v @ Value::Dict(_)) => Some(v),
                // A dict the binding kept whole (non-str keys, e.g. block_sizes {-1: 16}).
                Some(v @ Value::Opaque(_)) if v.type_name() == "dict" => Some(v),
                Some(v) => return Err(wrong_type(f.loc("modelopt_config"), "a dict or None", &v)),
            },
            disable_conv_quantization: f.bool("disable_conv_quantization", false)?,
        })
    }

    /// Weight type (`"NVFP4"`) and activation type, if any.
    pub fn weight_and_activation(&self) -> (&str, Option<&str>) {
        match self.quant_type.split_once('_') {
            Some((w, a)) => (w, Some(a)),
            None => (&self.quant_type, None),
        }
    }

    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let opt = |v: Option<i64>| v.map(Value::Int).unwrap_or(Value::Null);
        vec![
            ("quant_type", Value::Str(self.quant_type.clone())),
            ("modules_to_not_convert", str_list(&self.modules_to_not_convert)),
            ("weight_only", Value::Bool(self.weight_only)),
            ("channel_quantize", opt(self.channel_quantize)),
            ("block_quantize", opt(self.block_quantize)),
            ("scale_channel_quantize", opt(self.scale_channel_quantize)),
            ("scale_block_quantize", opt(self.scale_block_quantize)),
            ("algorithm", Value::Str(self.algorithm.clone())),
            ("forward_loop", self.forward_loop.clone().unwrap_or(Value::Null)),
            ("modelopt_config", self.modelopt_config.clone().unwrap_or(Value::Null)),
            ("disable_conv_quantization", Value::Bool(self.disable_conv_quantization)),
        ]
    }
}
