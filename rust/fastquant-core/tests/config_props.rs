//! Property tests of the config core: random dicts never panic; valid configs round-trip through
//! `to_dict()` and JSON.

use fastquant_core::config::{parse, ALL_KINDS};
use fastquant_core::registry::{parse_dict, DictOutcome};
use fastquant_core::value::{parse_json, Value};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "quant_method",
            "load_in_4bit",
            "load_in_8bit",
            "llm_int8_threshold",
            "llm_int8_skip_modules",
            "bnb_4bit_compute_dtype",
            "bnb_4bit_quant_type",
            "compute_dtype",
            "weights_dtype",
            "quant_type",
            "quant_type_kwargs",
            "modules_to_not_convert",
            "block_quantize",
            "channel_quantize",
            "calib_cfg",
            "modelopt_config",
            "pre_quantized",
            "_load_in_8bit",
            "default",
            "_type",
            "_version",
            "_data",
        ])
        .prop_map(String::from),
        "[a-z_]{0,8}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        prop::sample::select(vec![
            "bitsandbytes",
            "bitsandbytes_8bit",
            "gguf",
            "quanto",
            "torchao",
            "modelopt",
            "nf4",
            "int8wo",
            "FP8",
            "NVFP4_INT8",
            "bfloat16",
            "torch.float16",
            "max",
            "fp6_e3m2",
            "uint4wo",
        ])
        .prop_map(|s| Value::Str(s.into())),
        "\\PC{0,6}".prop_map(Value::Str),
        prop::sample::select(vec!["bfloat16", "int8", "float64"]).prop_map(|s| Value::Dtype(s.into())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
            prop::collection::vec((key(), inner), 0..4).prop_map(Value::Dict),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dispatch_never_panics_and_valid_results_round_trip(items in prop::collection::vec((key(), value()), 0..6)) {
        if let Ok(DictOutcome::Parsed(key, parsed)) = parse_dict(items) {
            let Value::Dict(d) = parsed.config.to_dict() else { panic!("to_dict gives a dict") };
            let again = parse(parsed.config.kind(), d).expect("to_dict output parses");
            prop_assert_eq!(&again.config, &parsed.config);
            prop_assert_eq!(again.config.method_key(), key);
            let json = parsed.config.to_dict().to_json(None).expect("no opaque values");
            let Value::Dict(d) = parse_json(&json).expect("our JSON parses") else { panic!() };
            let from_json = parse(parsed.config.kind(), d).expect("JSON output parses");
            // NaN-free by construction of valid configs? Floats inside free-form payloads may be NaN.
            if !json.contains("NaN") {
                prop_assert_eq!(from_json.config, parsed.config);
            }
        }
    }

    #[test]
    fn every_class_survives_junk(items in prop::collection::vec((key(), value()), 0..6)) {
        for kind in ALL_KINDS {
            let _ = parse(kind, items.clone());
        }
    }

    #[test]
    fn json_parser_never_panics(text in "\\PC{0,64}") {
        let _ = parse_json(&text);
    }
}
