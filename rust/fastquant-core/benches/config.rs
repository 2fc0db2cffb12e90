//! Criterion benches of the config core: JSON parse, validation and dispatch per backend.

use criterion::{criterion_group, criterion_main, Criterion};
use fastquant_core::registry::parse_dict;
use fastquant_core::value::{parse_json, Value};
use std::hint::black_box;

const CASES: &[(&str, &str)] = &[
    (
        "bitsandbytes_4bit",
        r#"{"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": true}"#,
    ),
    ("bitsandbytes_8bit", r#"{"quant_method": "bitsandbytes", "load_in_8bit": true, "llm_int8_threshold": 6.0}"#),
    ("gguf", r#"{"quant_method": "gguf", "compute_dtype": "bfloat16"}"#),
    ("quanto", r#"{"quant_method": "quanto", "weights_dtype": "int8"}"#),
    (
        "torchao",
        r#"{"quant_method": "torchao", "quant_type": {"default": {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {"group_size": null, "granularity": {"_type": "PerRow", "_version": 1, "_data": {"dim": -1}}}}}}"#,
    ),
    (
        "modelopt",
        r#"{"quant_method": "modelopt", "quant_type": "NVFP4_FP8", "block_quantize": 16, "channel_quantize": -1}"#,
    ),
];

fn bench(c: &mut Criterion) {
    for (name, text) in CASES {
        let Value::Dict(items) = parse_json(text).unwrap() else { unreachable!() };
        c.bench_function(&format!("validate+dispatch/{name}"), |b| {
            b.iter(|| parse_dict(black_box(items.clone())).unwrap())
        });
        c.bench_function(&format!("json+validate+dispatch/{name}"), |b| {
            b.iter(|| {
                let Value::Dict(items) = parse_json(black_box(text)).unwrap() else { unreachable!() };
                parse_dict(items).unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
