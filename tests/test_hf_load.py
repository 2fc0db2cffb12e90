"""`fastquant.from_pretrained` and `load_quantized` against transformers 5 and diffusers themselves.

Small models built from configs with random weights: a Llama LM (hidden 64, 2 layers, vocab 256) and an SD3
transformer with tiny dims. Every folder is written by the libraries' own `save_pretrained` (float ones sharded
with a small `max_shard_size`), and every result is compared bit for bit with the library's own
`from_pretrained` of the same folder (pre-quantized), or with the library's own quantize-on-load
(`from_pretrained(quantization_config=...)`).
"""

from __future__ import annotations

import copy
import json
import os
import warnings

import pytest

import torch

import fastquant as fq

warnings.filterwarnings("ignore")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")

from diffusers import QuantoConfig as DQuantoConfig  # noqa: E402
from diffusers import SD3Transformer2DModel  # noqa: E402
from diffusers import TorchAoConfig as DTorchAoConfig  # noqa: E402
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers import BitsAndBytesConfig as TBnbConfig  # noqa: E402
from transformers import QuantoConfig as TQuantoConfig  # noqa: E402
from transformers import TorchAoConfig as TTorchAoConfig  # noqa: E402

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="requires CUDA")


def llama_config(**kw):
    base = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=128,
    )
    base.update(kw)
    return LlamaConfig(**base)


def sd3_kwargs():
    return dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=16,
    )


TOKENS = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(3))


def lm_out(model):
    with torch.no_grad():
        return model(TOKENS).logits.float().cpu()


def sd3_out(model):
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 4, 8, 8, generator=g),
        encoder_hidden_states=torch.randn(1, 5, 32, generator=g),
        pooled_projections=torch.randn(1, 16, generator=g),
        timestep=torch.tensor([3.0]),
    )
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    with torch.no_grad():
        return model(**{k: v.to(dtype) for k, v in inputs.items()}).sample.float()


def no_repack(model):
    """bitsandbytes repacks 4-bit weights in place for the CPU on the first eval() forward on AVX512-BF16 machines
    (rounding absmax to bfloat16); fastquant's layers never do. The library's reference gets the same setting, so
    both compute with exactly the quantized values."""
    for m in model.modules():
        if type(m).__name__ == "Linear4bit":
            m.support_avx512bf16_for_cpu = False
    return model


def assert_same(a, b):
    assert a.shape == b.shape
    assert torch.equal(a, b), f"max abs diff {(a - b).abs().max().item():.3g}"


# transformers quantization configs (library objects) and the fastquant dicts that mean the same
LM_CASES = {
    "bnb-nf4": (
        lambda: TBnbConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    ),
    "bnb-int8": (lambda: TBnbConfig(load_in_8bit=True), {"quant_method": "bitsandbytes", "load_in_8bit": True}),
    "torchao-int8wo": (
        lambda: TTorchAoConfig(Int8WeightOnlyConfig()),
        {"quant_method": "torchao", "quant_type": "int8wo"},
    ),
    "torchao-int8dq": (
        lambda: TTorchAoConfig(Int8DynamicActivationInt8WeightConfig()),
        {"quant_method": "torchao", "quant_type": "int8dq"},
    ),
    "quanto-int8": (lambda: TQuantoConfig(weights="int8"), {"quant_method": "quanto", "weights_dtype": "int8"}),
    "quanto-int4": (lambda: TQuantoConfig(weights="int4"), {"quant_method": "quanto", "weights_dtype": "int4"}),
}
LM_SAVABLE = ["bnb-nf4", "bnb-int8", "torchao-int8wo", "torchao-int8dq"]  # transformers 5 cannot save quanto

SD3_CASES = {
    "torchao-int8wo": (
        lambda: DTorchAoConfig(Int8WeightOnlyConfig()),
        {"quant_method": "torchao", "quant_type": "int8wo"},
    ),
    "torchao-int8dq": (
        lambda: DTorchAoConfig(Int8DynamicActivationInt8WeightConfig()),
        {"quant_method": "torchao", "quant_type": "int8dq"},
    ),
    "quanto-int8": (lambda: DQuantoConfig(weights_dtype="int8"), {"quant_method": "quanto", "weights_dtype": "int8"}),
    "quanto-int4": (lambda: DQuantoConfig(weights_dtype="int4"), {"quant_method": "quanto", "weights_dtype": "int4"}),
}
SD3_SAVABLE = ["torchao-int8wo", "quanto-int8", "quanto-int4"]  # diffusers' bitsandbytes needs a GPU


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    out = {}
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config()).save_pretrained(root / "lm", max_shard_size="100KB")
    out["lm"] = str(root / "lm")
    torch.manual_seed(0)
    SD3Transformer2DModel(**sd3_kwargs()).save_pretrained(root / "sd3", max_shard_size="50KB")
    out["sd3"] = str(root / "sd3")
    return out


@pytest.fixture(scope="module")
def lm_saved(folders, tmp_path_factory):
    """Library-quantized, library-saved Llama folders (made on first use)."""
    root = tmp_path_factory.mktemp("lm_q")
    cache = {}

    def get(name):
        if name not in cache:
            model = LlamaForCausalLM.from_pretrained(
                folders["lm"], quantization_config=LM_CASES[name][0](), device_map="cpu"
            )
            model.save_pretrained(root / name)
            cache[name] = str(root / name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def sd3_saved(folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3_q")
    cache = {}

    def get(name):
        if name not in cache:
            model = SD3Transformer2DModel.from_pretrained(folders["sd3"], quantization_config=SD3_CASES[name][0]())
            model.save_pretrained(root / name)
            cache[name] = str(root / name)
        return cache[name]

    return get


# ------------------------------------------------------------------------------------------------------------------
# float folders


def test_float_llama_sharded_equals_transformers(folders):
    files = os.listdir(folders["lm"])
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) >= 4
    ref = LlamaForCausalLM.from_pretrained(folders["lm"])
    model = fq.from_pretrained(LlamaForCausalLM, folders["lm"])
    assert not model.training and all(not m.training for m in model.modules())
    assert model.model.rotary_emb.inv_freq.device.type == "cpu"
    assert torch.equal(model.model.rotary_emb.inv_freq, ref.model.rotary_emb.inv_freq)
    assert_same(lm_out(model), lm_out(ref))
    auto = fq.from_pretrained(AutoModelForCausalLM, folders["lm"])
    assert type(auto) is LlamaForCausalLM
    assert_same(lm_out(auto), lm_out(ref))
    # torch_dtype casts the float tensors, as transformers does
    ref16 = LlamaForCausalLM.from_pretrained(folders["lm"], dtype=torch.bfloat16)
    m16 = fq.from_pretrained(LlamaForCausalLM, folders["lm"], dtype=torch.bfloat16)
    assert m16.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert_same(lm_out(m16), lm_out(ref16))


def test_hub_cache_snapshot_folder(folders, tmp_path):
    # a hub-cache snapshot: files are symlinks into a blobs folder
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "abc123"
    blobs.mkdir()
    snap.mkdir(parents=True)
    import shutil

    for i, name in enumerate(sorted(os.listdir(folders["lm"]))):
        shutil.copy(os.path.join(folders["lm"], name), blobs / str(i))
        os.symlink(blobs / str(i), snap / name)
    ref = LlamaForCausalLM.from_pretrained(folders["lm"])
    model = fq.from_pretrained(LlamaForCausalLM, tmp_path / "snapshots" / "abc123")
    assert_same(lm_out(model), lm_out(ref))


def test_float_sd3_sharded_equals_diffusers(folders):
    assert "diffusion_pytorch_model.safetensors.index.json" in os.listdir(folders["sd3"])
    ref = SD3Transformer2DModel.from_pretrained(folders["sd3"])
    model = fq.from_pretrained(SD3Transformer2DModel, folders["sd3"])
    assert not model.training
    assert_same(sd3_out(model), sd3_out(ref))


def test_tied_embeddings_stay_float_and_tied(tmp_path):
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config(tie_word_embeddings=True)).save_pretrained(tmp_path)
    cfg = LM_CASES["torchao-int8wo"]
    ref = LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=cfg[0](), device_map="cpu")
    model = fq.from_pretrained(LlamaForCausalLM, tmp_path, quantization_config=cfg[1])
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert type(model.lm_head.weight) is torch.nn.Parameter and type(model.lm_head.weight.data) is torch.Tensor
    assert_same(lm_out(model), lm_out(ref))


# ------------------------------------------------------------------------------------------------------------------
# pre-quantized folders written by the libraries


@pytest.mark.parametrize("name", LM_SAVABLE)
def test_llama_library_saved_equals_library_reload(name, lm_saved):
    folder = lm_saved(name)
    ref = no_repack(LlamaForCausalLM.from_pretrained(folder, device_map="cpu"))
    model = fq.from_pretrained(LlamaForCausalLM, folder)
    assert_same(lm_out(model), lm_out(ref))
    assert type(model.model.layers[0].mlp.up_proj) is type(ref.model.layers[0].mlp.up_proj)
    assert type(model.lm_head) is torch.nn.Linear  # transformers' rule: the output embeddings stay float
    assert all(not m.training for m in model.modules())
    assert model.hf_quantizer.pre_quantized
    assert (
        str(model.config.quantization_config.quant_method)
        == json.load(open(os.path.join(folder, "config.json")))["quantization_config"]["quant_method"]
    )


@pytest.mark.parametrize("name", SD3_SAVABLE)
def test_sd3_library_saved_equals_library_reload(name, sd3_saved):
    folder = sd3_saved(name)
    ref = SD3Transformer2DModel.from_pretrained(folder)
    model = fq.from_pretrained(SD3Transformer2DModel, folder)
    assert_same(sd3_out(model), sd3_out(ref))
    assert type(model.proj_out) is type(ref.proj_out)
    assert all(not m.training for m in model.modules())
    assert model.config.quantization_config.quant_method == "torchao" if "torchao" in name else "quanto"


def test_prequantized_config_wins_over_the_one_passed(lm_saved):
    folder = lm_saved("bnb-int8")
    with pytest.warns(UserWarning, match="differs"):
        model = fq.from_pretrained(
            LlamaForCausalLM,
            folder,
            quantization_config={"quant_method": "bitsandbytes", "load_in_8bit": True, "llm_int8_threshold": 4.0},
        )
    assert model.config.quantization_config.llm_int8_threshold == 6.0
    with pytest.raises(ValueError, match="quantization_config"):
        fq.from_pretrained(
            LlamaForCausalLM, folder, quantization_config={"quant_method": "quanto", "weights_dtype": "int8"}
        )


# ------------------------------------------------------------------------------------------------------------------
# quantize on load, against the libraries' own quantize-on-load


@pytest.mark.parametrize("name", list(LM_CASES))
def test_llama_quantize_on_load_equals_transformers(name, folders):
    lib_cfg, fq_cfg = LM_CASES[name]
    ref = no_repack(LlamaForCausalLM.from_pretrained(folders["lm"], quantization_config=lib_cfg(), device_map="cpu"))
    given = copy.deepcopy(fq_cfg)
    model = fq.from_pretrained(LlamaForCausalLM, folders["lm"], quantization_config=given)
    assert given == fq_cfg  # the caller's dict is not changed
    assert_same(lm_out(model), lm_out(ref))
    assert type(model.model.layers[1].self_attn.q_proj) is type(ref.model.layers[1].self_attn.q_proj)
    assert type(model.lm_head) is torch.nn.Linear and type(model.lm_head.weight.data) is torch.Tensor
    assert all(not m.training for m in model.modules())
    assert not model.hf_quantizer.pre_quantized
    # the library's own config object works too
    again = fq.from_pretrained(LlamaForCausalLM, folders["lm"], quantization_config=lib_cfg())
    assert_same(lm_out(again), lm_out(ref))


@pytest.mark.parametrize("name", list(SD3_CASES))
def test_sd3_quantize_on_load_equals_diffusers(name, folders):
    lib_cfg, fq_cfg = SD3_CASES[name]
    ref = SD3Transformer2DModel.from_pretrained(folders["sd3"], quantization_config=lib_cfg())
    model = fq.from_pretrained(SD3Transformer2DModel, folders["sd3"], quantization_config=fq_cfg)
    assert_same(sd3_out(model), sd3_out(ref))
    assert next(model.parameters()).dtype == next(ref.parameters()).dtype


def test_keep_in_fp32_modules_are_honoured(folders):
    class KeepSD3(SD3Transformer2DModel):
        _keep_in_fp32_modules = ["proj_out"]

    lib_cfg, fq_cfg = SD3_CASES["torchao-int8wo"]
    ref = KeepSD3.from_pretrained(folders["sd3"], quantization_config=lib_cfg(), torch_dtype=torch.bfloat16)
    model = fq.from_pretrained(KeepSD3, folders["sd3"], quantization_config=fq_cfg, torch_dtype=torch.bfloat16)
    assert model.proj_out.weight.dtype == torch.float32 and type(model.proj_out.weight.data) is torch.Tensor
    assert ref.proj_out.weight.dtype == torch.float32
    assert torch.equal(model.proj_out.weight, ref.proj_out.weight)
    assert type(model.context_embedder.weight.data) is not torch.Tensor  # quantized
    assert torch.equal(model.context_embedder.weight.dequantize(), ref.context_embedder.weight.dequantize())
    assert model.norm_out.linear.bias.dtype == torch.bfloat16


def test_modelopt_quantize_on_load_equals_quantize_after_load(folders):
    # diffusers 0.42's NVIDIAModelOptConfig cannot build its config with modelopt 0.47, and transformers has no
    # modelopt quantizer: the reference is the float model loaded by transformers, then fastquant.quantize (which
    # test_backends checks against modelopt's own mtq.quantize)
    cfg = {"quant_method": "modelopt", "quant_type": "INT8", "channel_quantize": 0}
    ref = fq.quantize(LlamaForCausalLM.from_pretrained(folders["lm"]).eval(), cfg, modules_to_not_convert=["lm_head"])
    model = fq.from_pretrained(LlamaForCausalLM, folders["lm"], quantization_config=cfg)
    assert type(model.model.layers[0].mlp.up_proj).__name__ == "QuantLinear"
    assert type(model.lm_head) is torch.nn.Linear
    assert all(not m.training for m in model.modules())
    assert_same(lm_out(model), lm_out(ref))


@pytest.mark.parametrize(
    "qcfg, match",
    [({"quant_method": "modelopt", "quant_type": "FP8"}, "pickle"), ({"quant_method": "gguf"}, r"\.gguf")],
)
def test_prequantized_folders_without_a_safetensors_layout_are_refused(qcfg, match, folders, tmp_path):
    d = _copy_folder(folders["lm"], tmp_path / "q")
    config = json.load(open(os.path.join(d, "config.json")))
    config["quantization_config"] = qcfg
    json.dump(config, open(os.path.join(d, "config.json"), "w"))
    calls = []
    torch_load = torch.load
    torch.load = lambda *a, **k: calls.append(1)
    try:
        with pytest.raises(ValueError, match=match):
            fq.from_pretrained(LlamaForCausalLM, d)
    finally:
        torch.load = torch_load
    assert not calls


def test_modules_to_not_convert(folders):
    model = fq.from_pretrained(
        LlamaForCausalLM,
        folders["lm"],
        quantization_config={"quant_method": "bitsandbytes", "load_in_8bit": True},
        modules_to_not_convert=["lm_head", "mlp"],
    )
    assert type(model.model.layers[0].mlp.up_proj) is torch.nn.Linear
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"


# ------------------------------------------------------------------------------------------------------------------
# device_map and offload


def test_auto_device_map_with_cpu_and_disk_offload_equals_cpu_load(folders, tmp_path):
    ref = fq.from_pretrained(LlamaForCausalLM, folders["lm"])
    model = fq.from_pretrained(
        LlamaForCausalLM, folders["lm"], device_map="auto", max_memory={"cpu": 400_000}, offload_folder=tmp_path
    )
    assert set(model.hf_device_map.values()) == {"cpu", "disk"}
    assert any(p.device.type == "meta" for p in model.parameters())  # really offloaded
    assert any(f.endswith(".dat") for f in os.listdir(tmp_path))
    assert_same(lm_out(model), lm_out(ref))
    # the same with quantization: the quantized layers on the CPU, the float embeddings on disk
    cfg = LM_CASES["torchao-int8wo"][1]
    refq = fq.from_pretrained(LlamaForCausalLM, folders["lm"], quantization_config=cfg)
    dm = {
        "model.embed_tokens": "disk",
        "model.layers": "cpu",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "disk",
    }
    q = fq.from_pretrained(
        LlamaForCausalLM, folders["lm"], quantization_config=cfg, device_map=dm, offload_folder=tmp_path / "q"
    )
    assert q.lm_head.weight.device.type == "meta"
    assert_same(lm_out(q), lm_out(refq))


@pytest.mark.parametrize("name", ["torchao-int8wo", "bnb-int8", "quanto-int8"])
def test_quantized_layers_on_disk_are_an_error(name, folders, tmp_path):
    dm = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu"}
    dm.update({"model.rotary_emb": "cpu", "lm_head": "cpu"})
    with pytest.raises(ValueError, match="disk|device_map"):
        fq.from_pretrained(
            LlamaForCausalLM,
            folders["lm"],
            quantization_config=LM_CASES[name][1],
            device_map=dm,
            offload_folder=tmp_path,
        )


def test_device_map_errors(folders, tmp_path):
    with pytest.raises(ValueError, match="offload_folder"):
        fq.from_pretrained(LlamaForCausalLM, folders["lm"], device_map={"": "disk"})
    with pytest.raises(ValueError, match="not a module"):
        fq.from_pretrained(LlamaForCausalLM, folders["lm"], device_map={"model.nope": "cpu", "": "cpu"})
    with pytest.raises(ValueError, match="not a device"):
        fq.from_pretrained(LlamaForCausalLM, folders["lm"], device_map={"": "floppy"})


@requires_cuda
@pytest.mark.parametrize("name", ["bnb-nf4", "bnb-int8", "torchao-int8wo"])
def test_cuda_quantize_on_load_equals_transformers(name, folders):
    lib_cfg, fq_cfg = LM_CASES[name]
    ref = LlamaForCausalLM.from_pretrained(folders["lm"], quantization_config=lib_cfg(), device_map="cuda:0")
    model = fq.from_pretrained(LlamaForCausalLM, folders["lm"], quantization_config=fq_cfg, device_map="cuda:0")
    assert model.model.layers[0].mlp.up_proj.weight.device.type == "cuda"
    assert_same(lm_out(model), lm_out(ref))


# ------------------------------------------------------------------------------------------------------------------
# bad input: clear errors naming the file and key


def _copy_folder(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def test_folder_errors(folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        fq.from_pretrained(LlamaForCausalLM, tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        fq.from_pretrained(LlamaForCausalLM, tmp_path / "absent")
    with pytest.raises(TypeError, match="PreTrainedModel"):
        fq.from_pretrained(torch.nn.Linear, folders["lm"])


def test_missing_shard_and_bad_index(folders, tmp_path):
    d = _copy_folder(folders["lm"], tmp_path / "a")
    os.remove(os.path.join(d, "model-00002-of-" + sorted(os.listdir(d))[-3].split("-of-")[1]))
    with pytest.raises(FileNotFoundError, match="shard model-00002"):
        fq.from_pretrained(LlamaForCausalLM, d)
    d = _copy_folder(folders["lm"], tmp_path / "b")
    index_path = os.path.join(d, "model.safetensors.index.json")
    index = json.load(open(index_path))
    first = sorted(index["weight_map"].values())[0]
    index["weight_map"]["model.layers.9.ghost.weight"] = first
    json.dump(index, open(index_path, "w"))
    with pytest.raises(ValueError, match=r"model\.layers\.9\.ghost\.weight"):
        fq.from_pretrained(LlamaForCausalLM, d)
    index["weight_map"].pop("model.layers.9.ghost.weight")
    index["weight_map"]["x"] = "../outside.safetensors"
    json.dump(index, open(index_path, "w"))
    with pytest.raises(ValueError, match="shard file name"):
        fq.from_pretrained(LlamaForCausalLM, d)


def _rewrite_tensor(folder, key, fn):
    from safetensors.torch import load_file, save_file

    index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))
    file = os.path.join(folder, index["weight_map"][key])
    tensors = load_file(file)
    if fn is None:
        del tensors[key]
    else:
        tensors[key] = fn(tensors[key])
    save_file(tensors, file, metadata={"format": "pt"})
    return os.path.basename(file)


def test_wrong_shape_dtype_and_missing_tensor(folders, tmp_path):
    d = _copy_folder(folders["lm"], tmp_path / "shape")
    file = _rewrite_tensor(d, "model.layers.1.mlp.up_proj.weight", lambda t: t[:-1])
    with pytest.raises(ValueError, match=rf"{file}.*model\.layers\.1\.mlp\.up_proj\.weight.*shape"):
        fq.from_pretrained(LlamaForCausalLM, d, quantization_config={"quant_method": "torchao", "quant_type": "int8wo"})
    d = _copy_folder(folders["lm"], tmp_path / "dtype")
    file = _rewrite_tensor(d, "model.norm.weight", lambda t: t.to(torch.int32))
    with pytest.raises(ValueError, match=rf"{file}.*model\.norm\.weight.*dtype"):
        fq.from_pretrained(LlamaForCausalLM, d)
    d = _copy_folder(folders["lm"], tmp_path / "missing")
    index_path = os.path.join(d, "model.safetensors.index.json")
    _rewrite_tensor(d, "model.layers.0.self_attn.k_proj.weight", None)
    index = json.load(open(index_path))
    del index["weight_map"]["model.layers.0.self_attn.k_proj.weight"]
    json.dump(index, open(index_path, "w"))
    with pytest.raises(ValueError, match=r"lacks.*model\.layers\.0\.self_attn\.k_proj\.weight"):
        fq.from_pretrained(LlamaForCausalLM, d)


def test_prequantized_part_missing(lm_saved, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    d = tmp_path / "nf4"
    shutil.copytree(lm_saved("bnb-nf4"), d)
    tensors = load_file(d / "model.safetensors")
    del tensors["model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4"]
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.up_proj\.weight.*quant_state"):
        fq.from_pretrained(LlamaForCausalLM, d)


def test_class_must_match_config(folders):
    with pytest.raises(ValueError, match="model_type"):
        fq.from_pretrained(LlamaForCausalLM, folders["sd3"])
    from diffusers import FluxTransformer2DModel

    with pytest.raises(ValueError, match="_class_name"):
        fq.from_pretrained(FluxTransformer2DModel, folders["sd3"])
    from transformers import MistralForCausalLM

    with pytest.raises(ValueError, match="model_type is 'llama'"):
        fq.from_pretrained(MistralForCausalLM, folders["lm"])


def test_deeply_nested_config_is_a_value_error(tmp_path):
    (tmp_path / "config.json").write_text('{"a": ' * 10_000 + "1" + "}" * 10_000)
    with pytest.raises(ValueError, match="nested"):
        fq.from_pretrained(LlamaForCausalLM, tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "x": [' + "[" * 10_000 + "]" * 10_001 + "}")
    with pytest.raises(ValueError, match="nested"):
        fq.from_pretrained(LlamaForCausalLM, tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        fq.from_pretrained(LlamaForCausalLM, tmp_path)


def test_pickle_checkpoints_are_never_unpickled(folders, tmp_path, monkeypatch):
    import shutil

    shutil.copy(os.path.join(folders["lm"], "config.json"), tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="pickle"):
        fq.from_pretrained(LlamaForCausalLM, tmp_path)
    assert not calls


# ------------------------------------------------------------------------------------------------------------------
# load_quantized: the libraries' layout into a model the caller built


@pytest.mark.parametrize("name", ["bnb-nf4", "bnb-int8", "torchao-int8wo"])
def test_load_quantized_into_meta_model_computes_buffers(name, lm_saved):
    folder = lm_saved(name)
    ref = no_repack(LlamaForCausalLM.from_pretrained(folder, device_map="cpu"))
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config())
    model.eval()
    fq.load_quantized(model, folder)
    inv = model.model.rotary_emb.inv_freq
    assert inv.device.type == "cpu" and torch.equal(inv, ref.model.rotary_emb.inv_freq)
    assert all(not m.training for m in model.modules())  # swapped layers keep eval mode
    assert_same(lm_out(model), lm_out(ref))


def test_load_quantized_quanto_into_meta_diffusers_model(sd3_saved):
    folder = sd3_saved("quanto-int8")
    ref = SD3Transformer2DModel.from_pretrained(folder)
    with torch.device("meta"):
        model = SD3Transformer2DModel(**sd3_kwargs())
    fq.load_quantized(model.eval(), folder)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        inner = getattr(t, "_data", t)
        assert inner.device.type != "meta", name
        if t.is_floating_point() and type(t) is torch.Tensor:
            assert torch.isfinite(t).all() and t.abs().max() < 1e6, name
    assert_same(sd3_out(model), sd3_out(ref))


def test_load_quantized_refuses_another_architecture_unchanged(lm_saved):
    folder = lm_saved("bnb-nf4")
    with torch.device("meta"):
        other = LlamaForCausalLM(llama_config(intermediate_size=96))
    before = {n: type(m) for n, m in other.named_modules()}
    with pytest.raises(ValueError, match=r"model\.safetensors.*gate_proj.*64x96"):
        fq.load_quantized(other, folder)
    assert {n: type(m) for n, m in other.named_modules()} == before
    assert getattr(other, "hf_quantizer", None) is None


def test_load_quantized_refuses_float_folder(folders):
    with pytest.raises(ValueError, match="not quantized"):
        fq.load_quantized(LlamaForCausalLM(llama_config()), folders["lm"])


# ------------------------------------------------------------------------------------------------------------------
# fastquant.quantize regressions


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 64)
        self.fc2 = torch.nn.Linear(64, 32)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize(
    "cfg",
    [
        {"quant_method": "bitsandbytes", "load_in_8bit": True},
        {"quant_method": "bitsandbytes", "load_in_4bit": True},
        {"quant_method": "quanto", "weights_dtype": "int8"},
    ],
)
def test_quantize_keeps_eval_mode(cfg):
    torch.manual_seed(0)
    model = Net().eval()
    fq.quantize(model, cfg)
    assert all(not m.training for m in model.modules())
    train = Net().train()
    fq.quantize(train, cfg)
    assert all(m.training for m in train.modules())


def test_quantize_meta_model_raises():
    with torch.device("meta"):
        model = Net()
    with pytest.raises(ValueError, match="meta device"):
        fq.quantize(model, {"quant_method": "torchao", "quant_type": "int8wo"})
    assert type(model.fc1) is torch.nn.Linear


@pytest.mark.parametrize(
    "cfg", [{"quant_method": "torchao", "quant_type": "int8wo"}, {"quant_method": "quanto", "weights_dtype": "int8"}]
)
def test_quantize_disk_offloaded_model_raises(cfg, tmp_path):
    from accelerate import disk_offload

    torch.manual_seed(0)
    model = Net().eval()
    disk_offload(model, tmp_path, execution_device="cpu")
    with pytest.raises(ValueError, match="meta device.*offloaded"):
        fq.quantize(model, cfg)
