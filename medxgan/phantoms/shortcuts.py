"""Shortcuts planted in phantom cohorts: what a classifier can learn instead of the findings.

Each kind is something real cohorts carry that correlates with the label without being the
finding (a marker, a support device, a second scanner); the shortcut panel
(``python -m bench.shortcuts``) trains classifiers on cohorts that carry one and checks that the
audit finds it. Kinds (:data:`SHORTCUT_KINDS`):

* ``tag``: a bright square (about 6 % of the side) in the top-right corner (:func:`tag_box`; the
  demo's shortcut, unchanged);
* ``band``: a bright band along the whole top edge, ``0.06 * side`` tall (wider than any patch
  of a local search);
* ``marker``: the tag's square in one of the four corners, drawn per image;
* ``text``: two or three bright 3 x 5 glyphs (``L``, ``R``, ``A``, ``P``, scaled with the side)
  at the bottom-left corner, a laterality / view label;
* ``line``: a thin radio-opaque tube (1 px per 64 px, + 0.35 intensity) from the top edge into
  the chest along a random quadratic curve, as a support device;
* ``noise``: a second scanner: extra Gaussian noise (sigma 0.05) and + 0.04 brightness over the
  whole image;
* ``exposure``: another exposure / processing: contrast 0.8 and lifted blacks (+ 0.1) over
  the whole image;
* ``border``: a bright collimation frame ``0.08 * side`` wide on all four sides.

The renderer (:func:`medxgan.phantoms.rendering._render`) draws the kind's random parameters
once per image from the image's own ``tag`` stream (:func:`plan`) and applies them in the final
exposure / noise step (:func:`apply`), so an image and its healthy twin carry the same shortcut
pixel for pixel. Local kinds are drawn after the noise (crisp), ``line`` before it (a tube under
the same noise), ``noise`` and ``exposure`` act on the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medxgan.catalogue import PHANTOM_SHORTCUTS

SHORTCUT_KINDS: tuple[str, ...] = PHANTOM_SHORTCUTS
IMAGE_WIDE_KINDS: tuple[str, ...] = ("noise", "exposure")
"""Kinds without a place: no region to find, only an image-wide property."""

_TAG_SIDE, _TAG_MARGIN = 0.06, 0.03  # fractions of the image side
_GLYPHS = {  # 3 x 5 bitmaps, rows top to bottom
    "L": ("100", "100", "100", "100", "111"),
    "R": ("110", "101", "110", "101", "101"),
    "A": ("010", "101", "111", "101", "101"),
    "P": ("110", "101", "110", "100", "100"),
}


@dataclass
class Mark:
    """One image's shortcut, drawn once (:func:`plan`) and applied to every rendering of the
    subject (:func:`apply`)."""

    kind: str
    params: dict = field(default_factory=dict)


def tag_box(size: int) -> tuple[int, int, int, int]:
    """The shortcut tag's region ``(x0, y0, x1, y1)`` in pixel-edge coordinates (x1/y1 exclusive).

    A square of side ``max(2, round(0.06 * size))`` at ``max(1, round(0.03 * size))`` pixels from
    the top and right edges of a ``size`` x ``size`` image.
    """
    side = max(2, round(_TAG_SIDE * size))
    margin = max(1, round(_TAG_MARGIN * size))
    x1, y0 = size - margin, margin
    return x1 - side, y0, x1, y0 + side


def corner_box(size: int, corner: int) -> tuple[int, int, int, int]:
    """The tag's square in corner 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    x0, y0, x1, y1 = tag_box(size)
    side = x1 - x0
    if corner in (0, 2):
        x0, x1 = size - x1, size - x1 + side
    if corner in (2, 3):
        y0, y1 = size - y1, size - y1 + side
    return x0, y0, x1, y1


def plan(kind: str, rng: np.random.Generator, size: int) -> Mark:
    """Draw one image's shortcut parameters from its ``tag`` stream (after the carry draw)."""
    if kind not in SHORTCUT_KINDS:
        raise ValueError(f"unknown shortcut {kind!r}; expected one of {', '.join(SHORTCUT_KINDS)}")
    p: dict = {}
    if kind == "marker":
        p["corner"] = int(rng.integers(4))
    elif kind == "text":
        p["glyphs"] = "".join(rng.choice(list(_GLYPHS), size=int(rng.integers(2, 4))))
    elif kind == "line":
        p["start"] = (rng.uniform(-0.35, 0.35), -1.05)
        p["end"] = (rng.uniform(-0.55, 0.55), rng.uniform(0.0, 0.6))
        p["bend"] = (rng.uniform(-0.4, 0.4), rng.uniform(-0.5, 0.1))
    elif kind == "noise":
        p["noise"] = rng.standard_normal((size, size), dtype=np.float32)
    return Mark(kind, p)


def _text_mask(glyphs: str, size: int) -> np.ndarray:
    """(size, size) bool: the glyphs at the bottom-left corner, ``size // 64`` px per dot."""
    s = max(1, size // 64)
    margin = max(1, round(_TAG_MARGIN * size))
    m = np.zeros((size, size), bool)
    x = margin
    y = size - margin - 5 * s
    for ch in glyphs:
        bm = np.array([[c == "1" for c in row] for row in _GLYPHS[ch]])  # (5, 3)
        m[y:y + 5 * s, x:x + 3 * s] |= np.kron(bm, np.ones((s, s), bool))
        x += 4 * s
    return m


def _line_mask(p: dict, size: int) -> np.ndarray:
    """(size, size) bool: a quadratic Bezier curve in [-1, 1] image coordinates, 1 px per 64."""
    t = np.linspace(0.0, 1.0, 8 * size)[:, None]
    a, c, b = (np.array(p[k], np.float64) for k in ("start", "bend", "end"))
    pts = (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t ** 2 * b           # (T, 2) u, v
    px = (pts + 1.0) * size / 2.0 - 0.5                                  # pixel centres
    m = np.zeros((size, size), bool)
    r = max(0.5, size / 128.0)
    cols, rows = np.rint(px[:, 0]).astype(int), np.rint(px[:, 1]).astype(int)
    w = int(np.ceil(r)) - 1
    for dy in range(-w, w + 1):
        for dx in range(-w, w + 1):
            rr, cc = rows + dy, cols + dx
            ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
            m[rr[ok], cc[ok]] = True
    return m


def apply(mark: Mark | None, x: np.ndarray, stage: str, size: int, level: float) -> np.ndarray:
    """Apply ``mark`` to the float image ``x`` (H, W) at ``stage``: ``before_noise`` (after
    exposure) or ``after_noise`` (before quantisation); ``level`` is the scene's tag level.
    Returns x (modified in place where possible)."""
    if mark is None:
        return x
    k, p = mark.kind, mark.params
    if stage == "before_noise":
        if k == "line":
            x = x + 0.35 * _line_mask(p, size)
        elif k == "exposure":
            x = 0.1 + 0.8 * x
        return x
    if k == "tag":
        x0, y0, x1, y1 = tag_box(size)
        x[y0:y1, x0:x1] = level
    elif k == "marker":
        x0, y0, x1, y1 = corner_box(size, p["corner"])
        x[y0:y1, x0:x1] = level
    elif k == "band":
        x[:max(2, round(_TAG_SIDE * size)), :] = level
    elif k == "text":
        x[_text_mask(p["glyphs"], size)] = level
    elif k == "border":
        w = max(2, round(0.08 * size))
        x[:w, :] = x[-w:, :] = 0.85 * level
        x[:, :w] = x[:, -w:] = 0.85 * level
    elif k == "noise":
        x = x + 0.05 * p["noise"] + 0.04
    return x


__all__ = ["IMAGE_WIDE_KINDS", "SHORTCUT_KINDS", "Mark", "apply", "corner_box", "plan", "tag_box"]
