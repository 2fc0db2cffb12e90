"""fastquant.gguf.dequantize / quantize: bit-exactness against ggml's golden vectors, gguf-py and libgguf,
output dtypes, torch interop and zero-copy `out=`, and error reporting."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastquant.gguf as fg
from fastquant.gguf import _dequant

GOLDEN = Path(__file__).parent / "data" / "golden"

from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf import quants as gq  # noqa: E402
from _blocks import F16_SCALE_OFFSETS  # noqa: E402


def assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str = ""):
    """Equal as u32 bit patterns, except that any NaN matches any NaN."""
    got = np.ascontiguousarray(got, dtype=np.float32).reshape(-1)
    want = np.ascontiguousarray(want, dtype=np.float32).reshape(-1)
    assert got.shape == want.shape, what
    gb, wb = got.view(np.uint32), want.view(np.uint32)
    both_nan = np.isnan(got) & np.isnan(want)
    bad = (gb != wb) & ~both_nan
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(
            f"{what}: {int(bad.sum())} mismatches; first at {i}: got {got[i]!r} ({gb[i]:#010x}) want {want[i]!r} ({wb[i]:#010x})"
        )


def golden_rows():
    with open(GOLDEN / "manifest.tsv") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.mark.parametrize("row", golden_rows(), ids=lambda r: r["type"])
def test_golden_vectors(row):
    data = (GOLDEN / row["in_file"]).read_bytes()
    want = np.fromfile(GOLDEN / row["out_file"], dtype="<f4")
    for key in (row["type"], int(row["ggml_id"])):
        assert_bits_equal(fg.dequantize(data, key), want, row["type"])
    for threads in (1, 2):
        assert_bits_equal(fg.dequantize(np.frombuffer(data, np.uint8), row["type"], threads=threads), want)


def test_golden_covers_26_types():
    assert len({r["type"] for r in golden_rows()}) == 26


# ---- random blocks with special scales vs gguf-py ----

SPECIAL_F16 = np.array(
    [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01],
    dtype=np.uint16,
)


def special_blocks(name: str, n_blocks: int, seed: int) -> np.ndarray:
    """Random blocks; most scale fields replaced by ±0, subnormal, huge, ±Inf or NaN."""
    _, _, be, bb, _ = _dequant._type_info(name)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_blocks, bb), dtype=np.uint8)
    for _k, off in enumerate(F16_SCALE_OFFSETS.get(name, [])):
        pick = rng.integers(0, len(SPECIAL_F16), n_blocks)
        use = rng.random(n_blocks) < 0.6
        vals = np.where(use, SPECIAL_F16[pick], blocks[:, off : off + 2].copy().view(np.uint16)[:, 0])
        blocks[:, off : off + 2] = vals.astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    if name == "MXFP4":
        blocks[:, 0] = np.array([0, 1, 2, 3, 100, 126, 127, 128, 200, 253, 254, 255], np.uint8)[
            rng.integers(0, 12, n_blocks)
        ]
    if name == "NVFP4":
        blocks[:, :4] = np.array([0x00, 0x7F, 0x80, 0xFF, 0x01, 0x08, 0x77], np.uint8)[
            rng.integers(0, 7, (n_blocks, 4))
        ]
    if name == "IQ1_M":
        words = blocks[:, 48:56].copy().view("<u2")
        d = SPECIAL_F16[rng.integers(0, len(SPECIAL_F16), n_blocks)]
        for w in range(4):
            words[:, w] = (words[:, w] & 0x0FFF) | (((d >> (4 * w)) & 0xF) << 12)
        blocks[:, 48:56] = words.view(np.uint8)
    return blocks


GGUF_PY_TYPES = sorted(
    {t.name for t in gq._type_traits} | {"F16", "F32"},
)


@pytest.mark.parametrize("name", GGUF_PY_TYPES)
def test_matches_gguf_py_on_special_scales(name):
    _, _, be, bb, _ = _dequant._type_info(name)
    n_blocks = max(1, (1 << 18) // be)  # 256 Ki elements
    blocks = special_blocks(name, n_blocks, seed=hash(name) & 0xFFFF)
    want = gq.dequantize(blocks, T[name])
    got = fg.dequantize(blocks, name)
    assert_bits_equal(got, want, name)
    # f16/bf16 outputs are the f32 result rounded once (RNE).
    f16 = fg.dequantize(blocks, name, dtype="float16")
    assert f16.dtype == np.float16
    nan = np.isnan(want.reshape(-1))
    assert np.array_equal(f16.view(np.uint16)[~nan], want.reshape(-1).astype(np.float16).view(np.uint16)[~nan])
    assert np.isnan(f16[nan]).all()
    bf16 = fg.dequantize(blocks, name, dtype="bfloat16")
    ref_bf16 = gq.quantize(want.reshape(-1, be if be > 1 else 1), T.BF16).view(np.uint16).reshape(-1)
    assert np.array_equal(bf16.reshape(-1)[~nan], ref_bf16[~nan])
    assert ((bf16[nan] & 0x7FFF) > 0x7F80).all()


def test_special_scales_reach_specials():
    got = fg.dequantize(special_blocks("Q4_K", 512, 1), "Q4_K")
    assert np.isnan(got).any() and np.isinf(got).any() and (np.signbit(got) & (got == 0)).any()


# ---- quantize ----

QUANT_GGUF_PY = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


def sample(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32) * rng.uniform(1e-3, 100, (shape[0], 1)).astype(np.float32)
    x[0, :64] = 0  # zero blocks
    x[1, :32] = 7.5  # constant block
    x[2, :32] = -np.arange(32)  # exact ties for the rounding rules
    x[3, 5] = -3e38
    return x


@pytest.mark.parametrize("name", QUANT_GGUF_PY)
def test_quantize_matches_gguf_py(name):
    # 256 Ki values: several parallel tasks, so the threaded path is compared as well as one thread.
    x = sample((256, 1024), 5)
    want = np.ascontiguousarray(gq.quantize(x, T[name])).view(np.uint8).reshape(256, -1)
    for threads in (1, 2, None):
        got = fg.quantize(x, name, threads=threads)
        assert got.dtype == np.uint8 and got.shape == want.shape
        assert np.array_equal(got, want), threads


@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "Q5_1"])
def test_quantize_matches_ggml_reference_via_libgguf(name):
    import libgguf

    x = sample((32, 1024), 9)
    x[3, 5] = 0  # ggml's nearest_int is only defined for |x| < 2^22 per step; keep values tame
    want = libgguf.quantize_rows(x, T[name])
    got = fg.quantize(x, name)
    assert np.array_equal(got, want)


def test_quantize_errors():
    with pytest.raises(ValueError, match="32-element"):
        fg.quantize(np.zeros(33, np.float32), "Q4_0")
    with pytest.raises(ValueError):
        fg.quantize(np.zeros(256, np.float32), "IQ2_XXS")
    with pytest.raises(ValueError, match="threads"):
        fg.quantize(np.zeros(256, np.float32), "Q4_K", threads=0)


# ---- API: types, torch, out=, errors ----


def test_type_spellings():
    data = special_blocks("Q4_0", 4, 3)
    a = fg.dequantize(data, "Q4_0")
    assert_bits_equal(fg.dequantize(data, 2), a)
    assert_bits_equal(fg.dequantize(data, T.Q4_0), a)
    assert_bits_equal(fg.dequantize(data.tobytes(), "q4_0"), a)


def test_shape_and_out_numpy():
    data = special_blocks("Q6_K", 8, 4)
    ref = fg.dequantize(data, "Q6_K")
    r = fg.dequantize(data, "Q6_K", shape=(4, 512))
    assert r.shape == (4, 512)
    out = np.empty((8, 256), np.float32)
    res = fg.dequantize(data, "Q6_K", out=out)
    assert res is out
    assert_bits_equal(out, ref)
    out16 = np.empty(2048, np.float16)
    assert fg.dequantize(data, "Q6_K", out=out16) is out16
    outbf = np.empty(2048, np.uint16)
    assert fg.dequantize(data, "Q6_K", out=outbf, dtype="bfloat16") is outbf


def test_misaligned_arrays_are_refused_or_copied():
    """numpy can hold float32/uint16 data at an odd address; the core must never see it as a slice."""
    data = special_blocks("Q4_0", 4, 3)
    ref = fg.dequantize(data, "Q4_0")
    buf = np.zeros(4 * ref.size + 8, np.uint8)
    for dt, kind in ((np.float32, "float32"), (np.float16, "float16"), (np.uint16, "bfloat16")):
        size = np.dtype(dt).itemsize
        base = (-buf.ctypes.data) % 16
        odd = buf[base + 1 : base + 1 + ref.size * size].view(dt)
        assert not odd.flags.aligned
        with pytest.raises(ValueError, match="not aligned"):
            fg.dequantize(data, "Q4_0", out=odd, dtype=kind)
        assert not buf.any(), "nothing written"
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    odd = raw[1:].view(np.float32)
    odd[:] = x
    assert not odd.flags.aligned
    assert np.array_equal(fg.quantize(odd, "Q8_0"), fg.quantize(x, "Q8_0"))  # copied, not refused
    from fastquant import _core

    with pytest.raises(ValueError, match="not aligned"):
        _core.quantize_blocks(odd, 8)


def test_torch_in_and_out_zero_copy():
    import torch

    data = special_blocks("Q4_K", 16, 6)
    ref = fg.dequantize(data, "Q4_K")
    t = torch.from_numpy(data.reshape(-1).copy())
    r = fg.dequantize(t, "Q4_K", shape=(16, 256))
    assert isinstance(r, torch.Tensor) and r.dtype == torch.float32 and r.shape == (16, 256)
    assert_bits_equal(r.numpy(), ref)
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        out = torch.empty(16 * 256, dtype=dt)
        ptr = out.data_ptr()
        res = fg.dequantize(t, "Q4_K", out=out)
        assert res is out and out.data_ptr() == ptr
        want = torch.from_numpy(ref).to(dt)  # torch rounds f32 → f16/bf16 to nearest even, once
        nan = torch.isnan(want)
        assert torch.equal(out[~nan].view(torch.int16), want[~nan].view(torch.int16))
        assert torch.isnan(out[nan]).all()
    # numpy input with a torch out
    out = torch.empty(4096, dtype=torch.bfloat16)
    assert fg.dequantize(data, "Q4_K", out=out) is out
    with pytest.raises(ValueError, match="contiguous"):
        fg.dequantize(t, "Q4_K", out=torch.empty(2 * 4096, dtype=torch.float32)[::2])


def test_errors_name_what_was_expected():
    data = np.zeros(18 * 3 + 1, np.uint8)
    with pytest.raises(ValueError, match=r"Q4_0.*55 bytes.*18-byte blocks"):
        fg.dequantize(data, "Q4_0")
    with pytest.raises(ValueError, match=r"shape \(10,\) has 10 elements, expected 96"):
        fg.dequantize(data[:54], "Q4_0", shape=(10,))
    with pytest.raises(ValueError, match="out has 95 elements, expected 96"):
        fg.dequantize(data[:54], "Q4_0", out=np.empty(95, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        fg.dequantize(data[:54], "Q4_0", out=np.empty(96, np.float32), dtype="float16")
    with pytest.raises(ValueError):
        fg.dequantize(data[:54], "Q4_0", out=np.empty(96, np.float64))
    with pytest.raises(ValueError):
        fg.dequantize(np.zeros(36, np.uint8), "Q8_1")
    with pytest.raises(ValueError):
        fg.dequantize(data[:54], "Q9_9")
    with pytest.raises(ValueError):
        fg.dequantize(data[:54], 4)  # removed type id
    with pytest.raises(TypeError):
        fg.dequantize(np.zeros(54, np.float32), "Q4_0")
    with pytest.raises(ValueError):
        fg.dequantize(data[:54], "Q4_0", threads=0)
    ro = np.empty(96, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        fg.dequantize(data[:54], "Q4_0", out=ro)


def test_import_does_not_import_torch():
    code = "import sys, fastquant, fastquant.gguf; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(Path(fg.__file__).parents[2])})


def test_large_parallel_equals_serial():
    data = special_blocks("Q5_K", 8192, 11)  # 2 Mi elements, several parallel tasks
    a = fg.dequantize(data, "Q5_K", threads=1)
    for th in (2, 3, None):
        assert_bits_equal(fg.dequantize(data, "Q5_K", threads=th), a)
