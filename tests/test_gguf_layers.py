"""Packed GGUF torch layers (fastquant.gguf.GGUFLinear / GGUFEmbedding) and the model helpers load_into,
quantize_model, save and dequantize_model.

Exactness contract tested here:
* unfused forward (CPU, Rust dequant; CUDA, torch-op decoders) == F.linear(x, W_exact.to(x.dtype), b), bitwise;
* fused CPU forward: |y - Σ x·w| <= k·2⁻²⁴·Σ|x·w| (f32 accumulation in another order), plus one rounding to
  the activation dtype for bf16/f16 (relative 2⁻⁸ / 2⁻¹¹).
The only skips allowed are the CUDA tests ("requires CUDA")."""

from __future__ import annotations

import copy
import io
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastquant.gguf as fg
from fastquant import _core
from fastquant.gguf import _layers, _model
from _blocks import F16_SCALE_OFFSETS as F16_SCALES  # noqa: E402

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="requires CUDA")

ALL_TYPES = sorted(n for n in _core._ggml_types() if _core.ggml_type_info(n)[4])
QUANTIZABLE = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"}

# finite f16 scales incl. ±0, subnormals, ±1 and a large one
SCALE_BITS = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x3C00, 0xBC00, 0x5BFF], dtype=np.uint16)


def geometry(name):
    _, _, be, bb, _ = _core.ggml_type_info(name)
    return be, bb


def random_packed(name: str, rows: int, cols: int, seed: int, specials: bool = False) -> np.ndarray:
    """Packed (rows, bytes_per_row) uint8 data of `name` decoding to finite values: the Rust quantizer where
    there is one, otherwise random blocks whose scale fields are set to finite values."""
    rng = np.random.default_rng(seed)
    be, bb = geometry(name)
    if name in QUANTIZABLE and not specials:
        w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
        return fg.quantize(w, name)
    nb = rows * cols // be
    if name in ("F32", "F64", "I8", "I16", "I32", "I64", "F16", "BF16"):
        vals = rng.standard_normal(rows * cols) * 0.05
        if name.startswith("I"):
            vals = rng.integers(-3, 4, rows * cols)
        dt = {"F32": "<f4", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "F16": "<f2"}
        if name == "BF16":
            a = (vals.astype(np.float32).view(np.uint32) >> 16).astype("<u2")
        else:
            a = vals.astype(dt[name])
        return a.view(np.uint8).reshape(rows, -1)
    blocks = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
    for off in F16_SCALES.get(name, []):
        if specials:
            bits = SCALE_BITS[rng.integers(0, len(SCALE_BITS), nb)]
        else:
            bits = (
                (rng.uniform(1e-4, 2e-2, nb).astype(np.float16) * rng.choice([-1, 1], nb))
                .astype(np.float16)
                .view(np.uint16)
            )
        blocks[:, off : off + 2] = bits.astype("<u2").view(np.uint8).reshape(nb, 2)
    if name == "Q8_K":
        blocks[:, 0:4] = (rng.uniform(1e-4, 1e-2, nb).astype("<f4")).view(np.uint8).reshape(nb, 4)
    if name == "MXFP4":
        blocks[:, 0] = rng.integers(118, 126, nb)
    if name == "NVFP4":
        blocks[:, :4] = rng.integers(0x20, 0x38, (nb, 4))
    if name == "IQ1_M":
        words = blocks[:, 48:56].copy().view("<u2")
        d = rng.uniform(1e-4, 1e-2, nb).astype(np.float16).view(np.uint16)
        for w in range(4):
            words[:, w] = (words[:, w] & 0x0FFF) | (((d >> (4 * w)) & 0xF) << 12)
        blocks[:, 48:56] = words.view(np.uint8)
    return blocks.reshape(rows, -1)


def exact_weight(packed, name, rows, cols, dtype=torch.float32):
    out = torch.empty((rows, cols), dtype=dtype)
    fg.dequantize(np.ascontiguousarray(packed).reshape(-1), name, out=out)
    return out


def make_linear(name, out_f=48, in_f=None, bias=True, seed=0):
    be, _ = geometry(name)
    in_f = in_f or max(256, be)
    packed = random_packed(name, out_f, in_f, seed)
    b = torch.randn(out_f, generator=torch.Generator().manual_seed(seed)) * 0.1 if bias else None
    return fg.GGUFLinear.from_packed(packed, name, out_f, in_f, bias=b), packed


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.float(), b.float()
    nan = torch.isnan(a) & torch.isnan(b)
    return bool(((a.view(torch.int32) == b.view(torch.int32)) | nan).all())


def fused_bound(x, w, dtype_rel=0.0):
    """(reference in f64, allowed |error|) for x · wᵀ with k-term f32 accumulation, then one rounding."""
    xd, wd = x.double(), w.double()
    ref = xd @ wd.T
    k = x.shape[-1]
    return ref, k * 2.0**-24 * (xd.abs() @ wd.abs().T) + dtype_rel * ref.abs() + 1e-30


# ---- forward exactness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_TYPES)
def test_unfused_forward_bitwise_f32(name):
    layer, packed = make_linear(name)
    W = exact_weight(packed, name, layer.out_features, layer.in_features)
    assert bits_equal(layer.dequantize_weight(), W)
    assert torch.isfinite(W).all()
    x = torch.randn(32, layer.in_features)
    y = layer(x)  # 32 rows > FUSED_MAX_ROWS: the unfused path
    assert bits_equal(y, F.linear(x, W, layer.bias))
    assert bits_equal(layer(x[:3], fused=False), F.linear(x[:3], W, layer.bias))


@pytest.mark.parametrize("name", ALL_TYPES)
def test_fused_forward_within_bound(name):
    layer, packed = make_linear(name, out_f=70, bias=False)
    W = exact_weight(packed, name, layer.out_features, layer.in_features)
    for rows in (1, 5, 16):
        x = torch.randn(rows, layer.in_features)
        y = layer(x)  # fused by default for <= 16 rows
        ref, bound = fused_bound(x, W)
        assert ((y.double() - ref).abs() <= bound).all(), name
    # threads do not change the result
    x = torch.randn(4, layer.in_features)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = layer(x)
        torch.set_num_threads(2)
        y2 = layer(x)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("dtype,rel", [(torch.bfloat16, 2.0**-8), (torch.float16, 2.0**-11)])
@pytest.mark.parametrize("name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS", "F16", "BF16", "Q2_K"])
def test_half_activations(name, dtype, rel):
    layer, packed = make_linear(name)
    layer = layer.to(dtype)
    assert layer.weight.dtype == torch.uint8 and layer.bias.dtype == dtype
    W = exact_weight(packed, name, layer.out_features, layer.in_features, dtype)
    assert bits_equal(W, exact_weight(packed, name, layer.out_features, layer.in_features).to(dtype))
    x = torch.randn(24, layer.in_features).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    assert bits_equal(y, F.linear(x, W, layer.bias))
    xs = x[:2]
    yf = layer(xs)
    assert yf.dtype == dtype
    W32 = exact_weight(packed, name, layer.out_features, layer.in_features)
    ref, bound = fused_bound(xs.float(), W32, rel)
    ref = ref + layer.bias.double()
    assert ((yf.double() - ref).abs() <= bound + rel * layer.bias.double().abs() + 2 * rel * ref.abs()).all()


# ---- torch-op decoders (the CUDA path), checked on the CPU and on CUDA -----------------------------------


def _check_torch_decoder(name, device):
    for specials in (False, True):
        be, bb = geometry(name)
        packed = random_packed(name, 8, 4 * max(be, 32), seed=7, specials=specials)
        want = exact_weight(packed, name, 8, 4 * max(be, 32))
        got = _layers._torch_dequant_blocks(torch.from_numpy(packed.reshape(-1, bb)).to(device), name)
        assert bits_equal(got.cpu().reshape(want.shape), want), (name, specials)


@pytest.mark.parametrize("name", sorted(_layers.GPU_TYPES))
def test_torch_decoders_bit_exact_on_cpu(name):
    _check_torch_decoder(name, "cpu")


@requires_cuda
@pytest.mark.parametrize("name", sorted(_layers.GPU_TYPES))
def test_torch_decoders_bit_exact_on_cuda(name):
    _check_torch_decoder(name, "cuda")


@requires_cuda
@pytest.mark.parametrize("name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS", "F16", "BF16", "Q3_K", "IQ2_XS"])
def test_cuda_forward(name):
    layer, packed = make_linear(name)
    W = exact_weight(packed, name, layer.out_features, layer.in_features)
    g = layer.to("cuda")
    assert g.weight.device.type == "cuda"
    x = torch.randn(5, layer.in_features, device="cuda")
    # fused=False: dequantize exactly (Triton, torch ops or the CPU fallback), then F.linear; the fused
    # Triton path (the default on CUDA) is checked against its bound in tests/test_gguf_triton.py
    if name in _layers.GPU_TYPES or name in _layers._triton_types():
        y = g(x, fused=False)
    else:
        with pytest.warns(RuntimeWarning, match="no GPU decoder"):
            _layers._warned_fallback.discard(name)
            y = g(x, fused=False)
    assert bits_equal(y, F.linear(x, W.cuda(), g.bias))
    for dtype in (torch.bfloat16, torch.float16):
        gh = copy.deepcopy(g).to(dtype)
        xh = x.to(dtype)
        assert bits_equal(gh(xh), F.linear(xh, W.to(dtype).cuda(), gh.bias))
    emb = fg.GGUFEmbedding(layer.out_features, layer.in_features, name, device="cuda")
    emb.set_packed(torch.from_numpy(packed.copy()))
    ids = torch.tensor([[3, 0, 47], [5, 5, 1]], device="cuda")
    assert bits_equal(emb(ids).cpu(), W[ids.cpu()])


# ---- embedding --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS", "F16", "BF16", "IQ1_M"])
def test_embedding_rows(name):
    be, _ = geometry(name)
    rows, cols = 50, max(256, be)
    packed = random_packed(name, rows, cols, seed=3)
    emb = fg.GGUFEmbedding(rows, cols, name)
    emb.set_packed(packed)
    W = exact_weight(packed, name, rows, cols)
    ids = torch.tensor([[0, 49, 7], [7, 7, 12]])
    out = emb(ids)
    assert out.shape == (2, 3, cols) and out.dtype == torch.float32
    assert bits_equal(out, W[ids])
    assert bits_equal(emb.to(torch.bfloat16)(ids), W.to(torch.bfloat16)[ids])
    with pytest.raises(IndexError):
        emb(torch.tensor([50]))


def test_embedding_from_embedding_and_padding_idx():
    e = nn.Embedding(20, 64, padding_idx=0)
    g = fg.GGUFEmbedding.from_embedding(e, "Q8_0")
    assert g.padding_idx == 0 and "Q8_0" in repr(g)
    want = exact_weight(fg.quantize(e.weight.detach(), "Q8_0"), "Q8_0", 20, 64)
    assert bits_equal(g(torch.arange(20)), want)


# ---- module mechanics ------------------------------------------------------------------------------------


def test_state_dict_round_trip_and_type_change():
    a, _ = make_linear("Q4_K", seed=1)
    sd = a.state_dict()
    assert sd["weight"].dtype == torch.uint8
    assert sd["_extra_state"] == {"ggml_type": "Q4_K", "shape": [48, 256]}
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    sd2 = torch.load(buf, weights_only=True)
    b = fg.GGUFLinear(256, 48, ggml_type="Q8_0")  # other type, other packed width
    b.load_state_dict(sd2)
    assert b.ggml_type == "Q4_K" and torch.equal(b.weight, a.weight)
    x = torch.randn(3, 256)
    assert torch.equal(a(x), b(x))
    c = fg.GGUFLinear(512, 48, ggml_type="Q4_K")
    with pytest.raises((RuntimeError, ValueError)):
        c.load_state_dict(sd)


def test_deepcopy_and_to():
    a, _ = make_linear("Q6_K")
    b = copy.deepcopy(a)
    assert b.weight.data_ptr() != a.weight.data_ptr() and torch.equal(a.weight, b.weight)
    x = torch.randn(2, 256)
    assert torch.equal(a(x), b(x))
    c = b.to(torch.float16).to("cpu").float()
    assert c.weight.dtype == torch.uint8 and c.bias.dtype == torch.float32
    assert torch.equal(c.weight, a.weight) and torch.equal(c.bias, a.bias.half().float())


def test_errors():
    with pytest.raises(ValueError, match="block"):
        fg.GGUFLinear(100, 4, ggml_type="Q4_0")
    with pytest.raises(ValueError, match="no dequantizer"):
        fg.GGUFLinear(64, 4, ggml_type="Q8_1")
    g = fg.GGUFLinear(64, 4, ggml_type="Q8_0")
    with pytest.raises(ValueError, match="bytes"):
        g.set_packed(b"\0" * 10)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = fg.GGUFEmbedding.from_embedding(nn.Embedding(30, 256), "Q8_0")
            self.a = fg.GGUFLinear.from_linear(nn.Linear(256, 256), "Q4_K")
            self.b = fg.GGUFLinear.from_linear(nn.Linear(256, 64), "Q6_K")

        def forward(self, ids):
            h = self.emb(ids)
            return self.b(torch.relu(self.a(h)))

    m = M()
    small = torch.tensor([[1, 2, 3]])  # 3 rows: fused
    big = torch.randint(0, 30, (2, 20))  # 40 rows: unfused
    cm = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        for ids in (small, big):
            assert torch.allclose(cm(ids), m(ids), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def test_import_does_not_load_torch_or_numpy():
    code = "import sys, fastquant.gguf as g; g.open; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    code = "import sys, fastquant.gguf as g; g.GGUFLinear; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    )


# ---- model helpers ---------------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 64)
        self.proj = nn.Linear(64, 128)
        self.odd = nn.Linear(48, 8)  # 48 is not a multiple of 32: stays float
        self.head = nn.Linear(128, 40, bias=False)
        self.norm = nn.LayerNorm(64)
        self.register_buffer("scale", torch.tensor([2.0]))

    def forward(self, ids):
        h = self.norm(self.embed(ids))
        return self.head(torch.relu(self.proj(h))) * self.scale


def _tiny(seed=0):
    torch.manual_seed(seed)
    return Tiny()


def test_quantize_model_save_load_identity(tmp_path):
    m = _tiny()
    res = fg.quantize_model(m, "Q8_0", modules_to_not_convert=["head"], embeddings=True)
    assert sorted(res.converted) == ["embed", "proj"]
    assert set(res.skipped) == {"odd", "head"} and "multiple" in res.skipped["odd"]
    p1, p2 = tmp_path / "a.gguf", tmp_path / "b.gguf"
    meta = {"general.architecture": "tiny", "general.name": "t"}
    fg.save(m, p1, metadata=meta)
    fresh = _tiny(seed=5)
    r = fg.load_into(fresh, p1)
    assert sorted(r.replaced) == ["embed", "proj"] and not r.missing and not r.unexpected
    assert isinstance(fresh.proj, fg.GGUFLinear) and isinstance(fresh.embed, fg.GGUFEmbedding)
    fg.save(fresh, p2, metadata=meta)
    assert p1.read_bytes() == p2.read_bytes()
    ids = torch.tensor([[1, 2, 3, 39]])
    assert torch.equal(fresh(ids), m(ids))

    import gguf

    rd = gguf.GGUFReader(str(p1))
    by = {t.name: t for t in rd.tensors}
    assert by["proj.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert list(by["proj.weight"].shape) == [64, 128]  # gguf-py lists ne (fastest first)
    assert np.array_equal(
        np.asarray(by["proj.weight"].data).reshape(-1).view(np.uint8), m.proj.weight.numpy().reshape(-1)
    )
    assert by["odd.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert np.array_equal(np.asarray(by["odd.weight"].data).reshape(8, 48), m.odd.weight.detach().numpy())
    assert bytes(rd.fields["general.architecture"].parts[-1]).decode() == "tiny"


def test_load_into_errors_and_non_strict(tmp_path):
    m = _tiny()
    fg.quantize_model(m, "Q4_0", modules_to_not_convert=["head"])
    p = tmp_path / "m.gguf"
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith("_extra_state")}
    tensors = {k: v for k, v in sd.items() if k != "norm.bias"}
    tensors["proj.weight"] = (m.proj.weight.numpy(), "Q4_0", (128, 64))
    tensors["extra.weight"] = torch.zeros(3)
    tensors["odd.weight"] = torch.zeros(8, 40)  # wrong shape
    fg.write(p, tensors)
    fresh = _tiny(seed=3)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError) as ei:
        fg.load_into(fresh, p)
    msg = str(ei.value)
    assert "missing in the file (1): norm.bias" in msg
    assert "unexpected in the file (1): extra.weight" in msg
    assert "odd.weight: file (8, 40) vs model (8, 48)" in msg
    # nothing changed
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert isinstance(fresh.proj, nn.Linear)
    # non-strict: mismatches still raise
    with pytest.raises(ValueError, match="shape mismatches"):
        fg.load_into(fresh, p, strict=False)
    # drop the bad tensor through name_map (callable returning None): missing/unexpected are reported
    r = fg.load_into(fresh, p, name_map=lambda n: None if n == "odd.weight" else n, strict=False)
    assert sorted(r.missing) == ["norm.bias", "odd.weight"] and sorted(r.unexpected) == ["extra.weight", "odd.weight"]
    assert r.mismatched == [] and r.replaced == ["proj"]
    assert isinstance(fresh.proj, fg.GGUFLinear) and torch.equal(fresh.proj.weight, m.proj.weight)


def test_load_into_name_map_dict_and_dtype(tmp_path):
    m = _tiny()
    fg.quantize_model(m, "Q8_0")
    p = tmp_path / "m.gguf"
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith("_extra_state")}
    tensors = {}
    for k, v in sd.items():
        fname = "blk." + k
        mod = m.get_submodule(_model._split(k)[0])
        if isinstance(mod, fg.GGUFLinear) and k.endswith("weight"):
            tensors[fname] = (v.numpy(), mod.ggml_type, (mod.out_features, mod.in_features))
        else:
            tensors[fname] = v.to(torch.float16) if v.is_floating_point() else v
    fg.write(p, tensors)
    fresh = _tiny(seed=9).to(torch.bfloat16)
    r = fg.load_into(fresh, p, name_map={f"blk.{k}": k for k in sd})
    assert r.replaced == ["proj", "head"] and not r.missing
    assert fresh.norm.weight.dtype == torch.bfloat16
    assert torch.equal(fresh.norm.weight, m.norm.weight.to(torch.float16).to(torch.bfloat16))
    ids = torch.tensor([[0, 5]])
    assert fresh(ids).dtype == torch.bfloat16


def test_load_into_tied_weights(tmp_path):
    """A file with only the embedding (as llama.cpp writes tied models): the tied head shares its blocks."""
    m = _tiny()
    m.head = nn.Linear(64, 40, bias=False)
    m.proj = nn.Linear(64, 64)
    m.head.weight = m.embed.weight  # tied
    m.forward = lambda ids: m.head(m.proj(m.norm(m.embed(ids))))
    p = tmp_path / "tied.gguf"
    sd = {k: v for k, v in m.state_dict().items() if k != "head.weight"}
    sd["embed.weight"] = (fg.quantize(m.embed.weight.detach(), "Q8_0"), "Q8_0", (40, 64))
    fg.write(p, sd)
    r = fg.load_into(m, p)
    assert r.replaced == ["embed", "head"] and not r.missing
    assert isinstance(m.head, fg.GGUFLinear) and m.head.weight.data_ptr() == m.embed.weight.data_ptr()
    W = m.embed.dequantize_weight()
    ids = torch.tensor([[1, 2]])
    h = m.proj(m.norm(W[ids]))
    assert torch.allclose(m(ids), F.linear(h, W), rtol=1e-5, atol=1e-6)


def test_dequantize_model():
    m = _tiny()
    fg.quantize_model(m, "Q4_0", embeddings=True)
    W = m.proj.dequantize_weight()
    ids = torch.tensor([[3, 4]])
    y = m(ids)
    fg.dequantize_model(m, torch.float32)
    assert type(m.proj) is nn.Linear and type(m.embed) is nn.Embedding
    assert torch.equal(m.proj.weight, W)
    assert torch.allclose(m(ids), y, rtol=1e-5, atol=1e-5)
    fg.dequantize_model(m)  # idempotent on float models


# ---- a real architecture end to end ---------------------------------------------------------------------


# Bounds on ||logits - logits_float|| / ||logits_float||. Measured (seed 0): Q8_0 0.015, Q6_K 0.046,
# Q4_K 0.187. A randomly initialised model has Gaussian weights with no structure, so the logits error is
# ~2.5x the per-weight relative error (Q8_0 0.005, Q6_K 0.018, Q4_K 0.071).
@pytest.mark.parametrize("name,bound", [("Q8_0", 0.02), ("Q6_K", 0.06), ("Q4_K", 0.25)])
def test_llama_end_to_end(tmp_path, name, bound):
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=1000,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(cfg).eval()
    q = copy.deepcopy(ref)
    res = fg.quantize_model(q, name, embeddings=True)
    assert len(res.converted) == 2 * 7 + 2 and not res.skipped
    path = tmp_path / f"llama-{name}.gguf"
    fg.save(q, path, metadata={"general.architecture": "llama"})
    torch.manual_seed(1)
    fresh = transformers.LlamaForCausalLM(cfg).eval()
    r = fg.load_into(fresh, path)
    assert len(r.replaced) == 16 and not r.missing and not r.unexpected
    ids = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(ids).logits
        got = fresh(ids).logits  # 12 rows: the fused kernel
        assert torch.equal(got, q(ids).logits)  # the loaded model is the saved one
        got_unfused = fresh(ids.repeat(2, 1)).logits[:1]  # 24 rows: the exact-dequant path
    for g in (got, got_unfused):
        rel = ((g - want).norm() / want.norm()).item()
        assert rel <= bound, (name, rel)
