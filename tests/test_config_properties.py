"""Property tests: random valid configs round-trip; random junk never crashes (only ValueError/TypeError)."""

from __future__ import annotations

import json
import math
import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastquant
from fastquant import (
    BitsAndBytesConfig,
    GGUFQuantizationConfig,
    NVIDIAModelOptConfig,
    QuantoConfig,
    TorchAoConfig,
)

AQ = fastquant.DiffusersAutoQuantizer

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
module_lists = st.none() | st.lists(names, max_size=4)
float_dtypes = st.sampled_from(["float16", "bfloat16", "float32", "float64"])


@st.composite
def bnb(draw):
    four = draw(st.booleans())
    return BitsAndBytesConfig(
        load_in_4bit=four,
        load_in_8bit=not four,
        llm_int8_threshold=draw(st.floats(min_value=0, max_value=1e6, allow_nan=False)),
        llm_int8_skip_modules=draw(module_lists),
        llm_int8_enable_fp32_cpu_offload=draw(st.booleans()),
        llm_int8_has_fp16_weight=draw(st.booleans()),
        bnb_4bit_compute_dtype=draw(float_dtypes),
        bnb_4bit_quant_type=draw(st.sampled_from(["fp4", "nf4"])),
        bnb_4bit_use_double_quant=draw(st.booleans()),
        bnb_4bit_quant_storage=draw(st.sampled_from(["float16", "float32", "int8", "uint8", "float64", "bfloat16"])),
    )


@st.composite
def gguf(draw):
    return GGUFQuantizationConfig(draw(st.sampled_from(["float16", "bfloat16", "float32"])), draw(module_lists))


@st.composite
def quanto(draw):
    return QuantoConfig(draw(st.sampled_from(["float8", "int8", "int4", "int2"])), draw(module_lists))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | names
)
json_data = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(names.filter(lambda k: k != "_type"), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def torchao(draw):
    if draw(st.booleans()):
        short = draw(
            st.sampled_from(
                ["int8wo", "int4wo", "int8dq", "float8wo", "float8dq_e4m3_row", "uint3wo", "fp6_e3m2", "fp5"]
            )
        )
        kwargs = draw(st.dictionaries(names, json_scalars, max_size=2))
        return TorchAoConfig(short, modules_to_not_convert=draw(module_lists), quant_type_kwargs=kwargs)
    data = draw(st.dictionaries(names.filter(lambda k: k != "_type"), json_data, max_size=4))
    q = {"default": {"_type": draw(names), "_version": draw(st.integers(1, 5)), "_data": data}}
    return TorchAoConfig(q, draw(module_lists))


@st.composite
def modelopt(draw):
    w = draw(st.sampled_from(["FP8", "INT8", "INT4", "NF4", "NVFP4"]))
    a = draw(st.none() | st.sampled_from(["FP8", "INT8", "INT4", "NF4", "NVFP4"]))
    kw = {}
    if draw(st.booleans()):
        kw["channel_quantize"] = draw(st.integers(-4, 3))
        if draw(st.booleans()):
            kw["block_quantize"] = draw(st.integers(1, 1024))
            if w in ("NF4", "NVFP4") and draw(st.booleans()):
                kw["scale_block_quantize"] = draw(st.integers(1, 64))
                kw["scale_channel_quantize"] = draw(st.integers(-4, 3))
    return NVIDIAModelOptConfig(
        w if a is None else f"{w}_{a}",
        modules_to_not_convert=draw(module_lists),
        weight_only=draw(st.booleans()),
        algorithm=draw(st.sampled_from(["max", "smoothquant", "awq_lite", "awq_full", "awq_clip", "svdquant"])),
        modelopt_config=draw(st.none() | st.dictionaries(names, json_data, max_size=3)),
        disable_conv_quantization=draw(st.booleans()),
        **kw,
    )


any_config = bnb() | gguf() | quanto() | torchao() | modelopt()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_config)
def test_round_trip_random_valid_configs(cfg):
    d = cfg.to_dict()
    assert type(cfg).from_dict(d) == cfg
    assert AQ.from_dict(d) == cfg
    assert AQ.from_dict(json.loads(json.dumps(d))) == cfg
    assert type(cfg).from_json_string(cfg.to_json_string()) == cfg
    q = AQ.from_config(d)
    assert q.quantization_config == cfg


junk_keys = (
    st.sampled_from(
        [
            "quant_method",
            "load_in_4bit",
            "load_in_8bit",
            "llm_int8_threshold",
            "llm_int8_skip_modules",
            "bnb_4bit_compute_dtype",
            "bnb_4bit_quant_type",
            "bnb_4bit_quant_storage",
            "compute_dtype",
            "weights_dtype",
            "modules_to_not_convert",
            "quant_type",
            "quant_type_kwargs",
            "pre_quantized",
            "block_quantize",
            "channel_quantize",
            "scale_block_quantize",
            "scale_channel_quantize",
            "algorithm",
            "calib_cfg",
            "forward_loop",
            "modelopt_config",
            "_load_in_4bit",
            "junk",
        ]
    )
    | names
)
junk_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | names
    | st.sampled_from(
        [
            "bitsandbytes",
            "bitsandbytes_4bit",
            "bitsandbytes_8bit",
            "gguf",
            "quanto",
            "torchao",
            "modelopt",
            "nf4",
            "int8wo",
            "FP8",
            "NVFP4_FP8",
            "bfloat16",
            "torch.float16",
            "max",
            "default",
            "_type",
        ]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(junk_keys, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=800, deadline=None)
@given(st.dictionaries(junk_keys, junk_values, max_size=6))
def test_junk_never_crashes(d):
    snapshot = repr(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            q = AQ.from_config(d)
        except (ValueError, TypeError) as e:
            assert str(e)
        else:
            cfg = q.quantization_config
            assert AQ.from_dict(cfg.to_dict()) == cfg
    assert repr(d) == snapshot or any(isinstance(v, float) and math.isnan(v) for v in d.values())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.builds(lambda d: json.dumps(d), st.dictionaries(junk_keys, junk_values, max_size=5)))
def test_junk_json_never_crashes(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            AQ.from_json_string(text)
        except (ValueError, TypeError) as e:
            assert str(e)
