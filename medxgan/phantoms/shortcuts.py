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
* ``border``: a bright collimation frame ``0.08 * side`` wide on all four sides;
* ``blur``: a lower-resolution detector: the anatomy blurred by a Gaussian of ``size / 128`` px
  sigma before the lesions, exposure and noise are added (the lesions stay as sharp as on
  every other image, so the boxes stay tight and the healthy twin differs inside them only);
  image-wide, with nothing to place or transplant but the image's texture;
* ``arrow``: a reader's annotation: a bright arrow (shaft ``0.12-0.2 * side`` long, 1 px per 64)
  pointing at the image's largest lesion from a random direction, its tip ``size / 32`` px
  outside the lesion (a negative that carries one: pointing at a random place of the lesion
  region). A shortcut *beside* the finding: it moves with the lesion and lies just outside
  its box (:func:`aim` places it once the lesions are drawn).

The renderer (:func:`medxgan.phantoms.rendering._render`) draws the kind's random parameters
once per image from the image's own ``tag`` stream (:func:`plan`; an ``arrow`` is aimed at its
lesion by :func:`aim`) and applies them in the final exposure / noise step (:func:`apply`;
a ``blur`` to the lesion-free anatomy before it), so an image and its healthy twin carry the
same shortcut pixel for pixel. Local kinds are drawn after the noise (crisp), ``line`` before
it (a tube under the same noise), ``noise``, ``exposure`` and ``blur`` act on the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medxgan.catalogue import PHANTOM_SHORTCUTS

SHORTCUT_KINDS: tuple[str, ...] = PHANTOM_SHORTCUTS
IMAGE_WIDE_KINDS: tuple[str, ...] = ("noise", "exposure", "blur")
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
    elif kind == "arrow":
        p["angle"] = float(rng.uniform(0.0, 2.0 * np.pi))
        p["length"] = float(rng.uniform(0.12, 0.2))
    return Mark(kind, p)


def aim(mark: Mark | None, rng: np.random.Generator, lesions: list, region: np.ndarray,
        size: int) -> None:
    """Place an ``arrow`` mark (in place; other kinds are left alone) once the lesions are
    known: its tip ``size / 32`` px beyond the largest lesion's support (``lesions``: the
    renderer's ``_Lesion`` list, its support's centre and half its larger extent), or for an
    image without lesions beyond a random pixel of ``region`` ((H, W) bool, the lesion
    region) drawn from ``rng`` (the image's ``tag`` stream, after :func:`plan`). The shaft
    points away from the target at the planned angle; where that leaves the image it is
    turned round."""
    if mark is None or mark.kind != "arrow":
        return
    if lesions:
        les = max(lesions, key=lambda le: int(le.support.sum()))
        ys, xs = np.nonzero(les.support)
        cy, cx = les.rows.start + ys.mean(), les.cols.start + xs.mean()
        r = 0.5 * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    else:
        ys, xs = np.nonzero(region)
        k = int(rng.integers(len(ys))) if len(ys) else 0
        cy, cx = (float(ys[k]), float(xs[k])) if len(ys) else (size / 2, size / 2)
        r = 0.04 * size
    p = mark.params
    for turn in (0.0, np.pi):
        a = p["angle"] + turn
        d = np.array([np.sin(a), np.cos(a)])                              # (dy, dx)
        tip = np.array([cy, cx]) + (r + size / 32) * d
        tail = tip + p["length"] * size * d
        if (0 <= tail).all() and (tail <= size - 1).all():
            break
    p["tip"], p["tail"] = (float(tip[0]), float(tip[1])), (float(tail[0]), float(tail[1]))


def _segment(m: np.ndarray, a: np.ndarray, b: np.ndarray, w: int) -> None:
    """Draw the segment a -> b ((y, x) pixel centres) into m (H, W) bool, w px wide."""
    n = int(np.ceil(np.abs(b - a).max() * 2)) + 2
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = np.rint(a + t * (b - a)).astype(int)                            # (n, 2)
    _stamp(m, pts[:, 0], pts[:, 1], range(w))


def _arrow_mask(p: dict, size: int) -> np.ndarray:
    """(size, size) bool: the shaft tip -> tail and a head of two strokes ``0.05 * side`` long
    at 35 degrees either side of it, ``size // 64`` px wide."""
    m = np.zeros((size, size), bool)
    if "tip" not in p:  # planned but never aimed (aim() not called): nothing drawn
        return m
    tip, tail = np.array(p["tip"]), np.array(p["tail"])
    w = max(1, size // 64)
    _segment(m, tip, tail, w)
    back = (tail - tip) / max(1e-6, float(np.linalg.norm(tail - tip)))
    for s in (-1.0, 1.0):
        c, si = np.cos(s * 0.61), np.sin(s * 0.61)
        rot = np.array([c * back[0] - si * back[1], si * back[0] + c * back[1]])
        _segment(m, tip, tip + 0.05 * size * rot, w)
    return m


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
    _stamp(m, rows, cols, range(-w, w + 1))
    return m


def _stamp(m: np.ndarray, rows: np.ndarray, cols: np.ndarray, offsets: range) -> None:
    """Set ``m[rows + dy, cols + dx]`` (m (H, W) bool, in place) for every dy and dx in
    ``offsets``, the points that fall outside m left out."""
    H, W = m.shape
    for dy in offsets:
        for dx in offsets:
            rr, cc = rows + dy, cols + dx
            ok = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
            m[rr[ok], cc[ok]] = True


def apply(mark: Mark | None, x: np.ndarray, stage: str, size: int, level: float) -> np.ndarray:
    """Apply ``mark`` to the float image ``x`` (H, W) at ``stage``: ``anatomy`` (the lesion-free
    scene, never modified in place), ``before_noise`` (after exposure) or ``after_noise``
    (before quantisation); ``level`` is the scene's tag level. Returns x (modified in place
    where possible at the later stages)."""
    if mark is None:
        return x
    k, p = mark.kind, mark.params
    if stage == "anatomy":
        if k == "blur":
            from scipy.ndimage import gaussian_filter

            return gaussian_filter(x, sigma=size / 128.0, mode="nearest")
        return x
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
    elif k == "arrow":
        x[_arrow_mask(p, size)] = level
    return x


__all__ = ["IMAGE_WIDE_KINDS", "SHORTCUT_KINDS", "Mark", "aim", "apply", "corner_box", "plan",
           "tag_box"]
