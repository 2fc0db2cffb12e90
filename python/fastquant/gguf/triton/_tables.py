"""Lookup tables the kernels read (i-quant grids and sign patterns, IQ4_NL and E2M1 code values), on the
kernel's device.

The lattice grids are not repeated here: they are read back from the Rust dequantizer (the reference the
kernels must match), by decoding blocks built so that every grid index appears once with a scale of 1.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

KVALUES_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
# E2M1 values doubled (the MXFP4 scale is halved to match), as ggml stores them
KVALUES_FP4 = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


def _rust_dequant(blocks: np.ndarray, name: str) -> np.ndarray:
    from .._dequant import dequantize

    return dequantize(np.ascontiguousarray(blocks).reshape(-1), name)


@functools.lru_cache(maxsize=None)
def _host_tables():
    one = np.frombuffer(np.float16(1.0).tobytes(), np.uint8)
    # IQ2_XXS: 66-byte blocks = f16 d + 8 groups of (4 grid indices, u32 of signs/scale). With d = 1, scale
    # nibble 0 and sign index 0 every value is 0.125 * grid byte.
    idx = np.arange(256, dtype=np.uint8).reshape(8, 8, 4)  # (block, group, index)
    b = np.zeros((8, 66), np.uint8)
    b[:, 0:2] = one
    grp = np.zeros((8, 8, 8), np.uint8)
    grp[:, :, 0:4] = idx
    b[:, 2:] = grp.reshape(8, 64)
    iq2xxs = (_rust_dequant(b, "IQ2_XXS") * 8.0).round().astype(np.uint8)  # 256 entries x 8 bytes, in order
    # IQ3_S: 110-byte blocks = d, qs[64], qh[8], signs[32], scales[4]; scale nibble 0 gives db = d = 1.
    b = np.zeros((8, 110), np.uint8)
    b[:, 0:2] = one
    all_idx = np.arange(512).reshape(8, 8, 8)  # (block, group ib, i)
    b[:, 2:66] = (all_idx & 255).astype(np.uint8).reshape(8, 64)
    b[:, 66:74] = np.bitwise_or.reduce((all_idx >> 8) << np.arange(8), axis=2).astype(np.uint8)
    iq3s = _rust_dequant(b, "IQ3_S").round().astype(np.uint8)  # 512 entries x 4 bytes, in order
    # ggml's sign table: the 7 stored sign bits plus an 8th that makes the count of set bits even.
    i = np.arange(128)
    parity = np.array([bin(v).count("1") & 1 for v in i])
    ksigns = (i | (parity << 7)).astype(np.uint8)
    return {
        "iq2xxs_grid": iq2xxs,
        "iq3s_grid": iq3s,
        "ksigns": ksigns,
        "iq4nl": np.array(KVALUES_IQ4NL, np.float32),
        "fp4": np.array(KVALUES_FP4, np.float32),
    }


_DEVICE_CACHE: dict = {}


def table(name: str, device: torch.device) -> torch.Tensor:
    """The table ``name`` as a tensor on ``device`` (made once per device)."""
    key = (name, str(device))
    t = _DEVICE_CACHE.get(key)
    if t is None:
        t = _DEVICE_CACHE[key] = torch.from_numpy(_host_tables()[name].copy()).to(device)
    return t
