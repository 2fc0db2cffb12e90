"""``fastquant.gguf.from_single_file``: a community GGUF diffusion checkpoint (city96's Flux, SD3.5, Wan, …
files, in the model's original key layout) as a ready diffusers model, quantized Linear weights kept packed.

The steps, each reusing diffusers' own single-file machinery (``diffusers.loaders.single_file_model`` and
``single_file_utils``):

1. The class is looked up in diffusers' ``SINGLE_FILE_LOADABLE_CLASSES``, which names its key converter.
2. The file becomes a state dict in which every quantized tensor is a :class:`PackedRows`: a stand-in that
   knows the tensor's logical shape and which rows of which file tensor it is, but holds no data. diffusers'
   converter runs on that dict unchanged. Converters rename keys and cut or join weights along their first
   dimension (fused ``qkv`` split into ``to_q/to_k/to_v``, Flux's single-block ``linear1`` split four ways,
   AdaLN ``shift, scale`` swapped to ``scale, shift``); on whole rows of ggml blocks these are exact, so the
   stand-in does them on row ranges. Any other operation (arithmetic, a reshape across rows, a column slice)
   dequantizes that tensor (exactly, to float32) and continues on the float tensor; the load report lists it.
3. The model is built from the diffusers config with its parameters on the meta device (accelerate's
   ``init_empty_weights``; buffers are computed normally), each converted weight of an ``nn.Linear`` becomes
   a :class:`~fastquant.gguf.GGUFLinear` holding the file's blocks (read once, straight into the layer's
   buffer), every other tensor is set in ``torch_dtype``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from typing import Dict, List, NamedTuple, Optional

import numpy as np
import torch
from torch import nn

from ._layers import _PLAIN, _GGUFPacked, _info
from ._model import _listed, _packed_for, _set_module, _set_tensor, _split, _subclass_problem

__all__ = ["PackedRows", "SingleFileInfo", "from_single_file", "gguf_checkpoint"]


class SingleFileInfo(NamedTuple):
    """What :func:`from_single_file` did. ``packed``: module names now holding :class:`GGUFLinear` layers;
    ``dequantized``: converted names of quantized tensors that went in as float (not the weight of an
    ``nn.Linear``: convolutions, norms, …, or cut by an operation that is not exact on blocks); ``arithmetic``:
    ``"file tensor: operation"`` for each tensor a converter did real arithmetic on; ``unexpected``: converted
    names the model has no tensor for (ignored, as diffusers does)."""

    packed: List[str]
    dequantized: List[str]
    arithmetic: List[str]
    unexpected: List[str]


# ---------------------------------------------------------------------------------------------------------
# the stand-in for a quantized tensor
# ---------------------------------------------------------------------------------------------------------


class PackedRows:
    """Rows of quantized GGUF tensors standing in for a float tensor of logical shape ``shape``.

    ``segments``: ``(file tensor name, first ggml row, end ggml row)`` in order; a ggml row is
    ``shape[-1]`` values (one run of whole blocks). Cutting and joining along dimension 0 (``chunk``,
    ``split``, ``narrow``, slicing, ``torch.cat``) makes new stand-ins on row ranges; anything else first
    dequantizes (:meth:`dequantize`) and is logged in ``log``."""

    __slots__ = ("_src", "segments", "ggml_type", "shape", "_log")

    def __init__(self, src, segments, ggml_type: str, shape, log: list):
        self._src = src
        self.segments = list(segments)
        self.ggml_type = ggml_type
        self.shape = torch.Size(shape)
        self._log = log

    # -- metadata ----------------------------------------------------------------------------------------
    dtype = torch.float32  # what the values are (dequantized)
    device = torch.device("cpu")
    is_quantized = True
    requires_grad = False

    def is_floating_point(self) -> bool:
        return True

    def __copy__(self):
        return PackedRows(self._src, self.segments, self.ggml_type, self.shape, self._log)

    def __deepcopy__(self, memo):
        return self.__copy__()  # the rows are read-only file data: a copy can share the source

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def size(self, d=None):
        return self.shape if d is None else self.shape[d]

    def numel(self) -> int:
        return self.shape.numel()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self):
        return f"PackedRows({self.ggml_type}, shape={tuple(self.shape)}, segments={self.segments})"

    @property
    def _slab(self) -> int:
        """ggml rows per index of dimension 0."""
        n = 1
        for d in self.shape[1:-1]:
            n *= d
        return n

    # -- exact row operations ---------------------------------------------------------------------------
    def _rows(self, start: int, stop: int) -> "PackedRows":
        """Indices ``start:stop`` of dimension 0."""
        a, b = start * self._slab, stop * self._slab
        out, pos = [], 0
        for name, s, e in self.segments:
            n = e - s
            lo, hi = max(a, pos), min(b, pos + n)
            if lo < hi:
                out.append((name, s + lo - pos, s + hi - pos))
            pos += n
        return PackedRows(self._src, out, self.ggml_type, (stop - start, *self.shape[1:]), self._log)

    def narrow(self, dim, start, length):
        if dim not in (0, -self.ndim):
            return self._fallback("narrow").narrow(dim, start, length)
        return self._rows(start, start + length)

    def split(self, split_size, dim=0):
        if dim not in (0, -self.ndim):
            return self._fallback("split").split(split_size, dim)
        n = self.shape[0]
        if isinstance(split_size, int):
            sizes = [min(split_size, n - i) for i in range(0, n, split_size)]
        else:
            sizes = [int(s) for s in split_size]
            if sum(sizes) != n:
                raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n}, got {sizes}")
        out, pos = [], 0
        for s in sizes:
            out.append(self._rows(pos, pos + s))
            pos += s
        return tuple(out)

    def chunk(self, chunks, dim=0):
        if dim not in (0, -self.ndim):
            return self._fallback("chunk").chunk(chunks, dim)
        n = self.shape[0]
        step = -(-n // chunks)
        return self.split(step, 0)

    def __getitem__(self, idx):
        first, rest = (idx[0], idx[1:]) if isinstance(idx, tuple) else (idx, ())
        if isinstance(first, slice) and all(isinstance(r, slice) and r == slice(None) for r in rest):
            start, stop, step = first.indices(self.shape[0])
            if step == 1:
                return self._rows(start, max(start, stop))
        return self._fallback("indexing")[idx]

    def clone(self, *a, **k):
        return self

    def contiguous(self, *a, **k):
        return self

    def detach(self):
        return self

    def to(self, *args, **kwargs):
        dt = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
        dev = kwargs.get("device") or next((a for a in args if isinstance(a, (str, torch.device))), None)
        if dt is None and (dev is None or torch.device(dev).type == "cpu"):
            return self
        return self._fallback("to").to(*args, **kwargs)

    @classmethod
    def cat(cls, parts, dim=0):
        """``torch.cat`` of stand-ins of one ggml type along dimension 0: their row ranges, joined."""
        first = parts[0]
        if (
            dim in (0, -first.ndim)
            and all(isinstance(p, PackedRows) for p in parts)
            and all(p.ggml_type == first.ggml_type and p.shape[1:] == first.shape[1:] for p in parts)
        ):
            segs: list = []
            for p in parts:
                for seg in p.segments:
                    if segs and segs[-1][0] == seg[0] and segs[-1][2] == seg[1]:
                        segs[-1] = (seg[0], segs[-1][1], seg[2])
                    else:
                        segs.append(seg)
            rows = sum(p.shape[0] for p in parts)
            return PackedRows(first._src, segs, first.ggml_type, (rows, *first.shape[1:]), first._log)
        return torch.cat([_materialized(p, "cat") for p in parts], dim)

    # -- everything else: dequantize ---------------------------------------------------------------------
    def _fallback(self, op: str) -> torch.Tensor:
        self._log.append(f"{self.segments[0][0] if self.segments else '?'}: {op}")
        return self.dequantize()

    def dequantize(self) -> torch.Tensor:
        """The exact float32 values."""
        from ._dequant import dequantize

        raw = self.packed().numpy().reshape(-1)
        out = torch.empty(self.shape, dtype=torch.float32)
        dequantize(raw, self.ggml_type, tuple(self.shape), out=out)
        return out

    def packed(self) -> torch.Tensor:
        """The blocks, ``uint8`` of shape (ggml rows, bytes per row), read from the file into a new tensor."""
        return self._src.read_rows(self.segments, self.ggml_type, self.shape[-1])

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.cat, torch.concat, torch.concatenate):
            parts = list(args[0]) if args else list(kwargs.pop("tensors"))
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            return cls.cat(parts, dim)
        name = getattr(func, "__name__", "")
        if name in ("chunk", "split", "narrow") and args and isinstance(args[0], PackedRows):
            return getattr(args[0], name)(*args[1:], **kwargs)
        return func(*_materialize_all(args, name), **_materialize_all(kwargs, name))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._fallback(name), name)


def _materialized(x, op):
    return x._fallback(op) if isinstance(x, PackedRows) else x


def _materialize_all(x, op):
    if isinstance(x, PackedRows):
        return x._fallback(op)
    if isinstance(x, (list, tuple)):
        return type(x)(_materialize_all(v, op) for v in x)
    if isinstance(x, dict):
        return {k: _materialize_all(v, op) for k, v in x.items()}
    return x


def _binary(op):
    def f(self, *other):
        return getattr(self._fallback(op), op)(*other)

    f.__name__ = op
    return f


for _op in (
    "__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ __matmul__ __rmatmul__ "
    "__neg__ __abs__ __pow__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __float__ __array__"
).split():
    setattr(PackedRows, _op, _binary(_op))
PackedRows.__hash__ = object.__hash__


# ---------------------------------------------------------------------------------------------------------
# the file as a state dict
# ---------------------------------------------------------------------------------------------------------


class _Source:
    """Reads rows of the file's tensors with ``readinto`` (not through the memory map, so the file's pages do
    not count in the process's resident memory next to the copy)."""

    def __init__(self, f):
        self.f = f
        self.handles: Dict[str, object] = {}

    def _handle(self, name):
        path = self.f._shard_of(name).path if hasattr(self.f, "_shard_of") else self.f.path
        fh = self.handles.get(path)
        if fh is None:
            fh = self.handles[path] = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        return path, fh

    def _read(self, name, start_byte, out: np.ndarray) -> None:
        from .._core import GGUFError

        info = self.f.tensors[name]
        path, fh = self._handle(name)
        fh.seek(info.offset + start_byte)
        got = fh.readinto(memoryview(out))
        if got != out.nbytes:
            raise GGUFError(f"{path}: tensor {name!r}: read {got} of {out.nbytes} bytes at {info.offset + start_byte}")

    def read_rows(self, segments, ggml_type, cols) -> torch.Tensor:
        _, _, be, bb = _info(ggml_type)
        rb = cols // be * bb
        rows = sum(e - s for _, s, e in segments)
        buf = torch.empty((rows, rb), dtype=torch.uint8)
        view = buf.numpy()
        pos = 0
        for name, s, e in segments:
            if e > s:
                self._read(name, s * rb, view[pos : pos + e - s])
            pos += e - s
        return buf

    def read_plain(self, name) -> torch.Tensor:
        info = self.f.tensors[name]
        dt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}.get(info.ggml_type)
        if dt is None:
            return self.f.get_tensor(name)
        buf = torch.empty(info.nbytes, dtype=torch.uint8)
        if info.nbytes:
            self._read(name, 0, buf.numpy())
        return buf.view(dt).reshape(info.shape)

    def close(self):
        for fh in self.handles.values():
            fh.close()
        self.handles.clear()


def _orig_shape(f, name, shape) -> tuple:
    """ComfyUI-GGUF's converter stores some tensors reshaped (more than 4 dimensions, or rows cut to 256 values
    so that they quantize), with the real shape in ``comfy.gguf.orig_shape.<name>``: that shape (it must have
    the tensor's element count)."""
    from .._core import GGUFError

    key = f"comfy.gguf.orig_shape.{name}"
    if key not in f.metadata:
        return tuple(shape)
    v = f.metadata[key]
    orig = tuple(int(d) for d in (v if isinstance(v, (list, tuple)) else [v]))
    if int(np.prod(orig)) != int(np.prod(shape)):
        raise GGUFError(f"{f.path}: {key} = {list(orig)} does not have the {int(np.prod(shape))} elements of {name!r}")
    return orig


def gguf_checkpoint(f, src, log) -> dict:
    """The open GGUF file ``f`` as ``{name: tensor or PackedRows}``, in file order: plain float tensors read,
    quantized ones as stand-ins (nothing read). A quantized tensor stored reshaped whose real rows are not
    the stored rows (see :func:`_orig_shape`) is dequantized and reshaped (logged)."""
    from .._core import GGUFError

    out = {}
    for name, info in f.tensors.items():
        if info.ggml_type.startswith("type#"):
            raise GGUFError(f"{f.path}: tensor {name!r}: ggml type id {info.type_id} is not one ggml defines")
        shape = _orig_shape(f, name, info.shape)
        if info.ggml_type in _PLAIN:
            t = src.read_plain(name)
            out[name] = t.reshape(shape) if tuple(t.shape) != shape else t
            continue
        _info(info.ggml_type)  # raises for types without a dequantizer
        stored = tuple(info.shape)
        rows = int(np.prod(stored[:-1])) if len(stored) > 1 else 1
        p = PackedRows(src, [(name, 0, rows)], info.ggml_type, stored, log)
        if shape == stored or (shape and shape[-1] == stored[-1]):
            p.shape = torch.Size(shape)
            out[name] = p
        else:
            out[name] = p._fallback(f"stored as {list(stored)}, real shape {list(shape)}").reshape(shape)
    return out


# ---------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------


def _diffusers():
    try:
        from diffusers.loaders import single_file_model as sfm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("fastquant.gguf.from_single_file needs diffusers (pip install diffusers)") from e
    return sfm


def _resolve_config(cls, config, mapping: dict, checkpoint, subfolder):
    sub_default = mapping.get("default_subfolder")
    if isinstance(config, Mapping):
        return dict(config)
    if config is None:
        from diffusers.loaders.single_file_utils import fetch_diffusers_config, infer_diffusers_model_type

        kind = infer_diffusers_model_type(checkpoint)
        if kind == "v1" and cls.__name__ != "UNet2DConditionModel":
            # diffusers' detection falls back to SD 1.5's UNet when no key pattern matches
            raise ValueError(
                f"{cls.__name__}: diffusers does not recognise this checkpoint's keys (its detection falls back to "
                "'v1', Stable Diffusion 1.5's UNet); pass config= a diffusers config folder (with config.json) or a "
                "config dict"
            )
        try:
            found = fetch_diffusers_config(checkpoint)
        except KeyError:
            found = None
        if not found:
            raise ValueError(
                f"{cls.__name__}: diffusers cannot tell which model this file is (detected {kind!r}); pass config= "
                "a diffusers config folder (with config.json) or a config dict"
            )
        repo = found["pretrained_model_name_or_path"]
        sub = subfolder or sub_default or found.get("subfolder")
        try:
            return cls.load_config(repo, subfolder=sub)
        except Exception as e:
            raise OSError(
                f"{cls.__name__}: the file looks like diffusers' {kind!r}, whose config is {repo!r} "
                f"(subfolder {sub!r}), and that config could not be loaded ({type(e).__name__}: {e}); pass config= "
                "a local diffusers config folder (with config.json) or a config dict"
            ) from e
    path = os.fspath(config)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            try:
                return json.load(fh)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not a JSON config: {e}") from e
    if os.path.isdir(path):
        sub = subfolder
        if sub is None and not os.path.isfile(os.path.join(path, "config.json")):
            if sub_default and os.path.isfile(os.path.join(path, sub_default, "config.json")):
                sub = sub_default
            else:
                raise OSError(f"{path}: no config.json (nor {sub_default or 'transformer'}/config.json) in the folder")
        return cls.load_config(path, subfolder=sub)
    return cls.load_config(path, subfolder=subfolder or sub_default)


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------


def _keep_fp32(cls, dtype) -> List[str]:
    """The class's ``_keep_in_fp32_modules``, which diffusers' GGUF loading keeps in float32 whatever the
    dtype (its GGUF quantizer sets ``use_keep_in_fp32_modules``)."""
    keep = getattr(cls, "_keep_in_fp32_modules", None)
    if not keep or dtype == torch.float32:
        return []
    return list(keep) if isinstance(keep, (list, tuple)) else [keep]


def _fill(model, converted: dict, dtype, skip, keep_fp32) -> SingleFileInfo:
    from ..quantizers._utils import matches_skip

    expected = {k for k in model.state_dict(keep_vars=True) if not k.endswith("_extra_state")}
    modules = dict(model.named_modules())
    packed, dequantized, unexpected = [], [], []
    for key, val in converted.items():
        if key not in expected:
            unexpected.append(key)
            continue
        owner, leaf = _split(key)
        mod = modules.get(owner)
        dt = torch.float32 if keep_fp32 and any(m in key.split(".") for m in keep_fp32) else dtype
        if isinstance(val, PackedRows):
            if (
                leaf == "weight"
                and isinstance(mod, nn.Linear)
                and not isinstance(mod, _GGUFPacked)
                and tuple(val.shape) == (mod.out_features, mod.in_features)
                and _subclass_problem(mod) is None
                and not (skip and matches_skip(owner, skip))
            ):
                new = _packed_for(mod, val.ggml_type)
                new.set_packed(val.packed(), copy=False)
                new.bias = mod.bias  # still meta when the bias comes later; loaded from its own key
                _set_module(model, owner, new)
                modules[owner] = new
                packed.append(owner)
                continue
            val = val.dequantize()
            dequantized.append(key)
        elif not isinstance(val, torch.Tensor):
            raise TypeError(f"{key}: the converter gave a {type(val).__name__}, not a tensor")
        _set_tensor(model, modules, key, val, dt, source="the converted checkpoint")
    return SingleFileInfo(packed, dequantized, [], unexpected)


def _check_complete(model, path) -> None:
    left = [n for n, p in model.named_parameters(remove_duplicate=False) if p.device.type == "meta"]
    left += [n for n, b in model.named_buffers(remove_duplicate=False) if b.device.type == "meta"]
    if left:
        raise ValueError(
            f"{path}: after diffusers' key conversion the file does not provide {len(left)} tensor(s) the model "
            f"needs: {_listed(left)} (is the config the one of this checkpoint?)"
        )


def from_single_file(
    cls,
    path,
    *,
    config=None,
    torch_dtype: Optional[torch.dtype] = None,
    subfolder: Optional[str] = None,
    modules_to_not_convert=None,
    output_loading_info: bool = False,
):
    """A single-file GGUF diffusion checkpoint (or split set) as the diffusers model ``cls``.

    ``cls``: a diffusers model class that diffusers' ``from_single_file`` covers (``FluxTransformer2DModel``,
    ``SD3Transformer2DModel``, ``WanTransformer3DModel``, ``HiDreamImageTransformer2DModel``,
    ``LTXVideoTransformer3DModel``, ``ChromaTransformer2DModel``, …); the file's keys go through the converter
    diffusers uses for that class. ``config``: a diffusers config folder (``config.json``, or a
    ``transformer/config.json`` below it), a ``config.json`` path, a config dict, or a Hub repo id; without it
    the config is the one diffusers infers from the checkpoint's keys (fetched from the Hub or its cache).
    ``torch_dtype``: dtype of every float tensor (default float32) except those of the class's
    ``_keep_in_fp32_modules``, kept in float32 as diffusers' GGUF loading does; packed layers compute in the
    activation dtype. ``modules_to_not_convert``: module names whose quantized weights are dequantized into plain
    ``nn.Linear`` layers. ``output_loading_info=True`` returns ``(model, SingleFileInfo)``.

    The quantized weight of every ``nn.Linear`` stays packed (:class:`~fastquant.gguf.GGUFLinear`), cut on
    whole ggml rows where the converter splits fused weights; other quantized tensors are dequantized exactly.
    The model is in ``eval()`` mode, its parameters do not require gradients.
    """
    sfm = _diffusers()
    if not isinstance(cls, type):
        raise TypeError(f"from_single_file(cls, path): cls must be a diffusers model class, got {type(cls).__name__}")
    mapping_name = sfm._get_single_file_loadable_mapping_class(cls)
    if mapping_name is None:
        raise ValueError(
            f"{cls.__name__} has no single-file key converter in diffusers; covered classes: "
            f"{', '.join(sfm.SINGLE_FILE_LOADABLE_CLASSES)}"
        )
    mapping = sfm.SINGLE_FILE_LOADABLE_CLASSES[mapping_name]
    dtype = torch_dtype or torch.float32
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"torch_dtype must be a floating torch.dtype, got {torch_dtype!r}")
    skip = list(modules_to_not_convert or [])
    from accelerate import init_empty_weights

    from ._split import open_gguf

    log: list = []
    with open_gguf(path) as f:
        src = _Source(f)
        try:
            checkpoint = gguf_checkpoint(f, src, log)
            if not checkpoint:
                raise ValueError(f"{f.path}: the file holds no tensors")
            cfg = _resolve_config(cls, config, mapping, checkpoint, subfolder)
            with init_empty_weights():
                model = cls.from_config(cfg)
            convert = mapping["checkpoint_mapping_fn"]
            if sfm._should_convert_state_dict_to_diffusers(model.state_dict(), checkpoint):
                converted = convert(config=cfg, checkpoint=checkpoint)
            else:
                converted = checkpoint
            if not converted:
                raise ValueError(f"{f.path}: diffusers' {mapping_name} converter found no weights for the model")
            with torch.no_grad():
                try:
                    info = _fill(model, converted, dtype, skip, _keep_fp32(cls, dtype))
                except ValueError as e:
                    raise ValueError(f"{f.path}: {e}") from e
        finally:
            src.close()
    _check_complete(model, path)
    ignore = getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []
    if ignore:
        import re

        info = info._replace(unexpected=[k for k in info.unexpected if not any(re.search(p, k) for p in ignore)])
    info = info._replace(arithmetic=list(dict.fromkeys(log)))
    if info.arithmetic:
        warnings.warn(
            f"{path}: {len(info.arithmetic)} quantized tensor(s) needed operations that are not exact on packed rows "
            f"and were dequantized (exactly) for them: {_listed(info.arithmetic)}",
            stacklevel=2,
        )
    model.eval()
    return (model, info) if output_loading_info else model
