"""GGUF container: round trips with gguf-py in both directions, the Python API, malformed files (each a
GGUFError naming offset and field, never a crash), truncation at every byte, and the CLI."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import fastquant
import fastquant.gguf as fg
from fastquant import _core
from fastquant.gguf import GGUFError, Value

import gguf
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFValueType as VT  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYDIR = os.path.join(ROOT, "python")

_VT_NAME = {
    VT.UINT8: "u8",
    VT.INT8: "i8",
    VT.UINT16: "u16",
    VT.INT16: "i16",
    VT.UINT32: "u32",
    VT.INT32: "i32",
    VT.FLOAT32: "f32",
    VT.BOOL: "bool",
    VT.STRING: "str",
    VT.ARRAY: "array",
    VT.UINT64: "u64",
    VT.INT64: "i64",
    VT.FLOAT64: "f64",
}


# ------------------------------------------------------------------------------------------------------
# helpers


class B:
    """Byte-level builder for hand-made (mostly broken) files."""

    def __init__(self, version=3, n_tensors=0, n_kv=0, magic=b"GGUF"):
        self.b = bytearray(magic + struct.pack("<IQQ", version, n_tensors, n_kv))

    def raw(self, data):
        self.b += data
        return self

    def u8(self, v):
        return self.raw(struct.pack("<B", v))

    def u32(self, v):
        return self.raw(struct.pack("<I", v))

    def u64(self, v):
        return self.raw(struct.pack("<Q", v))

    def s(self, text):
        data = text.encode() if isinstance(text, str) else text
        return self.u64(len(data)).raw(data)

    def kv_u32(self, k, v):
        return self.s(k).u32(4).u32(v)

    def ti(self, name, ne, ty, off):
        self.s(name).u32(len(ne))
        for d in ne:
            self.u64(d)
        return self.u32(ty).u64(off)

    def pad(self, a=32):
        while len(self.b) % a:
            self.b.append(0)
        return self

    def zeros(self, n):
        return self.raw(bytes(n))

    def bytes(self):
        return bytes(self.b)


def parse(data: bytes):
    return fg.GGUFFile._from_reader(_core._GGUFReader.from_bytes(data))


def open_bytes(tmp_path, data: bytes, name="x.gguf"):
    p = tmp_path / name
    p.write_bytes(data)
    return fg.open(p)


OFFSET_RE = re.compile(r"^offset \d+: ")


def assert_gguf_error(data: bytes, needle: str, tmp_path=None):
    with pytest.raises(GGUFError) as ei:
        parse(data)
    msg = str(ei.value)
    assert OFFSET_RE.match(msg), msg
    assert needle in msg, msg
    assert isinstance(ei.value, ValueError)
    if tmp_path is not None:  # same through the mmap path
        with pytest.raises(GGUFError, match=re.escape(needle)):
            open_bytes(tmp_path, data)
    return msg


def type_name(field):
    t = field.types
    if t[0] == VT.ARRAY:
        return f"array[{_VT_NAME[t[1]]}]" if len(t) > 1 else "array[?]"
    return _VT_NAME[t[0]]


# ------------------------------------------------------------------------------------------------------
# gguf-py writes, fastquant reads

ALL_ARRAY_SUBTYPES = [
    (VT.UINT8, [0, 255, 7]),
    (VT.INT8, [-128, 127]),
    (VT.UINT16, [0, 65535]),
    (VT.INT16, [-32768, 32767]),
    (VT.UINT32, [0, 2**32 - 1]),
    (VT.INT32, [-(2**31), 2**31 - 1]),
    (VT.FLOAT32, [1.5, -0.25, 3e38]),
    (VT.BOOL, [True, False, True]),
    (VT.STRING, ["a", "", "ü€"]),
    (VT.UINT64, [0, 2**64 - 1]),
    (VT.INT64, [-(2**63), 2**63 - 1]),
    (VT.FLOAT64, [1e300, -2.5]),
]


def _quantizable():
    out = []
    for t in QT:
        try:
            gguf.quants.quantize(np.zeros((1, 256), dtype=np.float32), t)
        except NotImplementedError:
            continue
        out.append(t)
    return out


def write_with_ggufpy(path, rng):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 2**32 - 1)
    w.add_int32("t.i32", -(2**31))
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", 0.1)
    w.add_bool("t.bool", True)
    w.add_bool("t.bool_f", False)
    w.add_string("t.str", "héllo wörld")
    for sub, vals in ALL_ARRAY_SUBTYPES:
        w.add_key_value(f"t.arr.{_VT_NAME[sub]}", vals, VT.ARRAY, sub_type=sub)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(1000)])
    w.add_array("t.nested", [[1, 2], [3]])
    tensors = {}
    # plain numpy dtypes
    for dt in (np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64):
        a = (rng.standard_normal((3, 5)) * 100).astype(dt)
        w.add_tensor(f"plain.{np.dtype(dt).name}", a)
        tensors[f"plain.{np.dtype(dt).name}"] = a
    # 1-D and 4-D
    a = rng.standard_normal(7).astype(np.float32)
    w.add_tensor("shape.1d", a)
    a4 = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w.add_tensor("shape.4d", a4)
    # quantized with gguf-py's own quantizer
    for t in _quantizable():
        if t in (QT.F32, QT.F16):
            continue
        x = rng.standard_normal((2, 512)).astype(np.float32)
        q = gguf.quants.quantize(x, t)
        w.add_tensor(f"q.{t.name}", q, raw_shape=q.shape, raw_dtype=t)
    # the rest: random packed bytes
    for t in QT:
        if t in _quantizable() or t in (QT.F64, QT.I8, QT.I16, QT.I32, QT.I64, QT.Q8_1):
            continue  # Q8_1: gguf-py's size table says 40 bytes, ggml's struct is 36 (spec §0.8)
        be, bb = GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(3, 2 * bb), dtype=np.uint8)
        w.add_tensor(f"r.{t.name}", raw, raw_shape=raw.shape, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def compare_with_ggufpy(path):
    r = gguf.GGUFReader(str(path))
    n_checked = 0
    with fg.open(path) as f:
        fields = {k: v for k, v in r.fields.items() if not k.startswith("GGUF.")}
        assert list(f.metadata) == list(fields)
        for k, field in fields.items():
            if k == "t.nested":
                continue
            if type_name(field) != "array[?]":  # gguf-py keeps no element type for an empty array
                assert f.value_type(k) == type_name(field), k
            assert f.metadata[k] == field.contents(), k
            n_checked += 1
        assert len(f.tensors) == len(r.tensors)
        for t in r.tensors:
            info = f.tensors[t.name]
            assert info.ggml_type == t.tensor_type.name
            assert list(info.ne) == t.shape.tolist()
            assert info.shape == tuple(reversed(t.shape.tolist()))
            assert info.n_elements == t.n_elements
            assert info.nbytes == t.n_bytes
            assert info.offset == t.data_offset
            raw = f.raw(t.name)
            assert raw.dtype == np.uint8 and raw.nbytes == t.n_bytes
            assert raw.tobytes() == t.data.tobytes(), t.name
            n_checked += 1
        assert f.version == 3
    return n_checked


def test_ggufpy_written_file_reads_identically(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "ggufpy.gguf"
    plain = write_with_ggufpy(p, rng)
    assert compare_with_ggufpy(p) > 60
    with fg.open(p) as f:
        assert f.metadata["t.nested"] == [[1, 2], [3]]
        assert f.value_type("t.nested") == "array[array]"
        assert f.metadata["t.f32"] == struct.unpack("<f", struct.pack("<f", 0.1))[0]
        assert f.metadata["t.f64"] == 0.1
        assert f.metadata["t.arr.bool"] == [True, False, True]
        for name, a in plain.items():
            got = f.raw(name).view(a.dtype).reshape(a.shape)
            np.testing.assert_array_equal(got, a)
            assert f.tensors[name].shape == a.shape
        # every ggml type gguf-py knows except Q8_1 appears
        types = {t.ggml_type for t in f.tensors.values()}
        assert types >= {t.name for t in QT if t != QT.Q8_1}


# ------------------------------------------------------------------------------------------------------
# fastquant writes, gguf-py reads


def fastquant_sample(rng):
    meta = {
        "general.architecture": "llama",
        "t.u8": Value(200, "u8"),
        "t.i8": Value(-100, "i8"),
        "t.u16": Value(65535, "u16"),
        "t.i16": Value(-32768, "i16"),
        "t.u32": Value(2**32 - 1, "u32"),
        "t.i32": -(2**31),
        "t.f32": 0.1,
        "t.bool": True,
        "t.str": "héllo wörld",
        "t.u64": Value(2**64 - 1, "u64"),
        "t.i64": Value(-(2**63), "i64"),
        "t.f64": Value(0.1, "f64"),
        "t.np_u16": np.uint16(7),
        "t.np_f64": np.float64(2.5),
        "t.np_bool": np.bool_(False),
        "t.arr_np_i16": np.arange(-3, 3, dtype=np.int16),
        "t.arr_np_f32": np.linspace(0, 1, 5, dtype=np.float32),
        "tokenizer.ggml.tokens": [f"tok{i}" for i in range(300)],
        "t.empty": Value([], "array[i32]"),
    }
    for vt, vals in ALL_ARRAY_SUBTYPES:
        meta[f"t.arr.{_VT_NAME[vt]}"] = Value(vals, _VT_NAME[vt])
    tensors = {}
    for dt in (np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64):
        tensors[f"plain.{np.dtype(dt).name}"] = (rng.standard_normal((4, 3)) * 50).astype(dt)
    for t in QT:
        if t in (QT.F32, QT.F16, QT.F64, QT.I8, QT.I16, QT.I32, QT.I64, QT.Q8_1):
            continue
        be, bb = GGML_QUANT_SIZES[t]
        if t in _quantizable():
            data = gguf.quants.quantize(rng.standard_normal((2, 2 * be)).astype(np.float32), t)
        else:
            data = rng.integers(0, 256, size=(2, 2 * bb), dtype=np.uint8)
        tensors[f"q.{t.name}"] = (data.reshape(-1), t.name, (2, 2 * be))
    return meta, tensors


def test_fastquant_written_file_reads_identically_in_ggufpy(tmp_path):
    rng = np.random.default_rng(1)
    meta, tensors = fastquant_sample(rng)
    p = tmp_path / "fq.gguf"
    size = fg.write(p, tensors, meta)
    assert size == os.path.getsize(p) and size % 32 == 0
    r = gguf.GGUFReader(str(p))
    fields = {k: v for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == list(meta)
    for k, v in meta.items():
        want = v.value if isinstance(v, Value) else v
        if isinstance(want, np.ndarray):
            want = want.tolist()
        elif isinstance(want, np.generic):
            want = want.item()
        got = fields[k].contents()
        if k == "t.f32" or k == "t.arr_np_f32" or k == "t.arr.f32":
            want = np.asarray(want, dtype=np.float32).tolist()
        assert got == want, k
    assert type_name(fields["t.np_u16"]) == "u16"
    assert type_name(fields["t.arr_np_i16"]) == "array[i16]"
    assert type_name(fields["t.i32"]) == "i32"
    assert type_name(fields["t.f32"]) == "f32"
    by_name = {t.name: t for t in r.tensors}
    assert list(by_name) == list(tensors)
    for name, t in tensors.items():
        rt = by_name[name]
        if isinstance(t, tuple):
            data, tname, shape = t
            assert rt.tensor_type.name == tname
            assert rt.shape.tolist() == list(reversed(shape))
            assert rt.data.tobytes() == data.tobytes()
        else:
            assert (
                rt.tensor_type.name
                == {
                    "float32": "F32",
                    "float16": "F16",
                    "float64": "F64",
                    "int8": "I8",
                    "int16": "I16",
                    "int32": "I32",
                    "int64": "I64",
                }[t.dtype.name]
            )
            np.testing.assert_array_equal(np.asarray(rt.data).reshape(t.shape), t)
    # and fastquant reads its own file the same way gguf-py does
    compare_with_ggufpy(p)


def test_writer_torch_tensors_and_alignment(tmp_path):
    import torch

    ts = {
        "bf": torch.randn(3, 4).to(torch.bfloat16),
        "f16": torch.randn(5).half(),
        "i64": torch.arange(6).reshape(2, 3),
        "nc": torch.randn(4, 6).t(),  # non-contiguous
        "scalar": torch.tensor(3.5),
    }
    p = tmp_path / "t.gguf"
    fg.write(p, ts, {"a": 1}, alignment=64)
    with fg.open(p) as f:
        assert f.alignment == 64 and f.metadata["general.alignment"] == 64
        assert f.value_type("general.alignment") == "u32"
        assert all(t.offset % 64 == 0 for t in f.tensors.values())
        assert f.tensors["bf"].ggml_type == "BF16"
        for name, t in ts.items():
            got = f.get_tensor(name)
            assert got.dtype == t.dtype and got.shape == t.shape, name
            assert torch.equal(got, t), name
        assert f.tensors["scalar"].shape == () and f.tensors["scalar"].ne == ()
    sd = fg.load_state_dict(p, dtype=torch.float32)
    assert set(sd) == set(ts) and all(v.dtype == torch.float32 for v in sd.values())
    assert torch.equal(sd["bf"], ts["bf"].float())


# ------------------------------------------------------------------------------------------------------
# Python API


@pytest.fixture
def sample(tmp_path):
    rng = np.random.default_rng(2)
    meta, tensors = fastquant_sample(rng)
    p = tmp_path / "s.gguf"
    fg.write(p, tensors, meta)
    return p, meta, tensors


def test_keys_are_tensor_names_as_in_safetensors(sample):
    p, meta, tensors = sample
    with fg.open(p) as f:
        assert f.keys() == list(f.tensors) == list(tensors)
        assert not set(f.keys()) & set(meta)
        for name in f.keys():  # the safetensors idiom
            assert f.raw(name).nbytes == f.tensors[name].nbytes


def test_keys_of_a_split_set_are_all_its_tensor_names(tmp_path):
    rng = np.random.default_rng(3)
    for i, names in enumerate([["a", "b"], ["c"]]):
        tensors = {n: rng.standard_normal((2, 32)).astype(np.float32) for n in names}
        meta = {"split.no": fg.Value(i, "u16"), "split.count": fg.Value(2, "u16")}
        fg.write(tmp_path / f"m-{i + 1:05d}-of-00002.gguf", tensors, meta)
    with fg.open(tmp_path / "m-00001-of-00002.gguf") as f:
        assert isinstance(f, fg.GGUFSplitFile)
        assert f.keys() == ["a", "b", "c"]
        assert "split.no" in f.metadata.keys()


def test_metadata_mapping_is_lazy_and_read_only(sample):
    p, meta, _ = sample
    with fg.open(p) as f:
        m = f.metadata
        assert len(m) == len(meta) and list(m) == list(meta) == list(f.metadata.keys())
        assert "t.u8" in m and "nope" not in m
        with pytest.raises(KeyError):
            m["nope"]
        with pytest.raises(TypeError):
            m["t.u8"] = 3
        assert not hasattr(m, "__setitem__")
        assert m._cache == {}  # nothing decoded yet
        assert m["t.u8"] == 200 and set(m._cache) == {"t.u8"}
        assert f.array_info("tokenizer.ggml.tokens") == ("str", 300)
        assert f.array_info("t.u8") is None
        assert f.array_item("tokenizer.ggml.tokens", 0) == "tok0"
        assert f.array_item("tokenizer.ggml.tokens", -1) == "tok299"
        assert "tokenizer.ggml.tokens" not in m._cache
        with pytest.raises(IndexError):
            f.array_item("tokenizer.ggml.tokens", 300)
        with pytest.raises(TypeError):
            f.array_item("t.u8", 0)
        np.testing.assert_array_equal(f.array("t.arr_np_i16"), np.arange(-3, 3, dtype=np.int16))
        assert f.array("t.arr_np_i16").dtype == np.int16
        assert f.array("tokenizer.ggml.tokens")[:2] == ["tok0", "tok1"]
        assert m.type_of("t.arr.u64") == "array[u64]"
        assert f.metadata["t.empty"] == []


def test_tensor_info_and_raw_zero_copy(sample):
    p, _, tensors = sample
    f = fg.open(p)
    info = f.tensors["q.Q4_K"]
    assert info.ggml_type == "Q4_K" and info.type_id == 12
    assert info.shape == (2, 512) and info.ne == (512, 2)
    assert info.nbytes == 2 * 2 * 144 and info.n_elements == 1024
    assert info.offset % 32 == 0 and info.offset >= f.data_offset
    raw = f.raw("q.Q4_K")
    assert not raw.flags.writeable and not raw.flags.owndata
    with pytest.raises(ValueError):
        raw[0] = 1
    assert raw.tobytes() == tensors["q.Q4_K"][0].tobytes()
    # the bytes are those in the file at info.offset
    with open(p, "rb") as fh:
        fh.seek(info.offset)
        assert fh.read(info.nbytes) == raw.tobytes()
    # views outlive close()
    f.close()
    assert f.closed
    with pytest.raises(ValueError, match="closed"):
        f.metadata
    with pytest.raises(ValueError, match="closed"):
        f.raw("q.Q4_K")
    assert raw.tobytes() == tensors["q.Q4_K"][0].tobytes()
    del f
    import gc

    gc.collect()
    assert raw[:4].tobytes() == tensors["q.Q4_K"][0].tobytes()[:4]
    with pytest.raises(KeyError):
        fg.open(p).raw("nope")


def test_get_tensor(sample):
    import torch

    p, _, tensors = sample
    with fg.open(p) as f:
        for name in (
            "plain.float32",
            "plain.float16",
            "plain.float64",
            "plain.int8",
            "plain.int16",
            "plain.int32",
            "plain.int64",
        ):
            t = f.get_tensor(name)
            np.testing.assert_array_equal(t.numpy(), tensors[name])
            t.add_(1) if t.is_floating_point() else t.add_(1)  # writable, a copy
        np.testing.assert_array_equal(f.get_tensor("plain.float32").numpy(), tensors["plain.float32"])
        t = f.get_tensor("plain.float16", dtype=torch.float32)
        assert t.dtype == torch.float32
        np.testing.assert_array_equal(t.numpy(), tensors["plain.float16"].astype(np.float32))
        bf = f.get_tensor("q.BF16")
        assert bf.dtype == torch.bfloat16 and bf.shape == (2, 2)
        assert bf.view(torch.int16).numpy().tobytes() == tensors["q.BF16"][0].tobytes()
        if torch.cuda.is_available():
            g = f.get_tensor("plain.float32", device="cuda")
            assert g.device.type == "cuda"
            np.testing.assert_array_equal(g.cpu().numpy(), tensors["plain.float32"])
        # Quantized tensors come back dequantized (bit-exact with fastquant.gguf.dequantize), in the
        # requested dtype directly.
        ref = fastquant.gguf.dequantize(f.raw("q.Q4_K"), "Q4_K", f.tensors["q.Q4_K"].shape)
        q32 = f.get_tensor("q.Q4_K")
        assert q32.dtype == torch.float32 and q32.shape == f.tensors["q.Q4_K"].shape
        assert q32.numpy().tobytes() == ref.tobytes()
        q16 = f.get_tensor("q.Q4_K", dtype=torch.bfloat16)
        assert q16.dtype == torch.bfloat16 and torch.equal(q16, q32.to(torch.bfloat16))


def test_unknown_type_id_listed_but_data_refused(tmp_path):
    b = B(3, 2, 0).ti("old", [32], 4, 0).ti("ok", [4], 0, 32).pad().zeros(48)
    with open_bytes(tmp_path, b.bytes()) as f:
        assert f.tensors["old"].ggml_type == "type#4" and f.tensors["old"].type_id == 4
        assert f.tensors["old"].nbytes is None
        with pytest.raises(GGUFError, match="type id 4"):
            f.raw("old")
        import torch  # noqa: F401

        with pytest.raises(GGUFError, match="type id 4"):
            f.get_tensor("old")
        assert f.raw("ok").nbytes == 16


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        fg.open(tmp_path / "missing.gguf")
    with pytest.raises(OSError):
        fg.open(tmp_path)
    with pytest.raises(GGUFError, match="0 bytes long"):
        open_bytes(tmp_path, b"")


def test_writer_rejects_bad_input(tmp_path):
    p = tmp_path / "w.gguf"
    cases = [
        ({}, {"": 1}),
        ({}, {"k": Value(70000, "u16")}),
        ({}, {"k": Value(-1, "u8")}),
        ({}, {"k": []}),
        ({}, {"k": [[1], [2]]}),
        ({}, {"k": [1, "a"]}),
        ({}, {"k": 2**64}),
        ({}, {"k": object()}),
        ({}, {"general.alignment": Value(12, "u32")}),
        ({}, {"general.alignment": 32}),  # an i32: ggml wants u32
        ({"x" * 64: np.zeros(2, np.float32)}, {}),
        ({"a": np.zeros((1, 1, 1, 1, 2), np.float32)}, {}),
        ({"a": np.zeros((0, 2), np.float32)}, {}),
        ({"a": np.zeros(2, np.uint16)}, {}),
        ({"a": np.zeros(2, np.complex64)}, {}),
        ({"a": (bytes(33), "Q8_0", (32,))}, {}),
        ({"a": (bytes(34), "Q8_0", (31,))}, {}),
        ({"a": (bytes(34), "Q9_9", (32,))}, {}),
    ]
    with pytest.raises(ValueError, match="unknown GGUF value type"):
        Value(1, "nope")
    for tensors, meta in cases:
        with pytest.raises((ValueError, TypeError)):
            fg.write(p, tensors, meta)
        assert not p.exists()
        assert not any(x.name.startswith("w.gguf.tmp") for x in tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------------
# malformed files: every one a GGUFError naming offset and field


def _nest(depth):
    b = B(3, 0, 1).s("n").u32(9)
    for _ in range(depth - 1):
        b.u32(9).u64(1)
    return b.u32(5).u64(1).u32(7)


NEGATIVE = {
    "empty": (b"", "0 bytes long"),
    "short magic": (b"GG", "2 bytes long"),
    "bad magic": (B(magic=b"GGML").bytes(), "bad magic"),
    "byte-reversed magic": (B(magic=b"FUGG").bytes(), "big-endian"),
    "version 0": (B(0).bytes(), "unsupported GGUF version 0"),
    "version 1": (B(1).bytes(), "version 1 is obsolete"),
    "version future": (B(4).bytes(), "unsupported GGUF version 4"),
    "version huge": (B(0xFFFFFFFF).bytes(), "unsupported GGUF version"),
    "big-endian v3": (b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + bytes(20), "big-endian"),
    "big-endian v2": (b"GGUF" + struct.pack(">IQQ", 2, 0, 0), "big-endian"),
    "truncated header": (B().bytes()[:20], "file ends inside"),
    "tensor count negative": (B(3, 2**64 - 1, 0).bytes(), "negative"),
    "kv count negative": (B(3, 0, 2**63).bytes(), "negative"),
    "tensor count huge": (B(3, 2**40, 0).bytes(), "tensor count 2^40"),
    "kv count huge": (B(3, 0, 2**40).zeros(100).bytes(), "metadata key/value count 2^40"),
    "counts together too big": (B(3, 1, 1).zeros(30).bytes(), "cannot fit"),
    "key length huge": (B(3, 0, 1).u64(2**40).zeros(12).bytes(), "key length 2^40 exceeds the 12 bytes left"),
    "string length huge": (
        B(3, 0, 1).s("general.name").u32(8).u64(2**40).zeros(12).bytes(),
        "metadata key #0 'general.name': string length 2^40 exceeds the 12 bytes left",
    ),
    "string length negative": (B(3, 0, 1).s("k").u32(8).u64(2**64 - 1).bytes(), "string length"),
    "empty key": (B(3, 0, 1).s("").u32(0).u8(1).bytes(), "key is empty"),
    "duplicate key": (B(3, 0, 2).kv_u32("a", 1).kv_u32("a", 2).bytes(), "duplicate key"),
    "key not utf-8": (B(3, 0, 1).s(b"\xff\xfe").u32(0).u8(1).bytes(), "not valid UTF-8"),
    "bad value type 13": (B(3, 0, 1).s("k").u32(13).u64(0).bytes(), "value type 13 is not"),
    "bad value type huge": (B(3, 0, 1).s("k").u32(0xFFFFFFFF).u64(0).bytes(), "is not a GGUF value type"),
    "bad array element type": (B(3, 0, 1).s("k").u32(9).u32(99).u64(0).bytes(), "array element type 99"),
    "array length 2^63 u8": (B(3, 0, 1).s("a").u32(9).u32(0).u64(2**63).bytes(), "array length 2^63"),
    "array length huge str": (B(3, 0, 1).s("a").u32(9).u32(8).u64(2**62).zeros(64).bytes(), "array length 2^62"),
    "array length negative": (B(3, 0, 1).s("a").u32(9).u32(4).u64(2**64 - 1).bytes(), "array length"),
    "array elements past end": (B(3, 0, 1).s("a").u32(9).u32(12).u64(3).zeros(20).bytes(), "array length 3"),
    "string element past end": (
        B(3, 0, 1).s("t").u32(9).u32(8).u64(2).s("a").u64(100).zeros(5).bytes(),
        "array element #1: string length 100",
    ),
    "arrays nested too deep": (_nest(_core.GGUF_MAX_ARRAY_DEPTH + 1).bytes(), "nested more than"),
    "arrays nested 100000 deep": (_nest(100000).bytes(), "nested more than"),
    "truncated scalar": (B(3, 0, 1).s("k").u32(10).u32(0).bytes(), "file ends inside a u64 value"),
    "alignment 0": (B(3, 0, 1).kv_u32("general.alignment", 0).bytes(), "must be a power of two"),
    "alignment 13": (B(3, 0, 1).kv_u32("general.alignment", 13).bytes(), "must be a power of two"),
    "alignment 2 MiB": (B(3, 0, 1).kv_u32("general.alignment", 2 << 20).bytes(), "must be a power of two"),
    "alignment i32": (B(3, 0, 1).s("general.alignment").u32(5).u32(32).bytes(), "must be a u32, found i32"),
    "alignment u64": (B(3, 0, 1).s("general.alignment").u32(10).u64(32).bytes(), "must be a u32, found u64"),
    "alignment string": (B(3, 0, 1).s("general.alignment").u32(8).s("32").bytes(), "must be a u32, found str"),
    "tensor name 64 bytes": (B(3, 1, 0).ti("n" * 64, [4], 0, 0).pad().zeros(16).bytes(), "name is 64 bytes"),
    "tensor name huge": (B(3, 1, 0).u64(2**60).zeros(40).bytes(), "name length 2^60"),
    "tensor name not utf-8": (B(3, 1, 0).ti(b"\xc3", [4], 0, 0).pad().zeros(16).bytes(), "not valid UTF-8"),
    "duplicate tensor name": (
        B(3, 2, 0).ti("w", [1], 0, 0).ti("w", [1], 0, 32).pad().zeros(64).bytes(),
        "duplicate tensor name",
    ),
    "n_dims 5": (B(3, 1, 0).ti("w", [1, 1, 1, 1, 1], 0, 0).pad().zeros(4).bytes(), "n_dims 5 exceeds"),
    "n_dims huge": (B(3, 1, 0).s("w").u32(2**32 - 1).zeros(64).bytes(), "n_dims 4294967295"),
    "zero dim": (B(3, 1, 0).ti("w", [4, 0], 0, 0).pad().zeros(16).bytes(), "ne[1] is 0"),
    "negative dim": (B(3, 1, 0).ti("w", [2**64 - 1], 0, 0).pad().zeros(16).bytes(), "negative"),
    "huge dim": (B(3, 1, 0).ti("w", [2**62], 0, 0).pad().zeros(16).bytes(), "overflows an int64"),
    "element count overflow": (
        B(3, 1, 0).ti("w", [2**32, 2**32], 0, 0).pad().zeros(16).bytes(),
        "element count overflows",
    ),
    "element count wraps to small": (
        B(3, 1, 0).ti("w", [4194305, 4194305, 211106198978564], 0, 0).pad().zeros(16).bytes(),
        "element count overflows",
    ),
    "byte size overflow": (B(3, 1, 0).ti("w", [2**31, 2**31], 0, 0).pad().zeros(16).bytes(), "byte size"),
    "byte size huge, in range": (B(3, 1, 0).ti("w", [2**20, 2**20], 0, 0).pad().zeros(16).bytes(), "outside"),
    "not whole blocks": (B(3, 1, 0).ti("w", [33], 8, 0).pad().zeros(64).bytes(), "not a multiple of the Q8_0"),
    "misaligned offset": (B(3, 1, 0).ti("w", [4], 0, 8).pad().zeros(64).bytes(), "not a multiple of the alignment"),
    "offset past end": (B(3, 1, 0).ti("w", [4], 0, 32).pad().zeros(16).bytes(), "outside"),
    "offset wraps": (B(3, 1, 0).ti("w", [4], 0, 2**64 - 32).pad().zeros(16).bytes(), "outside"),
    "data one byte short": (B(3, 1, 0).ti("w", [4], 0, 0).pad().zeros(15).bytes(), "outside"),
    "overlapping tensors": (
        B(3, 2, 0).ti("a", [16], 0, 0).ti("b", [16], 0, 32).pad().zeros(128).bytes(),
        "overlaps tensor #0 'a'",
    ),
    "same offset": (B(3, 2, 0).ti("a", [8], 0, 32).ti("b", [8], 0, 32).pad().zeros(96).bytes(), "overlaps"),
    "data section past end": (B(3, 1, 0).ti("w", [1], 1000, 0).bytes(), "data section would start"),
    "truncated tensor info": (B(3, 1, 0).s("w").u32(2).u64(4).zeros(4).bytes(), "file ends inside dims"),
}


@pytest.mark.parametrize("case", list(NEGATIVE))
def test_malformed_file_is_gguf_error(case, tmp_path):
    data, needle = NEGATIVE[case]
    assert_gguf_error(data, needle, tmp_path if data else None)


def test_error_message_names_offset_and_field():
    data = B(3, 0, 2).kv_u32("a", 1).s("general.name").u32(8).u64(2**40).zeros(12).bytes()
    msg = assert_gguf_error(data, "string length 2^40")
    off = 24 + (8 + 1 + 4 + 4) + (8 + 12 + 4)
    assert msg == (
        f"offset {off}: metadata key #1 'general.name': string length 2^40 exceeds the 12 bytes left in the file"
    )


def test_accepted_edge_cases(tmp_path):
    # alignment 1, nested arrays up to the limit, zero tensors (no padding), version 2, out-of-order offsets
    f = parse(B(3, 1, 1).kv_u32("general.alignment", 1).ti("x", [3], 24, 0).zeros(3).bytes())
    assert f.alignment == 1 and f.raw("x").tobytes() == bytes(3)
    f = parse(_nest(_core.GGUF_MAX_ARRAY_DEPTH).bytes())
    v = f.metadata["n"]
    for _ in range(_core.GGUF_MAX_ARRAY_DEPTH - 1):
        v = v[0]
    assert v == [7]
    data = B(2, 0, 1).s("general.name").u32(8).s("x").bytes()
    f = parse(data)
    assert f.version == 2 and f.data_offset == len(data) and len(f.tensors) == 0
    f = parse(B(3, 2, 0).ti("a", [8], 0, 32).ti("b", [8], 0, 0).pad().zeros(64).bytes())
    assert f.tensors["a"].offset == f.tensors["b"].offset + 32
    f = parse(B(3, 0, 1).s("b").u32(7).u8(2).bytes())  # ggml: any non-zero bool is true
    assert f.metadata["b"] is True


def test_truncation_at_every_byte(sample):
    p, _, _ = sample
    data = p.read_bytes()
    with fg.open(p) as f:
        needed = max(t.offset + t.nbytes for t in f.tensors.values())
    for cut in range(needed):
        with pytest.raises(GGUFError):
            parse(data[:cut])
    for cut in (needed, len(data)):
        parse(data[:cut])


def test_corrupted_bytes_never_crash(sample):
    """Every single-byte change of the header region: a clean parse or a GGUFError, never anything else."""
    p, _, _ = sample
    data = bytearray(p.read_bytes())
    with fg.open(p) as f:
        end = f.data_offset
    rng = np.random.default_rng(3)
    for i in range(end):
        for v in (0, 0xFF, int(rng.integers(256))):
            d = bytearray(data)
            d[i] = v
            try:
                f = parse(bytes(d))
            except GGUFError:
                continue
            for k in f.metadata:
                try:
                    f.metadata[k]
                except GGUFError:  # e.g. a string made invalid UTF-8
                    pass
            for n, t in f.tensors.items():
                try:
                    assert f.raw(n).nbytes == t.nbytes
                except GGUFError:
                    assert t.nbytes is None


def test_huge_array_file_rejected_fast():
    data = B(3, 0, 1).s("a").u32(9).u32(0).u64(2**63).bytes()
    assert len(data) == 49
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        with pytest.raises(GGUFError):
            _core._GGUFReader.from_bytes(data)
        best = min(best, time.perf_counter() - t)
    assert best < 1e-3, best


# ------------------------------------------------------------------------------------------------------
# import cost and the command line


def _run(*args, **kw):
    env = dict(os.environ, PYTHONPATH=PYDIR)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, **kw)


def test_import_does_not_pull_torch_or_numpy():
    r = _run(
        "-c",
        "import sys, fastquant, fastquant.gguf, fastquant.cli; print('torch' in sys.modules, 'numpy' in sys.modules)",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def test_cli_inspect_sample():
    r = _run("-m", "fastquant.cli", "inspect")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "architecture: llama" in out and "tensors: 7" in out
    assert re.search(r"Q8_0\s+2\s+3,264", out)
    assert "tokenizer.ggml.tokens" in out and "[32 × str] ['<unk>', '<s>', '</s>', ...]" in out
    r = _run("-m", "fastquant.cli", "inspect", "--json")
    doc = json.loads(r.stdout)
    assert doc["architecture"] == "llama" and doc["tensor_count"] == 7
    assert doc["types"]["Q8_0"] == {"count": 2, "bytes": 3264}
    assert doc["metadata"]["tokenizer.ggml.tokens"]["value"]["length"] == 32
    assert doc["metadata"]["llama.block_count"] == {"type": "u32", "value": 1}


def test_cli_inspect_long_array_and_bad_file(tmp_path):
    p = tmp_path / "vocab.gguf"
    fg.write(p, {}, {"general.architecture": "gemma", "tokenizer.ggml.tokens": ["<pad>", "<eos>"] + ["x"] * 262142})
    r = _run("-m", "fastquant.cli", "inspect", str(p))
    assert r.returncode == 0, r.stderr
    assert "[262144 × str] ['<pad>', '<eos>', 'x', ...]" in r.stdout
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(B(3, 0, 1).s("a").u32(9).u32(0).u64(2**63).bytes())
    r = _run("-m", "fastquant.cli", "inspect", str(bad))
    assert r.returncode == 2 and "array length 2^63" in r.stderr and "Traceback" not in r.stderr


def test_sample_file_is_current(tmp_path):
    """The shipped sample is valid, and gguf-py agrees with us about it."""
    from fastquant.cli import SAMPLE

    assert os.path.getsize(SAMPLE) < 64 * 1024
    compare_with_ggufpy(SAMPLE)
