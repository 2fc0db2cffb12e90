"""Differential tests: fastquant's dispatch against diffusers' `DiffusersAutoQuantizer`, dict by dict.

Each case says what must happen:
* ``same``   — diffusers succeeds on sane input: fastquant returns the same quantizer class and the same field
               values (compared after normalising dtypes and enums).
* ``fail``   — diffusers fails: fastquant fails with the same exception type, or a ValueError/TypeError.
* ``D-...``  — a deliberate difference, listed under that anchor in docs/compatibility.md; the test checks both
               what diffusers does and what fastquant does instead.
"""

from __future__ import annotations

import copy
import enum
import pathlib
import warnings

import pytest

import torch
import diffusers.quantizers.auto as diffusers_auto
import torchao.core.config as torchao_config
import torchao.quantization as tq  # noqa: E402

import fastquant  # noqa: E402

DAQ = diffusers_auto.DiffusersAutoQuantizer
FAQ = fastquant.DiffusersAutoQuantizer

COMPAT_DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"


def ser(cfg):
    return {"default": torchao_config.config_to_dict(cfg)}


MO_CFG = {
    "quant_cfg": {"*weight_quantizer": {"num_bits": [4, 3]}, "*input_quantizer": {"enable": False}},
    "algorithm": "max",
}


def df_to_dict(cfg):
    """A config dict exactly as diffusers' own to_dict() writes it (what its checkpoints carry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DAQ.from_config(cfg).quantization_config.to_dict()


# (id, dict, expectation)
CASES = [
    # ---- bitsandbytes: valid
    ("bnb4-min", {"load_in_4bit": True}, "same"),
    ("bnb8-min", {"load_in_8bit": True}, "same"),
    ("bnb4-nf4", {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, "same"),
    ("bnb4-fp4", {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}, "same"),
    ("bnb4-bf16", {"load_in_4bit": True, "bnb_4bit_compute_dtype": "bfloat16"}, "same"),
    ("bnb4-fp16", {"load_in_4bit": True, "bnb_4bit_compute_dtype": "float16"}, "same"),
    ("bnb4-fp32", {"load_in_4bit": True, "bnb_4bit_compute_dtype": "float32"}, "same"),
    ("bnb4-double", {"load_in_4bit": True, "bnb_4bit_use_double_quant": True}, "same"),
    ("bnb4-storage-bf16", {"load_in_4bit": True, "bnb_4bit_quant_storage": "bfloat16"}, "same"),
    ("bnb4-storage-f32", {"load_in_4bit": True, "bnb_4bit_quant_storage": "float32"}, "same"),
    ("bnb4-storage-int8", {"load_in_4bit": True, "bnb_4bit_quant_storage": "int8"}, "same"),
    ("bnb8-threshold", {"load_in_8bit": True, "llm_int8_threshold": 5.0}, "same"),
    ("bnb8-threshold0", {"load_in_8bit": True, "llm_int8_threshold": 0.0}, "same"),
    ("bnb8-skip", {"load_in_8bit": True, "llm_int8_skip_modules": ["proj_out"]}, "same"),
    ("bnb4-skip2", {"load_in_4bit": True, "llm_int8_skip_modules": ["proj_out", "norm_out"]}, "same"),
    ("bnb8-offload", {"load_in_8bit": True, "llm_int8_enable_fp32_cpu_offload": True}, "same"),
    ("bnb8-fp16w", {"load_in_8bit": True, "llm_int8_has_fp16_weight": True}, "same"),
    ("bnb-flags-win-torchao", {"quant_method": "torchao", "load_in_4bit": True}, "same"),
    ("bnb-flags-win-gguf", {"quant_method": "gguf", "load_in_8bit": True}, "same"),
    (
        "bnb4-all",
        {
            "quant_method": "bitsandbytes",
            "load_in_4bit": True,
            "llm_int8_threshold": 4.0,
            "llm_int8_skip_modules": ["a"],
            "llm_int8_enable_fp32_cpu_offload": False,
            "llm_int8_has_fp16_weight": False,
            "bnb_4bit_compute_dtype": "bfloat16",
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_quant_storage": "uint8",
        },
        "same",
    ),
    ("bnb4-diffusers-to_dict", lambda: df_to_dict({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}), "same"),
    ("bnb8-diffusers-to_dict", lambda: df_to_dict({"load_in_8bit": True, "llm_int8_skip_modules": ["x"]}), "same"),
    ("bnb4-unknown-key", {"load_in_4bit": True, "bnb_4bit_typo": 1}, "same+warn"),
    # ---- bitsandbytes: invalid
    ("bnb-both", {"load_in_4bit": True, "load_in_8bit": True}, "fail"),
    ("bnb-none", {"quant_method": "bitsandbytes"}, "fail"),
    ("bnb-both-false", {"quant_method": "bitsandbytes", "load_in_4bit": False, "load_in_8bit": False}, "fail"),
    ("bnb8-threshold-str", {"load_in_8bit": True, "llm_int8_threshold": "6"}, "fail"),
    ("bnb8-skip-ints", {"load_in_8bit": True, "llm_int8_skip_modules": [1, 2]}, "D-skip-types"),
    ("bnb4-double-str", {"load_in_4bit": True, "bnb_4bit_use_double_quant": "yes"}, "fail"),
    ("bnb4-dtype-bad-name", {"load_in_4bit": True, "bnb_4bit_compute_dtype": "notadtype"}, "fail"),
    ("bnb4-dtype-int", {"load_in_4bit": True, "bnb_4bit_compute_dtype": 5}, "fail"),
    ("bnb4-storage-bad", {"load_in_4bit": True, "bnb_4bit_quant_storage": "int4"}, "fail"),
    ("bnb4-type-int", {"load_in_4bit": True, "bnb_4bit_quant_type": 5}, "fail"),
    ("bnb8-offload-int", {"load_in_8bit": True, "llm_int8_enable_fp32_cpu_offload": 1}, "fail"),
    ("bnb8-fp16w-none", {"load_in_8bit": True, "llm_int8_has_fp16_weight": None}, "fail"),
    ("bnb4-flag-str", {"load_in_4bit": "yes"}, "fail"),
    ("bnb4-flag-int", {"quant_method": "bitsandbytes", "load_in_4bit": 1}, "fail"),
    # ---- bitsandbytes: deliberate differences
    ("bnb4-quant-type-typo", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf5"}, "D-bnb-quant-type"),
    ("bnb-method-8bit", {"quant_method": "bitsandbytes_8bit"}, "D-bnb-method"),
    ("bnb-method-4bit", {"quant_method": "bitsandbytes_4bit"}, "D-bnb-method"),
    ("bnb8-threshold-int", {"load_in_8bit": True, "llm_int8_threshold": 6}, "D-int-as-float"),
    ("bnb4-dtype-prefix", {"load_in_4bit": True, "bnb_4bit_compute_dtype": "torch.bfloat16"}, "D-dtype-prefix"),
    ("bnb8-threshold-neg", {"load_in_8bit": True, "llm_int8_threshold": -1.0}, "D-threshold-range"),
    ("bnb8-threshold-nan", {"load_in_8bit": True, "llm_int8_threshold": float("nan")}, "D-threshold-range"),
    ("bnb8-skip-str", {"load_in_8bit": True, "llm_int8_skip_modules": "proj_out"}, "fail"),
    # ---- gguf
    ("gguf-min", {"quant_method": "gguf"}, "D-gguf-dict"),
    ("gguf-bf16", {"quant_method": "gguf", "compute_dtype": "bfloat16"}, "D-gguf-dict"),
    ("gguf-f16", {"quant_method": "gguf", "compute_dtype": "float16"}, "D-gguf-dict"),
    (
        "gguf-diffusers-to_dict",
        {"quant_method": "gguf", "compute_dtype": "bfloat16", "pre_quantized": True, "modules_to_not_convert": None},
        "D-gguf-dict",
    ),
    ("gguf-int8-dtype", {"quant_method": "gguf", "compute_dtype": "int8"}, "fail"),
    ("gguf-not-prequant", {"quant_method": "gguf", "pre_quantized": False}, "fail"),
    ("gguf-dtype-int", {"quant_method": "gguf", "compute_dtype": 3}, "fail"),
    # ---- quanto
    ("quanto-min", {"quant_method": "quanto"}, "same"),
    ("quanto-int8", {"quant_method": "quanto", "weights_dtype": "int8"}, "same"),
    ("quanto-int4", {"quant_method": "quanto", "weights_dtype": "int4"}, "same"),
    ("quanto-int2", {"quant_method": "quanto", "weights_dtype": "int2"}, "same"),
    ("quanto-float8", {"quant_method": "quanto", "weights_dtype": "float8"}, "same"),
    (
        "quanto-skip",
        {"quant_method": "quanto", "weights_dtype": "int4", "modules_to_not_convert": ["proj_out"]},
        "same",
    ),
    ("quanto-diffusers-to_dict", lambda: df_to_dict({"quant_method": "quanto", "weights_dtype": "int2"}), "same"),
    ("quanto-extra-key", {"quant_method": "quanto", "activations": "int8"}, "same+warn"),
    ("quanto-int3", {"quant_method": "quanto", "weights_dtype": "int3"}, "fail"),
    ("quanto-dtype-int", {"quant_method": "quanto", "weights_dtype": 8}, "fail"),
    ("quanto-skip-str", {"quant_method": "quanto", "modules_to_not_convert": "proj_out"}, "D-skip-str"),
    # ---- torchao
    ("torchao-int8wo", {"quant_method": "torchao", "quant_type": ser(tq.Int8WeightOnlyConfig())}, "same"),
    ("torchao-int4wo", {"quant_method": "torchao", "quant_type": ser(tq.Int4WeightOnlyConfig(group_size=64))}, "same"),
    ("torchao-f8wo", {"quant_method": "torchao", "quant_type": ser(tq.Float8WeightOnlyConfig())}, "same"),
    (
        "torchao-f8dq",
        {"quant_method": "torchao", "quant_type": ser(tq.Float8DynamicActivationFloat8WeightConfig())},
        "same",
    ),
    (
        "torchao-int8dq",
        {"quant_method": "torchao", "quant_type": ser(tq.Int8DynamicActivationInt8WeightConfig())},
        "same",
    ),
    (
        "torchao-skip",
        {
            "quant_method": "torchao",
            "quant_type": ser(tq.Int8WeightOnlyConfig()),
            "modules_to_not_convert": ["proj_out"],
        },
        "same",
    ),
    (
        "torchao-diffusers-to_dict",
        lambda: df_to_dict({"quant_method": "torchao", "quant_type": ser(tq.Int8WeightOnlyConfig())}),
        "same",
    ),
    ("torchao-shorthand-int8wo", {"quant_method": "torchao", "quant_type": "int8wo"}, "D-torchao-shorthand"),
    ("torchao-shorthand-int4", {"quant_method": "torchao", "quant_type": "int4_weight_only"}, "D-torchao-shorthand"),
    ("torchao-shorthand-f8", {"quant_method": "torchao", "quant_type": "float8wo_e4m3"}, "D-torchao-shorthand"),
    (
        "torchao-unknown-class",
        {"quant_method": "torchao", "quant_type": {"default": {"_type": "NoSuchConfig", "_version": 2, "_data": {}}}},
        "D-torchao-structural",
    ),
    ("torchao-missing", {"quant_method": "torchao"}, "fail"),
    ("torchao-bad-top", {"quant_method": "torchao", "quant_type": {"a": 1}}, "fail"),
    ("torchao-bad-shorthand", {"quant_method": "torchao", "quant_type": "int9wo"}, "fail"),
    ("torchao-int", {"quant_method": "torchao", "quant_type": 5}, "fail"),
    ("torchao-list", {"quant_method": "torchao", "quant_type": ["int8wo"]}, "fail"),
    (
        "torchao-no-type",
        {"quant_method": "torchao", "quant_type": {"default": {"_version": 2, "_data": {}}}},
        "fail",
    ),
    # ---- modelopt
    ("modelopt-fp8-cfg", {"quant_method": "modelopt", "quant_type": "FP8", "modelopt_config": MO_CFG}, "same"),
    (
        "modelopt-nvfp4-block",
        {
            "quant_method": "modelopt",
            "quant_type": "NVFP4",
            "block_quantize": 16,
            "channel_quantize": -1,
            "modelopt_config": MO_CFG,
        },
        "same",
    ),
    ("modelopt-w-a", {"quant_method": "modelopt", "quant_type": "FP8_FP8", "modelopt_config": MO_CFG}, "same"),
    ("modelopt-int8", {"quant_method": "modelopt", "quant_type": "INT8", "modelopt_config": MO_CFG}, "same"),
    (
        "modelopt-algo",
        {"quant_method": "modelopt", "quant_type": "INT4", "algorithm": "awq_lite", "modelopt_config": MO_CFG},
        "same",
    ),
    (
        "modelopt-act",
        {"quant_method": "modelopt", "quant_type": "FP8", "weight_only": False, "modelopt_config": MO_CFG},
        "same",
    ),
    (
        "modelopt-noconv",
        {"quant_method": "modelopt", "quant_type": "FP8", "disable_conv_quantization": True, "modelopt_config": MO_CFG},
        "same",
    ),
    ("modelopt-min", {"quant_method": "modelopt", "quant_type": "FP8"}, "D-modelopt-current"),
    ("modelopt-nvfp4-min", {"quant_method": "modelopt", "quant_type": "NVFP4"}, "D-modelopt-current"),
    (
        "modelopt-typo-w",
        {"quant_method": "modelopt", "quant_type": "FP9", "modelopt_config": MO_CFG},
        "D-modelopt-strict",
    ),
    (
        "modelopt-3parts",
        {"quant_method": "modelopt", "quant_type": "FP8_INT8_INT4", "modelopt_config": MO_CFG},
        "D-modelopt-strict",
    ),
    (
        "modelopt-typo-a",
        {"quant_method": "modelopt", "quant_type": "FP8_XYZ", "modelopt_config": MO_CFG},
        "D-modelopt-strict",
    ),
    ("modelopt-missing", {"quant_method": "modelopt"}, "fail"),
    ("modelopt-int-type", {"quant_method": "modelopt", "quant_type": 8}, "fail"),
    # ---- dispatch
    ("empty", {}, "fail"),
    ("method-none", {"quant_method": None}, "fail"),
    ("method-unknown", {"quant_method": "nope"}, "fail"),
    ("method-int", {"quant_method": 5}, "fail"),
    ("method-autoround", {"quant_method": "auto-round"}, "D-backends"),
]


def norm(v):
    if isinstance(v, torch.dtype):
        return str(v).split(".")[-1]
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): norm(x) for k, x in v.items()}
    return v


def view(q, side):
    """The comparable parts of a quantizer: class, pre_quantized, skip list and config fields."""
    c = q.quantization_config
    name = type(c).__name__
    out = {
        "quantizer": type(q).__name__,
        "config": name,
        "pre_quantized": q.pre_quantized,
        "quant_method": norm(c.quant_method),
    }
    if name == "BitsAndBytesConfig":
        keys = [
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
        ]
        out["modules_to_not_convert"] = q.modules_to_not_convert
    elif name == "GGUFQuantizationConfig":
        keys = ["compute_dtype"]
    elif name == "QuantoConfig":
        keys = ["weights_dtype", "modules_to_not_convert"]
    elif name == "TorchAoConfig":
        keys = ["modules_to_not_convert"]
        if side == "df":
            out["torchao"] = norm(torchao_config.config_to_dict(c.quant_type))
        else:
            out["torchao"] = norm(c.quant_type["default"])
    elif name == "NVIDIAModelOptConfig":
        keys = [
            "quant_type",
            "modules_to_not_convert",
            "weight_only",
            "channel_quantize",
            "block_quantize",
            "scale_channel_quantize",
            "scale_block_quantize",
            "modelopt_config",
            "disable_conv_quantization",
        ]
        out["algorithm"] = c.calib_cfg["method"] if side == "df" else c.algorithm
    else:  # pragma: no cover
        raise AssertionError(name)
    for k in keys:
        out[k] = norm(getattr(c, k))
    return out


def run_df(d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DAQ.from_config(copy.deepcopy(d))


def run_fq(d, *, expect_warning=False):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        q = FAQ.from_config(d)
    fq_warnings = [x for x in w if issubclass(x.category, UserWarning)]
    if expect_warning:
        assert len(fq_warnings) == 1, [str(x.message) for x in fq_warnings]
    return q


def outcome(fn):
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - we compare exception types
        return None, e


@pytest.mark.parametrize("case_id,d,expect", CASES, ids=[c[0] for c in CASES])
def test_against_diffusers(case_id, d, expect):
    if callable(d):
        d = d()
    original = copy.deepcopy(d)
    df, df_err = outcome(lambda: run_df(d))
    fq, fq_err = outcome(lambda: run_fq(d, expect_warning=expect.endswith("+warn")))
    # Nothing the caller passed is mutated.
    assert repr(d) == repr(original)

    if expect.startswith("same"):
        assert df_err is None, f"diffusers failed: {df_err!r}"
        assert fq_err is None, f"fastquant failed: {fq_err!r}"
        assert view(fq, "fq") == view(df, "df")
    elif expect == "fail":
        assert df_err is not None, f"diffusers accepted {d!r}"
        assert fq_err is not None, f"fastquant accepted {d!r}"
        assert isinstance(fq_err, (type(df_err), ValueError, TypeError)), (df_err, fq_err)
        # A clear message names what was wrong.
        assert len(str(fq_err)) > 20
    else:
        check_difference(expect, d, df, df_err, fq, fq_err)


def check_difference(anchor, d, df, df_err, fq, fq_err):
    assert f"`{anchor}`" in COMPAT_DOC.read_text(), f"{anchor} is not documented in docs/compatibility.md"
    if anchor == "D-bnb-quant-type":
        assert df_err is None and df.quantization_config.bnb_4bit_quant_type == "nf5"
        assert isinstance(fq_err, ValueError) and "bnb_4bit_quant_type" in str(fq_err) and "nf4" in str(fq_err)
    elif anchor == "D-bnb-method":
        want = "BnB8BitDiffusersQuantizer" if d["quant_method"].endswith("8bit") else "BnB4BitDiffusersQuantizer"
        # diffusers builds a config with neither flag and then always picks 4-bit.
        assert df_err is None and type(df).__name__ == "BnB4BitDiffusersQuantizer"
        assert not (df.quantization_config.load_in_4bit or df.quantization_config.load_in_8bit)
        assert fq_err is None and type(fq).__name__ == want
        c = fq.quantization_config
        assert (c.load_in_8bit, c.load_in_4bit) == ((True, False) if want.startswith("BnB8") else (False, True))
    elif anchor == "D-int-as-float":
        assert isinstance(df_err, TypeError)
        assert fq_err is None and fq.quantization_config.llm_int8_threshold == 6.0
        assert isinstance(fq.quantization_config.llm_int8_threshold, float)
    elif anchor == "D-dtype-prefix":
        assert isinstance(df_err, AttributeError)
        assert fq_err is None and fq.quantization_config.bnb_4bit_compute_dtype is torch.bfloat16
    elif anchor == "D-threshold-range":
        assert df_err is None
        assert isinstance(fq_err, ValueError) and "llm_int8_threshold" in str(fq_err)
    elif anchor == "D-gguf-dict":
        assert isinstance(df_err, TypeError)
        assert fq_err is None and type(fq).__name__ == "GGUFQuantizer"
        want = getattr(torch, d.get("compute_dtype", "float32"))
        assert fq.quantization_config.compute_dtype is want
        # ... and the same quantizer as diffusers builds from the equivalent object.
        dfo = DAQ.from_config(diffusers_auto.GGUFQuantizationConfig(compute_dtype=want))
        assert view(fq, "fq") == view(dfo, "df")
    elif anchor == "D-skip-str":
        assert df_err is None
        assert isinstance(fq_err, TypeError) and "modules_to_not_convert" in str(fq_err)
    elif anchor == "D-skip-types":
        assert df_err is None
        assert isinstance(fq_err, TypeError) and "llm_int8_skip_modules[0]" in str(fq_err)
    elif anchor == "D-torchao-shorthand":
        assert df_err is not None  # TypeError from the constructor, AssertionError from from_dict
        assert fq_err is None
        expected = {
            "int8wo": "Int8WeightOnlyConfig",
            "int4_weight_only": "Int4WeightOnlyConfig",
            "float8wo_e4m3": "Float8WeightOnlyConfig",
        }[d["quant_type"]]
        assert fq.quantization_config.quant_type_name == expected
    elif anchor == "D-torchao-structural":
        assert df_err is not None
        assert fq_err is None and fq.quantization_config.quant_type_name == "NoSuchConfig"
    elif anchor == "D-modelopt-current":
        assert df_err is not None  # diffusers' builder breaks with nvidia-modelopt >= 0.44
        assert fq_err is None and type(fq).__name__ == "NVIDIAModelOptQuantizer"
        assert fq.quantization_config.quant_type == d["quant_type"]
    elif anchor == "D-modelopt-strict":
        assert df_err is None  # diffusers logs a warning and quantizes with something else
        assert df.quantization_config.quant_type != d["quant_type"]
        assert isinstance(fq_err, ValueError) and "quant_type" in str(fq_err)
    elif anchor == "D-backends":
        assert df_err is None
        assert isinstance(fq_err, ValueError) and "auto-round" in str(fq_err)
    else:  # pragma: no cover
        raise AssertionError(f"no check for {anchor}")


def test_case_count():
    assert len(CASES) >= 80


def test_object_inputs_same_as_diffusers():
    import diffusers

    pairs = [
        (
            fastquant.GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
            diffusers.GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
        ),
        (
            fastquant.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
            diffusers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        ),
        (fastquant.TorchAoConfig(tq.Int8WeightOnlyConfig()), diffusers.TorchAoConfig(tq.Int8WeightOnlyConfig())),
    ]
    for ours, theirs in pairs:
        pre = isinstance(ours, fastquant.GGUFQuantizationConfig)
        assert view(FAQ.from_config(ours, pre_quantized=pre), "fq") == view(run_df_obj(theirs, pre), "df")


def run_df_obj(cfg, pre_quantized=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DAQ.from_config(cfg, pre_quantized=pre_quantized)


def test_D_bnb_empty_object():
    """`BitsAndBytesConfig()` with neither flag: diffusers silently builds a 4-bit quantizer."""
    import diffusers

    assert "`D-bnb-empty`" in COMPAT_DOC.read_text()
    assert type(run_df_obj(diffusers.BitsAndBytesConfig())).__name__ == "BnB4BitDiffusersQuantizer"
    with pytest.raises(ValueError, match="neither load_in_4bit nor load_in_8bit"):
        fastquant.BitsAndBytesConfig()


def test_D_merge_different_methods():
    """diffusers merges a bnb checkpoint with a user torchao config by warning; fastquant refuses."""
    assert "`D-merge`" in COMPAT_DOC.read_text()
    model = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    user = {"quant_method": "quanto", "weights_dtype": "int8"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = DAQ.merge_quantization_configs(copy.deepcopy(model), diffusers_auto.QuantoConfig())
    assert type(merged).__name__ == "BitsAndBytesConfig"
    with pytest.raises(ValueError, match="different method"):
        FAQ.merge_quantization_configs(model, user)


def test_D_skip_list_not_mutated():
    """diffusers' bnb quantizer extends the config's own skip list in place; fastquant's list is its own."""
    assert "`D-skip-copy`" in COMPAT_DOC.read_text()
    skip = ["proj_out"]
    cfg = fastquant.BitsAndBytesConfig(load_in_4bit=True, llm_int8_skip_modules=skip)
    q = FAQ.from_config(cfg, modules_to_not_convert=["norm"])
    q.modules_to_not_convert.append("x")
    assert skip == ["proj_out"]
    assert cfg.llm_int8_skip_modules == ["proj_out"]
    assert q.modules_to_not_convert == ["norm", "proj_out", "x"]
    assert FAQ.from_config(cfg).modules_to_not_convert == ["proj_out"]


def test_D_value_semantics():
    """diffusers' dataclass __eq__ compares only quant_method; fastquant compares every field."""
    import diffusers

    assert "`D-eq`" in COMPAT_DOC.read_text()
    assert diffusers.GGUFQuantizationConfig(torch.float16) == diffusers.GGUFQuantizationConfig(torch.bfloat16)
    assert fastquant.GGUFQuantizationConfig(torch.float16) != fastquant.GGUFQuantizationConfig(torch.bfloat16)
    assert fastquant.GGUFQuantizationConfig(torch.float16) == fastquant.GGUFQuantizationConfig("float16")
