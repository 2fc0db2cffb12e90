"""Backend quantizers on real torch models, with the real backend packages.

Each CPU-capable backend: a fixed-seed MLP is quantized through fastquant, and checked for
  * relative L2 error of the output vs the float model within a per-backend bound (measured value in the comment;
    the bound leaves about 2x margin, so a change of quantization scheme or a broken layer is caught);
  * skipped layers left as plain nn.Linear with unchanged weights; the caller's lists untouched;
  * bitwise the same output as calling the backend's own API by hand on the same model;
  * save -> load giving bitwise the same output; dequantize() leaving no trace.
CUDA-only paths run when CUDA is present and are skipped otherwise ("requires CUDA").
"""

from __future__ import annotations

import copy
import os
import sys
import types
import warnings

import pytest

import torch

import fastquant as fq  # noqa: E402
from fastquant.quantizers._utils import BackendImportError, matches_skip, require  # noqa: E402
from _roundtrip import roundtrip  # noqa: E402

warnings.filterwarnings("ignore", message=".*transformers .* is not tested with current version of modelopt.*")

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="requires CUDA")


class Net(torch.nn.Module):
    """Three Linear layers (128 -> 256 -> 256 -> 64) with GELU, and a transformers-style config object."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(128, 256)
        self.fc2 = torch.nn.Linear(256, 256)
        self.proj_out = torch.nn.Linear(256, 64)
        self.config = types.SimpleNamespace(hidden_size=256)

    def forward(self, x):
        g = torch.nn.functional.gelu
        return self.proj_out(g(self.fc2(g(self.fc1(x)))))


def make_model(device="cpu", dtype=torch.float32):
    torch.manual_seed(0)
    return Net().to(device=device, dtype=dtype).eval()


def make_input(device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 128, generator=g).to(device=device, dtype=dtype)


def rel_err(y, ref):
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


SKIP = ["proj_out"]


# ------------------------------------------------------------------------------------------------------------------
# the backends' own APIs, by hand


def bnb_by_hand(model, bits, quant_type="nf4", double_quant=False, threshold=6.0):
    import bitsandbytes as bnb

    for name in ("fc1", "fc2"):
        lin = getattr(model, name)
        if bits == 4:
            new = bnb.nn.Linear4bit(
                lin.in_features,
                lin.out_features,
                compute_dtype=torch.float32,
                compress_statistics=double_quant,
                quant_type=quant_type,
            )
            new.weight = bnb.nn.Params4bit(
                lin.weight.data, requires_grad=False, quant_type=quant_type, compress_statistics=double_quant
            )
            new.support_avx512bf16_for_cpu = False  # as fastquant's layers: no in-place CPU repack in eval()
        else:
            new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, has_fp16_weights=False, threshold=threshold)
            new.weight = bnb.nn.Int8Params(lin.weight.data, requires_grad=False, has_fp16_weights=False)
        new.bias = torch.nn.Parameter(lin.bias.data, requires_grad=False)
        setattr(model, name, new.to(lin.weight.device))
    return model


def torchao_by_hand(model, cfg_name, **kw):
    import torchao.quantization as tq
    from torchao.quantization import quantize_

    cfg = getattr(tq, cfg_name)(**kw)
    quantize_(model, cfg, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "proj_out")
    return model


def quanto_by_hand(model, weights):
    import optimum.quanto as oq

    oq.quantize(model, weights=getattr(oq, weights), exclude=["proj_out"])
    oq.freeze(model)
    return model


def modelopt_by_hand(model, cfg_name, forward_loop=None):
    import modelopt.torch.quantization as mtq

    cfg = copy.deepcopy(getattr(mtq, cfg_name))
    cfg["quant_cfg"] = list(cfg["quant_cfg"]) + [{"quantizer_name": "proj_out.*", "enable": False}]
    mtq.quantize(model, cfg, forward_loop=forward_loop)
    return model


def _calib(model):
    """modelopt calibration loop: a few batches that differ from the test input."""
    g = torch.Generator().manual_seed(2)
    dev = next(model.parameters()).device
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(16, 128, generator=g).to(dev))


# (id, config factory, bound, by-hand function). Bounds: measured error on this model and input, x ~2.
CPU_CASES = [
    # nf4 4-bit blocks of 64: measured 0.119
    (
        "bnb-nf4",
        lambda: fq.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        0.2,
        lambda m: bnb_by_hand(m, 4, "nf4"),
    ),
    # fp4 with double quantization: measured 0.147
    (
        "bnb-fp4-dq",
        lambda: fq.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=True),
        0.25,
        lambda m: bnb_by_hand(m, 4, "fp4", double_quant=True),
    ),
    # LLM.int8 row-wise absmax: measured 0.0048
    ("bnb-int8", lambda: fq.BitsAndBytesConfig(load_in_8bit=True), 0.02, lambda m: bnb_by_hand(m, 8)),
    # int8 weight-only per channel: measured 0.0047
    ("torchao-int8wo", lambda: fq.TorchAoConfig("int8wo"), 0.02, lambda m: torchao_by_hand(m, "Int8WeightOnlyConfig")),
    # int8 weights + dynamic int8 activations: measured 0.012
    (
        "torchao-int8dq",
        lambda: fq.TorchAoConfig("int8dq"),
        0.03,
        lambda m: torchao_by_hand(m, "Int8DynamicActivationInt8WeightConfig"),
    ),
    # float8 e4m3 weights: measured 0.031
    (
        "torchao-float8wo-e4m3",
        lambda: fq.TorchAoConfig({"_type": "Float8WeightOnlyConfig", "_version": 2, "_data": {}}),
        0.07,
        lambda m: torchao_by_hand(m, "Float8WeightOnlyConfig"),
    ),
    # quanto int8: measured 0.0050
    ("quanto-int8", lambda: fq.QuantoConfig(weights_dtype="int8"), 0.02, lambda m: quanto_by_hand(m, "qint8")),
    # quanto int4 groups of 128: measured 0.080
    ("quanto-int4", lambda: fq.QuantoConfig(weights_dtype="int4"), 0.15, lambda m: quanto_by_hand(m, "qint4")),
    # quanto int2: measured 0.457 (2 bits are coarse: 1.5x margin, still far below 1.0 = unrelated output)
    ("quanto-int2", lambda: fq.QuantoConfig(weights_dtype="int2"), 0.7, lambda m: quanto_by_hand(m, "qint2")),
    # quanto float8 e4m3: measured 0.031
    ("quanto-float8", lambda: fq.QuantoConfig(weights_dtype="float8"), 0.07, lambda m: quanto_by_hand(m, "qfloat8")),
    # modelopt INT8 weights per output channel: measured 0.0050
    (
        "modelopt-int8-w",
        lambda: fq.NVIDIAModelOptConfig(quant_type="INT8", channel_quantize=0),
        0.02,
        lambda m: modelopt_by_hand(m, "INT8_WEIGHT_ONLY_CFG"),
    ),
    # modelopt FP8 weights and activations, per tensor, calibrated: measured 0.047
    (
        "modelopt-fp8-w-a",
        lambda: fq.NVIDIAModelOptConfig(quant_type="FP8_FP8", weight_only=False, forward_loop=_calib),
        0.1,
        lambda m: modelopt_by_hand(m, "FP8_DEFAULT_CFG", _calib),
    ),
    # modelopt INT4 weights in blocks of 128 along the input dim: measured 0.086
    (
        "modelopt-int4-block",
        lambda: fq.NVIDIAModelOptConfig(quant_type="INT4", block_quantize=128, channel_quantize=-1),
        0.2,
        lambda m: modelopt_by_hand(m, "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"),
    ),
]


@pytest.fixture(scope="module")
def float_model():
    return make_model()


@pytest.mark.parametrize("case", CPU_CASES, ids=[c[0] for c in CPU_CASES])
def test_cpu_backend(case, tmp_path):
    name, make_cfg, bound, by_hand = case
    x = make_input()
    ref_model = make_model()
    with torch.no_grad():
        ref = ref_model(x)
    cfg = make_cfg()
    cfg_dict_before = cfg.to_dict()
    skip = list(SKIP)
    skip_before = list(skip)

    model = make_model()
    out = fq.quantize(model, cfg, modules_to_not_convert=skip)
    assert out is model
    with torch.no_grad():
        y = model(x)
    err = rel_err(y, ref)
    assert err <= bound, f"{name}: relative error {err:.4f} > bound {bound}"
    assert err > 0, f"{name}: output identical to float: nothing was quantized"

    # quantized layers are not plain Linear any more (or carry quantized weights); the skipped one is untouched
    q = model.hf_quantizer
    assert set(q.quantized_modules(model)) == {"fc1", "fc2"}
    assert type(model.proj_out) is torch.nn.Linear
    assert type(model.proj_out.weight) is torch.nn.Parameter
    assert torch.equal(model.proj_out.weight, ref_model.proj_out.weight)
    assert torch.equal(model.proj_out.bias, ref_model.proj_out.bias)
    # the caller's list and the config are untouched; bookkeeping recorded
    assert skip == skip_before
    assert cfg.to_dict() == cfg_dict_before
    assert model.is_quantized is True
    assert str(model.quantization_method) == cfg.to_dict()["quant_method"]
    assert model.config.quantization_config == cfg

    # the backend's own API by hand: bitwise the same output
    manual = by_hand(make_model()).eval()  # the model is in eval(), and so are the layers quantize swaps in
    with torch.no_grad():
        y_manual = manual(x)
    assert torch.equal(y, y_manual), f"{name}: differs from the backend's API by {rel_err(y, y_manual):.3g}"

    # serialize through the hooks and safetensors -> load into a fresh float model: bitwise the same output
    loaded = roundtrip(model, make_model(), tmp_path)
    with torch.no_grad():
        y_loaded = loaded(x)
    assert torch.equal(y, y_loaded)
    assert type(loaded.proj_out) is torch.nn.Linear
    assert set(loaded.hf_quantizer.quantized_modules(loaded)) == {"fc1", "fc2"}


@pytest.mark.parametrize("case", CPU_CASES, ids=[c[0] for c in CPU_CASES])
def test_dequantize(case):
    name, make_cfg, bound, _ = case
    x = make_input()
    model = fq.quantize(make_model(), make_cfg(), modules_to_not_convert=SKIP)
    q = model.hf_quantizer
    with torch.no_grad():
        yq = model(x)
    out = fq.dequantize(model)
    assert out is model
    assert q.quantized_modules(model) == []
    for mod_name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            assert type(m) is torch.nn.Linear, f"{mod_name} is still {type(m).__name__}"
            assert type(m.weight) is torch.nn.Parameter and type(m.weight.data) is torch.Tensor
        assert not [
            c
            for c in m.children()
            if type(c).__module__.split(".")[0] in ("bitsandbytes", "optimum", "modelopt", "torchao")
        ]
    for attr in ("hf_quantizer", "is_quantized", "quantization_method"):
        assert not hasattr(model, attr), attr
    assert not hasattr(model.config, "quantization_config")
    assert not hasattr(model, "_modelopt_state")
    with torch.no_grad():
        y = model(x)
    # weight-only schemes: the dequantized weights reproduce the quantized layer; with activation quantization the
    # activations are float again, so only the bound applies.
    assert rel_err(y, yq) <= bound


# ------------------------------------------------------------------------------------------------------------------
# the hook protocol as a loader drives it (meta model, tensors one by one)


@pytest.mark.parametrize(
    "case",
    [c for c in CPU_CASES if c[0] in ("bnb-nf4", "bnb-int8", "torchao-int8wo", "quanto-int8")],
    ids=["bnb-nf4", "bnb-int8", "torchao-int8wo", "quanto-int8"],
)
def test_hooks_on_meta_model(case):
    from fastquant.quantizers._tensors import set_tensor

    name, make_cfg, _, _ = case
    x = make_input()
    expected = fq.quantize(make_model(), make_cfg(), modules_to_not_convert=SKIP)
    state_dict = make_model().state_dict()
    with torch.device("meta"):
        model = Net()
    q = fq.DiffusersAutoQuantizer.from_config(make_cfg(), pre_quantized=False, modules_to_not_convert=SKIP)
    q.validate_environment(device_map={"": "cpu"}, torch_dtype=torch.float32)
    assert q.update_torch_dtype(torch.float32) == torch.float32
    assert q.update_device_map({"": "cpu"}) == {"": "cpu"}
    q.preprocess_model(model, device_map={"": "cpu"}, keep_in_fp32_modules=None)
    routed = []
    for key, value in state_dict.items():
        if q.check_if_quantized_param(model, value, key, state_dict):
            routed.append(key)
            q.create_quantized_param(model, value, key, torch.device("cpu"), state_dict, unexpected_keys=[])
        else:
            set_tensor(model, key, value)
    q.postprocess_model(model)
    model.eval()  # as a loader returns it (and as `expected`, an eval() model, was quantized)
    assert sorted(routed) == ["fc1.weight", "fc2.weight"]
    with torch.no_grad():
        assert torch.equal(model(x), expected(x))


def test_hook_defaults():
    q = fq.DiffusersAutoQuantizer.from_config(fq.BitsAndBytesConfig(load_in_8bit=True), pre_quantized=False)
    assert q.adjust_max_memory({0: 100, "cpu": 1000}) == {0: 90.0, "cpu": 900.0}
    assert q.adjust_target_dtype(torch.float16) == torch.int8
    assert q.is_serializable and q.is_trainable and q.is_compileable
    q4 = fq.DiffusersAutoQuantizer.from_config(fq.BitsAndBytesConfig(load_in_4bit=True), pre_quantized=False)
    assert not q4.is_compileable
    t = fq.DiffusersAutoQuantizer.from_config(fq.TorchAoConfig("int8wo"), pre_quantized=False)
    assert t.update_torch_dtype(None) == torch.bfloat16 and t.is_trainable and t.is_serializable
    t4 = fq.DiffusersAutoQuantizer.from_config(fq.TorchAoConfig("int4wo"), pre_quantized=False)
    assert not t4.is_trainable
    sd, meta = t.get_state_dict_and_metadata({"a": torch.ones(1)}, safe_serialization=False)
    assert meta == {}


def test_keep_in_fp32_and_dict_config():
    model = make_model()
    model._keep_in_fp32_modules = ["fc2"]
    fq.quantize(model, {"quant_method": "torchao", "quant_type": "int8wo"})
    assert model.hf_quantizer.quantized_modules(model) == ["fc1", "proj_out"]
    assert type(model.fc2.weight) is torch.nn.Parameter
    assert model.hf_quantizer.modules_to_not_convert == []  # keep_in_fp32 did not leak into the quantizer's list


def test_quantize_twice_is_an_error():
    model = fq.quantize(make_model(), fq.QuantoConfig(weights_dtype="int8"))
    with pytest.raises(ValueError, match="already quantized"):
        fq.quantize(model, fq.QuantoConfig(weights_dtype="int8"))


def test_skip_matching():
    assert matches_skip("blocks.0.attn.to_q", ["to_q"])
    assert matches_skip("blocks.0.attn.to_q", ["blocks.0"])
    assert matches_skip("blocks.0.attn.to_q", ["attn.to_q"])
    assert matches_skip("blocks.0.attn.to_q", ["blocks.0.attn.to_q"])
    assert not matches_skip("blocks.0.attn.to_qkv", ["to_q"])
    assert not matches_skip("blocks.10.attn", ["blocks.1"])
    assert not matches_skip("proj", [])


def test_diffusers_model_config_cleaned():
    """A diffusers ModelMixin keeps its config in a FrozenDict: quantize registers the config there and
    dequantize removes it again."""
    import diffusers
    from diffusers.configuration_utils import ConfigMixin, register_to_config

    class DModel(diffusers.ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, width: int = 64):
            super().__init__()
            self.a = torch.nn.Linear(width, width)
            self.b = torch.nn.Linear(width, width)

        def forward(self, x):
            return self.b(self.a(x))

    torch.manual_seed(0)
    m = DModel()
    fq.quantize(m, fq.QuantoConfig(weights_dtype="int8"))
    assert m.config["quantization_config"] == fq.QuantoConfig(weights_dtype="int8")
    fq.dequantize(m)
    assert "quantization_config" not in m.config
    assert not hasattr(m, "hf_quantizer")
    m(torch.randn(2, 64))


# ------------------------------------------------------------------------------------------------------------------
# errors


def test_missing_package_names_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "optimum.quanto", None)
    with pytest.raises(BackendImportError) as e:
        require("optimum-quanto", "quanto quantization")
    assert isinstance(e.value, ImportError)
    assert "pip install 'optimum-quanto>=" in str(e.value) and "not installed" in str(e.value)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ImportError, match="bitsandbytes"):
        fq.quantize(make_model(), fq.BitsAndBytesConfig(load_in_8bit=True))


def test_cpu_only_errors_are_precise():
    t = fq.DiffusersAutoQuantizer.from_config(fq.TorchAoConfig("int4wo"), pre_quantized=False)
    with pytest.raises(RuntimeError, match="IntxWeightOnlyConfig"):
        t.validate_environment(device_map={"": "cpu"})
    f8 = fq.DiffusersAutoQuantizer.from_config(fq.TorchAoConfig("float8dq"), pre_quantized=False)
    with pytest.raises(RuntimeError, match="compute capability"):
        f8.validate_environment(device_map={"": "cpu"})
    mo = fq.DiffusersAutoQuantizer.from_config(
        fq.NVIDIAModelOptConfig(quant_type="NVFP4", block_quantize=16, channel_quantize=-1), pre_quantized=False
    )
    with pytest.raises(RuntimeError, match="CUDA"):
        mo.validate_environment(device_map={"": "cpu"})
    cal = fq.DiffusersAutoQuantizer.from_config(
        fq.NVIDIAModelOptConfig(quant_type="INT8_INT8", weight_only=False), pre_quantized=False
    )
    with pytest.raises(ValueError, match="forward_loop"):
        cal.validate_environment(device_map={"": "cpu"})
    b = fq.DiffusersAutoQuantizer.from_config(fq.BitsAndBytesConfig(load_in_8bit=True), pre_quantized=False)
    with pytest.raises(ValueError, match="disk"):
        b.validate_environment(device_map={"a": "cpu", "b": "disk"})


def test_save_errors(tmp_path):
    # save_pretrained (and its alias save_quantized) writes transformers/diffusers folders only
    with pytest.raises(TypeError, match="PreTrainedModel or diffusers ModelMixin"):
        fq.save_quantized(make_model(), tmp_path)


def test_gguf_quantizer_loads_a_real_file(tmp_path):
    """The GGUF quantizer's hook loads a real .gguf through fastquant.gguf.load_into: packed layers, except the
    skipped module, which is dequantized exactly into the config's compute dtype on a meta model."""
    import fastquant.gguf as fg

    q = fq.DiffusersAutoQuantizer.from_config(
        fq.GGUFQuantizationConfig(compute_dtype="bfloat16"), modules_to_not_convert=["proj_out"]
    )
    assert not q.is_serializable and not q.is_trainable and q.is_compileable
    q.validate_environment()
    assert q.update_torch_dtype(None) == torch.bfloat16
    src = make_model()
    fg.quantize_model(src, "Q8_0")
    path = tmp_path / "net.gguf"
    fg.save(src, path)
    with torch.device("meta"):
        target = Net()
    res = q.load_gguf(target, path)
    assert type(target.proj_out) is torch.nn.Linear and target.proj_out.weight.dtype == torch.bfloat16
    with fg.open(path) as f:
        want = f.get_tensor("proj_out.weight", dtype=torch.bfloat16)
    assert torch.equal(target.proj_out.weight, want)
    assert "proj_out" not in res.replaced and set(res.replaced) >= {"fc1", "fc2"}
    assert isinstance(target.fc1, fg.GGUFLinear)
    x = make_input(dtype=torch.bfloat16)
    ref = src.to(torch.bfloat16)
    y = target(x)
    assert rel_err(y, ref(x)) < 0.02
    # dequantize: plain layers with the exact weights in the compute dtype, and no trace of quantization.
    w_exact = target.fc1.dequantize_weight(torch.bfloat16)
    fq.quantizers._utils.set_model_quantized(target, q)
    fq.dequantize(target)
    assert not any(isinstance(m, (fg.GGUFLinear, fg.GGUFEmbedding)) for m in target.modules())
    assert type(target.fc1) is torch.nn.Linear and torch.equal(target.fc1.weight, w_exact)
    assert not hasattr(target, "hf_quantizer") and not getattr(target, "is_quantized", False)
    assert rel_err(target(x), y) < 0.01  # y came from the fused kernel (summation order differs)
    with pytest.raises(ValueError):
        fq.quantize(make_model(), fq.GGUFQuantizationConfig())


def test_import_does_not_load_torch():
    import subprocess

    code = "import sys, fastquant; fastquant.quantize; assert 'torch' not in sys.modules, 'torch imported'"
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ------------------------------------------------------------------------------------------------------------------
# CUDA paths


CUDA_CASES = [
    # nf4 on CUDA with fp16 compute: measured on an H200, see the report; same bounds as on the CPU
    (
        "cuda-bnb-nf4",
        lambda: fq.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float16"),
        0.2,
    ),
    ("cuda-bnb-int8", lambda: fq.BitsAndBytesConfig(load_in_8bit=True), 0.03),
    # int4 weight-only, groups of 128, tinygemm packing (the CUDA kernel path)
    (
        "cuda-torchao-int4wo",
        lambda: fq.TorchAoConfig(
            "int4wo", quant_type_kwargs={"group_size": 128, "int4_packing_format": "tile_packed_to_4d"}
        ),
        0.2,
    ),
    # float8 dynamic activations + weights (needs compute capability >= 8.9)
    ("cuda-torchao-float8dq", lambda: fq.TorchAoConfig("float8dq_e4m3_row"), 0.1),
    # NVFP4 weights, blocks of 16 with FP8 scales (dynamic block quantization runs only on CUDA in modelopt)
    (
        "cuda-modelopt-nvfp4",
        lambda: fq.NVIDIAModelOptConfig(quant_type="NVFP4", block_quantize=16, channel_quantize=-1),
        0.25,
    ),
]


@requires_cuda
@pytest.mark.parametrize("case", CUDA_CASES, ids=[c[0] for c in CUDA_CASES])
def test_cuda_backend(case, tmp_path):
    name, make_cfg, bound = case
    dtype = torch.bfloat16 if "torchao" in name else (torch.float16 if "bnb" in name else torch.float32)
    x = make_input("cuda", dtype)
    ref_model = make_model("cuda", dtype)
    with torch.no_grad():
        ref = ref_model(x)
    model = fq.quantize(make_model("cuda", dtype), make_cfg(), modules_to_not_convert=SKIP)
    with torch.no_grad():
        y = model(x)
    err = rel_err(y, ref)
    print(f"{name}: rel. L2 error {err:.4f}")
    assert 0 < err <= bound
    assert type(model.proj_out) is torch.nn.Linear
    assert torch.equal(model.proj_out.weight, ref_model.proj_out.weight)
    assert set(model.hf_quantizer.quantized_modules(model)) == {"fc1", "fc2"}
    if model.hf_quantizer.is_serializable:
        loaded = roundtrip(model, make_model("cuda", dtype), tmp_path)
        with torch.no_grad():
            assert torch.equal(loaded(x), y)
    fq.dequantize(model)
    assert model.hf_quantizer if hasattr(model, "hf_quantizer") else True
    assert not hasattr(model, "hf_quantizer")
    with torch.no_grad():
        model(x)
