"""Hardening of the backends' folder loads and saves (issue 14): a folder cannot run code through a pickle it
carries, and a bitsandbytes 4-bit model run in eval mode on the CPU saves exactly what was quantized."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import pytest

torch = pytest.importorskip("torch")

import fastquant as fq  # noqa: E402

warnings.filterwarnings("ignore", message=".*is not tested with current version of modelopt.*")


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("state_name", ["modelopt_state.pth", "modelopt_state.pt"])
def test_a_pickle_in_a_folder_never_runs(tmp_path, state_name):
    """A folder that says it is modelopt-quantized and carries a hostile pickle: loading refuses, nothing runs."""
    from transformers import LlamaForCausalLM

    folder = tmp_path / "q"
    tiny_lm().save_pretrained(folder)
    cfg_path = folder / "config.json"
    record = json.loads(cfg_path.read_text())
    record["quantization_config"] = {"quant_method": "modelopt", "quant_type": "INT8"}
    cfg_path.write_text(json.dumps(record))
    marker = tmp_path / "pwned"
    with open(folder / state_name, "wb") as f:
        pickle.dump({"state": _RunsCode(marker)}, f)
    with pytest.raises((ValueError, OSError, TypeError)):
        fq.from_pretrained(LlamaForCausalLM, folder)
    assert not marker.exists(), "the pickle in the folder ran code"


def test_bnb_nf4_eval_forward_then_save_keeps_the_quantized_weights(tmp_path):
    pytest.importorskip("bitsandbytes")
    from fastquant import BitsAndBytesConfig

    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    model = fq.quantize(tiny_lm(), cfg)
    x = torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(1))
    layer = model.model.layers[0].mlp.gate_proj
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    model.train()
    with torch.no_grad():
        y_train = model(x).logits
    model.eval()
    with torch.no_grad():
        y_eval = model(x).logits  # bitsandbytes' CPU path would repack the weight here (AVX512-BF16 CPUs)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert torch.equal(y_eval, y_train)
    fq.save_quantized(model, tmp_path / "q")
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed in the live model"
    with torch.no_grad():
        assert torch.equal(model(x).logits, y_eval), "the live model changed"
    from transformers import LlamaForCausalLM

    loaded = fq.from_pretrained(LlamaForCausalLM, tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, y_eval)
    # the dequantized weight is nf4's own: bitsandbytes' reference dequantization of what was saved
    import bitsandbytes as bnb

    lw = loaded.model.layers[0].mlp.gate_proj.weight
    w = bnb.functional.dequantize_4bit(lw.data, lw.quant_state)
    ref = tiny_lm().model.layers[0].mlp.gate_proj.weight
    err = ((w.float() - ref).norm() / ref.norm()).item()
    assert err < 0.25, err


def test_bnb_refuses_to_save_a_repacked_layer(tmp_path):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.functional import has_avx512bf16

    from fastquant import BitsAndBytesConfig

    if not has_avx512bf16():
        pytest.skip("the repack path needs an AVX512-BF16 CPU")  # not hardware we can fake
    model = fq.quantize(tiny_lm(), BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")).eval()
    layer = model.model.layers[0].mlp.gate_proj
    layer.support_avx512bf16_for_cpu = True  # a user turning bitsandbytes' repack back on
    with torch.no_grad():
        model(torch.randint(0, 128, (1, 4)))
    assert layer.weight.quant_state.packing_format_for_cpu
    with pytest.raises(ValueError, match="repacked"):
        fq.save_quantized(model, tmp_path / "q")
