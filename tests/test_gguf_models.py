"""fastquant.gguf.from_pretrained / tokenizer / save on files llama.cpp's own converter wrote.

The fixtures come from ``scripts/fetch_fixtures.py`` (run by scripts/setup.sh; run here too when missing): small
random transformers models converted by llama.cpp's ``convert_hf_to_gguf.py`` at F16 and Q8_0, plus what
transformers' own GGUF loading (``from_pretrained(folder, gguf_file=...)``, ``AutoTokenizer``) gives for them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fastquant.gguf as fg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import fetch_fixtures as fx  # noqa: E402

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "gemma3", "starcoder2"]


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not (fx.OUT / "llama-q8_0.ref.pt").exists() or not all(
        (fx.OUT / f"{a}-{t}.ref.pt").exists() for a in ARCHS for t in fx.OUTTYPES
    ):
        subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_fixtures.py")], check=True)
    return fx.OUT


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("outtype", fx.OUTTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_from_pretrained_matches_transformers(fixtures, arch, outtype):
    path = fixtures / f"{arch}-{outtype}.gguf"
    ref = torch.load(fixtures / f"{arch}-{outtype}.ref.pt", weights_only=True)
    model = fg.from_pretrained(path)
    assert type(model).__name__ == ref["class"]
    with torch.no_grad():
        logits = model(ref["ids"]).logits
        greedy = model.generate(
            ref["ids"][:, :8], max_new_tokens=fx.REF_NEW_TOKENS, min_new_tokens=fx.REF_NEW_TOKENS, do_sample=False
        )
    assert rel(logits, ref["logits"]) <= 1e-4
    assert torch.equal(greedy, ref["greedy"])
    kinds = {type(m) for m in model.modules()}
    if outtype == "q8_0":  # quantized Linear/Embedding layers stay packed
        assert fg.GGUFLinear in kinds and nn.Linear not in kinds
    assert not any(p.device.type == "meta" for p in model.parameters())
    assert not any(b.device.type == "meta" for b in model.buffers())


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_tokenizer_matches_transformers(fixtures, arch):
    ref = torch.load(fixtures / f"{arch}-q8_0.ref.pt", weights_only=True)
    tok = fg.tokenizer(fixtures / f"{arch}-q8_0.gguf")
    assert [tok(t)["input_ids"] for t in fx.REF_TEXTS] == ref["token_ids"]


def test_from_pretrained_live_against_transformers(fixtures):
    """One architecture against transformers' loader run here and now (the others use the cached outputs)."""
    from transformers import AutoModelForCausalLM

    path = fixtures / "gemma3-q8_0.gguf"
    ref = AutoModelForCausalLM.from_pretrained(str(fixtures), gguf_file=str(path), dtype=torch.float32).eval()
    model = fg.from_pretrained(path)
    assert isinstance(model.model.embed_tokens, fg.GGUFScaledEmbedding)  # Gemma's sqrt(hidden) scale kept
    ids = torch.randint(0, ref.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel(model(ids).logits, ref(ids).logits) <= 1e-4
        few = ids[:, :3]  # 3 rows: the fused CPU kernel (another summation order)
        assert rel(model(few).logits, ref(few).logits) <= 1e-4
    dense = fg.from_pretrained(path, dequantize=True)
    assert not any(isinstance(m, (fg.GGUFLinear, fg.GGUFEmbedding)) for m in dense.modules())
    with torch.no_grad():
        assert rel(dense(ids).logits, ref(ids).logits) <= 1e-6


def test_tied_embeddings_share_one_buffer(fixtures):
    model = fg.from_pretrained(fixtures / "qwen2-q8_0.gguf")
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_bf16_and_k_quants(fixtures, tmp_path):
    """torch_dtype is honoured by plain and packed layers; a file re-quantized to Q4_K keeps the Q/K order."""
    with fg.open(fixtures / "llama-f16.gguf") as f:
        tensors = {}
        for n, _info in f.tensors.items():
            w = f.get_tensor(n, dtype=torch.float32)
            tensors[n] = (fg.quantize(w, "Q4_K"), "Q4_K", tuple(w.shape)) if w.dim() == 2 else w
    # keep the stored value types (u32 counts, f32 floats): transformers reads them as llama.cpp wrote them
    with fg.open(fixtures / "llama-f16.gguf") as f:
        md = {
            k: fg.Value(f.metadata[k], f.value_type(k))
            for k in f.metadata.keys()
            if not f.value_type(k).startswith("array")
        }
        md.update({k: f.metadata[k] for k in f.metadata.keys() if f.value_type(k) == "array[str]"})
        md.update({k: f.array(k) for k in f.metadata.keys() if f.value_type(k) in ("array[f32]", "array[i32]")})
    p = tmp_path / "llama-q4_k.gguf"
    fg.write(p, tensors, md)
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=str(p), dtype=torch.float32).eval()
    model = fg.from_pretrained(p)
    ids = torch.randint(0, 32000, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert rel(model(ids).logits, ref(ids).logits) <= 1e-4
    half = fg.from_pretrained(p, torch_dtype=torch.bfloat16)
    assert half.model.embed_tokens(ids).dtype == torch.bfloat16
    assert half.model.norm.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert half(ids).logits.dtype == torch.bfloat16


def test_split_set_loads_as_one_file(fixtures):
    shards = sorted(fixtures.glob("llama-q8_0-split-*-of-*.gguf"))
    assert len(shards) > 1
    with fg.open(shards[-1]) as s, fg.open(fixtures / "llama-q8_0.gguf") as one:
        assert isinstance(s, fg.GGUFSplitFile) and set(s.tensors) == set(one.tensors)
        n = "blk.1.attn_q.weight"
        assert bytes(s.raw(n)) == bytes(one.raw(n))
    ref = torch.load(fixtures / "llama-q8_0.ref.pt", weights_only=True)
    model = fg.from_pretrained(shards[0])
    with torch.no_grad():
        assert rel(model(ref["ids"]).logits, ref["logits"]) <= 1e-4


def test_split_set_errors(tmp_path):
    a, b = tmp_path / "m-00001-of-00002.gguf", tmp_path / "m-00002-of-00002.gguf"
    fg.write(a, {"x": torch.zeros(2)}, {"split.no": fg.Value(0, "u16"), "split.count": fg.Value(2, "u16")})
    with pytest.raises(FileNotFoundError, match="shard"):
        fg.open(a)
    fg.write(b, {"x": torch.zeros(2)}, {"split.no": fg.Value(1, "u16"), "split.count": fg.Value(2, "u16")})
    with pytest.raises(ValueError, match="also in shard 1"):
        fg.open(a)


def test_uncovered_architecture_is_named(tmp_path):
    p = tmp_path / "x.gguf"
    fg.write(p, {"token_embd.weight": torch.zeros(4, 32)}, {"general.architecture": "mamba9"})
    with pytest.raises(ValueError, match="'mamba9' is not covered"):
        fg.from_pretrained(p)


# ---------------------------------------------------------------------------------------------------------
# the reverse: transformers -> fastquant.gguf.save -> transformers' GGUF loader and gguf-py
# ---------------------------------------------------------------------------------------------------------


def _tiny(kind):
    import transformers

    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(
            hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
        )
        cfg.vocab_size = 512
        m = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.Gemma3TextConfig(
            hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
        )
        cfg.vocab_size, cfg.head_dim = 512, 64
        m = transformers.Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


@pytest.mark.parametrize("kind,qtype", [("llama", "Q8_0"), ("llama", "Q4_K"), ("gemma3", "Q6_K")])
def test_save_round_trip_through_transformers_and_gguf_py(tmp_path, kind, qtype):
    import gguf
    from transformers import AutoModelForCausalLM

    model = _tiny(kind)
    fg.quantize_model(model, qtype, embeddings=True)
    p = tmp_path / "m.gguf"
    fg.save(model, p)
    rd = gguf.GGUFReader(str(p))
    names = {t.name for t in rd.tensors}
    assert "token_embd.weight" in names and "blk.0.attn_q.weight" in names
    assert bytes(rd.fields["general.architecture"].parts[-1]).decode() == ("llama" if kind == "llama" else "gemma3")
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=str(p), dtype=torch.float32).eval()
    ids = torch.randint(0, 512, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(ids).logits
        assert rel(ref(ids).logits, want) <= 1e-5
        back = fg.from_pretrained(p)
        got = back(ids).logits
    # llama: identical blocks come back (rows re-ordered twice); gemma3: norms went through w+1-1 in f32
    assert torch.equal(got, want) if kind == "llama" else rel(got, want) <= 1e-6
    # gguf-py dequantizes the file to the same weights llama.cpp's layout implies (Q rows permuted)
    q = next(t for t in rd.tensors if t.name == "blk.0.attn_q.weight")
    w = torch.from_numpy(gguf.dequantize(q.data, q.tensor_type).copy())
    assert torch.equal(w, back.model.layers[0].self_attn.q_proj.dequantize_weight()[_q_rows(model)])


def _q_rows(model):
    """llama.cpp's Q row order, as its converter computes it (head halves interleaved)."""
    cfg = model.config
    n = cfg.num_attention_heads
    rows = torch.arange(cfg.num_attention_heads * cfg.head_dim if hasattr(cfg, "head_dim") else cfg.hidden_size)
    if model.config.model_type != "llama":
        return rows
    return rows.reshape(n, 2, rows.numel() // n // 2).swapaxes(1, 2).reshape(-1)


# ---------------------------------------------------------------------------------------------------------
# bugs of load_into / quantize_model (regressions)
# ---------------------------------------------------------------------------------------------------------


def test_scaled_embedding_keeps_its_scale():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    emb = Gemma3TextScaledWordEmbedding(64, 256, padding_idx=0, embed_scale=16.0)
    net = nn.Sequential(emb)
    ids = torch.tensor([[1, 5, 9]])
    want = emb(ids)
    fg.quantize_model(net, "Q8_0", embeddings=True)
    assert isinstance(net[0], fg.GGUFScaledEmbedding)
    got = net(ids)
    assert rel(got, want) < 0.01 and got.abs().mean() > 8 * want.abs().mean() / 16


class _Doubling(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


def test_subclass_with_own_forward_is_refused(tmp_path):
    net = nn.Sequential(_Doubling(64, 8))
    res = fg.quantize_model(net, "Q8_0")
    assert type(net[0]) is _Doubling and "own forward" in res.skipped["0"]
    p = tmp_path / "m.gguf"
    w = torch.randn(8, 64)
    fg.write(p, {"0.weight": (fg.quantize(w, "Q8_0"), "Q8_0", (8, 64)), "0.bias": torch.zeros(8)})
    with pytest.raises(ValueError, match="_Doubling subclasses nn.Linear with its own forward"):
        fg.load_into(net, p)
    assert type(net[0]) is _Doubling
    fg.load_into(net, p, modules_to_not_convert=["0"])  # plain: dequantized, subclass kept
    assert type(net[0]) is _Doubling


class _WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(32, 32)
        self.register_buffer("inv_freq", torch.arange(4.0), persistent=False)


def test_meta_model_reports_non_persistent_buffers(tmp_path):
    p = tmp_path / "m.gguf"
    fg.write(p, {"lin.weight": torch.randn(32, 32), "lin.bias": torch.zeros(32)})
    with torch.device("meta"):
        m = _WithBuffer()
    with pytest.raises(ValueError, match="missing in the file \\(1\\): inv_freq"):
        fg.load_into(m, p)
    r = fg.load_into(m, p, strict=False)
    assert r.missing == ["inv_freq"]


def test_meta_load_honours_dtype_for_packed_embeddings(tmp_path):
    p = tmp_path / "m.gguf"
    fg.write(p, {"0.weight": (fg.quantize(torch.randn(16, 64), "Q8_0"), "Q8_0", (16, 64))})
    with torch.device("meta"):
        m = nn.Sequential(nn.Embedding(16, 64))
    fg.load_into(m, p, dtype=torch.bfloat16)
    assert m(torch.tensor([1, 2])).dtype == torch.bfloat16


def test_llama_cpp_file_into_plain_model_points_to_from_pretrained(fixtures):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(256, 256) for _ in range(40))

    with pytest.raises(ValueError) as ei:
        fg.load_into(Net(), fixtures / "llama-q8_0.gguf")
    msg = str(ei.value)
    assert "fastquant.gguf.from_pretrained" in msg and "llama.cpp" in msg
    assert len(msg) < 2000 and "… and" in msg


def test_load_into_a_transformers_model_maps_llama_cpp_names(fixtures):
    from transformers import AutoConfig, AutoModelForCausalLM

    ref = torch.load(fixtures / "llama-q8_0.ref.pt", weights_only=True)
    config = AutoConfig.from_pretrained(fixtures / "llama-hf")
    model = AutoModelForCausalLM.from_config(config).eval()
    r = fg.load_into(model, fixtures / "llama-q8_0.gguf")
    assert "model.layers.0.self_attn.q_proj" in r.replaced
    with torch.no_grad():
        assert rel(model(ref["ids"]).logits, ref["logits"]) <= 1e-4


def test_qwen2_moe_loads_where_transformers_does_not(fixtures):
    """transformers' own loader fails on llama.cpp's Qwen2-MoE files (a shape it adds to ffn_gate_inp_shexp);
    fastquant loads them: compared with the original float model the fixture was converted from (F16 file)."""
    from transformers import AutoModelForCausalLM

    model = fg.from_pretrained(fixtures / "qwen2_moe-f16.gguf")
    ref = AutoModelForCausalLM.from_pretrained(fixtures / "qwen2_moe-hf", dtype=torch.float32).eval()
    ids = torch.randint(0, 150000, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert rel(model(ids).logits, ref(ids).logits) <= 2e-3  # the F16 rounding of the weights
