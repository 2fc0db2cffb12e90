"""``fastquant quantize``: float folder -> quantized folder (read back by transformers itself) or one .gguf (read
back by gguf-py); short forms, JSON configs, the --demo job, clear errors."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fastquant as fq  # noqa: E402
from fastquant import _cli_quantize as cq  # noqa: E402
from fastquant.cli import main  # noqa: E402

TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
TOKENS = torch.tensor([[1, 5, 9, 33, 64, 100, 127, 2]])


def make_llama(**over):
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY, **over})).eval()


@pytest.fixture
def float_folder(tmp_path):
    make_llama().save_pretrained(tmp_path / "float")
    return tmp_path / "float"


def test_parse_config_forms(tmp_path):
    assert cq.parse_config("bnb-nf4") == ("hf", cq.SHORT["bnb-nf4"])
    assert cq.parse_config("gguf-q4_k") == ("gguf", "Q4_K")
    for name in list(cq.SHORT):
        fq.DiffusersAutoQuantizer.from_dict(cq.parse_config(name)[1])  # every short form is a valid config
    assert cq.parse_config('{"quant_method": "quanto", "weights_dtype": "int4"}')[1]["weights_dtype"] == "int4"
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"load_in_8bit": True}))
    assert cq.parse_config(str(p)) == ("hf", {"load_in_8bit": True})
    with pytest.raises(ValueError, match="GGUF types"):
        cq.parse_config("gguf-Q3_K")
    with pytest.raises(ValueError, match="line 1 column"):
        cq.parse_config("{nope")
    with pytest.raises(ValueError, match="short form"):
        cq.parse_config("int8")


def test_quantize_folder_torchao_read_by_transformers(float_folder, tmp_path, capsys):
    dst = tmp_path / "q"
    assert (
        main(["quantize", str(float_folder), str(dst), "--config", "torchao-int8wo", "--max-shard-size", "100KB"]) == 0
    )
    assert "layers quantized" in capsys.readouterr().out
    assert (dst / "model.safetensors.index.json").exists()
    loaded = transformers.LlamaForCausalLM.from_pretrained(dst).eval()
    assert type(loaded.lm_head) is torch.nn.Linear  # the output embeddings stay in float by default
    ours = fq.quantize(make_llama(), fq.TorchAoConfig("int8wo"), modules_to_not_convert=["lm_head"])
    with torch.no_grad():
        assert torch.equal(loaded(TOKENS).logits, ours(TOKENS).logits)


def test_quantize_to_gguf_read_by_gguf_py(tmp_path, capsys):
    gguf = pytest.importorskip("gguf")
    make_llama(hidden_size=256, intermediate_size=512).save_pretrained(tmp_path / "float")
    out = tmp_path / "m.gguf"
    assert main(["quantize", str(tmp_path / "float"), str(out), "--config", "gguf-Q8_0"]) == 0
    reader = gguf.GGUFReader(str(out))
    types = {t.tensor_type.name for t in reader.tensors}
    assert "Q8_0" in types and len(reader.tensors) == 2 * 9 + 3


def test_demo_runs_the_main_job(tmp_path, capsys):
    assert main(["quantize", "--demo", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "float model: LlamaForCausalLM" in text and "torchao-int8wo: 14 layers quantized" in text
    assert "relative L2 error" in text
    err = float(text.rsplit("float model: ", 1)[1].strip())
    assert 0 < err < 0.1
    assert sorted(os.listdir(tmp_path / "demo")) == ["float", "torchao-int8wo"]


def test_errors_are_clear(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["quantize", str(tmp_path / "empty"), str(tmp_path / "o"), "--config", "bnb-int8"]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["quantize", str(tmp_path / "empty"), str(tmp_path / "o"), "--config", "int3"]) == 2
    assert "short form" in capsys.readouterr().err
    assert main(["quantize", str(tmp_path / "empty")]) == 2
    assert "usage" in capsys.readouterr().err
    make_llama().save_pretrained(tmp_path / "float")
    assert main(["quantize", str(tmp_path / "float"), str(tmp_path / "o"), "--config", "quanto-int8"]) == 2
    assert "transformers cannot load pre-quantized optimum-quanto" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_quantize_diffusers_folder_quanto(tmp_path, capsys):
    import warnings

    diffusers = pytest.importorskip("diffusers")
    from test_hf_save import flux_inputs, make_flux

    make_flux().save_pretrained(tmp_path / "float")
    assert main(["quantize", str(tmp_path / "float"), str(tmp_path / "q"), "--config", "quanto-int8"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = diffusers.FluxTransformer2DModel.from_pretrained(tmp_path / "q", torch_dtype=torch.float32).eval()
    ours = fq.quantize(make_flux(), fq.QuantoConfig("int8")).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**flux_inputs())[0], ours(**flux_inputs())[0])
