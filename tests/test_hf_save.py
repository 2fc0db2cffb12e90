"""fastquant.save_pretrained against transformers and diffusers themselves: the folder it writes is read back by
the library's own from_pretrained with bit-identical outputs, in the library's layout (config.json with the
library's quantization_config, sharded safetensors with an index, the backends' key layouts); config objects
convert both ways. Tiny models built from configs (Llama hidden 64 / 2 layers, Flux with 1+1 blocks)."""

from __future__ import annotations

import json
import os
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")

import fastquant as fq  # noqa: E402
from fastquant.hf._configs import from_library  # noqa: E402

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="requires CUDA")

LLAMA = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)

LM_CASES = {
    "bnb-nf4": lambda: fq.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
    "bnb-int8": lambda: fq.BitsAndBytesConfig(load_in_8bit=True),
    "torchao-int8wo": lambda: fq.TorchAoConfig("int8wo"),
    "torchao-int8dq": lambda: fq.TorchAoConfig("int8dq"),
}


def make_llama(seed=0):
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()


def make_flux(seed=0):
    torch.manual_seed(seed)
    return diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    ).eval()


def flux_inputs(device="cpu"):
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    return dict(
        hidden_states=r(1, 16, 4),
        encoder_hidden_states=r(1, 8, 32),
        pooled_projections=r(1, 32),
        timestep=torch.tensor([0.5], device=device),
        img_ids=torch.zeros(16, 3, device=device),
        txt_ids=torch.zeros(8, 3, device=device),
        return_dict=False,
    )


TOKENS = torch.tensor([[1, 5, 9, 33, 64, 100, 127, 2], [3, 3, 7, 8, 90, 11, 12, 13]])


def no_cpu_repack(model):
    """bitsandbytes repacks 4-bit weights in place on the first eval forward on AVX512-BF16 CPUs (another kernel,
    other rounding); keep both sides of a comparison on the same kernel."""
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    return model.eval()  # and the swapped layers in eval mode, as from_pretrained leaves them


def lm_logits(model):
    with torch.no_grad():
        return model(TOKENS).logits


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("name", list(LM_CASES))
def test_llama_save_then_transformers_loads_bit_identical(name, tmp_path):
    model = no_cpu_repack(fq.quantize(make_llama(), LM_CASES[name](), modules_to_not_convert=["lm_head"]))
    ref = lm_logits(model)
    out = tmp_path / "q"
    fq.save_pretrained(model, out, max_shard_size="100KB")
    files = sorted(os.listdir(out))
    assert "config.json" in files and "model.safetensors.index.json" in files, files
    shards = [f for f in files if f.startswith("model-") and f.endswith(".safetensors")]
    index = read_json(out / "model.safetensors.index.json")
    assert len(shards) >= 2 and set(index["weight_map"].values()) == set(shards)
    q = read_json(out / "config.json")["quantization_config"]
    # the library's own serialized form: what transformers' config class writes
    expected = LM_CASES[name]().to_transformers(modules_to_not_convert=["lm_head"]).to_dict()
    assert q == json.loads(json.dumps(expected, default=str))
    if name.startswith("torchao"):
        assert isinstance(q["quant_type"], dict) and q["quant_type"]["default"]["_type"].startswith("Int8")
    if name == "bnb-nf4":
        assert any(k.endswith("weight.quant_state.bitsandbytes__nf4") for k in index["weight_map"])
    if name == "bnb-int8":
        assert any(k.endswith(".SCB") for k in index["weight_map"])
    loaded = no_cpu_repack(transformers.LlamaForCausalLM.from_pretrained(out).eval())
    assert torch.equal(lm_logits(loaded), ref)
    assert type(loaded.lm_head) is torch.nn.Linear
    # the saved model is untouched by the save (same outputs, its own quantizer and config back)
    assert torch.equal(lm_logits(model), ref)
    assert type(model.hf_quantizer).__module__.startswith("fastquant.")
    assert model.config.quantization_config == LM_CASES[name]()


@pytest.mark.parametrize("name", ["torchao-int8wo", "bnb-int8"])
def test_fastquant_config_through_transformers_from_pretrained(name, tmp_path):
    """cfg.to_transformers() is what transformers' from_pretrained(quantization_config=...) takes; it quantizes
    the float checkpoint exactly as fastquant.quantize does."""
    make_llama().save_pretrained(tmp_path / "float")
    cfg = LM_CASES[name]()
    lib_model = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "float", quantization_config=cfg.to_transformers()
    ).eval()
    ours = no_cpu_repack(fq.quantize(make_llama(), cfg, modules_to_not_convert=["lm_head"]))
    no_cpu_repack(lib_model)
    assert torch.equal(lm_logits(lib_model), lm_logits(ours))


def test_fastquant_config_objects_cannot_stand_in_for_transformers_own():
    """transformers checks isinstance against its own BitsAndBytesConfig: the documented conversion is needed."""
    from transformers.quantizers.auto import AutoHfQuantizer

    cfg = fq.BitsAndBytesConfig(load_in_4bit=True)
    with pytest.raises(TypeError):
        AutoHfQuantizer.from_config(cfg)
    assert type(AutoHfQuantizer.from_config(cfg.to_transformers())).__name__ == "Bnb4BitHfQuantizer"


FLUX_CASES = {
    "torchao-int8wo": lambda: fq.TorchAoConfig("int8wo"),
    "torchao-int8dq": lambda: fq.TorchAoConfig("int8dq"),
    "quanto-int8": lambda: fq.QuantoConfig("int8"),
    "quanto-int4": lambda: fq.QuantoConfig("int4"),
}


@pytest.mark.parametrize("name", list(FLUX_CASES))
def test_flux_save_then_diffusers_loads_bit_identical(name, tmp_path):
    model = fq.quantize(make_flux(), FLUX_CASES[name](), modules_to_not_convert=["proj_out"]).eval()
    with torch.no_grad():
        ref = model(**flux_inputs())[0]
    out = tmp_path / "q"
    fq.save_pretrained(model, out, max_shard_size="50KB")
    files = sorted(os.listdir(out))
    assert "diffusion_pytorch_model.safetensors.index.json" in files, files
    q = read_json(out / "config.json")["quantization_config"]
    assert q["quant_method"] == name.split("-")[0]
    if name.startswith("torchao"):
        assert q["quant_type"]["default"]["_type"].startswith("Int8")  # torchao's serialized form, no shorthand
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = diffusers.FluxTransformer2DModel.from_pretrained(out, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        got = loaded(**flux_inputs())[0]
    assert torch.equal(got, ref)
    assert type(loaded.proj_out) is torch.nn.Linear


@pytest.mark.parametrize("name", ["bnb-nf4", "bnb-int8"])
def test_flux_bnb_layout(name, tmp_path):
    """diffusers' bitsandbytes loader needs a GPU; on the CPU check the layout: the state dict as bitsandbytes
    writes it, the library's quantization_config; the CUDA test below loads it with diffusers."""
    from safetensors.torch import load_file

    model = no_cpu_repack(fq.quantize(make_flux(), LM_CASES[name](), modules_to_not_convert=["proj_out"]))
    fq.save_pretrained(model, tmp_path)
    saved = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    sd = model.state_dict()
    assert set(saved) == set(sd) and all(torch.equal(saved[k], sd[k].cpu()) for k in sd)
    assert any(k.endswith(".SCB" if name == "bnb-int8" else "quant_state.bitsandbytes__nf4") for k in saved)
    q = read_json(tmp_path / "config.json")["quantization_config"]
    # the skip list names every Linear left in float ("proj_out" matches both of them, as a name component)
    skipped = ["single_transformer_blocks.0.proj_out", "proj_out"]
    expected = LM_CASES[name]().to_diffusers(modules_to_not_convert=skipped).to_dict()
    assert q == json.loads(json.dumps(expected, default=str))


@requires_cuda
@pytest.mark.parametrize("name", ["bnb-nf4", "bnb-int8"])
def test_flux_bnb_cuda_diffusers_loads_bit_identical(name, tmp_path):
    model = fq.quantize(make_flux().half(), LM_CASES[name](), modules_to_not_convert=["proj_out"], device="cuda")
    inputs = {
        k: (v.half() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in flux_inputs("cuda").items()
    }
    with torch.no_grad():
        ref = model(**inputs)[0]
    fq.save_pretrained(model, tmp_path)
    loaded = diffusers.FluxTransformer2DModel.from_pretrained(tmp_path, torch_dtype=torch.float16).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs)[0], ref)


def test_transformers_quanto_save_is_refused_not_silently_broken(tmp_path):
    """Regression: a quanto folder with a config.json was "loaded" by transformers with re-initialised weights.
    transformers cannot read pre-quantized quanto; saving one for it is a clear error, and nothing is written."""
    model = fq.quantize(make_llama(), fq.QuantoConfig("int8"))
    with pytest.raises(ValueError, match="transformers cannot load pre-quantized optimum-quanto"):
        fq.save_pretrained(model, tmp_path / "q")
    assert not (tmp_path / "q").exists() and os.listdir(tmp_path) == []


def test_regression_config_json_is_written_and_torchao_is_serialized(tmp_path):
    """Regression: save_quantized wrote no config.json (transformers then built a default 7B config) and torchao
    as the "int8wo" shorthand; now it is save_pretrained."""
    assert fq.save_quantized is fq.save_pretrained
    model = fq.quantize(make_llama(), fq.TorchAoConfig("int8wo"))
    fq.save_quantized(model, tmp_path)
    cfg = read_json(tmp_path / "config.json")
    assert cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == 2 and cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["quantization_config"]["quant_type"]["default"]["_type"] == "Int8WeightOnlyConfig"
    assert "int8wo" not in json.dumps(cfg)
    assert not (tmp_path / "quantization_config.json").exists()


def test_model_own_save_pretrained_writes_the_same_folder(tmp_path):
    model = no_cpu_repack(fq.quantize(make_llama(), LM_CASES["bnb-nf4"]()))
    model.save_pretrained(tmp_path / "own", max_shard_size="100KB")
    fq.save_pretrained(model, tmp_path / "fq", max_shard_size="100KB")
    a, b = sorted(os.listdir(tmp_path / "own")), sorted(os.listdir(tmp_path / "fq"))
    assert a == b
    for f in a:
        assert (tmp_path / "own" / f).read_bytes() == (tmp_path / "fq" / f).read_bytes(), f
    with pytest.raises(TypeError, match="fastquant.save_pretrained"):
        model.save_pretrained(tmp_path / "x", push_to_hub=True)
    import copy

    clone = copy.deepcopy(model)
    assert clone.save_pretrained.__self__ is clone
    fq.dequantize(model)
    assert "save_pretrained" not in model.__dict__


def test_save_keeps_other_files_and_replaces_old_weights(tmp_path):
    out = tmp_path / "m"
    model = fq.quantize(make_llama(), fq.TorchAoConfig("int8wo"))
    fq.save_pretrained(model, out, max_shard_size="100KB")
    (out / "tokenizer.json").write_text("{}")
    (out / "quantization_config.json").write_text("{}")  # the old fastquant format: dropped on a re-save
    fq.save_pretrained(model, out)  # now unsharded
    files = sorted(os.listdir(out))
    assert files == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
    assert [f for f in os.listdir(tmp_path) if f != "m"] == []  # no temporary folder left


def test_non_library_model_is_a_clear_error(tmp_path):
    m = fq.quantize(torch.nn.Sequential(torch.nn.Linear(8, 8)), fq.QuantoConfig("int8"), device="cpu")
    with pytest.raises(TypeError, match="PreTrainedModel or diffusers ModelMixin"):
        fq.save_pretrained(m, tmp_path)


# ---- config interop ---------------------------------------------------------------------------------------------


def test_config_conversions_round_trip():
    cases = [
        fq.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
        fq.BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=5.0),
        fq.QuantoConfig("int4"),
    ]
    for cfg in cases:
        t, d = cfg.to_transformers(), cfg.to_diffusers()
        assert type(t).__module__.startswith("transformers.") and type(d).__module__.startswith("diffusers.")
        assert type(cfg).from_library(t) == cfg and type(cfg).from_library(d) == cfg
    ao = fq.TorchAoConfig("int8wo")
    from torchao.quantization import Int8WeightOnlyConfig

    assert isinstance(ao.to_transformers().quant_type, Int8WeightOnlyConfig)
    assert isinstance(ao.to_diffusers().quant_type, Int8WeightOnlyConfig)
    back = fq.TorchAoConfig.from_library(ao.to_transformers())
    assert back.quant_type_name == "Int8WeightOnlyConfig"
    # transformers' quanto field is `weights`: int4 stays int4
    assert fq.QuantoConfig.from_library(transformers.QuantoConfig(weights="int4")).weights_dtype == "int4"
    with pytest.raises(ValueError, match="activations"):
        from_library(transformers.QuantoConfig(weights="int8", activations="int8"))
    with pytest.raises(ValueError, match="no 'modelopt'"):
        fq.NVIDIAModelOptConfig("FP8").to_transformers()
    with pytest.raises(TypeError, match="not a QuantoConfig"):
        fq.QuantoConfig.from_library(transformers.BitsAndBytesConfig(load_in_8bit=True))


def test_library_config_objects_drive_fastquant():
    q = fq.DiffusersAutoQuantizer.from_config(transformers.BitsAndBytesConfig(load_in_4bit=True), pre_quantized=False)
    assert type(q).__name__ == "BnB4BitDiffusersQuantizer"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fq.quantize(make_flux(), diffusers.QuantoConfig(weights_dtype="int8"))
    assert model.hf_quantizer.quantization_config == fq.QuantoConfig("int8")
    merged = fq.DiffusersAutoQuantizer.merge_quantization_configs(
        transformers.BitsAndBytesConfig(load_in_8bit=True).to_dict(), transformers.BitsAndBytesConfig(load_in_8bit=True)
    )
    assert merged == fq.BitsAndBytesConfig(load_in_8bit=True)


def test_to_diffusers_in_pipeline_quantization_config():
    from diffusers.quantizers import PipelineQuantizationConfig

    pq = PipelineQuantizationConfig(
        quant_mapping={
            "transformer": fq.TorchAoConfig("int8wo").to_diffusers(),
            "text_encoder": fq.BitsAndBytesConfig(load_in_8bit=True).to_transformers(),
        }
    )
    assert type(pq.quant_mapping["transformer"]).__name__ == "TorchAoConfig"


def test_modelopt_saves_are_read_by_the_libraries_with_modelopt_checkpointing(tmp_path):
    """modelopt's layout: the library's folder plus modelopt_state.pth (its quantizer state), which modelopt's
    Hugging Face plugin restores inside the libraries' from_pretrained (enable_huggingface_checkpointing, as
    modelopt documents; it patches the classes for the rest of this process, acting only on folders that hold a
    modelopt_state.pth). transformers has no modelopt config: no quantization_config in its config.json."""
    import modelopt.torch.opt as mto

    mto.enable_huggingface_checkpointing()
    flux = fq.quantize(make_flux(), fq.NVIDIAModelOptConfig("INT8"), modules_to_not_convert=["proj_out"]).eval()
    with torch.no_grad():
        ref = flux(**flux_inputs())[0]
    fq.save_pretrained(flux, tmp_path / "flux", max_shard_size="50KB")
    assert (tmp_path / "flux" / "modelopt_state.pth").exists()
    assert read_json(tmp_path / "flux" / "config.json")["quantization_config"]["quant_method"] == "modelopt"
    loaded = diffusers.FluxTransformer2DModel.from_pretrained(tmp_path / "flux", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**flux_inputs())[0], ref)

    lm = fq.quantize(make_llama(), fq.NVIDIAModelOptConfig("INT8"), modules_to_not_convert=["lm_head"]).eval()
    ref = lm_logits(lm)
    fq.save_pretrained(lm, tmp_path / "lm")
    assert "quantization_config" not in read_json(tmp_path / "lm" / "config.json")
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "lm").eval()
    assert torch.equal(lm_logits(loaded), ref)
    assert lm.config.quantization_config == fq.NVIDIAModelOptConfig("INT8")  # the model itself is unchanged
    assert type(lm.hf_quantizer).__module__.startswith("fastquant.")


def test_float_models_save_too(tmp_path):
    model = make_llama()
    fq.save_pretrained(model, tmp_path / "f")
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "f").eval()
    assert "quantization_config" not in read_json(tmp_path / "f" / "config.json")
    assert torch.equal(lm_logits(loaded), lm_logits(model))
