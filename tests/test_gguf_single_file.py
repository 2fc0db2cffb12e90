"""fastquant.gguf.from_single_file on GGUF files in the original (BFL / Stability / Wan) key layout, as the
community diffusion GGUF files are, with Q8_0, Q4_K, F16, BF16 and F32 tensors mixed.

References:
- the float model with the file's tensors dequantized exactly (fastquant.gguf.load_state_dict) and converted
  by diffusers' own converter: relative L2 <= 1e-5 in f32 (the packed path's own arithmetic only);
- diffusers' own ``cls.from_single_file(path, quantization_config=GGUFQuantizationConfig(compute_dtype=f32))``
  on the same file: the same packed blocks, byte for byte, in every quantized layer; its forward differs only
  because diffusers' dequantizers round the values to float16 (checked: its Q8_0 weights are exactly
  fastquant's exact values rounded to f16), so the outputs agree within that rounding;
- the original float model: within the quantization error.
"""

from __future__ import annotations

import gc
import json
import zlib

import pytest
import torch
from torch import nn

import fastquant.gguf as fg

pytest.importorskip("diffusers")
import _single_file_layouts as L  # noqa: E402
from diffusers import (  # noqa: E402
    FluxTransformer2DModel,
    GGUFQuantizationConfig,
    LTXVideoTransformer3DModel,
    SD3Transformer2DModel,
    WanTransformer3DModel,
)
from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES  # noqa: E402


def rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def mixed_types(name: str, t: torch.Tensor) -> str:
    """A city96-like mix: 1-D tensors F32, matrices Q8_0 / Q4_K (wide rows) / BF16 / F16 by a name hash."""
    if t.ndim < 2:
        return "F32"
    if t.ndim != 2 or t.shape[-1] % 32:
        return "F16"
    h = zlib.crc32(name.encode()) % 6
    if h == 0 and t.shape[-1] % 256 == 0 and t.numel() <= 10_000_000:
        return "Q4_K"
    return {1: "BF16", 2: "F16"}.get(h, "Q8_0")


def write_original(tmp, name, cls, config, sd, types=mixed_types, dtype=None):
    """The model's weights in the original layout (checked against diffusers' converter) as a GGUF file, and
    its diffusers config folder."""
    orig = L.ORIGINAL[name](sd)
    L.check_inverse(cls, config, sd, orig)
    md = {"general.architecture": name}
    path = tmp / f"{name}.gguf"
    fg.write(path, L.to_gguf_tensors(orig, types, md), md)
    cfg_dir = tmp / f"{name}_config"
    cfg_dir.mkdir()
    (cfg_dir / "config.json").write_text(json.dumps({"_class_name": cls.__name__, **config}))
    return path, cfg_dir


def exact_reference(cls, config, path):
    """The float model holding the file's exact values, converted by diffusers' own converter."""
    conv = SINGLE_FILE_LOADABLE_CLASSES[cls.__name__]["checkpoint_mapping_fn"]
    sd = conv(config=dict(config), checkpoint=fg.load_state_dict(path, dtype=torch.float32))
    ref = cls.from_config(config).eval()
    ref.load_state_dict(sd, strict=True)
    return ref


def diffusers_gguf(cls, path, cfg_dir):
    return cls.from_single_file(
        str(path),
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32),
        config=str(cfg_dir),
        torch_dtype=torch.float32,
    )


def check_against_diffusers(mine, theirs, min_packed):
    """Every quantized diffusers layer is a packed fastquant layer with the same blocks; plain tensors equal."""
    mods = dict(mine.named_modules())
    n_packed = 0
    for name, mod in theirs.named_modules():
        w = getattr(mod, "weight", None)
        if w is None or not hasattr(w, "quant_type") or w.quant_type.name in ("F32", "F16", "BF16"):
            continue
        assert isinstance(mods[name], fg.GGUFLinear), name
        assert mods[name].ggml_type == w.quant_type.name, name
        assert torch.equal(mods[name].weight, w.as_tensor().view(torch.uint8).reshape(mods[name].weight.shape)), name
        n_packed += 1
    assert n_packed >= min_packed
    theirs_sd = theirs.state_dict()
    for k, v in mine.state_dict().items():
        if (
            isinstance(v, torch.Tensor)
            and v.dtype.is_floating_point
            and k in theirs_sd
            and not hasattr(theirs_sd[k], "quant_type")
        ):
            t = theirs_sd[k]
            t = t.as_tensor() if hasattr(t, "as_tensor") else t
            assert torch.equal(v, t.to(v.dtype)), k


def packed_bytes(model) -> int:
    return sum(b.numel() * b.element_size() for b in model.buffers()) + sum(
        p.numel() * p.element_size() for p in model.parameters()
    )


# ---------------------------------------------------------------------------------------------------------
# SD3 and Wan: tiny models, exact references
# ---------------------------------------------------------------------------------------------------------


def sd3_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, 4, 16, 16, generator=g).to(dtype),
        encoder_hidden_states=torch.randn(1, 5, 64, generator=g).to(dtype),
        pooled_projections=torch.randn(1, 32, generator=g).to(dtype),
        timestep=torch.tensor([3.0]),
        return_dict=False,
    )


def wan_inputs():
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, 4, 2, 8, 8, generator=g),
        encoder_hidden_states=torch.randn(1, 5, 64, generator=g),
        timestep=torch.tensor([3.0]),
        return_dict=False,
    )


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    torch.manual_seed(0)
    model = SD3Transformer2DModel(**L.SD3_CONFIG).eval()
    L.random_init(model, 0)
    path, cfg_dir = write_original(
        tmp_path_factory.mktemp("sd3"), "sd3", SD3Transformer2DModel, dict(model.config), model.state_dict()
    )
    return model, path, cfg_dir


def test_sd3_matches_exact_reference_and_diffusers(sd3):
    model, path, cfg_dir = sd3
    mine, info = fg.from_single_file(SD3Transformer2DModel, path, config=cfg_dir, output_loading_info=True)
    assert type(mine) is SD3Transformer2DModel and not mine.training
    assert not info.unexpected and not info.arithmetic
    # the fused qkv of both streams is cut on whole rows: the cut layers stay packed
    assert isinstance(mine.transformer_blocks[0].attn.to_q, fg.GGUFLinear)
    assert isinstance(mine.transformer_blocks[0].attn.add_v_proj, fg.GGUFLinear)
    assert not any(p.device.type == "meta" for p in mine.parameters())
    assert not any(p.requires_grad for p in mine.parameters())
    inp = sd3_inputs()
    exact = exact_reference(SD3Transformer2DModel, dict(model.config), path)
    theirs = diffusers_gguf(SD3Transformer2DModel, path, cfg_dir)
    with torch.no_grad():
        y = mine(**inp)[0]
        assert rel(y, exact(**inp)[0]) <= 1e-5
        yd = theirs(**inp)[0]
        assert rel(y, yd) <= 2e-3  # diffusers rounds dequantized values to f16
        assert rel(y, model(**inp)[0]) <= 0.05  # quantization error
    check_against_diffusers(mine, theirs, min_packed=15)
    # diffusers' Q8_0 weights are fastquant's exact values rounded to f16: the only difference
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    lin = dict(mine.named_modules())
    for name, mod in theirs.named_modules():
        w = getattr(mod, "weight", None)
        if w is not None and getattr(w, "quant_type", None) is not None and w.quant_type.name == "Q8_0":
            assert torch.equal(lin[name].dequantize_weight().half(), dequantize_gguf_tensor(w)), name


def test_sd3_dtype_and_memory(sd3):
    model, path, cfg_dir = sd3
    mine = fg.from_single_file(SD3Transformer2DModel, path, config=cfg_dir, torch_dtype=torch.bfloat16)
    floats = {p.dtype for p in mine.parameters() if p.dtype.is_floating_point}
    assert floats == {torch.bfloat16}
    with torch.no_grad():
        y = mine(**sd3_inputs(torch.bfloat16))[0]
    assert y.dtype == torch.bfloat16
    assert rel(y, model(**sd3_inputs())[0].detach()) <= 0.05
    assert packed_bytes(mine) < 0.6 * packed_bytes(model)


def test_sd3_modules_to_not_convert_and_config_forms(sd3):
    model, path, cfg_dir = sd3
    cfg = json.loads((cfg_dir / "config.json").read_text())
    # a dict, a config.json path and a folder with the config in transformer/ give the same model
    nested = cfg_dir.parent / "pipeline"
    (nested / "transformer").mkdir(parents=True)
    (nested / "transformer" / "config.json").write_text(json.dumps(cfg))
    inp = sd3_inputs()
    outs = []
    for c in (cfg, cfg_dir / "config.json", nested):
        m = fg.from_single_file(SD3Transformer2DModel, path, config=c, modules_to_not_convert=["ff"])
        assert type(m.transformer_blocks[0].ff.net[2]) is nn.Linear
        assert isinstance(m.transformer_blocks[0].attn.to_q, fg.GGUFLinear)
        with torch.no_grad():
            outs.append(m(**inp)[0])
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    with torch.no_grad():
        assert rel(outs[0], exact_reference(SD3Transformer2DModel, dict(model.config), path)(**inp)[0]) <= 1e-5


def test_wan_with_comfyui_reshaped_tensors(tmp_path):
    """Wan's 5-D patch embedding is stored flattened with ComfyUI-GGUF's ``comfy.gguf.orig_shape`` key (GGUF
    has at most 4 dimensions), and a Q4_K matrix whose rows are not whole 256-value blocks as rows of 256:
    both get their real shape back (the second dequantized, and reported)."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**L.WAN_CONFIG).eval()
    L.random_init(model, 0)

    def types(name, t):
        if name == "time_projection.1.weight":
            return "Q4_K"  # (384, 64): stored as (96, 256)
        return mixed_types(name, t)

    path, cfg_dir = write_original(
        tmp_path, "wan", WanTransformer3DModel, dict(model.config), model.state_dict(), types
    )
    with fg.open(path) as f:
        assert f.tensors["patch_embedding.weight"].shape == (64, 16)
        assert f.tensors["time_projection.1.weight"].shape == (96, 256)
    with pytest.warns(UserWarning, match="time_projection.1.weight"):
        mine, info = fg.from_single_file(WanTransformer3DModel, path, config=cfg_dir, output_loading_info=True)
    assert info.arithmetic == ["time_projection.1.weight: stored as [96, 256], real shape [384, 64]"]
    assert type(mine.condition_embedder.time_proj) is nn.Linear
    assert sum(isinstance(m, fg.GGUFLinear) for m in mine.modules()) >= 8
    inp = wan_inputs()
    # the reference reads the file the same way (fastquant's reader applies no orig_shape): reshape it here
    conv = SINGLE_FILE_LOADABLE_CLASSES["WanTransformer3DModel"]["checkpoint_mapping_fn"]
    sd = fg.load_state_dict(path, dtype=torch.float32)
    sd["patch_embedding.weight"] = sd["patch_embedding.weight"].reshape(64, 4, 1, 2, 2)
    sd["time_projection.1.weight"] = sd["time_projection.1.weight"].reshape(384, 64)
    exact = WanTransformer3DModel.from_config(dict(model.config)).eval()
    exact.load_state_dict(conv(config=dict(model.config), checkpoint=sd), strict=True)
    with torch.no_grad():
        y = mine(**inp)[0]
        assert rel(y, exact(**inp)[0]) <= 1e-5
        assert rel(y, model(**inp)[0]) <= 0.05
    # bf16, with Wan's _keep_in_fp32_modules kept in float32 as diffusers' GGUF loading keeps them
    with pytest.warns(UserWarning):
        half = fg.from_single_file(WanTransformer3DModel, path, config=cfg_dir, torch_dtype=torch.bfloat16)
    assert half.scale_shift_table.dtype == torch.float32 and half.blocks[0].scale_shift_table.dtype == torch.float32
    assert half.patch_embedding.weight.dtype == torch.bfloat16
    assert half.blocks[0].attn1.norm_q.weight.dtype == torch.bfloat16
    with torch.no_grad():
        yh = half(
            **{k: v.bfloat16() if k == "hidden_states" or k == "encoder_hidden_states" else v for k, v in inp.items()}
        )[0]
    assert yh.dtype == torch.bfloat16 and rel(yh, y) <= 0.05
    # diffusers' own GGUF loading does not know the orig_shape convention and refuses this file
    with pytest.raises(ValueError, match="patch_embedding"):
        diffusers_gguf(WanTransformer3DModel, path, cfg_dir)


def test_ltx_video(tmp_path):
    """LTX-Video's original names (``patchify_proj``, ``adaln_single``, ``q_norm``). Its 2-D
    ``scale_shift_table`` parameters stored Q8_0 are dequantized (they are no Linear weights); diffusers' own
    GGUF loading keeps them packed and its forward then fails on them, so the comparison with diffusers uses a
    second file with those tables in F32."""
    torch.manual_seed(0)
    model = LTXVideoTransformer3DModel(**L.LTX_CONFIG).eval()
    L.random_init(model, 0)
    cfg = dict(model.config)
    g = torch.Generator().manual_seed(1)
    inp = dict(
        hidden_states=torch.randn(1, 2 * 4 * 4, 8, generator=g),
        encoder_hidden_states=torch.randn(1, 5, 32, generator=g),
        timestep=torch.tensor([3]),
        encoder_attention_mask=torch.ones(1, 5),
        num_frames=2,
        height=4,
        width=4,
        return_dict=False,
    )

    def quantized_tables(name, t):
        return "Q8_0" if name.endswith("scale_shift_table") else mixed_types(name, t)

    def f32_tables(name, t):
        return "F32" if name.endswith("scale_shift_table") else mixed_types(name, t)

    for types in (quantized_tables, f32_tables):
        d = tmp_path / types.__name__
        d.mkdir()
        path, cfg_dir = write_original(d, "ltx", LTXVideoTransformer3DModel, cfg, model.state_dict(), types)
        mine, info = fg.from_single_file(LTXVideoTransformer3DModel, path, config=cfg_dir, output_loading_info=True)
        assert not info.unexpected and len(info.packed) >= 8
        tables = {
            "scale_shift_table",
            "transformer_blocks.0.scale_shift_table",
            "transformer_blocks.1.scale_shift_table",
        }
        assert tables <= set(info.dequantized) if types is quantized_tables else not info.dequantized
        with torch.no_grad():
            y = mine(**inp)[0]
            assert rel(y, exact_reference(LTXVideoTransformer3DModel, cfg, path)(**inp)[0]) <= 1e-5
            assert rel(y, model(**inp)[0]) <= 0.05
    theirs = diffusers_gguf(LTXVideoTransformer3DModel, path, cfg_dir)
    with torch.no_grad():
        assert rel(y, theirs(**inp)[0]) <= 2e-3
    check_against_diffusers(mine, theirs, min_packed=8)


def test_packed_rows_operations(tmp_path):
    """The stand-in cuts and joins whole rows exactly; anything else dequantizes (and is logged)."""
    from fastquant.gguf._single_file import PackedRows, _Source, gguf_checkpoint

    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, 64, generator=g)
    fg.write(tmp_path / "t.gguf", L.to_gguf_tensors({"w": w, "v": w[:4]}, lambda n, t: "Q8_0", {}))
    with fg.open(tmp_path / "t.gguf") as f:
        log: list = []
        src = _Source(f)
        ck = gguf_checkpoint(f, src, log)
        p, exact = ck["w"], f.get_tensor("w")
        a, b, c = torch.chunk(p, 3, dim=0)
        assert all(isinstance(x, PackedRows) for x in (a, b, c)) and a.shape == (4, 64)
        swapped = torch.cat([c, a, b], dim=0)
        assert torch.equal(swapped.dequantize(), torch.cat([exact[8:], exact[:8]]))
        assert swapped.segments == [("w", 8, 12), ("w", 0, 8)]  # adjacent ranges merged
        q, k = torch.split(p, [5, 7], dim=0)
        assert torch.equal(k.dequantize(), exact[5:])
        assert torch.equal(p[2:9].dequantize(), exact[2:9]) and torch.equal(p.narrow(0, 1, 3).dequantize(), exact[1:4])
        assert torch.equal(p.packed()[3:6], p[3:6].packed())
        assert not log
        # not exact on blocks: dequantized, logged
        assert torch.equal(p[:, :32], exact[:, :32])
        assert torch.equal(p * 2, exact * 2) and torch.equal(p.t(), exact.t())
        assert torch.equal(torch.cat([ck["v"], exact[:1]]), torch.cat([exact[:4], exact[:1]]))
        assert torch.equal(p.chunk(2, dim=1)[1], exact[:, 32:])
        assert [e.split(": ")[1] for e in log] == ["indexing", "__mul__", "t", "cat", "chunk"]
        src.close()


# ---------------------------------------------------------------------------------------------------------
# Flux: diffusers' converter hard-codes the 3072 width, so the smallest Flux it converts is ~530M parameters
# ---------------------------------------------------------------------------------------------------------


def flux_inputs():
    g = torch.Generator().manual_seed(2)
    return dict(
        hidden_states=torch.randn(1, 4, 16, generator=g),
        encoder_hidden_states=torch.randn(1, 3, 64, generator=g),
        pooled_projections=torch.randn(1, 32, generator=g),
        timestep=torch.tensor([0.5]),
        guidance=torch.tensor([3.5]),
        img_ids=torch.randn(4, 3, generator=g),
        txt_ids=torch.zeros(3, 3),
        return_dict=False,
    )


def flux_types(name, t):
    if name.endswith(("linear1.weight", "qkv.weight")):
        return "Q8_0"  # the fused weights the converter cuts: packed
    if name == "double_blocks.0.img_mlp.2.weight":
        return "Q4_K"
    return mixed_types(name, t)


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """(GGUF path, config folder, float32 model output, float32 model bytes). The float model's random
    weights are bf16 values, held in bf16 while the file is written (less memory), then cast to float32 for
    the reference forward."""
    with torch.device("meta"):
        model = FluxTransformer2DModel(**L.FLUX_CONFIG)
    model.to_empty(device="cpu")
    L.random_init(model, 0, std=0.02, dtype=torch.bfloat16)
    model.eval()
    cfg = dict(model.config)
    float_bytes = 2 * packed_bytes(model)  # as float32
    path, cfg_dir = write_original(
        tmp_path_factory.mktemp("flux"), "flux", FluxTransformer2DModel, cfg, model.state_dict(), flux_types
    )
    gc.collect()
    with torch.no_grad():
        y = model.float()(**flux_inputs())[0]  # (a bf16 forward of this random Flux is 60% off: not a reference)
    del model
    gc.collect()
    return path, cfg_dir, y, float_bytes


@pytest.fixture(scope="module")
def flux_models(flux):
    path, cfg_dir, _, _ = flux
    mine, info = fg.from_single_file(FluxTransformer2DModel, path, config=cfg_dir, output_loading_info=True)
    return mine, info, diffusers_gguf(FluxTransformer2DModel, path, cfg_dir)


def test_flux_packed_rows_match_diffusers(flux, flux_models):
    _, _, y_float, float_bytes = flux
    mine, info, theirs = flux_models
    assert not info.unexpected and not info.arithmetic
    # single_blocks.0.linear1 (q, k, v and the MLP fused, 21504 rows) is cut four ways on whole rows
    sb = mine.single_transformer_blocks[0]
    assert all(isinstance(m, fg.GGUFLinear) for m in (sb.attn.to_q, sb.attn.to_k, sb.attn.to_v, sb.proj_mlp))
    assert isinstance(mine.transformer_blocks[0].ff.net[2], fg.GGUFLinear)
    assert mine.transformer_blocks[0].ff.net[2].ggml_type == "Q4_K"
    assert packed_bytes(mine) < 0.4 * float_bytes
    inp = flux_inputs()
    with torch.no_grad():
        y, yd = mine(**inp)[0], theirs(**inp)[0]
        # quantization error (this random Flux amplifies it: ~5%), as large as diffusers' own
        assert rel(y, y_float) <= 0.1 and rel(y, y_float) <= 1.05 * rel(yd, y_float)
        assert rel(y, yd) <= 2e-3  # diffusers rounds dequantized values to f16
    check_against_diffusers(mine, theirs, min_packed=10)


def _flux_pipe(transformer):
    from diffusers import FluxPipeline

    none = dict.fromkeys(["scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"])
    return FluxPipeline(transformer=transformer, **none)


def test_flux_load_lora_weights(flux_models):
    """FluxPipeline.load_lora_weights on the model from from_single_file, on layers cut from fused weights
    too; diffusers' GGUF model with the same LoRA is the reference (within its f16 rounding)."""
    pytest.importorskip("peft")
    mine, _, theirs = flux_models
    targets = ("attn.to_q", "attn.to_v", "proj_mlp", "attn.add_k_proj", "ff.net.2")
    sd = _lora_sd(mine, targets, rank=4, seed=5)
    inp = flux_inputs()
    with torch.no_grad():
        y0 = mine(**inp)[0]
    pm, pt = _flux_pipe(mine), _flux_pipe(theirs)
    pm.load_lora_weights(dict(sd), adapter_name="a")
    pt.load_lora_weights(dict(sd), adapter_name="a")
    wrapped = {n for n, m in mine.named_modules() if type(m).__name__ == "GGUFLoraLinear"}
    assert {"single_transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.proj_mlp"} <= wrapped
    with torch.no_grad():
        y = mine(**inp)[0]
        assert rel(y, y0) > 1e-2
        assert rel(y, theirs(**inp)[0]) <= 2e-3
        pm.unload_lora_weights()
        pt.unload_lora_weights()
        assert rel(mine(**inp)[0], y0) <= 1e-6


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------


def test_clear_errors(sd3, tmp_path):
    _, path, cfg_dir = sd3
    from diffusers import AutoencoderTiny

    with pytest.raises(ValueError, match="AutoencoderTiny has no single-file key converter"):
        fg.from_single_file(AutoencoderTiny, path, config=cfg_dir)
    with pytest.raises(TypeError, match="diffusers model class"):
        fg.from_single_file("SD3Transformer2DModel", path, config=cfg_dir)
    with pytest.raises(TypeError, match="torch_dtype"):
        fg.from_single_file(SD3Transformer2DModel, path, config=cfg_dir, torch_dtype=torch.int8)
    with pytest.raises(OSError, match="no config.json"):
        fg.from_single_file(SD3Transformer2DModel, path, config=tmp_path)
    # a config of another size: the tensors the model needs are named
    cfg = json.loads((cfg_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="shape"):
        fg.from_single_file(SD3Transformer2DModel, path, config={**cfg, "joint_attention_dim": 32})
    # no config and no Hub: the error says what diffusers inferred and what to pass
    with pytest.raises((OSError, ValueError), match="config="):
        fg.from_single_file(SD3Transformer2DModel, path)


# ---------------------------------------------------------------------------------------------------------
# LoRA (issue 17): diffusers' load_lora_weights on models from from_single_file
# ---------------------------------------------------------------------------------------------------------


def _lora_sd(model, targets, rank=4, seed=1, skip=()):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, mod in model.named_modules():
        if name in skip or not name.endswith(targets):
            continue
        if isinstance(mod, (nn.Linear, fg.GGUFLinear)):
            sd[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, mod.in_features, generator=g) * 0.1
            sd[f"transformer.{name}.lora_B.weight"] = torch.randn(mod.out_features, rank, generator=g) * 0.1
    return sd


def _sd3_pipe(transformer):
    from diffusers import StableDiffusion3Pipeline

    none = dict.fromkeys(
        [
            "scheduler",
            "vae",
            "text_encoder",
            "tokenizer",
            "text_encoder_2",
            "tokenizer_2",
            "text_encoder_3",
            "tokenizer_3",
        ]
    )
    return StableDiffusion3Pipeline(transformer=transformer, **none)


def test_sd3_load_lora_weights_fuse_unfuse(sd3):
    import copy

    pytest.importorskip("peft")
    _, path, cfg_dir = sd3
    mine = fg.from_single_file(SD3Transformer2DModel, path, config=cfg_dir)
    ref = fg.dequantize_model(copy.deepcopy(mine))
    targets = ("to_q", "to_k", "to_v", "add_q_proj", "to_out.0", "ff.net.2", "norm1.linear")
    sd = _lora_sd(mine, targets)
    packed = {n for n, m in mine.named_modules() if isinstance(m, fg.GGUFLinear)}
    pm, pr = _sd3_pipe(mine), _sd3_pipe(ref)
    pm.load_lora_weights(dict(sd), adapter_name="style")
    pr.load_lora_weights(dict(sd), adapter_name="style")
    wrapped = [n for n, m in mine.named_modules() if type(m).__name__ == "GGUFLoraLinear"]
    assert "transformer_blocks.0.attn.to_q" in wrapped  # cut from the fused qkv, packed, adapted
    inp = sd3_inputs()
    blocks = {n: b.clone() for n, b in mine.named_buffers() if b.dtype == torch.uint8}
    with torch.no_grad():
        y0 = exact_reference(SD3Transformer2DModel, dict(mine.config), path)(**inp)[0]
        y = mine(**inp)[0]
        assert rel(y, pr.transformer(**inp)[0]) <= 1e-5
        assert rel(y, y0) > 1e-2  # the adapter does change the output
        pm.fuse_lora(lora_scale=0.5)
        pr.fuse_lora(lora_scale=0.5)
        fused = [n for n in wrapped if n in packed]
        assert len(fused) >= 8 and set(fg.merge_report(mine)) == set(fused)
        assert all(isinstance(mine.get_submodule(n + ".base_layer"), fg.GGUFLinear) for n in fused)
        assert rel(mine(**inp)[0], ref(**inp)[0]) <= 2e-2  # requantized to the same types
        pm.unfuse_lora()
        for n, b in mine.named_buffers():
            if b.dtype == torch.uint8:
                assert torch.equal(b, blocks[n]), n
        pm.unload_lora_weights()
        assert not any(type(m).__name__ == "GGUFLoraLinear" for m in mine.modules())
        assert rel(mine(**inp)[0], y0) <= 1e-5
