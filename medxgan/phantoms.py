"""Synthetic phantom cohorts: chest-radiograph-like and brain-MRI-like slices with known lesions.

Our ground-truth test beds. Two kinds (:data:`KINDS`):

* ``phantom-cxr``: a PA chest radiograph: thorax outline, two lung fields darker than the soft
  tissue, heart shadow, mediastinum, spine, clavicles, ribs, lung markings, exposure and noise
  varying per subject. Positives carry 1-3 opacities (finding ``"opacity"``) strictly inside the
  visible lung fields (lungs minus heart and mediastinum), of varied size, shape (ellipses or
  irregular blobs) and texture (solid, mottled, ground glass).
* ``phantom-brain``: an axial T1-like MRI slice: scalp, dark skull ring, cortex with sulci,
  white matter, ventricles, falx, bias field and Rician noise. Positives carry one tumour
  (finding ``"tumour"``: solid or ring-enhancing with a dark core and oedema) inside the brain.

Every image is a pure function of ``(kind, index, seed, size, prevalence, shortcut_rate)``: it
does not depend on ``n`` or on any other image, so chunks can be generated in parallel. Each
image draws from its own independent random streams (label, anatomy, lesions, tag, noise), so
the same subject rendered without its lesions (:func:`_render` with ``lesions=False``) differs
from the positive image exactly at the lesion's pixels. Anatomy and lesions are defined in
size-independent normalised coordinates ``u, v`` in [-1, 1] (pixel centres, ``u`` rightwards,
``v`` downwards), so anatomy and boxes scale with ``size``; only the pixel noise is per pixel.

Boxes are pixel-edge coordinates of the stored image (x1/y1 exclusive) and are *tight* around
the pixels whose stored uint8 value differs from the lesion-free rendering of the same subject.

Shortcut tag: a bright square (about 6 % of the side) in the top-right corner
(:func:`tag_box`), placed on a fraction ``shortcut_rate`` of positives and on
``min(shortcut_rate, 0.02)`` of negatives. It is not a finding and gets no box; the image's
``source_ref`` ends in ``:tag=1``. :func:`remove_tag` overwrites the tag region of a batch with
the mirrored background just below it (apply it to every image, tagged or not, to train a
"clean" classifier on the same cohort).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from medxgan.cohort.writer import Box, CohortImage

KINDS = ("phantom-cxr", "phantom-brain")
NEGATIVE_TAG_RATE = 0.02  # share of negatives tagged (capped by shortcut_rate)
MIN_SIZE, MAX_SIZE = 32, 1024

_STREAMS = ("label", "anatomy", "lesion", "tag", "noise")
_TAG_SIDE, _TAG_MARGIN = 0.06, 0.03  # fractions of the image side


@dataclass
class _Phantom:
    """One rendered subject (internal; tests use it).

    Attributes:
        pixels: (H, W) uint8.
        label: 1 positive, 0 negative.
        tagged: whether the shortcut tag is drawn.
        boxes: tight lesion boxes (pixel-edge, x1/y1 exclusive); empty when ``lesions=False``.
        region: (H, W) bool, where lesions may lie (visible lung fields / brain), pixel centres.
    """

    pixels: np.ndarray
    label: int
    tagged: bool
    boxes: list[Box]
    region: np.ndarray


# --------------------------------------------------------------------------- public API


def tag_box(size: int) -> tuple[int, int, int, int]:
    """The shortcut tag's region ``(x0, y0, x1, y1)`` in pixel-edge coordinates (x1/y1 exclusive).

    A square of side ``max(2, round(0.06 * size))`` at ``max(1, round(0.03 * size))`` pixels from
    the top and right edges of a ``size`` x ``size`` image.
    """
    side = max(2, round(_TAG_SIDE * size))
    margin = max(1, round(_TAG_MARGIN * size))
    x1, y0 = size - margin, margin
    return x1 - side, y0, x1, y0 + side


def remove_tag(images: torch.Tensor) -> torch.Tensor:
    """Remove the shortcut tag: fill :func:`tag_box` with the background mirrored from below it.

    The tag region is replaced by the equally tall strip directly beneath it, flipped vertically
    (corner background: air / outside the head, with its noise). Pixels outside the region are
    unchanged. Apply it to every image so tagged and untagged images are treated alike.

    Args:
        images: (B, 1, H, W) float in [0, 1], square (H == W).

    Returns:
        A new tensor like ``images``.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square (B, 1, H, W) images, got shape {tuple(images.shape)}")
    x0, y0, x1, y1 = tag_box(images.shape[-1])
    h = y1 - y0
    out = images.clone()
    out[..., y0:y1, x0:x1] = images[..., y1:y1 + h, x0:x1].flip(-2)  # (B, 1, h, w)
    return out


def phantom_image(kind: str, index: int, *, size: int = 64, seed: int = 0,
                  prevalence: float = 0.5, shortcut_rate: float = 0.0) -> CohortImage:
    """Render phantom number ``index`` of a ``kind`` cohort.

    Args:
        kind: one of :data:`KINDS`.
        index: image number (>= 0); images are independent of each other and of the cohort size.
        size: side in pixels (32..1024); anatomy scales with it.
        seed: cohort seed (>= 0).
        prevalence: probability that the image is positive.
        shortcut_rate: probability that a positive carries the tag (negatives:
            ``min(shortcut_rate, 0.02)``).

    Returns:
        A :class:`CohortImage` with id ``f"{kind}-{seed}-{index:06d}"``, (size, size) uint8
        pixels, ``source_ref`` ``f"{kind}:seed={seed}:index={index}"`` (+ ``":tag=1"``) and one
        box per visible lesion (``finding`` "opacity" or "tumour").
    """
    p = _render(kind, index, size=size, seed=seed, prevalence=prevalence,
                shortcut_rate=shortcut_rate)
    ref = f"{kind}:seed={seed}:index={index}" + (":tag=1" if p.tagged else "")
    return CohortImage(image_id=f"{kind}-{seed}-{index:06d}", label=p.label, pixels=p.pixels,
                       source_ref=ref, boxes=p.boxes)


def generate(kind: str, n: int, *, size: int = 64, seed: int = 0, prevalence: float = 0.5,
             shortcut_rate: float = 0.0) -> Iterator[CohortImage]:
    """Yield :func:`phantom_image` for indices ``0 .. n-1``."""
    for i in range(n):
        yield phantom_image(kind, i, size=size, seed=seed, prevalence=prevalence,
                            shortcut_rate=shortcut_rate)


# --------------------------------------------------------------------------- rendering


def _render(kind: str, index: int, *, size: int = 64, seed: int = 0, prevalence: float = 0.5,
            shortcut_rate: float = 0.0, lesions: bool = True) -> _Phantom:
    """Render one subject; ``lesions=False`` gives the same subject (same label, anatomy, noise
    and tag) without its lesions."""
    _check(kind, index, size, seed, prevalence, shortcut_rate)
    rng = _streams(kind, index, seed)
    label = int(rng["label"].random() < prevalence)
    tag_rate = shortcut_rate if label else min(shortcut_rate, NEGATIVE_TAG_RATE)
    tagged = bool(rng["tag"].random() < tag_rate)

    g = _grid(size)
    anat = _cxr_anatomy if kind == "phantom-cxr" else _brain_anatomy
    scene = anat(rng["anatomy"], g)
    lesion_list = _place_lesions(kind, rng["lesion"], scene, g) if label else []

    planes = 2 if kind == "phantom-brain" else 1  # MRI: two planes for Rician noise
    noise = rng["noise"].standard_normal((planes, size, size), dtype=np.float32)
    clean = _finish(scene, np.zeros((size, size), np.float32), noise, tagged, size)
    if not lesion_list:
        return _Phantom(clean, label, tagged, [], scene.region)

    field = np.zeros((size, size), np.float32)
    for les in lesion_list:
        field[les.rows, les.cols] += les.field
    with_les = _finish(scene, field, noise, tagged, size)
    diff = with_les != clean  # (H, W) bool
    boxes = []
    for les in lesion_list:
        px = diff[les.rows, les.cols] & les.support  # supports are disjoint
        if not px.any():
            continue
        rs, cs = np.flatnonzero(px.any(1)), np.flatnonzero(px.any(0))
        y0, x0 = les.rows.start + rs[0], les.cols.start + cs[0]
        y1, x1 = les.rows.start + rs[-1] + 1, les.cols.start + cs[-1] + 1
        boxes.append(Box(float(x0), float(y0), float(x1), float(y1), les.finding))
    return _Phantom(with_les if lesions else clean, label, tagged, boxes if lesions else [],
                    scene.region)


def _check(kind, index, size, seed, prevalence, shortcut_rate) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {KINDS}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size {size} outside {MIN_SIZE}..{MAX_SIZE}")
    if index < 0 or seed < 0:
        raise ValueError("index and seed must be >= 0")
    for name, val in (("prevalence", prevalence), ("shortcut_rate", shortcut_rate)):
        if not 0.0 <= val <= 1.0:
            raise ValueError(f"{name} {val} outside [0, 1]")


def _streams(kind: str, index: int, seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per purpose, keyed by (seed, kind, index) only."""
    ss = np.random.SeedSequence(entropy=seed, spawn_key=(KINDS.index(kind), index))
    return {name: np.random.default_rng(s) for name, s in zip(_STREAMS, ss.spawn(len(_STREAMS)))}


def _finish(scene: _Scene, field: np.ndarray, noise: np.ndarray, tagged: bool,
            size: int) -> np.ndarray:
    """Add lesions, apply exposure, noise and the tag; quantise to uint8. Elementwise only, so
    pixels where ``field`` is 0 come out identical with or without lesions."""
    x = scene.base + field
    x = scene.lo + scene.span * np.clip(x, 0.0, 1.0) ** scene.gamma
    x = x * scene.bias
    if noise.shape[0] == 2:  # Rician magnitude noise (MRI)
        x = np.sqrt((x + scene.sigma * noise[0]) ** 2 + (scene.sigma * noise[1]) ** 2)
    else:
        x = x + scene.sigma * noise[0]
    if tagged:
        x0, y0, x1, y1 = tag_box(size)
        x[y0:y1, x0:x1] = scene.tag_level
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- geometry helpers


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


# --------------------------------------------------------------------------- chest X-ray


def _cxr_params(rng: np.random.Generator) -> dict:
    p = {}
    p["body_w"] = rng.uniform(0.80, 0.88)
    p["body_h"] = rng.uniform(0.95, 1.05)
    p["lungs"] = []
    for side in (-1.0, 1.0):
        cx = rng.uniform(0.38, 0.45)
        wx = rng.uniform(0.27, 0.32)
        top = rng.uniform(-0.74, -0.62)
        bot = rng.uniform(0.56, 0.70) - (0.05 if side < 0 else 0.0)  # right hemidiaphragm higher
        dome = rng.uniform(0.10, 0.20)
        p["lungs"].append((side, cx, wx, top, bot, dome))
    p["heart"] = (rng.uniform(0.08, 0.15), rng.uniform(0.36, 0.46), rng.uniform(0.28, 0.35),
                  rng.uniform(0.24, 0.31), rng.uniform(-0.45, -0.2))
    p["mediast_w"] = rng.uniform(0.12, 0.17)
    p["rib_period"] = rng.uniform(0.13, 0.16)
    p["rib_phase"] = rng.uniform(0.0, 1.0)
    p["rib_amp"] = rng.uniform(0.06, 0.11)
    p["clav_y"] = rng.uniform(-0.70, -0.62)
    p["air"] = rng.uniform(0.02, 0.08)
    p["soft"] = rng.uniform(0.50, 0.62)
    p["lung"] = rng.uniform(0.16, 0.26)
    p["heart_level"] = p["soft"] + rng.uniform(0.02, 0.08)
    p["bone"] = rng.uniform(0.10, 0.16)
    p["marking"] = rng.uniform(0.025, 0.045)
    p["lo"] = rng.uniform(0.0, 0.06)
    p["span"] = rng.uniform(0.85, 1.0)
    p["gamma"] = rng.uniform(0.8, 1.25)
    p["sigma"] = rng.uniform(0.012, 0.03)
    return p


def _cxr_lung_f(a, b, side, cx, wx, top, bot, dome):
    """< 1 inside one lung field (anatomy frame)."""
    yc = top + 0.62 * (bot - top)
    hy = yc - top
    t = np.clip((side * a - (cx - wx)) / (2 * wx), 0.0, 1.0)  # 0 medial .. 1 lateral
    floor = bot - dome * np.sin(np.pi * (1.0 - t) * 0.5 + 0.35) ** 2  # diaphragm dome
    ell = ((side * a - cx) / wx) ** 2 + ((b - yc) / hy) ** 2
    return np.maximum(ell, 1.0 + (b - floor) / 0.08)


def _cxr_region_parts(a, b, p):
    """(lung f, heart f, mediastinum f) in the anatomy frame; each < 1 inside."""
    lung = np.minimum(*(_cxr_lung_f(a, b, *L) for L in p["lungs"]))
    hx, hy, hra, hrb, hrot = p["heart"]
    heart = _ellipse(a, b, hx, hy, hra, hrb, hrot)
    med = np.maximum((a / p["mediast_w"]) ** 2, 1.0 + (b - 0.2) / 0.1)
    return lung, heart, med


def _cxr_anatomy(rng: np.random.Generator, g: _Grid) -> _Scene:
    n = g.size
    fr, a, b = _frame(rng, n, 0.06)
    p = _cxr_params(rng)
    eps = 0.04  # edge softness in f units
    lung_f, heart_f, med_f = _cxr_region_parts(a, b, p)
    aw = np.abs(a / p["body_w"])
    aw2 = aw * aw
    shoulder = -0.74 + 0.32 * aw2 * aw  # top of the shoulders, sloping down laterally
    q = (b - 0.3) / (p["body_h"] + 0.2)
    q2 = q * q
    body_f = np.maximum(aw2 * aw2 + (q2 * q2) * (q2 * q2), 1.0 + (shoulder - b) / 0.1)
    neck_f = np.maximum((a / 0.22) ** 2, 1.0 + (b + 0.5) / 0.2)
    body = _soft(np.minimum(body_f, neck_f), eps)
    thick = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - aw2, 0.0, 1.0))  # thicker in the middle
    lung = _soft(lung_f, eps)
    heart = _soft(heart_f, 0.08)
    med = _soft(med_f, 0.25)

    # soft tissue, lungs (darker at the apex, lighter at the bases and periphery)
    x = p["air"] + (p["soft"] * thick - p["air"]) * body
    lung_level = p["lung"] + 0.06 * np.clip(b + 0.3, -0.5, 1.0) + 0.05 * a * a
    x = x + (lung_level - x) * lung * body
    # lung markings and hila
    mark = _smooth_noise(rng, n, 28)
    hila = np.exp(-(((np.abs(a) - 0.2) / 0.08) ** 2 + ((b + 0.02) / 0.14) ** 2))
    x = x + lung * (p["marking"] * mark + 0.12 * hila * (1.0 - 0.5 * np.abs(a)))
    # ribs: posterior arcs rising from the spine, then curving down laterally
    t = np.abs(a)
    r = (b + 0.9 * t - 0.85 * t ** 2) / (p["rib_period"] * (1.0 + 0.25 * b)) + p["rib_phase"]
    ribs = np.clip(np.cos(2 * np.pi * r) * 1.6 - 0.4, 0.0, 1.0)
    ra2, rb2 = (a / (p["body_w"] - 0.06)) ** 2, ((b + 0.1) / 0.72) ** 2
    rib_mask = body * _soft(ra2 * ra2 * ra2 + rb2 * rb2 * rb2, 0.3)
    x = x + p["rib_amp"] * ribs * rib_mask * (0.4 + 0.6 * lung) * (t > 0.06)
    # clavicles
    clav = np.exp(-(((b - p["clav_y"] + 0.25 * (t - 0.1)) / 0.035) ** 2))
    x = x + 0.12 * clav * body * (t < 0.62) * (t > 0.04)
    # mediastinum and heart override the lungs
    x = x + (p["soft"] + 0.08 - x) * med * body
    x = x + (p["heart_level"] - x) * heart * body
    # spine with vertebrae, trachea
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * b / 0.11)
    sp2 = (a / 0.06) ** 2
    x = x + p["bone"] * np.exp(-sp2 * sp2) * (0.7 + 0.3 * vert) * body
    x = x - 0.12 * np.exp(-(a / 0.03) ** 2) * _soft(1.0 + (b + 0.15) / 0.1, 0.5) * body

    def inside(pa, pb):
        lf, hf, mf = _cxr_region_parts(pa, pb, p)
        return (lf < 1.0) & (hf >= 1.0) & (mf >= 1.0)

    region = (lung_f < 1.0) & (heart_f >= 1.0) & (med_f >= 1.0)
    xs = [L[1] for L in p["lungs"]]
    ws = [L[2] for L in p["lungs"]]
    bounds = (-max(xs) - max(ws), max(xs) + max(ws), min(L[3] for L in p["lungs"]),
              max(L[4] for L in p["lungs"]))
    tex = _smooth_noise(rng, n, 40)
    return _Scene(base=x, region=region, inside=inside, bounds=bounds, frame=fr, tex=tex,
                  lo=p["lo"], span=p["span"], gamma=p["gamma"], bias=1.0, sigma=p["sigma"],
                  tag_level=1.0)


# --------------------------------------------------------------------------- brain MRI


def _brain_anatomy(rng: np.random.Generator, g: _Grid) -> _Scene:
    n = g.size
    fr, a, b = _frame(rng, n, 0.08)
    ra, rb = rng.uniform(0.68, 0.78), rng.uniform(0.82, 0.90)  # head radii
    scalp_t, skull_t = rng.uniform(0.05, 0.07), rng.uniform(0.04, 0.06)
    wm_r = rng.uniform(0.68, 0.76)
    vent = (rng.uniform(0.06, 0.09), rng.uniform(-0.12, -0.02), rng.uniform(0.035, 0.06),
            rng.uniform(0.16, 0.24), rng.uniform(0.15, 0.35))
    levels = dict(bg=0.0, scalp=rng.uniform(0.6, 0.8), skull=rng.uniform(0.05, 0.12),
                  csf=rng.uniform(0.08, 0.16), gm=rng.uniform(0.38, 0.46),
                  wm=rng.uniform(0.56, 0.66))
    eps = 0.03

    rho = np.sqrt((a / ra) ** 2 + (b / rb) ** 2)  # 1 at the outer scalp
    brain_r = 1.0 - scalp_t - skull_t  # inner skull, in rho units
    head = _soft(rho, 0.02)
    in_skull = _soft(rho / (1.0 - scalp_t), 0.02)
    brain = _soft(rho / brain_r, 0.02)
    x = levels["bg"] + (levels["scalp"] - levels["bg"]) * head
    x = x + (levels["skull"] - x) * in_skull
    x = x + (levels["csf"] - x) * _soft(rho / (brain_r - 0.005), 0.02)
    wig = _smooth_noise(rng, n, 14)
    gm = _soft(rho / (brain_r - 0.02), 0.02)
    x = x + (levels["gm"] - x) * gm
    wm = _soft(rho / (wm_r * brain_r * (1.0 + 0.06 * wig)), 0.08)
    x = x + (levels["wm"] - x) * wm
    # sulci: dark CSF clefts in the cortex
    sul = _smooth_noise(rng, n, 30)
    cortex = gm * (1.0 - wm) * (rho > 0.55 * brain_r)
    x = x + (levels["csf"] - x) * cortex * np.exp(-(sul / 0.15) ** 2) * 0.7
    # falx and interhemispheric fissure
    x = x + (levels["csf"] - x) * gm * np.exp(-(a / 0.012) ** 2) * (np.abs(b) > 0.28) * 0.8
    # lateral ventricles (mirror pair) and third ventricle
    vx, vy, vra, vrb, vrot = vent
    vf = np.minimum(_ellipse(a, b, -vx, vy, vra, vrb, -vrot),
                    _ellipse(a, b, vx, vy, vra, vrb, vrot))
    vf = np.minimum(vf, _ellipse(a, b, 0.0, vy + 0.2, 0.012, 0.05))
    x = x + (levels["csf"] - x) * _soft(vf, 0.15)
    x = x + 0.025 * _smooth_noise(rng, n, 40) * gm

    def inside(pa, pb):
        return np.sqrt((pa / ra) ** 2 + (pb / rb) ** 2) < brain_r

    region = rho < brain_r
    bounds = (-ra * brain_r, ra * brain_r, -rb * brain_r, rb * brain_r)
    bias = 1.0 + 0.08 * _smooth_noise(rng, n, 4)
    tex = _smooth_noise(rng, n, 36)
    return _Scene(base=x, region=region, inside=inside, bounds=bounds, frame=fr, tex=tex,
                  lo=rng.uniform(0.0, 0.03), span=rng.uniform(0.85, 1.0),
                  gamma=rng.uniform(0.85, 1.2), bias=bias, sigma=rng.uniform(0.015, 0.035),
                  tag_level=1.0)


# --------------------------------------------------------------------------- lesions


@dataclass
class _Lesion:
    rows: slice
    cols: slice
    field: np.ndarray    # (h, w) additive intensity, exactly 0 outside ``support``
    support: np.ndarray  # (h, w) bool
    finding: str


@dataclass
class _Shape:
    ca: float
    cb: float
    ra: float
    rb: float
    rot: float
    harm: np.ndarray  # (K, 3): order k, amplitude, phase of radius modulations

    @property
    def rmax(self) -> float:
        return max(self.ra, self.rb) * (1.0 + np.abs(self.harm[:, 1]).sum())

    def t(self, a, b):
        """Normalised radius: < 1 inside the shape (anatomy frame)."""
        cr, sr = np.cos(self.rot), np.sin(self.rot)
        da, db = a - self.ca, b - self.cb
        pa, pb = (da * cr + db * sr) / self.ra, (-da * sr + db * cr) / self.rb
        th = np.arctan2(pb, pa)
        return np.sqrt(pa ** 2 + pb ** 2) / self._radius(th)

    def _radius(self, th):
        r = np.ones_like(th)
        for k, amp, ph in self.harm:
            r = r + amp * np.cos(k * th + ph)
        return r

    def outline(self, m: int = 96, margin: float = 0.015) -> tuple[np.ndarray, np.ndarray]:
        """Points on and inside the boundary (grown by ``margin``), anatomy frame."""
        th = np.linspace(0.0, 2 * np.pi, m, endpoint=False)
        rad = self._radius(th)
        frac = np.array([1.0, 0.7, 0.35, 0.0])[:, None]
        pa = (self.ra * rad * frac + margin) * np.cos(th)  # (4, m)
        pb = (self.rb * rad * frac + margin) * np.sin(th)
        cr, sr = np.cos(self.rot), np.sin(self.rot)
        return self.ca + pa * cr - pb * sr, self.cb + pa * sr + pb * cr


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _place_lesions(kind: str, rng: np.random.Generator, scene: _Scene, g: _Grid) -> list[_Lesion]:
    """Draw 1-3 opacities (cxr) or one tumour (brain), non-overlapping, inside the region."""
    if kind == "phantom-cxr":
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        size_range, finding = (0.11, 0.28), "opacity"
    else:
        count, size_range, finding = 1, (0.12, 0.30), "tumour"
    min_r = 3.0 / g.size  # at least ~1.5 px semi-axis, only binds at the smallest sizes
    shapes: list[_Shape] = []
    for k in range(count):
        shrink = 1.0 if k == 0 else 0.75
        for attempt in range(40):
            ra = rng.uniform(*size_range) * shrink
            rb = ra * rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:  # irregular blob
                harm = np.stack([np.arange(2, 6), rng.uniform(0.0, 0.08, 4),
                                 rng.uniform(0, 2 * np.pi, 4)], 1)
            else:
                harm = np.zeros((0, 3))
            ra, rb = max(ra, min_r), max(rb, min_r)
            a0, a1, b0, b1 = scene.bounds
            s = _Shape(rng.uniform(a0, a1), rng.uniform(b0, b1), ra, rb,
                       rng.uniform(0, np.pi), harm)
            if all(np.hypot(s.ca - o.ca, s.cb - o.cb) > s.rmax + o.rmax + 0.03 for o in shapes) \
                    and scene.inside(*s.outline()).all():
                shapes.append(s)
                break
            if attempt % 10 == 9:
                shrink *= 0.8
    return [_draw(kind, rng, s, scene, g, finding) for s in shapes]


def _draw(kind: str, rng: np.random.Generator, s: _Shape, scene: _Scene, g: _Grid,
          finding: str) -> _Lesion:
    """Rasterise one lesion in a pixel window around it."""
    n, c = g.size, g.c
    cu, cv = scene.frame.to_image(s.ca, s.cb)
    rad = s.rmax * scene.frame.scale + 2.0 / n
    cols = slice(*np.searchsorted(c, [cu - rad, cu + rad]))
    rows = slice(*np.searchsorted(c, [cv - rad, cv + rad]))
    a, b = scene.frame.to_anatomy(c[None, cols], c[rows, None])  # (h, w)
    t = s.t(a, b)
    support = t < 1.0
    tex = scene.tex[rows, cols]
    if kind == "phantom-cxr":
        style = int(rng.integers(3))  # 0 solid, 1 mottled, 2 ground glass
        amp = rng.uniform(0.1, 0.22) if style < 2 else rng.uniform(0.08, 0.13)
        edge = rng.uniform(0.25, 0.45) if style < 2 else rng.uniform(0.6, 0.9)
        prof = _smoothstep((1.0 - t) / edge)
        mod = 1.0 + (0.0, 0.45, 0.2)[style] * tex
        field = amp * prof * np.clip(mod, 0.2, None)
    else:
        style = int(rng.integers(2))  # 0 solid enhancing, 1 ring-enhancing with necrotic core
        amp = rng.uniform(0.12, 0.3)
        oedema = rng.uniform(0.04, 0.1)
        halo = _smoothstep((1.0 - t) / 0.25) * _smoothstep((t - 0.55) / 0.2)
        if style == 0:
            core = _smoothstep((0.8 - t) / 0.2) * (1.0 + 0.15 * tex)
        else:
            rim = np.exp(-((t - 0.62) / 0.1) ** 2) * _smoothstep((0.8 - t) / 0.1)
            core = rim - 0.6 * _smoothstep((0.5 - t) / 0.2) * (1.0 + 0.3 * tex)
        field = amp * core - oedema * halo
    field = np.where(support, field, 0.0).astype(np.float32)
    return _Lesion(rows, cols, field, support, finding)
