"""Regression tests for bad input found in review: each must give a clear error and leave the caller's
objects untouched (no silent wrong result, no crash)."""

from __future__ import annotations

import struct


import numpy as np
import pytest
import torch
from torch import nn

import fastquant
import fastquant.gguf as fg
from _roundtrip import roundtrip


def test_sparse_file_with_huge_record_counts_is_an_error_not_an_abort(tmp_path):
    # 4 GiB of zeros after a header that claims as many metadata records as could fit: the reader used to
    # reserve memory for all of them up front (and abort the process when that failed).
    p = tmp_path / "huge.gguf"
    size = 4 << 30
    n_kv = (size - 24) // 13
    with open(p, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv))
        f.truncate(size)
    with pytest.raises(fg.GGUFError, match="offset"):
        fg.open(p)


def test_quantize_rejects_a_bare_string_skip_list():
    m = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(TypeError, match="list of module names"):
        fastquant.quantize(m, {"quant_method": "quanto"}, modules_to_not_convert="0")
    assert type(m[0]) is nn.Linear


def test_root_module_cannot_be_replaced():
    with pytest.raises(ValueError, match="wrap it in a container"):
        fg.quantize_model(nn.Linear(64, 8), "Q8_0")
    with pytest.raises(ValueError, match="wrap it in a container"):
        fastquant.quantize(nn.Linear(64, 64), {"quant_method": "quanto"})


def test_set_packed_changes_nothing_on_error():
    q = fg.GGUFLinear.from_linear(nn.Linear(64, 8), "Q8_0")
    before = q.weight.clone()
    with pytest.raises(ValueError, match="expected 288"):
        q.set_packed(bytes(10), "Q4_0")
    assert q.ggml_type == "Q8_0" and torch.equal(q.weight, before)
    with pytest.raises(TypeError, match="packed data must be"):
        q.set_packed([1, 2, 3])
    x = torch.randn(2, 64)
    assert q(x).shape == (2, 8)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        q(x.double())
    sd = q.state_dict()
    sd["_extra_state"] = {"ggml_type": "Q4_0", "shape": [8, 64]}
    with pytest.raises((ValueError, RuntimeError)):
        q.load_state_dict(sd)


def test_metadata_writer_never_changes_values(tmp_path):
    p = tmp_path / "m.gguf"
    for md in (
        {"k": fg.Value(np.array([1.7, 300.5]), "u8")},
        {"n": fg.Value(np.array([np.nan, 5e9]), "i32")},
        {"f": 1e300},
        {"a": fg.Value(np.array([1e39]), "f32")},
        {"r": fg.Value(np.array([300]), "u8")},
    ):
        with pytest.raises(ValueError):
            fg.write(p, {}, md)
    fg.write(p, {}, {"ok": fg.Value(np.array([1.0, 255.0]), "u8"), "inf": float("inf")})
    with fg.open(p) as f:
        assert f.metadata["ok"] == [1, 255] and f.metadata["inf"] == float("inf")


def _two_layer_file(tmp_path, second_type):
    p = tmp_path / "two.gguf"
    blocks = fg.quantize(np.random.default_rng(0).standard_normal((4, 32), dtype=np.float32), "Q8_0")
    second = (np.zeros(4 * 36, np.uint8), "Q8_1", (4, 32)) if second_type == "Q8_1" else torch.randn(4, 32)
    fg.write(p, {"a.weight": (blocks, "Q8_0", (4, 32)), "b.weight": second}, {})
    return p


def test_load_into_checks_everything_before_changing_the_model(tmp_path):
    p = _two_layer_file(tmp_path, "Q8_1")
    m = nn.Sequential()
    m.a = nn.Linear(32, 4, bias=False)
    m.b = nn.Linear(32, 4, bias=False)
    with pytest.raises(ValueError, match="Q8_1 has no dequantizer"):
        fg.load_into(m, p)
    assert type(m.a) is nn.Linear and type(m.b) is nn.Linear
    # A plain tensor aimed at a packed layer's weight is refused up front too.
    p2 = _two_layer_file(tmp_path, "F32")
    m2 = nn.Sequential()
    m2.a = nn.Linear(32, 4, bias=False)
    m2.b = fg.GGUFLinear(32, 4, bias=False, ggml_type="Q8_0")
    with pytest.raises(ValueError, match="cannot go into the packed layer"):
        fg.load_into(m2, p2)
    assert type(m2.a) is nn.Linear


def test_tied_weights_stay_tied_and_are_saved_once(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 64)
            self.head = nn.Linear(64, 100, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))

    torch.manual_seed(0)
    t = Tied()
    fg.quantize_model(t, "Q8_0", embeddings=True)
    assert t.head.weight.data_ptr() == t.emb.weight.data_ptr()
    p = tmp_path / "tied.gguf"
    fg.save(t, p)
    with fg.open(p) as f:
        assert list(f.tensors) == ["emb.weight"]
    t2 = Tied()
    fg.load_into(t2, p)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(t(ids), t2(ids))
    p2 = tmp_path / "again.gguf"
    fg.save(t2, p2)
    assert p.read_bytes() == p2.read_bytes()


@pytest.mark.parametrize("weights", ["int8", "int4", "int2", "float8"])
def test_quanto_load_refuses_another_architecture(tmp_path, weights):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    fastquant.quantize(m, {"quant_method": "quanto", "weights_dtype": weights})
    other = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 64))
    with pytest.raises(ValueError, match="another architecture"):
        roundtrip(m, other, tmp_path)
    same = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    same = roundtrip(m, same, tmp_path)
    x = torch.randn(2, 64)
    assert torch.equal(m(x), same(x))


def test_plain_checkpoint_of_another_shape_is_refused(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32))
    fastquant.quantize(m, {"load_in_8bit": True}, modules_to_not_convert=["1"])
    other = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 16))
    with pytest.raises(ValueError, match="shape"):
        roundtrip(m, other, tmp_path)


def test_type_ids_are_never_truncated_and_metadata_get_works():
    with pytest.raises(TypeError, match="integer id"):
        fg.dequantize(bytes(34), 8.7)
    with pytest.raises(ValueError, match="unknown ggml type id"):
        fg.dequantize(bytes(34), 2**70)
    assert fg.dequantize(bytes(34), np.int64(8)).shape == (32,)
    import os

    sample = os.path.join(os.path.dirname(fastquant.__file__), "data", "sample.gguf")
    with fg.open(sample) as f:
        assert f.metadata.get(3, "default") == "default" and 3 not in f.metadata
