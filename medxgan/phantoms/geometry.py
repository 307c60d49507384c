"""Geometry helpers shared by the phantom renderers: pixel grids, poses, smooth noise, soft shapes.

Coordinates are size-independent: pixel centres of a ``size`` x ``size`` image map to ``u, v``
in [-1, 1] (``u`` rightwards, ``v`` downwards; :func:`_grid`). Each subject has a random pose
(:class:`_Frame`, a similarity transform) between image coordinates ``(u, v)`` and its anatomy
frame ``(a, b)``, in which anatomy and lesions are defined. :class:`_Scene` is what an anatomy
renderer (:mod:`.chest`, :mod:`.brain`) hands to lesion placement (:mod:`.lesions`) and to the
final exposure / noise step (:func:`medxgan.phantoms.rendering._finish`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass
class _Grid:
    """Pixel-centre coordinates of a size x size image in [-1, 1]: ``c`` is (size,)."""

    size: int
    c: np.ndarray


@dataclass
class _Frame:
    """Similarity transform from image coords (u, v) to the subject's anatomy frame."""

    du: float
    dv: float
    angle: float
    scale: float

    def to_anatomy(self, u, v):
        ca, sa = float(np.cos(self.angle)), float(np.sin(self.angle))
        return (((u - self.du) * ca + (v - self.dv) * sa) / self.scale,
                (-(u - self.du) * sa + (v - self.dv) * ca) / self.scale)

    def to_image(self, a, b):
        ca, sa = float(np.cos(self.angle)), float(np.sin(self.angle))
        return (self.du + self.scale * (a * ca - b * sa), self.dv + self.scale * (a * sa + b * ca))


@dataclass
class _Scene:
    """A rendered lesion-free subject before exposure/noise, plus what lesion placement needs."""

    base: np.ndarray          # (H, W) float intensity, roughly [0, 1]
    region: np.ndarray        # (H, W) bool, allowed lesion region at pixel centres
    inside: object            # (a, b) anatomy-frame arrays -> bool, same region analytically
    bounds: tuple             # (a_min, a_max, b_min, b_max) of the region, anatomy frame
    frame: _Frame
    tex: np.ndarray           # (H, W) unit-variance smooth texture for lesions
    lo: float
    span: float
    gamma: float
    bias: np.ndarray | float
    sigma: float
    tag_level: float


@functools.lru_cache(maxsize=16)
def _grid(size: int) -> _Grid:
    c = ((np.arange(size) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    c.setflags(write=False)
    return _Grid(size, c)


@functools.lru_cache(maxsize=64)
def _smoother(size: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian interpolation matrix (size, g) from a g-point lattice on [-1, 1] to pixel
    centres, and the per-pixel normaliser making W @ Z @ W.T unit variance for Z ~ N(0, 1)."""
    nodes = np.linspace(-1.0, 1.0, g)
    width = 0.9 * 2.0 / (g - 1)
    c = _grid(size).c
    w = np.exp(-0.5 * ((c[:, None] - nodes[None, :]) / width) ** 2)  # (size, g)
    w /= w.sum(1, keepdims=True)
    norm = np.sqrt((w ** 2).sum(1))  # (size,)
    return w.astype(np.float32), norm.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, g: int) -> np.ndarray:
    """(size, size) smooth Gaussian field, unit variance per pixel, feature size ~ 2/g
    (independent of ``size``: the same draws give the same field at any resolution)."""
    z = rng.standard_normal((g, g), dtype=np.float32)
    w, norm = _smoother(size, g)
    return (w @ z @ w.T) / (norm[:, None] * norm[None, :])


def _soft(f: np.ndarray, eps: float) -> np.ndarray:
    """Soft indicator of ``f < 1`` with an edge of width ~eps (in units of f)."""
    return 0.5 * (1.0 + np.tanh((1.0 - f) / eps))


def _ellipse(a, b, ca, cb, ra, rb, rot=0.0):
    """Squared normalised radius of points (a, b) for an ellipse centred (ca, cb), radii
    (ra, rb), rotated by ``rot`` radians; < 1 inside."""
    da, db = a - ca, b - cb
    if rot:
        cr, sr = float(np.cos(rot)), float(np.sin(rot))
        da, db = da * cr + db * sr, -da * sr + db * cr
    return (da / ra) ** 2 + (db / rb) ** 2


def _frame(rng: np.random.Generator, size: int,
           spread: float) -> tuple[_Frame, np.ndarray, np.ndarray]:
    """A random pose and the anatomy-frame coordinates (a, b) of every pixel, (H, W) each."""
    fr = _Frame(du=rng.uniform(-0.03, 0.03), dv=rng.uniform(-0.03, 0.03),
                angle=rng.normal(0.0, 0.035), scale=rng.uniform(1.0 - spread, 1.0 + spread / 3))
    c = _grid(size).c
    a, b = fr.to_anatomy(c[None, :], c[:, None])  # (H, W) each
    return fr, a, b

