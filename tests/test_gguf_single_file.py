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
    # diffusers' own GGUF loading does not know the orig_shape convention and refuses this file
    with pytest.raises(ValueError, match="patch_embedding"):
        diffusers_gguf(WanTransformer3DModel, path, cfg_dir)


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


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """(GGUF path, config folder, float model output, float model bytes); the float model is held in bf16
    (random values that bf16 holds exactly) and dropped once the file is written, to keep memory down."""
    with torch.device("meta"):
        model = FluxTransformer2DModel(**L.FLUX_CONFIG)
    model.to_empty(device="cpu")
    L.random_init(model, 0, std=0.02, dtype=torch.bfloat16)
    model.eval()
    cfg = dict(model.config)
    float_bytes = 2 * packed_bytes(model)  # as float32
    bf16 = {k: v.bfloat16() if isinstance(v, torch.Tensor) else v for k, v in flux_inputs().items()}
    with torch.no_grad():
        y = model(**bf16)[0].float()
    path, cfg_dir = write_original(
        tmp_path_factory.mktemp("flux"), "flux", FluxTransformer2DModel, cfg, model.state_dict()
    )
    del model
    gc.collect()
    return path, cfg_dir, y, float_bytes


def test_flux_packed_rows_match_diffusers(flux):
    path, cfg_dir, y_float, float_bytes = flux
    mine, info = fg.from_single_file(FluxTransformer2DModel, path, config=cfg_dir, output_loading_info=True)
    assert not info.unexpected and not info.arithmetic
    # single_blocks.0.linear1 (q, k, v and the MLP fused, 21504 rows) is cut four ways on whole rows
    sb = mine.single_transformer_blocks[0]
    assert all(isinstance(m, fg.GGUFLinear) for m in (sb.attn.to_q, sb.attn.to_k, sb.attn.to_v, sb.proj_mlp))
    assert packed_bytes(mine) < 0.4 * float_bytes
    inp = flux_inputs()
    with torch.no_grad():
        y = mine(**inp)[0]
    assert rel(y, y_float) <= 0.05
    theirs = diffusers_gguf(FluxTransformer2DModel, path, cfg_dir)
    check_against_diffusers(mine, theirs, min_packed=10)
    with torch.no_grad():
        assert rel(y, theirs(**inp)[0]) <= 2e-3  # diffusers rounds dequantized values to f16


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
