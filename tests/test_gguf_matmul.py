"""The CPU matmul paths of packed GGUF layers: the Rust fused kernel on every code path (forced with
``path=``), batch sizes on both sides of FUSED_MAX_ROWS, odd shapes, the tiled path for more rows (bitwise
F.linear per tile, bounded workspace), and the eager fast path against the custom ops."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastquant.gguf as fg
from fastquant import _core
from fastquant.gguf import _layers

TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]
# f16 scale byte offsets of each block (kept small and finite)
SCALES = {"Q4_0": [0], "Q8_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ4_XS": [0]}


def paths():
    """Every code path this CPU can run."""
    best = _core.simd_path()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return ["scalar"] + (["neon"] if best == "neon" else [])
    order = ["scalar", "avx2", "avx512"]
    return order[: order.index(best) + 1] if best in order else ["scalar"]


def packed(name, n, k, seed=0):
    _, _, be, bb, _ = _core.ggml_type_info(name)
    rng = np.random.default_rng(seed)
    nb = n * k // be
    blocks = rng.integers(0, 256, size=(nb, bb), dtype=np.uint8)
    for off in SCALES[name]:
        blocks[:, off : off + 2] = rng.uniform(1e-3, 1e-2, nb).astype(np.float16).view(np.uint8).reshape(nb, 2)
    return blocks.reshape(n, -1)


def exact(p, name, n, k):
    out = torch.empty((n, k))
    fg.dequantize(np.ascontiguousarray(p).reshape(-1), name, out=out)
    return out


def bound(x, w):
    xd, wd = x.double(), w.double()
    return xd @ wd.T, x.shape[-1] * 2.0**-24 * (xd.abs() @ wd.abs().T) + 1e-30


def kind_array(t):
    return _layers._as_kind(t)


@pytest.mark.parametrize("name", TYPES)
def test_fused_kernel_every_path_and_batch(name):
    be = _core.ggml_type_info(name)[2]
    k = 96 if be == 32 else 512  # k not a multiple of 256 where the block allows
    n = 70  # not a multiple of the 4-row groups
    p = packed(name, n, k)
    W = exact(p, name, n, k)
    flat = p.reshape(-1)
    tid = _core.ggml_type_info(name)[0]
    for m in (1, 2, 7, 16, 17, 48):
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
        ref, tol = bound(x, W)
        simd = None
        for path in paths():
            for threads in (1, 2):
                out = torch.empty((m, n))
                _core.linear_fused(x.numpy(), flat, tid, n, k, out.numpy(), threads, path)
                assert ((out.double() - ref).abs() <= tol).all(), (name, m, path)
                if path != "scalar":
                    # SIMD paths: the same decoded values and per-lane fused multiply-add order
                    simd = out if simd is None else simd
                    assert torch.equal(out, simd), (name, m, path, threads)
        # bf16 activations and output: the f32 result of the widened input, rounded once
        xb = x.bfloat16()
        ob = torch.empty((m, n), dtype=torch.bfloat16)
        _core.linear_fused(kind_array(xb), flat, tid, n, k, kind_array(ob), 2, "auto", "bfloat16")
        o32 = torch.empty((m, n))
        _core.linear_fused(xb.float().numpy(), flat, tid, n, k, o32.numpy(), 1)
        assert torch.equal(ob, o32.bfloat16()), (name, m)


def test_fused_kernel_rejects_bad_input():
    p = packed("Q8_0", 4, 64).reshape(-1)
    x = np.zeros((1, 64), np.float32)
    out = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="code path"):
        _core.linear_fused(x, p, 8, 4, 64, out, 1, "sse9")
    with pytest.raises(ValueError, match="kind"):
        _core.linear_fused(x, p, 8, 4, 64, out, 1, "auto", "int8")
    with pytest.raises(ValueError, match="expected"):
        _core.linear_fused(x, p[:-1], 8, 4, 64, out, 1)
    with pytest.raises(ValueError, match="whole rows"):
        _core.linear_fused(np.zeros(63, np.float32), p, 8, 4, 64, out, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_both_sides_of_fused_max_rows(dtype):
    n, k = 70, 512
    p = packed("Q4_K", n, k, seed=3)
    b = torch.randn(n) * 0.1
    layer = fg.GGUFLinear.from_packed(p, "Q4_K", n, k, bias=b).to(dtype)
    W = exact(p, "Q4_K", n, k)
    for m in (1, 2, 7, 16, 17, 48):
        x = torch.randn(m, k).to(dtype)
        with torch.no_grad():
            y = layer(x)
        assert y.dtype == dtype and y.shape == (m, n)
        if m <= fg.FUSED_MAX_ROWS:
            ref, tol = bound(x.float(), W)
            rel = 0.0 if dtype == torch.float32 else 2.0**-8
            err = (y.double() - (ref + layer.bias.double())).abs()
            assert (err <= tol + rel * (ref.abs() + layer.bias.double().abs()) * 2 + 1e-6).all(), m
        else:
            assert torch.equal(y, F.linear(x, W.to(dtype), layer.bias)), m  # one tile: bitwise F.linear


def test_eager_fast_path_equals_custom_ops():
    n, k = 70, 256
    layer = fg.GGUFLinear.from_packed(packed("Q6_K", n, k), "Q6_K", n, k, bias=torch.randn(n))
    for m in (3, 40):
        x = torch.randn(2, m, k)
        with torch.no_grad():
            fast = layer(x)
        if m <= fg.FUSED_MAX_ROWS:
            op = torch.ops.fastquant.gguf_linear_fused(x, layer.weight, layer._type_id, n, k) + layer.bias
        else:
            op = torch.ops.fastquant.gguf_linear(x, layer.weight, layer._type_id, n, k, layer.bias)
        assert torch.equal(fast, op), m
    # a non-contiguous input gives the same result as its contiguous copy
    xt = torch.randn(k, 5).t()
    with torch.no_grad():
        assert torch.equal(layer(xt), layer(xt.contiguous()))


def test_tiled_forward_is_bitwise_per_tile(monkeypatch):
    n, k = 200, 256
    p = packed("Q8_0", n, k, seed=5)
    b = torch.randn(n)
    layer = fg.GGUFLinear.from_packed(p, "Q8_0", n, k, bias=b)
    W = exact(p, "Q8_0", n, k)
    monkeypatch.setattr(_layers, "TILE_BYTES", 48 * k * 4)  # 48-row tiles: 5 tiles, the last one short
    rows = _layers._tile_rows(n, k, 4)
    assert rows == 48
    x = torch.randn(3, 11, k)
    with torch.no_grad():
        y = layer(x)
    want = torch.cat([F.linear(x, W[j : j + rows], b[j : j + rows]) for j in range(0, n, rows)], dim=-1)
    assert torch.equal(y, want)
    ref, tol = bound(x.reshape(-1, k), W)
    assert ((y.reshape(-1, n).double() - ref - b.double()).abs() <= 2 * tol + 1e-5).all()


def test_long_prompt_leaves_no_float_copy_of_the_weight(monkeypatch):
    """Regression (issue 13): more than FUSED_MAX_ROWS rows used to leave the whole dequantized weight in a
    workspace until release_workspace(); the workspace is now one tile at most."""
    monkeypatch.setattr(_layers, "TILE_BYTES", 1 << 20)
    n, k = 2048, 1024  # 8 MiB of f32 weight (4 MiB bf16), several tiles in either dtype
    layer = fg.GGUFLinear.from_packed(packed("Q4_0", n, k, seed=9), "Q4_0", n, k, bias=None)
    fg.release_workspace()
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(40, k).to(dtype)
        with torch.no_grad():
            layer.to(dtype)(x)
    bufs = getattr(_layers._ws, "bufs", {})
    assert bufs, "the tile buffer is reused"
    for dt, buf in bufs.items():
        assert buf.numel() * buf.element_size() <= _layers.TILE_BYTES, dt
        assert buf.numel() < n * k
    fg.release_workspace()
    assert not _layers._ws.bufs
