"""fastquant.gguf.triton: the Triton kernels for packed GGUF weights.

Without a CUDA device the kernels run under Triton's interpreter on CPU tensors (fastquant.gguf.triton
decides this when first imported, so no environment variable has to be set before triton is imported);
with one, the same tests run the compiled kernels on CUDA tensors. Checked:
* ``dequantize`` bit-exact with the Rust dequantizer (fastquant.gguf.dequantize) for every covered type, on
  ggml's golden vectors and on random blocks with special scales (±0, subnormal, huge, ±Inf, NaN), in
  f32/f16/bf16 (f16/bf16: the exact f32 rounded once; NaN stays NaN);
* ``linear`` within ``k·2⁻²⁴·Σ|x·w|`` of the exact sum (plus one rounding to the activation dtype) for
  1, 16 (register kernel) and 40 rows (tiled ``tl.dot`` kernel, whose weight is ``W.to(x.dtype)``);
* custom ops under ``torch.compile(fullgraph=True)``; clear errors. Only CUDA-only tests skip ("requires CUDA").
Shapes are tiny: the interpreter executes every Triton op with numpy.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fastquant.gguf as fg
from fastquant import _core
from fastquant.gguf import triton as gt
from _blocks import F16_SCALE_OFFSETS  # noqa: E402

# the interpreter's numpy ops warn where the hardware silently wraps (int16 bit patterns), overflows to Inf or
# makes a NaN (Inf scales)
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

CUDA = torch.cuda.is_available()
DEVICE = "cpu" if gt.INTERPRET else "cuda"
requires_cuda = pytest.mark.skipif(not CUDA, reason="requires CUDA")
GOLDEN = Path(__file__).parent / "data" / "golden"
TYPES = sorted(gt.TYPES)
QUANT_TYPES = sorted(set(TYPES) - {"F32", "F16", "BF16"})

SPECIAL_F16 = np.array(
    [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01],
    dtype=np.uint16,
)
FINITE_F16 = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x2C00, 0xAC00, 0x2400], dtype=np.uint16)


def geometry(name):
    _, _, be, bb, _ = _core.ggml_type_info(name)
    return be, bb


def special_blocks(name: str, n_blocks: int, seed: int, finite: bool = False) -> np.ndarray:
    """Random blocks whose scale fields are mostly special values (finite=True: only finite, small ones)."""
    be, bb = geometry(name)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_blocks, bb), dtype=np.uint8)
    pool = FINITE_F16 if finite else SPECIAL_F16
    for off in F16_SCALE_OFFSETS.get(name, []):
        pick = pool[rng.integers(0, len(pool), n_blocks)]
        use = rng.random(n_blocks) < (1.0 if finite else 0.6)
        vals = np.where(use, pick, blocks[:, off : off + 2].copy().view(np.uint16)[:, 0])
        if not finite and off == F16_SCALE_OFFSETS[name][0]:  # the first blocks: +Inf, NaN, -0, a subnormal
            vals[:4] = [0x7C00, 0x7E00, 0x8000, 0x0001]
        blocks[:, off : off + 2] = vals.astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    if name == "MXFP4":
        choices = [118, 120, 125, 127] if finite else [0, 1, 2, 3, 100, 126, 127, 128, 200, 253, 254, 255]
        blocks[:, 0] = np.array(choices, np.uint8)[rng.integers(0, len(choices), n_blocks)]
    if name == "NVFP4":
        choices = [0x20, 0x2C, 0x38, 0x31] if finite else [0x00, 0x7F, 0x80, 0xFF, 0x01, 0x08, 0x77]
        blocks[:, :4] = np.array(choices, np.uint8)[rng.integers(0, len(choices), (n_blocks, 4))]
    if name == "Q8_K":
        d = rng.uniform(1e-4, 1e-2, n_blocks).astype("<f4")
        if not finite:
            d[:4] = [np.inf, np.nan, -0.0, 1e-45]
        blocks[:, 0:4] = d.view(np.uint8).reshape(n_blocks, 4)
    if name == "IQ1_M":  # the f16 scale is spread over the top nibbles of four u16 words
        words = blocks[:, 48:56].copy().view("<u2")
        d = pool[rng.integers(0, len(pool), n_blocks)]
        if not finite:
            d[:4] = [0x7C00, 0x7E00, 0x8000, 0x0001]
        for w in range(4):
            words[:, w] = (words[:, w] & 0x0FFF) | (((d >> (4 * w)) & 0xF) << 12)
        blocks[:, 48:56] = words.view(np.uint8)
    if finite and name in ("F16", "BF16", "F32"):
        vals = rng.standard_normal(n_blocks).astype(np.float32) * 0.05
        if name == "F32":
            return vals.view(np.uint8).reshape(n_blocks, 4)
        if name == "F16":
            return vals.astype("<f2").view(np.uint8).reshape(n_blocks, 2)
        return (vals.view(np.uint32) >> 16).astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    return blocks


def assert_same(got: torch.Tensor, want: np.ndarray, what: str):
    """Bitwise equal (f32 as u32, f16/bf16 as u16), except that NaN matches any NaN."""
    got = got.cpu()
    if got.dtype == torch.float32:
        g, w = got.numpy().reshape(-1).view(np.uint32), np.asarray(want, np.float32).reshape(-1).view(np.uint32)
        gnan, wnan = np.isnan(got.numpy().reshape(-1)), np.isnan(np.asarray(want, np.float32).reshape(-1))
    else:
        g = got.view(torch.int16).numpy().reshape(-1).view(np.uint16)
        w = np.asarray(want).reshape(-1).view(np.uint16)
        if got.dtype == torch.float16:
            gnan, wnan = (g & 0x7FFF) > 0x7C00, (w & 0x7FFF) > 0x7C00
        else:
            gnan, wnan = (g & 0x7FFF) > 0x7F80, (w & 0x7FFF) > 0x7F80
    assert np.array_equal(gnan, wnan), f"{what}: NaN positions differ"
    bad = (g != w) & ~wnan
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(f"{what}: {int(bad.sum())} mismatches; first at {i}: got {g[i]:#x} want {w[i]:#x}")


def golden_rows():
    with open(GOLDEN / "manifest.tsv") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["type"] in gt.TYPES]


def test_covers_the_required_types():
    required = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"}
    assert required | {"IQ2_XXS", "IQ3_S", "MXFP4", "F16", "BF16"} <= set(gt.TYPES)
    # every type ggml has golden vectors for (all 26 with a dequantizer) has a Triton decoder
    with open(GOLDEN / "manifest.tsv") as f:
        assert {r["type"] for r in csv.DictReader(f, delimiter="\t")} == set(QUANT_TYPES)
    for name, (tid, be, bb, _) in gt.TYPES.items():
        assert _core.ggml_type_info(name)[:4] == (tid, name, be, bb)


# ---- dequantize: bit-exact with the Rust kernels ----------------------------------------------------------


@pytest.mark.parametrize("row", golden_rows(), ids=lambda r: r["type"])
def test_dequantize_golden_vectors(row):
    data = torch.from_numpy(np.fromfile(GOLDEN / row["in_file"], np.uint8)).to(DEVICE)
    want = np.fromfile(GOLDEN / row["out_file"], "<f4")
    be = int(row["block_elems"])
    got = gt.dequantize(data, row["type"], (want.size // be, be))
    assert got.shape == (want.size // be, be) and got.device.type == DEVICE
    assert_same(got, want, row["type"])


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_special_scales_all_dtypes(name):
    be, bb = geometry(name)
    n_blocks = max(8, 512 // be)
    blocks = special_blocks(name, n_blocks, seed=sum(map(ord, name)))
    dev = torch.from_numpy(blocks).to(DEVICE)
    for dtype, kind in ((torch.float32, "float32"), (torch.float16, "float16"), (torch.bfloat16, "bfloat16")):
        want = fg.dequantize(blocks.reshape(-1), name, dtype=kind)
        got = gt.dequantize(dev, name, (n_blocks * be,), dtype)
        assert got.dtype == dtype
        assert_same(got, want, f"{name} {kind}")
    if name in F16_SCALE_OFFSETS or name in ("Q8_K", "IQ1_M"):  # the specials reach the output
        w = fg.dequantize(blocks.reshape(-1), name)
        assert np.isnan(w).any() and np.isinf(w).any()
    assert np.array_equal(dev.cpu().numpy(), blocks)  # input untouched


# ---- linear: within the f32 accumulation bound ------------------------------------------------------------

REL = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def packed_weight(name, n, k, seed):
    be, bb = geometry(name)
    blocks = special_blocks(name, n * k // be, seed, finite=True)
    return blocks.reshape(n, -1), torch.from_numpy(fg.dequantize(blocks.reshape(-1), name, shape=(n, k)))


def check_linear(name, rows, dtype, n=24, k=512, bias=True, seed=0, lead=()):
    packed, W = packed_weight(name, n, k, seed)
    assert torch.isfinite(W).all()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, rows, k, generator=gen).to(dtype)
    b = (torch.randn(n, generator=gen) * 0.1) if bias else None
    y = gt.linear(x.to(DEVICE), torch.from_numpy(packed).to(DEVICE), name, (n, k), None if b is None else b.to(DEVICE))
    assert y.dtype == dtype and y.shape == (*lead, rows, n) and y.device.type == DEVICE
    # the register kernel multiplies by the exact f32 weight; the tiled one by W rounded to x.dtype
    m = int(np.prod(lead or (1,))) * rows
    Wr = W if (m <= gt.SMALL_BATCH_ROWS or dtype == torch.float32) else W.to(dtype)
    xd, wd = x.double().reshape(-1, k), Wr.double()
    ref = xd @ wd.T + (0 if b is None else b.double())
    s = xd.abs() @ wd.abs().T
    # k-term f32 accumulation, the f32 bias add, then one rounding to x.dtype
    bound = k * 2.0**-24 * s + 2.0**-24 * ref.abs() + REL[dtype] * (ref.abs() + k * 2.0**-24 * s) + 1e-30
    err = (y.cpu().double().reshape(-1, n) - ref).abs()
    assert (err <= bound).all(), (name, rows, dtype, float((err / bound).max()))


@pytest.mark.parametrize("name", TYPES)
def test_linear_f32_within_bound(name):
    for rows in (1, 16, 40):
        check_linear(name, rows, torch.float32, seed=rows)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS"])
def test_linear_half_within_bound(name, dtype):
    for rows in (1, 16, 40):
        check_linear(name, rows, dtype, seed=rows + 3)


def test_linear_shapes_bias_and_empty():
    check_linear("Q4_0", 3, torch.float32, n=5, k=96, bias=False, lead=(2,))  # 6 rows in a 3-d input
    check_linear("Q5_1", 20, torch.float32, n=7, k=64, lead=(2,))  # 40 rows, tiled kernel
    packed, _ = packed_weight("Q8_0", 4, 64, 1)
    p = torch.from_numpy(packed).to(DEVICE)
    y = gt.linear(torch.zeros(0, 64, device=DEVICE), p, "Q8_0", (4, 64))
    assert y.shape == (0, 4)
    x = torch.randn(2, 64, device=DEVICE)
    x_copy = x.clone()
    gt.linear(x, p, "Q8_0", (4, 64))
    assert torch.equal(x, x_copy)


def test_errors():
    packed, _ = packed_weight("Q4_0", 4, 64, 1)
    p = torch.from_numpy(packed).to(DEVICE)
    with pytest.raises(ValueError, match="bytes"):
        gt.dequantize(p.reshape(-1)[:-1], "Q4_0", (4, 64))
    with pytest.raises(ValueError, match="32-element"):
        gt.dequantize(p, "Q4_0", (4, 60))
    with pytest.raises(ValueError, match="no Triton decoder for I8"):
        gt.dequantize(p, "I8", (4, 64))
    with pytest.raises(TypeError, match="uint8"):
        gt.dequantize(p.to(torch.int16), "Q4_0", (4, 64))
    with pytest.raises(ValueError, match="dtype"):
        gt.dequantize(p, "Q4_0", (4, 64), torch.float64)
    with pytest.raises(ValueError, match="features"):
        gt.linear(torch.randn(2, 32, device=DEVICE), p, "Q4_0", (4, 64))
    with pytest.raises(TypeError, match="float32"):
        gt.linear(torch.ones(2, 64, dtype=torch.int32, device=DEVICE), p, "Q4_0", (4, 64))
    with pytest.raises(ValueError, match="bias"):
        gt.linear(torch.randn(2, 64, device=DEVICE), p, "Q4_0", (4, 64), torch.zeros(5, device=DEVICE))
    with pytest.raises(ValueError, match="out_features"):
        gt.linear(torch.randn(2, 64, device=DEVICE), p, "Q4_0", 256)
    with pytest.raises(TypeError, match="bias"):
        gt.linear(torch.randn(2, 64, device=DEVICE), p, "Q4_0", (4, 64), torch.zeros(4, dtype=torch.int32))
    assert gt.supports("Q4_K") and gt.supports(12) and not gt.supports("I8") and not gt.supports("nope")


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    packed, W = packed_weight("Q4_K", 16, 256, 2)
    p = torch.from_numpy(packed).to(DEVICE)

    def f(x):
        h = gt.linear(x, p, "Q4_K", (16, 256))
        return torch.relu(h) + gt.dequantize(p, "Q4_K", (16, 256)).sum(dim=1)

    x = torch.randn(3, 256, device=DEVICE)
    # aot_eager traces through the fake implementations (no graph break allowed) without needing a compiler
    cf = torch.compile(f, fullgraph=True, backend="aot_eager" if DEVICE == "cpu" else "inductor")
    assert torch.equal(cf(x), f(x))
    torch._dynamo.reset()


def test_layer_switch_is_a_constant_under_compile():
    """GGUFLinear.forward asks _layers._use_triton(type) on CUDA; the first answer imports triton, which
    torch.compile(fullgraph=True) cannot trace, so the switch is evaluated as a constant. Checked in a fresh
    process (nothing imported yet), where the import happens during tracing."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from fastquant.gguf import _layers\n"
        "assert _layers._triton_mod is None and 'fastquant.gguf.triton' not in sys.modules\n"
        "f = torch.compile(lambda x: x + 1 if _layers._use_triton('Q4_K') else x - 1, fullgraph=True, backend='eager')\n"
        "y = f(torch.zeros(2))\n"
        "want = 1.0 if torch.cuda.is_available() else -1.0\n"
        "assert torch.equal(y, torch.full((2,), want)), y\n"
        "print('ok', 'fastquant.gguf.triton' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["ok", "True"]


# ---- ahead-of-time compile for sm_90 (no GPU needed) ----------------------------------------------------

AOT = """
import json
from fastquant.gguf.triton import TYPES, _aot
res = {name: _aot.compile_dequant(name, 2, report=False) for name in TYPES}
res["Q4_K with fusion"] = _aot.compile_dequant("Q4_K", 0, fp_fusion=True, report=False)
res["Q4_1 with fusion"] = _aot.compile_dequant("Q4_1", 0, fp_fusion=True, report=False)
for rows in (1, 16, 256):
    res[f"linear Q4_K {rows}"] = _aot.compile_linear("Q4_K", rows, report=False)
res["linear IQ2_XXS f32"] = _aot.compile_linear("IQ2_XXS", 40, out=0, report=False)
print(json.dumps(res))
"""


def test_kernels_compile_for_sm90_without_fma_contraction():
    """The compiled (not interpreted) kernels build for an H100/H200-class target with Triton's own compiler,
    and the decoders contain no FMA: the reference rounds d*q and the following +/- m separately, which only
    holds because the kernels are built with enable_fp_fusion=False (with fusion the compiler does fuse)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTQUANT_TRITON_COMPILE_ONLY="1")
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-c", AOT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for name in gt.TYPES:
        assert res[name]["fma"] == 0, name
    assert res["Q4_K with fusion"]["fma"] > 0 and res["Q4_1 with fusion"]["fma"] > 0
    assert res["linear Q4_K 256"]["shared"] > 0  # the tiled kernel stages its dot operands in shared memory


# ---- the layers on CUDA ------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("name", ["Q4_0", "Q4_K", "Q6_K", "IQ4_XS", "Q3_K", "MXFP4"])
def test_layers_use_triton_on_cuda(name):
    from fastquant.gguf import _layers

    packed, W = packed_weight(name, 48, 256, 4)
    layer = fg.GGUFLinear.from_packed(packed, name, 48, 256, bias=torch.randn(48)).to("cuda")
    for rows in (1, 16, 40):
        x = torch.randn(rows, 256, device="cuda")
        assert torch.equal(layer(x), gt.linear(x, layer.weight, name, (48, 256), layer.bias))
    with pytest.raises(ValueError, match="bias is on"):
        gt.linear(x, layer.weight, name, (48, 256), torch.zeros(48))
    # fused=False and dequantize_weight: exact Triton dequantization
    assert torch.equal(layer.dequantize_weight().cpu(), W)
    assert name in _layers._triton_types()
    emb = fg.GGUFEmbedding(48, 256, name).to("cuda")
    emb.set_packed(torch.from_numpy(packed).cuda(), copy=False)
    ids = torch.tensor([[0, 5, 47]], device="cuda")
    assert torch.equal(emb(ids).cpu(), W[ids.cpu()])


@requires_cuda
def test_layer_compile_on_cuda():
    torch._dynamo.reset()
    m = nn.Sequential(fg.GGUFLinear.from_linear(nn.Linear(256, 64), "Q4_K")).to("cuda")
    cm = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        for rows in (2, 40):
            x = torch.randn(rows, 256, device="cuda")
            assert torch.equal(cm(x), m(x))
    torch._dynamo.reset()
