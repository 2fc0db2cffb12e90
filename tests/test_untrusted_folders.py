"""Hardening of the backends' folder loads and saves (issue 14): a modelopt folder cannot run code through its
state file, and a bitsandbytes 4-bit model run in eval mode on the CPU saves exactly what was quantized."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import pytest

torch = pytest.importorskip("torch")

import fastquant as fq  # noqa: E402

warnings.filterwarnings("ignore", message=".*is not tested with current version of modelopt.*")


def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64))


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _modelopt_folder(tmp_path):
    pytest.importorskip("modelopt")
    from fastquant import NVIDIAModelOptConfig

    folder = tmp_path / "q"
    fq.save_quantized(fq.quantize(tiny(), NVIDIAModelOptConfig("INT8")), folder)
    return folder


def test_modelopt_state_file_cannot_run_code(tmp_path):
    folder = _modelopt_folder(tmp_path)
    assert fq.load_quantized(tiny(), folder) is not None  # the honest folder loads
    marker = tmp_path / "pwned"
    with open(folder / "modelopt_state.pt", "wb") as f:
        pickle.dump({"state": _RunsCode(marker)}, f)
    with pytest.raises(Exception) as ei:
        fq.load_quantized(tiny(), folder)
    assert not marker.exists(), "the pickle in the folder ran code"
    assert "modelopt_state.pt" in str(ei.value) or "weights_only" in str(ei.value) or "Unpickl" in str(ei.value)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.pt", "sub/x.pt", "..", "", "a\\b.pt", 7])
def test_modelopt_state_file_name_must_be_plain(tmp_path, name):
    folder = _modelopt_folder(tmp_path)
    cfg_path = folder / "quantization_config.json"
    record = json.loads(cfg_path.read_text())
    record["extras"]["modelopt_state_file"] = name
    cfg_path.write_text(json.dumps(record))
    # a valid state file outside the folder must not be reachable
    (tmp_path / "outside.pt").write_bytes((folder / "modelopt_state.pt").read_bytes())
    with pytest.raises(ValueError, match="plain file name"):
        fq.load_quantized(tiny(), folder)


def test_bnb_nf4_eval_forward_then_save_keeps_the_quantized_weights(tmp_path):
    pytest.importorskip("bitsandbytes")
    from fastquant import BitsAndBytesConfig

    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    model = fq.quantize(tiny(), cfg)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    layer = model[0]
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        y_train = model(x)
    model.eval()
    with torch.no_grad():
        y_eval = model(x)  # bitsandbytes' CPU path would repack the weight here (AVX512-BF16 CPUs)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert torch.equal(y_eval, y_train)
    fq.save_quantized(model, tmp_path / "q")
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed in the live model"
    with torch.no_grad():
        assert torch.equal(model(x), y_eval), "the live model changed"
    loaded = fq.load_quantized(tiny(), tmp_path / "q").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), y_eval)
    # the dequantized weight is nf4's own: bitsandbytes' reference dequantization of what was saved
    import bitsandbytes as bnb

    w = bnb.functional.dequantize_4bit(loaded[0].weight.data, loaded[0].weight.quant_state)
    ref = tiny()[0].weight
    err = ((w.float() - ref).norm() / ref.norm()).item()
    assert err < 0.25, err


def test_bnb_refuses_to_save_a_repacked_layer(tmp_path):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.functional import has_avx512bf16

    from fastquant import BitsAndBytesConfig

    if not has_avx512bf16():
        pytest.skip("the repack path needs an AVX512-BF16 CPU")  # not hardware we can fake
    model = fq.quantize(tiny(), BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")).eval()
    model[0].support_avx512bf16_for_cpu = True  # a user turning bitsandbytes' repack back on
    with torch.no_grad():
        model(torch.randn(2, 64))
    assert model[0].weight.quant_state.packing_format_for_cpu
    with pytest.raises(ValueError, match="repacked"):
        fq.save_quantized(model, tmp_path / "q")
