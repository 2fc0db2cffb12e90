"""LoRA (peft) on packed GGUF layers (fastquant.gguf._lora, _peft_layer), and peft on the other backends
through fastquant.quantize.

Reference everywhere: the same model with every packed layer replaced by a plain nn.Linear holding the exact
dequantized weight (fastquant.gguf.dequantize_model), carrying the same adapters — so any difference is the
packed path's own arithmetic (unmerged) or the requantization (merged)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

import fastquant.gguf as fg
from fastquant import _core

peft = pytest.importorskip("peft")  # a pinned dev dependency (requirements-dev.txt): present in CI
from peft import LoraConfig, get_peft_model, inject_adapter_in_model  # noqa: E402

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="requires CUDA")

TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
# requantization error bound (relative L2 of the merged blocks against W + ΔW), per type: a few times the
# error each type has on Gaussian weights
MERGE_BOUND = {
    "F16": 5e-4,
    "BF16": 4e-3,
    "Q8_0": 1e-2,
    "Q6_K": 2.5e-2,
    "Q5_0": 6e-2,
    "Q5_1": 6e-2,
    "Q5_K": 6e-2,
    "Q4_0": 1.2e-1,
    "Q4_1": 1.2e-1,
    "Q4_K": 1.2e-1,
}


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def mlp(seed=0, width=256, out=64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, out)).eval()


def packed_and_ref(ggml_type, seed=0):
    """(model with GGUFLinear layers, float reference with the exact dequantized weights)."""
    q = mlp(seed)
    fg.quantize_model(q, ggml_type)
    assert all(isinstance(q[i], fg.GGUFLinear) for i in (0, 2))
    return q, fg.dequantize_model(copy.deepcopy(q))


def lora_cfg(r=4, alpha=8, targets=("0", "2"), **kw):
    # init_lora_weights=False: B is random too, so the adapter changes the output from the start
    return LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, **kw)


def copy_adapters(src: nn.Module, dst: nn.Module) -> None:
    sd = {k: v for k, v in src.state_dict().items() if "lora_" in k}
    res = dst.load_state_dict(sd, strict=False)
    assert not res.unexpected_keys
    assert not [k for k in res.missing_keys if "lora_" in k]


def peft_pair(ggml_type, n_adapters=1, seed=0, **kw):
    q, ref = packed_and_ref(ggml_type, seed)
    torch.manual_seed(seed + 1)
    pq = get_peft_model(q, lora_cfg(**kw), adapter_name="a0")
    for i in range(1, n_adapters):
        pq.add_adapter(f"a{i}", lora_cfg(r=2 + 2 * i, alpha=3 * i, **kw))
    pr = get_peft_model(ref, lora_cfg(**kw), adapter_name="a0")
    for i in range(1, n_adapters):
        pr.add_adapter(f"a{i}", lora_cfg(r=2 + 2 * i, alpha=3 * i, **kw))
    copy_adapters(pq, pr)
    return pq, pr


@pytest.mark.parametrize("ggml_type", TYPES)
def test_unmerged_equals_float_plus_lora(ggml_type):
    pq, pr = peft_pair(ggml_type, n_adapters=2)
    assert type(pq.base_model.model[0]).__name__ == "GGUFLoraLinear"
    assert isinstance(pq.base_model.model[0].base_layer, fg.GGUFLinear)
    pq.base_model.set_adapter(["a0", "a1"])
    pr.base_model.set_adapter(["a0", "a1"])
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for rows in (3, 40):  # the fused CPU kernel (few rows) and the dequantize-then-matmul path
            x = torch.randn(rows, 256, generator=g)
            y, yr = pq(x), pr(x)
            assert rel(y, yr) <= 1e-5, (ggml_type, rows, rel(y, yr))
            # the adapters do change the output (the test is not comparing two base models)
            m = pq.base_model.model
            assert rel(m[2].base_layer(m[1](m[0].base_layer(x))), yr) > 1e-3


def test_several_adapters_weights_enable_disable_unload():
    pq, pr = peft_pair("Q4_K", n_adapters=3)
    x = torch.randn(6, 256, generator=torch.Generator().manual_seed(4))
    base = pq.base_model.model[0].base_layer
    calls = []
    h = base.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        for names in (["a0"], ["a0", "a2"], ["a0", "a1", "a2"]):
            pq.base_model.set_adapter(names)
            pr.base_model.set_adapter(names)
            calls.clear()
            y = pq(x)
            assert len(calls) == 1  # the packed base runs once per forward, however many adapters
            assert rel(y, pr(x)) <= 1e-5
        # per-adapter weights
        for m in (pq.base_model.model[0], pr.base_model.model[0]):
            m.set_scale("a1", 0.25)
            m.set_scale("a2", -1.5)
        assert rel(pq(x), pr(x)) <= 1e-5
        with pq.disable_adapter(), pr.disable_adapter():
            y0, y0r = pq(x), pr(x)
        assert rel(y0, y0r) <= 1e-5 and rel(y0, pr(x)) > 1e-3
        h.remove()
        plain = pq.unload()
    assert isinstance(plain[0], fg.GGUFLinear) and isinstance(plain[2], fg.GGUFLinear)
    with torch.no_grad():
        assert rel(plain(x), y0r) <= 1e-5


def test_torch_compile_with_adapters():
    pq, pr = peft_pair("Q4_K", n_adapters=2)
    for m in (pq, pr):
        m.base_model.set_adapter(["a0", "a1"])
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(17))
    with torch.no_grad():
        assert rel(torch.compile(pq, fullgraph=True)(x), pr(x)) <= 1e-5


def test_backward_reaches_only_the_adapters():
    # LoRA on the first layer only: the gradient must also flow back through the second, plain GGUFLinear
    pq, pr = peft_pair("Q4_K", targets=("0",))
    blocks = {n: b.clone() for n, b in pq.named_buffers() if b.dtype == torch.uint8}
    assert set(blocks) == {"base_model.model.0.base_layer.weight", "base_model.model.2.weight"}
    trainable = {n for n, p in pq.named_parameters() if p.requires_grad}
    assert trainable == {"base_model.model.0.lora_A.a0.weight", "base_model.model.0.lora_B.a0.weight"}
    g = torch.Generator().manual_seed(5)
    for rows in (2, 33):
        x = torch.randn(rows, 256, generator=g)
        xq, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        tgt = torch.randn(rows, 64, generator=g)
        pq.zero_grad()
        pr.zero_grad()
        ((pq(xq) - tgt) ** 2).sum().backward()
        ((pr(xr) - tgt) ** 2).sum().backward()
        assert rel(xq.grad, xr.grad) <= 1e-5
        gq = {n: p.grad for n, p in pq.named_parameters() if p.grad is not None}
        gr = {n: p.grad for n, p in pr.named_parameters() if p.grad is not None}
        assert set(gq) == trainable == set(gr)
        for n in gq:
            assert rel(gq[n], gr[n]) <= 1e-5, n
    opt = torch.optim.SGD([p for p in pq.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    for n, b in pq.named_buffers():
        if b.dtype == torch.uint8:
            assert torch.equal(b, blocks[n]), n  # the packed weights are frozen


def test_qlora_style_training_on_a_gguf_llama():
    # a transformers causal LM with Q4_K layers (embeddings packed too), peft's CAUSAL_LM task, gradient
    # checkpointing: the first step's loss and adapter gradients equal the dequantized float model's, and a
    # few steps of AdamW lower the loss while the packed blocks stay as they are
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=300,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    q = transformers.LlamaForCausalLM(cfg)
    fg.quantize_model(q, "Q4_K", modules_to_not_convert=["lm_head"], embeddings=True)
    ref = fg.dequantize_model(copy.deepcopy(q))
    lc = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")
    torch.manual_seed(1)
    pq = get_peft_model(q, LoraConfig(**lc, init_lora_weights=False))
    pr = get_peft_model(ref, LoraConfig(**lc, init_lora_weights=False))
    copy_adapters(pq, pr)
    for m in (pq, pr):
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        m.enable_input_require_grads()
        m.train()
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(2))
    blocks = {n: b.clone() for n, b in pq.named_buffers() if b.dtype == torch.uint8}
    lq, lr = pq(input_ids=ids, labels=ids).loss, pr(input_ids=ids, labels=ids).loss
    assert abs(lq.item() - lr.item()) <= 1e-5 * abs(lr.item())
    lq.backward()
    lr.backward()
    gq = {n: p.grad for n, p in pq.named_parameters() if p.grad is not None}
    gr = {n: p.grad for n, p in pr.named_parameters() if p.grad is not None}
    assert set(gq) == set(gr) and len(gq) == 2 * 3 * 2 and all(".lora_" in n for n in gq)
    for n in gq:
        assert rel(gq[n], gr[n]) <= 1e-4, n
    opt = torch.optim.AdamW([p for p in pq.parameters() if p.requires_grad], lr=1e-2)
    first = lq.item()
    for _ in range(4):
        opt.step()
        opt.zero_grad()
        loss = pq(input_ids=ids, labels=ids).loss
        loss.backward()
    assert loss.item() < first
    for n, b in pq.named_buffers():
        if b.dtype == torch.uint8:
            assert torch.equal(b, blocks[n]), n


def test_trainable_bias_and_bf16_gradient():
    q, ref = packed_and_ref("Q8_0")
    for m in (q[2], ref[2]):
        m.bias.requires_grad_(True)
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(6))
    xq, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    q(xq).pow(2).sum().backward()
    ref(xr).pow(2).sum().backward()
    assert q[0].bias.grad is None  # frozen (the default for packed layers)
    assert rel(q[2].bias.grad, ref[2].bias.grad) <= 1e-5
    assert rel(xq.grad, xr.grad) <= 1e-5
    # bf16 activations: the gradient is grad_y · W with W rounded once to bf16, like the forward
    xb = x.to(torch.bfloat16).requires_grad_()
    yb = q[0](xb)
    yb.float().sum().backward()
    want = torch.ones(5, 256, dtype=torch.bfloat16) @ q[0].dequantize_weight(torch.bfloat16)
    assert torch.equal(xb.grad, want)


def test_backward_tiles_large_layers(monkeypatch):
    from fastquant.gguf import _lora

    q, ref = packed_and_ref("Q5_K")
    monkeypatch.setattr(_lora, "GRAD_TILE_BYTES", 256 * 4 * 10)  # 10 weight rows per tile
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(7))
    xq, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    q(xq).sum().backward()
    ref(xr).sum().backward()
    assert rel(xq.grad, xr.grad) <= 1e-5


@pytest.mark.parametrize("ggml_type", TYPES)
def test_merge_keeps_layers_packed(ggml_type):
    pq, pr = peft_pair(ggml_type, n_adapters=2)
    pq.base_model.set_adapter(["a0", "a1"])
    pr.base_model.set_adapter(["a0", "a1"])
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        want = pr(x)
        # the exact float targets W + ΔW, from the reference model
        targets = {
            i: pr.base_model.model[i].base_layer.weight
            + sum(pr.base_model.model[i].get_delta_weight(a) for a in ("a0", "a1"))
            for i in (0, 2)
        }
        merged = pq.merge_and_unload()
    report = fg.merge_report(merged)
    assert set(report) == {"0", "2"}
    for i in (0, 2):
        layer = merged[i]
        assert isinstance(layer, fg.GGUFLinear) and layer.ggml_type == ggml_type
        err = rel(layer.dequantize_weight(), targets[i])
        assert report[str(i)].ggml_type == ggml_type
        assert abs(report[str(i)].rel_l2 - err) <= 1e-6 + 1e-3 * err
        assert err <= MERGE_BOUND[ggml_type], (ggml_type, i, err)
    with torch.no_grad():
        assert rel(merged(x), want) <= 2 * MERGE_BOUND[ggml_type]


def test_merge_to_a_requested_type_and_in_steps():
    pq, pr = peft_pair("Q4_0", n_adapters=2)
    base = pq.base_model.model[0].base_layer
    orig = base.weight.clone()
    rep = fg.merge_lora(pq, ggml_type="Q8_0", adapter_names=["a0"])
    assert base.ggml_type == "Q8_0" and rep["base_model.model.0"].ggml_type == "Q8_0"
    assert rep["base_model.model.0"].rel_l2 <= MERGE_BOUND["Q8_0"]
    # merging a second adapter later starts again from the original blocks: one requantization in total
    pq.base_model.model[0].merge(adapter_names=["a1"])
    lay = pr.base_model.model[0]
    target = lay.base_layer.weight + lay.get_delta_weight("a0") + lay.get_delta_weight("a1")
    with torch.no_grad():
        assert abs(rel(base.dequantize_weight(), target) - fg.merge_report(pq)["base_model.model.0"].rel_l2) < 1e-6
    assert base.ggml_type == "Q4_0"  # merge_ggml_type was only for the merge_lora call
    pq.unmerge_adapter()
    assert base.ggml_type == "Q4_0" and torch.equal(base.weight, orig)
    assert fg.merge_report(pq) == {}


@pytest.mark.parametrize("ggml_type", ["Q4_K", "Q8_0", "BF16"])
def test_unmerge_restores_blocks_bit_for_bit(ggml_type):
    pq, _ = peft_pair(ggml_type, n_adapters=2, lora_bias=True)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(9))
    before = {n: b.clone() for n, b in pq.named_buffers() if b.dtype == torch.uint8}
    bias_before = {n: p.clone() for n, p in pq.named_parameters() if n.endswith("base_layer.bias")}
    with torch.no_grad():
        y = pq(x)
        pq.merge_adapter()
        assert any(not torch.equal(b, before[n]) for n, b in pq.named_buffers() if b.dtype == torch.uint8)
        pq.unmerge_adapter()
        for n, b in pq.named_buffers():
            if b.dtype == torch.uint8:
                assert torch.equal(b, before[n]), n
        for n, p in pq.named_parameters():
            if n in bias_before:
                assert torch.equal(p, bias_before[n]), n
        assert torch.equal(pq(x), y)


def test_merged_model_is_a_gguf_file_again(tmp_path):
    import gguf

    pq, _ = peft_pair("Q4_K")
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        merged = pq.merge_and_unload()
        y = merged(x)
    fg.save(merged, tmp_path / "merged.gguf", metadata={"general.architecture": "test"})
    tensors = {t.name: t for t in gguf.GGUFReader(tmp_path / "merged.gguf").tensors}
    assert tensors["0.weight"].tensor_type.name == "Q4_K"
    assert bytes(tensors["0.weight"].data.reshape(-1)) == merged[0].weight.numpy().tobytes()
    fresh = mlp(99)
    fg.load_into(fresh, tmp_path / "merged.gguf")
    with torch.no_grad():
        assert torch.equal(fresh(x), y)


def test_peft_save_pretrained_round_trip(tmp_path):
    from peft import PeftModel

    pq, _ = peft_pair("Q5_K")
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(16))
    with torch.no_grad():
        y = pq(x)
    pq.save_pretrained(tmp_path / "adapter")  # peft's own adapter folder (safetensors + adapter_config.json)
    q, _ = packed_and_ref("Q5_K")
    # a non-default adapter name is saved in a subfolder of that name
    loaded = PeftModel.from_pretrained(q, tmp_path / "adapter" / "a0", adapter_name="a0")
    assert type(loaded.base_model.model[0]).__name__ == "GGUFLoraLinear"
    with torch.no_grad():
        assert torch.equal(loaded(x), y)


@requires_cuda
@pytest.mark.parametrize("ggml_type", ["Q4_K", "Q8_0"])
def test_cuda_forward_backward_merge(ggml_type):
    pq, pr = peft_pair(ggml_type, targets=("0",))
    pq.cuda()
    pr.cuda()
    x = torch.randn(8, 256, device="cuda", generator=torch.Generator("cuda").manual_seed(14))
    xq, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yq, yr = pq(xq), pr(xr)
    assert rel(yq, yr) <= 1e-5
    yq.square().sum().backward()
    yr.square().sum().backward()
    assert rel(xq.grad, xr.grad) <= 1e-5
    lq, lr = pq.base_model.model[0], pr.base_model.model[0]
    assert rel(lq.lora_A["a0"].weight.grad, lr.lora_A["a0"].weight.grad) <= 1e-5
    before = lq.base_layer.weight.clone()
    with torch.no_grad():
        pq.merge_adapter()
        assert lq.base_layer.weight.device.type == "cuda" and lq.base_layer.ggml_type == ggml_type
        assert fg.merge_report(pq)["base_model.model.0"].rel_l2 <= MERGE_BOUND[ggml_type]
        assert rel(pq(x), pr(x)) <= 2 * MERGE_BOUND[ggml_type]
        pq.unmerge_adapter()
    assert torch.equal(lq.base_layer.weight, before)


def test_inject_adapter_in_model_and_state_dict_round_trip():
    q, ref = packed_and_ref("Q6_K")
    torch.manual_seed(10)
    inject_adapter_in_model(lora_cfg(), q, adapter_name="default")
    inject_adapter_in_model(lora_cfg(), ref, adapter_name="default")
    copy_adapters(q, ref)
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        assert rel(q(x), ref(x)) <= 1e-5
    # peft's own adapter state dict reloads into a freshly injected packed model
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    sd = get_peft_model_state_dict(q)
    q2, _ = packed_and_ref("Q6_K")
    inject_adapter_in_model(lora_cfg(), q2, adapter_name="default")
    set_peft_model_state_dict(q2, sd)
    with torch.no_grad():
        assert torch.equal(q2(x), q(x))


def test_clear_errors():
    q, _ = packed_and_ref("Q8_0")
    with pytest.raises(ValueError, match="plain LoRA only"):
        get_peft_model(q, lora_cfg(use_dora=True))
    q, _ = packed_and_ref("Q8_0")
    pq = get_peft_model(q, lora_cfg())
    with pytest.raises(ValueError, match="no quantizer for Q3_K"):
        fg.merge_lora(pq, ggml_type="Q3_K")
    small = get_peft_model(nn.Sequential(fg.GGUFLinear(32, 8, ggml_type="Q8_0")), lora_cfg(targets=("0",)))
    with pytest.raises(ValueError, match="not whole 256-element Q4_K blocks"):
        fg.merge_lora(small, ggml_type="Q4_K")
    assert pq.base_model.model[0].base_layer.ggml_type == "Q8_0"  # nothing merged by the failed calls


def test_a_type_without_quantizer_needs_an_explicit_merge_type():
    # a Q3_K layer (no fastquant quantizer): adapters work; merging must name a type it can write
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(12))
    blocks = torch.from_numpy(_q3k_blocks(w))
    model = nn.Sequential(fg.GGUFLinear.from_packed(blocks, "Q3_K", 16, 256, bias=torch.zeros(16)))
    pm = get_peft_model(model, lora_cfg(targets=("0",)))
    with pytest.raises(ValueError, match="no quantizer for Q3_K"):
        pm.merge_adapter()
    rep = fg.merge_lora(pm, ggml_type="Q6_K")
    assert rep["base_model.model.0"].ggml_type == "Q6_K"
    pm.unmerge_adapter()
    assert pm.base_model.model[0].base_layer.ggml_type == "Q3_K"
    assert torch.equal(pm.base_model.model[0].base_layer.weight, blocks)


def _q3k_blocks(w):
    """Random Q3_K blocks (any bytes decode) with a small finite scale."""
    be, bb = _core.ggml_type_info("Q3_K")[2:4]
    n = w.numel() // be
    g = torch.Generator().manual_seed(13)
    raw = torch.randint(0, 256, (n, bb), dtype=torch.uint8, generator=g)
    raw[:, -2:] = torch.tensor([0x00, 0x20], dtype=torch.uint8)  # a small finite f16 scale d (last 2 bytes)
    return raw.reshape(w.shape[0], -1).numpy()


def test_registration_routes(monkeypatch):
    from fastquant.gguf import _lora

    # peft's public per-config route works without the global registration
    fg.disable_peft()
    try:
        q, _ = packed_and_ref("Q8_0")
        with pytest.raises(ValueError, match="not supported"):
            get_peft_model(q, lora_cfg())
        cfg = lora_cfg()
        cfg._register_custom_module(fg.peft_mapping())
        q, _ = packed_and_ref("Q8_0")
        assert type(get_peft_model(q, cfg).base_model.model[0]).__name__ == "GGUFLoraLinear"
    finally:
        fg.enable_peft()
    # the global route copies the config: the caller's config gets no custom-module mapping
    cfg = lora_cfg()
    q, _ = packed_and_ref("Q8_0")
    get_peft_model(q, cfg)
    assert not cfg._custom_modules
    assert "peft.tuners.lora.model" in _lora._patched


def test_autoregistration_when_peft_is_imported_after_the_layers():
    # a fresh interpreter: fastquant's layers first (peft not imported by them), then peft
    code = (
        "import sys, torch\n"
        "import fastquant.gguf as fg\n"
        "m = torch.nn.Sequential(torch.nn.Linear(32, 8))\n"
        "fg.quantize_model(m, 'Q8_0')\n"
        "assert 'peft' not in sys.modules\n"
        "from peft import LoraConfig, get_peft_model\n"
        "pm = get_peft_model(m, LoraConfig(r=2, target_modules=['0']))\n"
        "print(type(pm.base_model.model[0]).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "GGUFLoraLinear"


# ---------------------------------------------------------------------------------------------------------
# diffusers: a tiny Flux transformer loaded from a GGUF file, LoRA through FluxPipeline.load_lora_weights
# ---------------------------------------------------------------------------------------------------------

FLUX = dict(
    patch_size=1,
    in_channels=4,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=[4, 4, 8],
)
FLUX_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "ff.net.2", "proj_mlp", "proj_out")


def _flux_lora(model, rank=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name != "proj_out" and name.endswith(FLUX_TARGETS):
            sd[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, mod.in_features, generator=g) * 0.1
            sd[f"transformer.{name}.lora_B.weight"] = torch.randn(mod.out_features, rank, generator=g) * 0.1
    return sd


def _pipe(transformer):
    from diffusers import FluxPipeline

    return FluxPipeline(
        scheduler=None,
        vae=None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )


@pytest.mark.parametrize("ggml_type", ["Q8_0", "Q4_0"])
def test_diffusers_flux_load_lora_weights(tmp_path, ggml_type):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    src = FluxTransformer2DModel(**FLUX).eval()
    fg.quantize_model(src, ggml_type)
    fg.save(src, tmp_path / "flux.gguf")
    tr = FluxTransformer2DModel(**FLUX).eval()
    replaced = fg.load_into(tr, tmp_path / "flux.gguf").replaced
    assert "transformer_blocks.0.attn.to_q" in replaced
    ref = fg.dequantize_model(copy.deepcopy(tr))
    sd, sd2 = _flux_lora(ref), _flux_lora(ref, rank=2, seed=3)
    pq, pr = _pipe(tr), _pipe(ref)
    pq.load_lora_weights(dict(sd), adapter_name="style")
    pr.load_lora_weights(dict(sd), adapter_name="style")
    lora_layers = [n for n, m in tr.named_modules() if type(m).__name__ == "GGUFLoraLinear"]
    assert len(lora_layers) == len(sd) // 2
    g = torch.Generator().manual_seed(2)
    inp = dict(
        hidden_states=torch.randn(1, 16, 4, generator=g),
        encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
        pooled_projections=torch.randn(1, 32, generator=g),
        timestep=torch.tensor([0.5]),
        img_ids=torch.randn(16, 3, generator=g),
        txt_ids=torch.zeros(8, 3),
        return_dict=False,
    )
    blocks = {n: b.clone() for n, b in tr.named_buffers() if b.dtype == torch.uint8}
    with torch.no_grad():
        y, yr = tr(**inp)[0], ref(**inp)[0]
        assert rel(y, yr) <= 1e-5
        # a second LoRA, both active with weights
        pq.load_lora_weights(dict(sd2), adapter_name="detail")
        pr.load_lora_weights(dict(sd2), adapter_name="detail")
        for p in (pq, pr):
            p.set_adapters(["style", "detail"], adapter_weights=[0.5, 1.5])
        y2 = tr(**inp)[0]
        assert rel(y2, ref(**inp)[0]) <= 1e-5 and rel(y2, y) > 1e-3
        pq.fuse_lora(lora_scale=0.7)
        pr.fuse_lora(lora_scale=0.7)
        rep = fg.merge_report(tr)
        assert set(rep) == set(lora_layers)
        assert all(r.ggml_type == ggml_type and r.rel_l2 <= MERGE_BOUND[ggml_type] for r in rep.values())
        assert all(isinstance(m, fg.GGUFLinear) for n, m in tr.named_modules() if n.endswith(".base_layer"))
        assert rel(tr(**inp)[0], ref(**inp)[0]) <= 2 * MERGE_BOUND[ggml_type]
        pq.unfuse_lora()
        for n, b in tr.named_buffers():
            if b.dtype == torch.uint8:
                assert torch.equal(b, blocks[n]), n
        pq.unload_lora_weights()
        pr.unfuse_lora()
        pr.unload_lora_weights()
        assert not any(type(m).__name__ == "GGUFLoraLinear" for m in tr.modules())
        assert rel(tr(**inp)[0], ref(**inp)[0]) <= 1e-5
    # the model-level loader too
    tr.load_lora_adapter(dict(sd), prefix="transformer", adapter_name="again")
    ref.load_lora_adapter(dict(sd), prefix="transformer", adapter_name="again")
    with torch.no_grad():
        assert rel(tr(**inp)[0], ref(**inp)[0]) <= 1e-5


# ---------------------------------------------------------------------------------------------------------
# the other backends: peft on models quantized by fastquant.quantize
# ---------------------------------------------------------------------------------------------------------


def test_peft_on_bitsandbytes_through_fastquant():
    import fastquant

    q = mlp(20)
    ref = copy.deepcopy(q)
    fastquant.quantize(q, fastquant.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    assert type(q[0]).__name__ == "Linear4bit"
    # reference: the float model holding exactly the weights bitsandbytes dequantizes to
    import bitsandbytes.functional as bf

    for i in (0, 2):
        ref[i].weight.data = bf.dequantize_4bit(q[i].weight.data, q[i].weight.quant_state).float()
    # peft picks its bitsandbytes LoRA layer by the model flag diffusers' and transformers' bnb quantizers set
    assert q.is_loaded_in_4bit is True and q.is_loaded_in_8bit is False
    torch.manual_seed(21)
    pq = get_peft_model(q, lora_cfg())
    pr = get_peft_model(ref, lora_cfg())
    copy_adapters(pq, pr)
    assert type(pq.base_model.model[0]).__module__ == "peft.tuners.lora.bnb"
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(22))
    xq, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yq, yr = pq(xq), pr(xr)
    assert rel(yq, yr) <= 1e-4
    yq.sum().backward()
    yr.sum().backward()
    trained = {n for n, p in pq.named_parameters() if p.grad is not None}
    assert trained and all(".lora_" in n for n in trained)
    assert rel(xq.grad, xr.grad) <= 1e-4
    with torch.no_grad():
        merged = pq.merge_and_unload()
        assert type(merged[0]).__name__ == "Linear4bit"
        assert rel(merged(x), pr(x)) <= 0.2  # NF4 requantization


def test_peft_on_torchao_through_fastquant():
    import fastquant

    q = mlp(30)
    ref = copy.deepcopy(q)
    fastquant.quantize(q, fastquant.TorchAoConfig("int8wo"))
    for i in (0, 2):
        ref[i].weight.data = q[i].weight.dequantize().float()
    torch.manual_seed(31)
    pq = get_peft_model(q, lora_cfg())
    pr = get_peft_model(ref, lora_cfg())
    copy_adapters(pq, pr)
    assert type(pq.base_model.model[0]).__name__ == "TorchaoLoraLinear"
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(32))
    xq, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    yq, yr = pq(xq), pr(xr)
    assert rel(yq, yr) <= 1e-4
    yq.sum().backward()
    yr.sum().backward()
    trained = {n for n, p in pq.named_parameters() if p.grad is not None}
    assert trained and all(".lora_" in n for n in trained)
    assert rel(xq.grad, xr.grad) <= 1e-4
