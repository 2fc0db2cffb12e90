"""Test helpers for fastquant.gguf.from_single_file: tiny diffusers models and their weights in the ORIGINAL
(BFL / Stability / Wan) key layout that diffusers' single-file converters read, as community GGUF files have.

The layouts are the known inverses of diffusers' converters (renames, fused qkv / qkv+mlp joined along rows,
AdaLN ``scale, shift`` swapped back to ``shift, scale``). :func:`check_inverse` runs diffusers' own converter on
the result and checks that it gives back the diffusers state dict exactly, so a wrong inverse fails the test.
"""

from __future__ import annotations

import re

import numpy as np
import torch

# diffusers' Flux converter splits single-block linear1 with a hard-coded inner_dim of 3072 (24 heads x 128),
# so the smallest Flux it converts has that width: 1 double + 1 single block, ~530M parameters.
FLUX_CONFIG = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=64,
    pooled_projection_dim=32,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
SD3_CONFIG = dict(
    sample_size=16,
    patch_size=2,
    in_channels=4,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=64,
    caption_projection_dim=64,
    pooled_projection_dim=32,
    out_channels=4,
    pos_embed_max_size=16,
    qk_norm="rms_norm",
)
WAN_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=32,
    in_channels=4,
    out_channels=4,
    text_dim=64,
    freq_dim=256,
    ffn_dim=256,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)


def _swap(t):
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _cat(sd, *keys):
    return torch.cat([sd.pop(k) for k in keys], dim=0)


def flux_original(sd: dict) -> dict:
    """diffusers Flux state dict -> BFL layout (``double_blocks.N.img_attn.qkv.weight`` …)."""
    sd = dict(sd)
    out = {}
    for a, b in (
        ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
        ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
        ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
        ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
        ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
        ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
        ("txt_in", "context_embedder"),
        ("img_in", "x_embedder"),
        ("final_layer.linear", "proj_out"),
    ):
        for leaf in ("weight", "bias"):
            if f"{b}.{leaf}" in sd:
                out[f"{a}.{leaf}"] = sd.pop(f"{b}.{leaf}")
    for leaf in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{leaf}"] = _swap(sd.pop(f"norm_out.linear.{leaf}"))
    n_double = len({k.split(".")[1] for k in sd if k.startswith("transformer_blocks.")})
    n_single = len({k.split(".")[1] for k in sd if k.startswith("single_transformer_blocks.")})
    for i in range(n_double):
        p, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{o}img_mod.lin.{leaf}"] = sd.pop(f"{p}norm1.linear.{leaf}")
            out[f"{o}txt_mod.lin.{leaf}"] = sd.pop(f"{p}norm1_context.linear.{leaf}")
            out[f"{o}img_attn.qkv.{leaf}"] = _cat(sd, *(f"{p}attn.to_{x}.{leaf}" for x in "qkv"))
            out[f"{o}txt_attn.qkv.{leaf}"] = _cat(sd, *(f"{p}attn.add_{x}_proj.{leaf}" for x in "qkv"))
            out[f"{o}img_mlp.0.{leaf}"] = sd.pop(f"{p}ff.net.0.proj.{leaf}")
            out[f"{o}img_mlp.2.{leaf}"] = sd.pop(f"{p}ff.net.2.{leaf}")
            out[f"{o}txt_mlp.0.{leaf}"] = sd.pop(f"{p}ff_context.net.0.proj.{leaf}")
            out[f"{o}txt_mlp.2.{leaf}"] = sd.pop(f"{p}ff_context.net.2.{leaf}")
            out[f"{o}img_attn.proj.{leaf}"] = sd.pop(f"{p}attn.to_out.0.{leaf}")
            out[f"{o}txt_attn.proj.{leaf}"] = sd.pop(f"{p}attn.to_add_out.{leaf}")
        out[f"{o}img_attn.norm.query_norm.scale"] = sd.pop(f"{p}attn.norm_q.weight")
        out[f"{o}img_attn.norm.key_norm.scale"] = sd.pop(f"{p}attn.norm_k.weight")
        out[f"{o}txt_attn.norm.query_norm.scale"] = sd.pop(f"{p}attn.norm_added_q.weight")
        out[f"{o}txt_attn.norm.key_norm.scale"] = sd.pop(f"{p}attn.norm_added_k.weight")
    for i in range(n_single):
        p, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{o}modulation.lin.{leaf}"] = sd.pop(f"{p}norm.linear.{leaf}")
            out[f"{o}linear1.{leaf}"] = _cat(sd, *(f"{p}attn.to_{x}.{leaf}" for x in "qkv"), f"{p}proj_mlp.{leaf}")
            out[f"{o}linear2.{leaf}"] = sd.pop(f"{p}proj_out.{leaf}")
        out[f"{o}norm.query_norm.scale"] = sd.pop(f"{p}attn.norm_q.weight")
        out[f"{o}norm.key_norm.scale"] = sd.pop(f"{p}attn.norm_k.weight")
    assert not sd, f"flux inverse left {sorted(sd)}"
    return out


def sd3_original(sd: dict) -> dict:
    """diffusers SD3 state dict -> Stability's MMDiT layout (``joint_blocks.N.x_block.attn.qkv.weight`` …)."""
    sd = dict(sd)
    out = {"pos_embed": sd.pop("pos_embed.pos_embed")}
    for a, b in (
        ("x_embedder.proj", "pos_embed.proj"),
        ("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
        ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
        ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
        ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
        ("context_embedder", "context_embedder"),
        ("final_layer.linear", "proj_out"),
    ):
        for leaf in ("weight", "bias"):
            out[f"{a}.{leaf}"] = sd.pop(f"{b}.{leaf}")
    for leaf in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{leaf}"] = _swap(sd.pop(f"norm_out.linear.{leaf}"))
    n = len({k.split(".")[1] for k in sd if k.startswith("transformer_blocks.")})
    for i in range(n):
        p, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        last = i == n - 1
        for leaf in ("weight", "bias"):
            out[f"{x}attn.qkv.{leaf}"] = _cat(sd, *(f"{p}attn.to_{q}.{leaf}" for q in "qkv"))
            out[f"{c}attn.qkv.{leaf}"] = _cat(sd, *(f"{p}attn.add_{q}_proj.{leaf}" for q in "qkv"))
            out[f"{x}attn.proj.{leaf}"] = sd.pop(f"{p}attn.to_out.0.{leaf}")
            out[f"{x}adaLN_modulation.1.{leaf}"] = sd.pop(f"{p}norm1.linear.{leaf}")
            ctx = sd.pop(f"{p}norm1_context.linear.{leaf}")
            out[f"{c}adaLN_modulation.1.{leaf}"] = _swap(ctx) if last else ctx
            out[f"{x}mlp.fc1.{leaf}"] = sd.pop(f"{p}ff.net.0.proj.{leaf}")
            out[f"{x}mlp.fc2.{leaf}"] = sd.pop(f"{p}ff.net.2.{leaf}")
            if not last:
                out[f"{c}attn.proj.{leaf}"] = sd.pop(f"{p}attn.to_add_out.{leaf}")
                out[f"{c}mlp.fc1.{leaf}"] = sd.pop(f"{p}ff_context.net.0.proj.{leaf}")
                out[f"{c}mlp.fc2.{leaf}"] = sd.pop(f"{p}ff_context.net.2.{leaf}")
        for a, b in (("ln_q", "norm_q"), ("ln_k", "norm_k")):
            out[f"{x}attn.{a}.weight"] = sd.pop(f"{p}attn.{b}.weight")
        for a, b in (("ln_q", "norm_added_q"), ("ln_k", "norm_added_k")):
            out[f"{c}attn.{a}.weight"] = sd.pop(f"{p}attn.{b}.weight")
    assert not sd, f"sd3 inverse left {sorted(sd)}"
    return out


_WAN = [  # diffusers name piece -> original, applied in this order
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn2", "cross_attn"),
    ("attn1", "self_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
]


def wan_original(sd: dict) -> dict:
    """diffusers Wan state dict -> Wan's layout (``blocks.N.self_attn.q.weight``, ``head.head`` …)."""
    out = {}
    for k, v in sd.items():
        o = k
        for a, b in _WAN:
            o = o.replace(a, b)
        o = re.sub(r"^(blocks\.\d+\.)norm2\.", r"\1@norm3.", o)
        o = re.sub(r"^(blocks\.\d+\.)norm3\.", r"\1norm2.", o).replace("@norm3.", "norm3.")
        if o == "scale_shift_table":
            o = "head.modulation"
        o = o.replace(".scale_shift_table", ".modulation")
        if o.startswith("proj_out."):
            o = "head.head." + o[len("proj_out.") :]
        out[o] = v
    return out


def ltx_original(sd: dict) -> dict:
    """diffusers LTX-Video state dict -> Lightricks' layout (``patchify_proj.weight``, ``adaln_single`` …; the
    checkpoints' ``model.diffusion_model.`` prefix is left out, as GGUF files do: ggml names are <= 63 bytes)."""
    out = {}
    for k, v in sd.items():
        o = k.replace("proj_in", "patchify_proj").replace("time_embed", "adaln_single")
        o = o.replace("norm_q", "q_norm").replace("norm_k", "k_norm")
        out[o] = v
    return out


LTX_CONFIG = dict(
    in_channels=8,
    out_channels=8,
    num_attention_heads=2,
    attention_head_dim=32,
    cross_attention_dim=64,
    num_layers=2,
    caption_channels=32,
)

ORIGINAL = {"flux": flux_original, "sd3": sd3_original, "wan": wan_original, "ltx": ltx_original}


def check_inverse(cls, config: dict, sd: dict, orig: dict) -> None:
    """diffusers' converter on ``orig`` must give back ``sd`` exactly (keys and values)."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    fn = SINGLE_FILE_LOADABLE_CLASSES[cls.__name__]["checkpoint_mapping_fn"]
    back = fn(config=config, checkpoint=dict(orig))
    assert set(back) == set(sd), (sorted(set(back) ^ set(sd)))[:10]
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def random_init(model, seed: int, std: float = 0.05, dtype=torch.float32) -> None:
    """Every parameter ~ N(0, std) (norm weights around 1), in place: random weights a test can tell apart."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            v = torch.randn(p.shape, generator=g, dtype=torch.float32) * std
            parts = name.split(".")
            if len(parts) > 1 and "norm" in parts[-2] and parts[-1] == "weight":
                v = 1.0 + v
            p.data = v.to(dtype)


def to_gguf_tensors(orig: dict, types, metadata: dict = None) -> dict:
    """``{name: tensor or (blocks, ggml_type, shape)}`` for fastquant.gguf.write: ``types(name, tensor)`` picks
    the ggml type of each tensor (F32/F16/BF16 stay plain tensors). As ComfyUI-GGUF's converter does, a tensor
    of more than 4 dimensions is stored as (dim 0, the rest), and a quantized one whose rows are not whole
    256-value blocks as rows of 256, with the real shape in ``comfy.gguf.orig_shape.<name>`` (in ``metadata``)."""
    from fastquant.gguf import Value, quantize

    out = {}
    for name, t in orig.items():
        ty = types(name, t)
        real = tuple(t.shape)
        if t.ndim > 4:
            t = t.reshape(t.shape[0], -1)
        if ty in ("Q4_K", "Q6_K") and t.shape[-1] % 256 and t.numel() % 256 == 0:
            t = t.reshape(-1, 256)
        if tuple(t.shape) != real:
            metadata[f"comfy.gguf.orig_shape.{name}"] = Value(list(real), "array[i32]")
        if ty == "F32":
            out[name] = t.detach().float().contiguous()
        elif ty == "F16":
            out[name] = t.detach().half().contiguous()
        elif ty == "BF16":
            out[name] = t.detach().bfloat16().contiguous()
        else:
            a = t.detach().float().contiguous().numpy()
            out[name] = (np.asarray(quantize(a.reshape(-1, a.shape[-1]), ty)).reshape(-1), ty, tuple(a.shape))
    return out
