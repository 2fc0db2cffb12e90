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

/// The block options, as given.
struct Blocks {
    channel_quantize: Option<i64>,
    block_quantize: Option<i64>,
    scale_channel_quantize: Option<i64>,
    scale_block_quantize: Option<i64>,
}

impl ModelOptConfig {
    /// Parse in named steps; each step reports its problems to `f` and goes on, so that every problem in the
    /// dict is found in one pass. `modelopt_config` is passed by value (moved out of the dict by the caller).
    pub fn parse(f: &mut Fields<'_>, modelopt_config: Option<Value>) -> Result<Self, ConfigError> {
        let quant_type = parse_quant_type(f);
        let blocks = parse_blocks(f);
        check_blocks(f, &blocks, quant_type.as_deref());
        let algorithm = parse_algorithm(f);
        let forward_loop = parse_forward_loop(f);
        let modelopt_config = parse_modelopt_config(f, modelopt_config);
        Ok(ModelOptConfig {
            quant_type: quant_type.unwrap_or_default(),
            modules_to_not_convert: f.opt_str_list("modules_to_not_convert"),
            weight_only: f.bool("weight_only", true),
            channel_quantize: blocks.channel_quantize,
            block_quantize: blocks.block_quantize,
            scale_channel_quantize: blocks.scale_channel_quantize,
            scale_block_quantize: blocks.scale_block_quantize,
            algorithm: algorithm.unwrap_or_else(|| "max".into()),
            forward_loop,
            modelopt_config,
            disable_conv_quantization: f.bool("disable_conv_quantization", false),
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

/// `quant_type`: required, `W` or `W_A`, normalized to upper case. `None` when refused.
fn parse_quant_type(f: &mut Fields<'_>) -> Option<String> {
    let loc = f.loc("quant_type");
    match f.get("quant_type") {
        None | Some(Value::Null) => {
            let message = format!("{}: missing required argument ({})", loc_str(&loc), allowed_quant_types());
            f.report(ConfigError::type_error(loc, message).with_type("missing"));
            None
        }
        Some(v @ Value::Str(s)) => {
            let upper = s.to_ascii_uppercase();
            let parts: Vec<&str> = upper.split('_').collect();
            if parts.len() > 2 || parts.iter().any(|p| !NUM_TYPES.contains(p)) {
                f.report(not_allowed(loc, v, &allowed_quant_types()));
                return None;
            }
            Some(upper)
        }
        Some(v) => {
            f.report(wrong_type(loc, &format!("a str ({})", allowed_quant_types()), v));
            None
        }
    }
}

/// The four block options, each range-checked on its own (a refused one counts as unset).
fn parse_blocks(f: &mut Fields<'_>) -> Blocks {
    let mut b = Blocks {
        channel_quantize: f.opt_int("channel_quantize"),
        block_quantize: f.opt_int("block_quantize"),
        scale_channel_quantize: f.opt_int("scale_channel_quantize"),
        scale_block_quantize: f.opt_int("scale_block_quantize"),
    };
    for (key, slot) in
        [("block_quantize", &mut b.block_quantize), ("scale_block_quantize", &mut b.scale_block_quantize)]
    {
        if let Some(n) = *slot {
            if n <= 0 {
                f.report(not_allowed(f.loc(key), &Value::Int(n), "a block size > 0"));
                *slot = None;
            }
        }
    }
    for (key, slot) in
        [("channel_quantize", &mut b.channel_quantize), ("scale_channel_quantize", &mut b.scale_channel_quantize)]
    {
        if let Some(n) = *slot {
            if !(-4..=3).contains(&n) {
                f.report(not_allowed(f.loc(key), &Value::Int(n), "a tensor axis in -4..3 (usually -1)"));
                *slot = None;
            }
        }
    }
    b
}

/// How the block options fit together and with the weight type (skipped for a refused `quant_type`).
fn check_blocks(f: &mut Fields<'_>, b: &Blocks, quant_type: Option<&str>) {
    let problem = |f: &mut Fields<'_>, key: &str, what: String| {
        let l = f.loc(key);
        let message = format!("{}: {what}", loc_str(&l));
        f.report(ConfigError::value_error(l, message));
    };
    if b.block_quantize.is_some() && b.channel_quantize.is_none() {
        problem(
            f,
            "block_quantize",
            "block quantization needs channel_quantize (the axis the blocks run along, e.g. -1)".into(),
        );
    }
    if b.scale_channel_quantize.is_some() != b.scale_block_quantize.is_some() {
        problem(
            f,
            "scale_block_quantize",
            "scale_channel_quantize and scale_block_quantize go together; set both or neither".into(),
        );
    }
    if b.scale_block_quantize.is_some() {
        if let Some(qt) = quant_type {
            let w_type = qt.split('_').next().unwrap_or_default();
            if !SCALED_TYPES.contains(&w_type) {
                problem(
                    f,
                    "scale_block_quantize",
                    format!(
                        "quantized block scales apply only to weight types {}; quant_type is {:?}",
                        SCALED_TYPES.join(", "),
                        qt
                    ),
                );
            }
        }
        if b.block_quantize.is_none() {
            problem(
                f,
                "scale_block_quantize",
                "quantized block scales need block quantization (block_quantize and channel_quantize)".into(),
            );
        }
    }
}

/// `algorithm`, or diffusers' stored form `calib_cfg = {"method": ...}` (both given must agree).
fn parse_algorithm(f: &mut Fields<'_>) -> Option<String> {
    let algorithm = match f.get("algorithm") {
        None => None,
        Some(v @ Value::Str(s)) if !ALGORITHMS.contains(&s.as_str()) => {
            f.report(not_allowed(f.loc("algorithm"), v, &ALGORITHMS.join(", ")));
            None
        }
        Some(Value::Str(s)) => Some(s.clone()),
        Some(v) => {
            f.report(wrong_type(f.loc("algorithm"), "a str", v));
            None
        }
    };
    let Some(cc) = f.get_some("calib_cfg") else {
        return algorithm;
    };
    let l = f.loc("calib_cfg");
    let method = match cc {
        Value::Dict(items) if items.len() == 1 && items[0].0 == "method" => &items[0].1,
        v => {
            f.report(wrong_type(l, "a dict {'method': <algorithm>}", v));
            return algorithm;
        }
    };
    let mut ml = l.clone();
    ml.push("method".into());
    let m = match method {
        Value::Str(s) if ALGORITHMS.contains(&s.as_str()) => s.clone(),
        v @ Value::Str(_) => {
            f.report(not_allowed(ml, v, &ALGORITHMS.join(", ")));
            return algorithm;
        }
        v => {
            f.report(wrong_type(ml, "a str", v));
            return algorithm;
        }
    };
    if let Some(a) = &algorithm {
        if *a != m {
            let message = format!("{}: method {:?} contradicts algorithm={:?}", loc_str(&l), m, a);
            f.report(ConfigError::value_error(l, message).with_input(cc));
        }
    }
    Some(m)
}

/// `forward_loop`: a calibration callable or None.
fn parse_forward_loop(f: &mut Fields<'_>) -> Option<Value> {
    match f.get("forward_loop") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Opaque(o)) if o.callable => Some(v.clone()),
        Some(v) => {
            f.report(wrong_type(f.loc("forward_loop"), "a callable (forward_loop(model)) or None", v));
            None
        }
    }
}

/// `modelopt_config`: a dict (kept as given) or None.
fn parse_modelopt_config(f: &mut Fields<'_>, modelopt_config: Option<Value>) -> Option<Value> {
    match modelopt_config {
        None | Some(Value::Null) => None,
        Some(v @ Value::Dict(_)) => Some(v),
        // A dict the binding kept whole (non-str keys, e.g. block_sizes {-1: 16}).
        Some(v @ Value::Opaque(_)) if v.type_name() == "dict" => Some(v),
        Some(v) => {
            f.report(wrong_type(f.loc("modelopt_config"), "a dict or None", &v));
            None
        }
    }
}
