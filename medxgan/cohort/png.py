"""PNG encoding of greyscale pixels (8 or 16 bit) for the cohort's ``pixels`` column."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a (H, W) ``uint8`` or ``uint16`` array (greyscale, lossless)."""
    if arr.ndim != 2:
        raise ValueError(f"expected a (H, W) greyscale array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        img = Image.fromarray(arr)
    elif arr.dtype == np.uint16:
        img = Image.fromarray(arr.astype("<u2"))
    else:
        raise ValueError(f"expected uint8 or uint16 pixels, got {arr.dtype}")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """The (H, W) array of a greyscale PNG: ``uint8`` or ``uint16``."""
    img = Image.open(io.BytesIO(data))
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I"):
        return np.asarray(img).astype(np.uint16)
    raise ValueError(f"not a greyscale PNG (mode {img.mode})")


def to_unit(arr: np.ndarray) -> np.ndarray:
    """Float32 intensities in [0, 1]: ``value / (2**bits - 1)`` for uint8 / uint16 arrays."""
    scale = 255.0 if arr.dtype == np.uint8 else 65535.0
    return arr.astype(np.float32) / scale


def from_unit(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """Quantise float intensities in [0, 1] to ``uint8`` (bits=8) or ``uint16`` (bits=16)."""
    if bits not in (8, 16):
        raise ValueError("bits must be 8 or 16")
    top = 255 if bits == 8 else 65535
    q = np.rint(np.clip(x, 0.0, 1.0) * top)
    return q.astype(np.uint8 if bits == 8 else np.uint16)
