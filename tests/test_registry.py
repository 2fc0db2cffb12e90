"""The dispatcher lives in the Rust core: built-in and run-time registered methods go through the same
registry, and the two public mappings are live views of it."""

from __future__ import annotations

import pytest

import fastquant as fq
from fastquant import AUTO_QUANTIZATION_CONFIG_MAPPING as CONFIGS
from fastquant import AUTO_QUANTIZER_MAPPING as QUANTIZERS
from fastquant import DiffusersQuantizer, QuantizationConfigMixin

AQ = fq.DiffusersAutoQuantizer
NAME = "registry-test"


@pytest.fixture
def method():
    class Cfg(QuantizationConfigMixin):
        def __init__(self, bits=4, modules_to_not_convert=None):
            self.quant_method = NAME
            self.bits = bits
            self.modules_to_not_convert = modules_to_not_convert

    class Q(DiffusersQuantizer):
        config_class = Cfg

    fq.register_quantization_config(NAME)(Cfg)
    try:
        yield Cfg, Q
    finally:
        CONFIGS.pop(NAME, None)
        QUANTIZERS.pop(NAME, None)


def test_builtin_table_comes_from_the_core():
    assert list(QUANTIZERS) == ["bitsandbytes_4bit", "bitsandbytes_8bit", "gguf", "quanto", "torchao", "modelopt"]
    assert CONFIGS["gguf"] is fq.GGUFQuantizationConfig and QUANTIZERS["gguf"] is fq.GGUFQuantizer
    assert "nope" not in CONFIGS and len(CONFIGS) == 6
    with pytest.raises(KeyError):
        del CONFIGS["gguf"]  # built-in config classes stay
    assert CONFIGS["gguf"] is fq.GGUFQuantizationConfig


def test_a_registered_method_goes_through_the_same_dispatcher(method):
    Cfg, Q = method
    assert CONFIGS[NAME] is Cfg and NAME not in QUANTIZERS
    # A config class alone builds configs; without a quantizer the method is not available yet.
    assert AQ.from_dict({"quant_method": NAME, "bits": 3}).bits == 3
    with pytest.raises(fq.ConfigError, match=f"unknown quant_method '{NAME}'") as e:
        AQ.from_config({"quant_method": NAME})
    assert NAME not in e.value.errors()[0]["msg"].split("available:")[1]
    fq.register_quantizer(NAME)(Q)
    q = AQ.from_config(Cfg(bits=2), modules_to_not_convert=["x"])
    assert type(q) is Q and q.quantization_config.bits == 2 and q.modules_to_not_convert == ["x"]
    q = AQ.from_json_string('{"quant_method": "%s", "bits": 5}' % NAME)
    assert isinstance(q, Cfg) and q.bits == 5
    with pytest.raises(fq.ConfigError, match="unknown quant_method 'other'.*registry-test"):
        AQ.from_dict({"quant_method": "other"})
    # Merging knows the registered key.
    assert AQ.merge_quantization_configs(Cfg(bits=2), Cfg(bits=2)).bits == 2
    with pytest.raises(ValueError, match="different method"):
        AQ.merge_quantization_configs(Cfg(), fq.QuantoConfig("int8"))


def test_mappings_are_live_and_mutable(method):
    Cfg, Q = method
    QUANTIZERS[NAME] = Q
    assert QUANTIZERS[NAME] is Q and isinstance(AQ.from_config(Cfg()), Q)

    class Q2(Q):
        pass

    QUANTIZERS[NAME] = Q2  # assignment replaces, as on a dict
    assert type(AQ.from_config(Cfg())) is Q2
    del QUANTIZERS[NAME]
    assert NAME not in QUANTIZERS
    with pytest.raises(KeyError):
        del QUANTIZERS[NAME]


def test_unregistered_mixin_configs_name_their_method():
    class Loose(QuantizationConfigMixin):
        quant_method = "quanto"

    with pytest.raises(TypeError, match="QuantoQuantizer needs a QuantoConfig"):
        AQ.from_config(Loose())

    class NoMethod(QuantizationConfigMixin):
        pass

    with pytest.raises(ValueError, match="has no quant_method"):
        AQ.from_config(NoMethod())
    with pytest.raises(TypeError, match="expected a dict or a quantization config object"):
        AQ.from_config(42)
