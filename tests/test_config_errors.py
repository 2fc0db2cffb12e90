"""Structured config errors: every problem in a config is reported (not only the first), each with `loc`,
`type`, `msg` and `input`, through `.errors()` on a ValueError subclass whose str() stays readable."""

from __future__ import annotations

import pickle

import pytest

import fastquant as fq


def test_every_problem_is_reported_with_location_type_message_and_input():
    with pytest.raises(fq.ConfigError) as e:
        fq.BitsAndBytesConfig(
            load_in_4bit=True,
            llm_int8_threshold="high",
            llm_int8_skip_modules=["proj_out", 3],
            bnb_4bit_quant_type="nf5",
        )
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)  # first problem: a wrong type
    assert e.value.errors() == [
        {
            "loc": ("BitsAndBytesConfig", "llm_int8_threshold"),
            "type": "wrong_type",
            "msg": "expected a float, got 'high' (str)",
            "input": "high",
        },
        {
            "loc": ("BitsAndBytesConfig", "llm_int8_skip_modules", 1),
            "type": "wrong_type",
            "msg": "expected a str (a module name), got 3 (int)",
            "input": 3,
        },
        {
            "loc": ("BitsAndBytesConfig", "bnb_4bit_quant_type"),
            "type": "not_allowed",
            "msg": "'nf5' is not allowed; allowed: fp4, nf4",
            "input": "nf5",
        },
    ]
    text = str(e.value)
    assert text.splitlines()[0] == "BitsAndBytesConfig.llm_int8_threshold: expected a float, got 'high' (str)"
    assert "(2 more problems in the same config:)" in text and "bnb_4bit_quant_type: 'nf5' is not allowed" in text


def test_a_single_problem_reads_as_before():
    with pytest.raises(ValueError) as e:
        fq.QuantoConfig(weights_dtype="int3")
    assert type(e.value) is fq.ConfigError and not isinstance(e.value, TypeError)
    assert str(e.value) == "QuantoConfig.weights_dtype: 'int3' is not allowed; allowed: float8, int8, int4, int2"
    assert e.value.errors() == [
        {
            "loc": ("QuantoConfig", "weights_dtype"),
            "type": "not_allowed",
            "msg": "'int3' is not allowed; allowed: float8, int8, int4, int2",
            "input": "int3",
        }
    ]


def test_missing_argument_and_dict_paths():
    with pytest.raises(TypeError) as e:
        fq.NVIDIAModelOptConfig(block_quantize=0, algorithm="maxx")
    errs = e.value.errors()
    assert [(x["loc"], x["type"]) for x in errs] == [
        (("NVIDIAModelOptConfig", "quant_type"), "missing"),
        (("NVIDIAModelOptConfig", "block_quantize"), "not_allowed"),
        (("NVIDIAModelOptConfig", "algorithm"), "not_allowed"),
    ]
    assert errs[0]["input"] is None and errs[1]["input"] == 0 and errs[2]["input"] == "maxx"
    # The same through the dispatcher, from a dict and from JSON.
    with pytest.raises(fq.ConfigError) as e:
        fq.DiffusersAutoQuantizer.from_dict(
            {"quant_method": "quanto", "weights_dtype": 8, "modules_to_not_convert": "x"}
        )
    assert [x["loc"][1] for x in e.value.errors()] == ["weights_dtype", "modules_to_not_convert"]
    with pytest.raises(fq.ConfigError) as e:
        fq.DiffusersAutoQuantizer.from_json_string(
            '{"quant_method": "gguf", "compute_dtype": "int8", "pre_quantized": false}'
        )
    assert [x["type"] for x in e.value.errors()] == ["value_error", "not_allowed"]


def test_unknown_method_is_structured():
    with pytest.raises(fq.ConfigError) as e:
        fq.DiffusersAutoQuantizer.from_dict({"quant_method": "nope"})
    (err,) = e.value.errors()
    assert err["loc"] == ("quantization_config", "quant_method") and err["type"] == "unknown_method"
    assert err["input"] == "nope"


def test_errors_returns_copies_and_survives_pickle():
    with pytest.raises(fq.ConfigError) as e:
        fq.QuantoConfig(weights_dtype="int3", modules_to_not_convert=[1])
    first = e.value.errors()
    first[0]["msg"] = "changed"
    assert e.value.errors()[0]["msg"] != "changed"
    back = pickle.loads(pickle.dumps(e.value))
    assert type(back) is type(e.value) and str(back) == str(e.value) and back.errors() == e.value.errors()
    assert e.value.error_count() == 2
