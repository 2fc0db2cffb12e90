"""Config classes and dispatch: value semantics, strictness, registration (no diffusers needed)."""

from __future__ import annotations

import copy
import inspect
import json
import pickle
import warnings

import pytest

import fastquant
from fastquant import (
    AUTO_QUANTIZATION_CONFIG_MAPPING,
    AUTO_QUANTIZER_MAPPING,
    BitsAndBytesConfig,
    DiffusersAutoQuantizer,
    DiffusersQuantizer,
    GGUFQuantizationConfig,
    NVIDIAModelOptConfig,
    QuantizationConfigMixin,
    QuantizationMethod,
    QuantoConfig,
    TorchAoConfig,
)

AQ = DiffusersAutoQuantizer

TORCHAO_SER = {
    "default": {
        "_type": "Int4WeightOnlyConfig",
        "_version": 2,
        "_data": {
            "group_size": 64,
            "layout": {"_type": "TensorCoreTiledLayout", "_version": 1, "_data": {"inner_k_tiles": 8}},
        },
    }
}

EXAMPLES = [
    BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype="bfloat16",
        llm_int8_skip_modules=["a", "b"],
    ),
    BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=3.5, llm_int8_has_fp16_weight=True),
    GGUFQuantizationConfig(compute_dtype="float16", modules_to_not_convert=["proj_out"]),
    QuantoConfig(weights_dtype="int4"),
    TorchAoConfig(TORCHAO_SER, modules_to_not_convert=["x"]),
    TorchAoConfig("int4wo", quant_type_kwargs={"group_size": 32}),
    NVIDIAModelOptConfig(
        "NVFP4_FP8",
        block_quantize=16,
        channel_quantize=-1,
        scale_block_quantize=8,
        scale_channel_quantize=-1,
        algorithm="awq_lite",
        modelopt_config={"quant_cfg": {"*": {"enable": False}}},
    ),
]


@pytest.mark.parametrize("cfg", EXAMPLES, ids=lambda c: type(c).__name__)
def test_round_trips(cfg):
    d = cfg.to_dict()
    assert type(cfg).from_dict(d) == cfg
    assert AQ.from_dict(d) == cfg
    # JSON round trip (through our parser and through Python's json).
    text = cfg.to_json_string()
    assert json.loads(text) == json.loads(json.dumps(d))
    assert type(cfg).from_json_string(text) == cfg
    assert AQ.from_json_string(text) == cfg
    # to_dict is a fresh object each time; changing it changes nothing.
    d["quant_method"] = "changed"
    assert cfg.to_dict()["quant_method"] == cfg.quant_method.value
    # Pickle and copies.
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg) == cfg
    # repr shows every field.
    r = repr(cfg)
    for k in cfg.to_dict():
        if k != "quant_method":
            assert f"{k}=" in r


def test_equality_is_by_every_field():
    a = BitsAndBytesConfig(load_in_4bit=True)
    assert a == BitsAndBytesConfig(load_in_4bit=True)
    assert a != BitsAndBytesConfig(load_in_8bit=True)
    assert a != BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True)
    assert a != QuantoConfig()
    assert (a == "x") is False


def test_configs_are_immutable():
    c = QuantoConfig()
    with pytest.raises(AttributeError):
        c.weights_dtype = "int4"


def test_dtype_fields_accept_and_return_torch_dtypes():
    import torch

    c = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.uint8)
    assert c.bnb_4bit_compute_dtype is torch.bfloat16
    assert c.to_dict()["bnb_4bit_compute_dtype"] == "bfloat16"
    assert c == BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype="bfloat16")
    assert GGUFQuantizationConfig().compute_dtype is torch.float32
    assert GGUFQuantizationConfig(torch.float16).compute_dtype is torch.float16


def test_positional_arguments_follow_diffusers():
    assert BitsAndBytesConfig(False, True).load_in_4bit is True
    assert QuantoConfig("int2", ["x"]).modules_to_not_convert == ["x"]
    assert NVIDIAModelOptConfig("fp8").quant_type == "FP8"
    with pytest.raises(TypeError, match="takes from 0 to 2 positional arguments but 3 were given"):
        QuantoConfig("int2", ["x"], 3)
    with pytest.raises(TypeError, match="multiple values for argument 'weights_dtype'"):
        QuantoConfig("int2", weights_dtype="int4")


@pytest.mark.parametrize(
    "cls, base",
    [
        (BitsAndBytesConfig, {"load_in_4bit": True}),
        (GGUFQuantizationConfig, {}),
        (QuantoConfig, {}),
        (TorchAoConfig, {"quant_type": "int8wo"}),
        (NVIDIAModelOptConfig, {"quant_type": "FP8"}),
    ],
)
def test_constructor_signatures_are_real_and_their_defaults_are_the_defaults(cls, base):
    params = list(inspect.signature(cls).parameters.values())
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD  # unknown keys: warned about, as diffusers does
    named = params[:-1]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in named)
    assert [p.name for p in named if p.default is inspect.Parameter.empty] == [k for k in base if k == "quant_type"]
    plain = cls(**base)
    # Every named parameter is a field, and passing the default shown changes nothing.
    assert {p.name for p in named} <= set(dir(plain))
    for p in named:
        if p.name not in base:
            assert cls(**base, **{p.name: p.default}) == plain, p.name
            assert isinstance(getattr(cls, p.name), type(BitsAndBytesConfig.load_in_8bit))  # a real attribute
    # The same call written positionally, in the signature's order.
    assert cls(*[base.get(p.name, p.default) for p in named]) == plain


def test_a_left_out_argument_is_not_the_same_as_its_default():
    # diffusers writes the private `_load_in_4bit` too: it counts when `load_in_4bit` is absent and must agree
    # with it when given, so the constructor passes on only what the caller wrote.
    assert BitsAndBytesConfig(_load_in_4bit=True).load_in_4bit is True
    with pytest.raises(ValueError, match="_load_in_4bit: True contradicts load_in_4bit=False"):
        BitsAndBytesConfig(load_in_4bit=False, _load_in_4bit=True)
    with pytest.raises(TypeError, match="algorithm: expected a str"):
        NVIDIAModelOptConfig("FP8", algorithm=None)


def test_callers_lists_and_dicts_are_not_shared_or_mutated():
    skip = ["a"]
    data = {"quant_method": "bitsandbytes", "load_in_4bit": True, "llm_int8_skip_modules": skip}
    snapshot = copy.deepcopy(data)
    cfg = AQ.from_dict(data)
    skip.append("b")
    assert cfg.llm_int8_skip_modules == ["a"]
    got = cfg.llm_int8_skip_modules
    got.append("c")
    assert cfg.llm_int8_skip_modules == ["a"]
    skip.pop()
    assert data == snapshot
    q = AQ.from_config(data, modules_to_not_convert=skip)
    q.modules_to_not_convert.append("z")
    assert skip == ["a"] and data == snapshot


def test_errors_name_key_value_and_allowed():
    with pytest.raises(TypeError) as e:
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant="yes")
    assert (
        "BitsAndBytesConfig.bnb_4bit_use_double_quant" in str(e.value)
        and "'yes'" in str(e.value)
        and "bool" in str(e.value)
    )
    with pytest.raises(ValueError) as e:
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_storage="int4")
    assert "bnb_4bit_quant_storage" in str(e.value) and "'int4'" in str(e.value) and "uint8" in str(e.value)
    with pytest.raises(
        ValueError, match=r"QuantoConfig.weights_dtype: 'int3' is not allowed; allowed: float8, int8, int4, int2"
    ):
        QuantoConfig("int3")
    with pytest.raises(TypeError, match=r"llm_int8_skip_modules\[1\]: expected a str"):
        BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["a", 3])
    with pytest.raises(
        ValueError, match=r"quant_type.default._data.layout: a serialized torchao object needs a '_data' key"
    ):
        TorchAoConfig({"default": {"_type": "X", "_version": 2, "_data": {"layout": {"_type": "L"}}}})
    with pytest.raises(TypeError, match="missing required argument"):
        NVIDIAModelOptConfig()
    with pytest.raises(ValueError, match="block quantization needs channel_quantize"):
        NVIDIAModelOptConfig("FP8", block_quantize=16)
    with pytest.raises(ValueError, match="apply only to weight types NF4, NVFP4"):
        NVIDIAModelOptConfig(
            "FP8", block_quantize=16, channel_quantize=-1, scale_block_quantize=8, scale_channel_quantize=-1
        )
    with pytest.raises(TypeError, match="forward_loop: expected a callable"):
        NVIDIAModelOptConfig("FP8", forward_loop=3)
    with pytest.raises(ValueError, match="GGUF weights are always pre-quantized"):
        GGUFQuantizationConfig.from_dict({"pre_quantized": False})
    with pytest.raises(ValueError, match="quant_method: 'gguf' is not allowed; allowed: 'quanto'"):
        QuantoConfig.from_dict({"quant_method": "gguf"})


def test_unknown_keys_warn_once_listing_all():
    with pytest.warns(UserWarning) as rec:
        c = QuantoConfig(weights_dtype="int4", wieghts="x", activations="int8")
    msgs = [str(r.message) for r in rec if issubclass(r.category, UserWarning)]
    assert len(msgs) == 1 and '"wieghts"' in msgs[0] and '"activations"' in msgs[0]
    assert c == QuantoConfig("int4")
    cfg, unused = QuantoConfig.from_dict({"weights_dtype": "int2", "extra": 1}, return_unused_kwargs=True)
    assert cfg == QuantoConfig("int2") and unused == {"extra": 1}


def test_modelopt_forward_loop_and_int_keyed_dict():
    def loop(model):
        return None

    block = {"quant_cfg": {"*weight_quantizer": {"block_sizes": {-1: 16, "type": "dynamic"}, "num_bits": (2, 1)}}}
    c = NVIDIAModelOptConfig("NVFP4", forward_loop=loop, modelopt_config=block)
    assert c.forward_loop is loop
    got = c.modelopt_config
    assert got == block and got is not block
    got["quant_cfg"].clear()
    assert c.modelopt_config == block
    d = c.to_dict()
    assert d["forward_loop"] is loop
    assert NVIDIAModelOptConfig.from_dict(d) == c
    assert "forward_loop" not in json.loads(NVIDIAModelOptConfig("FP8", forward_loop=loop).to_json_string())
    # calib_cfg (diffusers' stored form) is read as the algorithm
    assert (
        NVIDIAModelOptConfig.from_dict({"quant_type": "FP8", "calib_cfg": {"method": "awq_full"}}).algorithm
        == "awq_full"
    )
    with pytest.raises(ValueError, match="contradicts"):
        NVIDIAModelOptConfig.from_dict({"quant_type": "FP8", "algorithm": "max", "calib_cfg": {"method": "awq_full"}})


def test_torchao_shorthands_and_objects():
    c = TorchAoConfig("float8wo")
    assert c.quant_type_name == "Float8WeightOnlyConfig"
    resolved = c._resolved_quant_type()
    assert resolved["_data"]["weight_dtype"] == {"_type": "torch.dtype", "_data": "float8_e5m2"}
    assert TorchAoConfig("fp6_e3m2")._resolved_quant_type()["_data"] == {"ebits": 3, "mbits": 2}
    assert TorchAoConfig("uint4wo")._resolved_quant_type()["_data"]["dtype"]["_data"] == "uint4"
    with pytest.raises(ValueError, match="keyword arguments apply only to string shorthands"):
        TorchAoConfig(TORCHAO_SER, quant_type_kwargs={"group_size": 32})
    with pytest.raises(ValueError, match="int9wo"):
        TorchAoConfig("int9wo")
    import torchao.quantization as tq

    obj = TorchAoConfig(tq.Int8WeightOnlyConfig())
    assert obj.quant_type_name == "Int8WeightOnlyConfig"
    assert TorchAoConfig.from_dict(obj.to_dict()) == obj


def test_quant_method_enum():
    assert BitsAndBytesConfig(load_in_4bit=True).quant_method is QuantizationMethod.BITS_AND_BYTES
    assert GGUFQuantizationConfig().quant_method == "gguf"
    assert str(QuantizationMethod.QUANTO) == "quanto"


def test_from_config_dispatch_and_quantizer_attributes():
    q = AQ.from_config({"load_in_4bit": True}, pre_quantized=False, modules_to_not_convert=("a",))
    assert type(q).__name__ == "BnB4BitDiffusersQuantizer"
    assert q.pre_quantized is False and q.modules_to_not_convert == ["a"]
    assert "bitsandbytes" in q.required_packages
    assert isinstance(q, DiffusersQuantizer)
    q8 = AQ.from_config(BitsAndBytesConfig(load_in_8bit=True))
    assert type(q8).__name__ == "BnB8BitDiffusersQuantizer" and q8.pre_quantized is True
    assert type(AQ.from_config(QuantoConfig())).__name__ == "QuantoQuantizer"
    assert type(AQ.from_config({"quant_method": "torchao", "quant_type": "int8wo"})).__name__ == "TorchAoHfQuantizer"
    assert type(AQ.from_config({"quant_method": "modelopt", "quant_type": "fp8"})).__name__ == "NVIDIAModelOptQuantizer"
    g = AQ.from_config({"quant_method": "gguf", "modules_to_not_convert": ["x"]})
    assert type(g).__name__ == "GGUFQuantizer" and g.modules_to_not_convert == ["x"]
    # Direct construction validates the same way.
    assert fastquant.QuantoQuantizer(QuantoConfig()).modules_to_not_convert == []
    with pytest.raises(TypeError, match="needs a QuantoConfig"):
        fastquant.QuantoQuantizer(GGUFQuantizationConfig())


def test_from_config_rejects_bad_kwargs_and_inputs():
    with pytest.raises(TypeError, match="unexpected keyword argument 'device_map'"):
        AQ.from_config({"load_in_4bit": True}, device_map="auto")
    with pytest.raises(TypeError, match="pre_quantized: expected a bool"):
        AQ.from_config({"load_in_4bit": True}, pre_quantized="no")
    with pytest.raises(TypeError, match="expected a list of module names"):
        AQ.from_config({"load_in_4bit": True}, modules_to_not_convert="proj")
    with pytest.raises(ValueError, match="pre-quantized weights only"):
        AQ.from_config({"quant_method": "gguf"}, pre_quantized=False)
    with pytest.raises(TypeError, match="expected a dict or a quantization config object"):
        AQ.from_config(42)
    with pytest.raises(TypeError, match="keys must be str"):
        AQ.from_dict({1: 2})
    with pytest.raises(ValueError, match="unknown quant_method 'nope'; available: bitsandbytes_4bit"):
        AQ.from_config({"quant_method": "nope"})


def test_merge_quantization_configs():
    model = {"quant_method": "quanto", "weights_dtype": "int4"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert AQ.merge_quantization_configs(model, None) == QuantoConfig("int4")
        assert AQ.merge_quantization_configs(model, QuantoConfig("int4")) == QuantoConfig("int4")
    with pytest.warns(UserWarning, match="model's config is used"):
        assert AQ.merge_quantization_configs(
            model, {"quant_method": "quanto", "weights_dtype": "int8"}
        ) == QuantoConfig("int4")
    with pytest.raises(ValueError, match="different method"):
        AQ.merge_quantization_configs({"load_in_4bit": True}, {"load_in_8bit": True})


def test_mappings_and_registration():
    assert (
        set(AUTO_QUANTIZER_MAPPING)
        == set(AUTO_QUANTIZATION_CONFIG_MAPPING)
        == {"bitsandbytes_4bit", "bitsandbytes_8bit", "gguf", "quanto", "torchao", "modelopt"}
    )
    assert AUTO_QUANTIZATION_CONFIG_MAPPING["bitsandbytes_8bit"] is BitsAndBytesConfig
    assert issubclass(BitsAndBytesConfig, QuantizationConfigMixin)

    name = "my-method-test"

    @fastquant.register_quantization_config(name)
    class MyConfig(QuantizationConfigMixin):
        def __init__(self, bits=4, modules_to_not_convert=None):
            self.quant_method = name
            self.bits = bits
            self.modules_to_not_convert = modules_to_not_convert

    @fastquant.register_quantizer(name)
    class MyQuantizer(DiffusersQuantizer):
        config_class = MyConfig

    try:
        cfg = AQ.from_dict({"quant_method": name, "bits": 2})
        assert isinstance(cfg, MyConfig) and cfg.bits == 2
        q = AQ.from_config({"quant_method": name, "modules_to_not_convert": ["m"]}, modules_to_not_convert=["n"])
        assert isinstance(q, MyQuantizer) and q.modules_to_not_convert == ["n", "m"]
        assert isinstance(AQ.from_config(MyConfig()), MyQuantizer)
        with pytest.raises(ValueError, match="already registered"):
            fastquant.register_quantization_config(name)(MyConfig)
        with pytest.raises(ValueError, match="already registered"):
            fastquant.register_quantizer("gguf")(MyQuantizer)
        with pytest.raises(TypeError, match="subclass of QuantizationConfigMixin"):
            fastquant.register_quantization_config("other-test")(dict)
        with pytest.raises(TypeError, match="subclass of DiffusersQuantizer"):
            fastquant.register_quantizer("other-test")(object)
    finally:
        AUTO_QUANTIZER_MAPPING.pop(name, None)
        AUTO_QUANTIZATION_CONFIG_MAPPING.pop(name, None)


def test_from_pretrained_reads_local_config(tmp_path):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(
        json.dumps({"_class_name": "X", "quantization_config": {"load_in_8bit": True}})
    )
    q = AQ.from_pretrained(tmp_path, subfolder="transformer")
    assert type(q).__name__ == "BnB8BitDiffusersQuantizer"
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'quantization_config'"):
        AQ.from_pretrained(tmp_path)


def test_json_errors_have_offsets():
    with pytest.raises(ValueError, match="invalid JSON at byte 22"):
        AQ.from_json_string('{"quant_method": "gg" x}')
