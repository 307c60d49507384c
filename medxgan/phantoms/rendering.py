"""Rendering one phantom subject: random streams, anatomy + lesions, exposure, noise, tag, boxes.

:func:`_render` is the core behind :func:`medxgan.phantoms.phantom_image`: it draws the label,
renders the anatomy (:mod:`.chest` or :mod:`.brain`), places lesions (:mod:`.lesions`) on
positives, finishes the image (exposure, noise, tag; :func:`_finish`) with and without the lesions,
and takes each lesion's tight box from the pixels that differ. ``lesions=False`` gives the same
subject without its lesions (the "healthy twin"). Also holds the kinds and size limits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from medxgan.catalogue import PHANTOM_SOURCES
from medxgan.cohort.writer import Box
from medxgan.phantoms.brain import _brain_anatomy
from medxgan.phantoms.chest import _cxr_anatomy
from medxgan.phantoms.geometry import _grid, _Scene
from medxgan.phantoms.lesions import _place_lesions
from medxgan.phantoms import shortcuts as _sc
from medxgan.phantoms.tag import NEGATIVE_TAG_RATE

# ("phantom-cxr", "phantom-brain"). The position of a kind seeds its random streams
# (:func:`_streams`), so reordering the catalogue's phantom sources changes every image.
KINDS: tuple[str, ...] = PHANTOM_SOURCES
MIN_SIZE, MAX_SIZE = 32, 1024

_STREAMS = ("label", "anatomy", "lesion", "tag", "noise")


@dataclass
class _Phantom:
    """One rendered subject (internal; tests use it).

    Attributes:
        pixels: (H, W) uint8.
        label: 1 positive, 0 negative.
        tagged: whether the shortcut (the tag, or another ``shortcut`` kind) is drawn.
        boxes: tight lesion boxes (pixel-edge, x1/y1 exclusive); empty when ``lesions=False``.
        region: (H, W) bool, where lesions may lie (visible lung fields / brain), pixel centres.
    """

    pixels: np.ndarray
    label: int
    tagged: bool
    boxes: list[Box]
    region: np.ndarray



def _render(kind: str, index: int, *, size: int = 64, seed: int = 0, prevalence: float = 0.5,
            shortcut_rate: float = 0.0, lesions: bool = True, shortcut: str = "tag",
            shortcut_negative_rate: float | None = None, lesion_scale: float = 1.0,
            force_shortcut: bool | None = None) -> _Phantom:
    """Render one subject; ``lesions=False`` gives the same subject (same label, anatomy, noise
    and shortcut) without its lesions.

    ``shortcut`` is the kind drawn on the images that carry one
    (:data:`medxgan.phantoms.shortcuts.SHORTCUT_KINDS`): a positive carries it with probability
    ``shortcut_rate``, a negative with ``shortcut_negative_rate`` (default
    ``min(shortcut_rate, NEGATIVE_TAG_RATE)``); ``force_shortcut`` True / False draws it / leaves
    it out whatever the draw (the same subject otherwise: "paint the shortcut on"). Lesion
    intensities are multiplied by ``lesion_scale`` (faint findings below 1)."""
    _check(kind, index, size, seed, prevalence, shortcut_rate)
    neg_rate = min(shortcut_rate, NEGATIVE_TAG_RATE) if shortcut_negative_rate is None \
        else float(shortcut_negative_rate)
    if shortcut not in _sc.SHORTCUT_KINDS:
        raise ValueError(f"unknown shortcut {shortcut!r}; expected one of "
                         f"{', '.join(_sc.SHORTCUT_KINDS)}")
    if not 0.0 <= neg_rate <= 1.0 or not 0.0 < lesion_scale <= 4.0:
        raise ValueError(f"shortcut_negative_rate {neg_rate} outside [0, 1] or lesion_scale "
                         f"{lesion_scale} outside (0, 4]")
    rng = _streams(kind, index, seed)
    label = int(rng["label"].random() < prevalence)
    tag_rate = shortcut_rate if label else neg_rate
    tagged = bool(rng["tag"].random() < tag_rate)
    if force_shortcut is not None:
        tagged = bool(force_shortcut)
    mark = _sc.plan(shortcut, rng["tag"], size) if tagged else None

    g = _grid(size)
    anat = _cxr_anatomy if kind == "phantom-cxr" else _brain_anatomy
    scene = anat(rng["anatomy"], g)
    lesion_list = _place_lesions(kind, rng["lesion"], scene, g) if label else []
    _sc.aim(mark, rng["tag"], lesion_list, scene.region, size)  # an arrow points at a lesion
    if mark is not None:  # a blur acts on the lesion-free anatomy, once for both renderings
        scene = replace(scene, base=_sc.apply(mark, scene.base, "anatomy", size, scene.tag_level))

    planes = 2 if kind == "phantom-brain" else 1  # MRI: two planes for Rician noise
    noise = rng["noise"].standard_normal((planes, size, size), dtype=np.float32)
    clean = _finish(scene, np.zeros((size, size), np.float32), noise, mark, size)
    if not lesion_list:
        return _Phantom(clean, label, tagged, [], scene.region)

    field = np.zeros((size, size), np.float32)
    for les in lesion_list:
        field[les.rows, les.cols] += les.field
    if lesion_scale != 1.0:
        field *= np.float32(lesion_scale)
    with_les = _finish(scene, field, noise, mark, size)
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
    """Raise ValueError for an unknown kind, a size outside MIN_SIZE..MAX_SIZE, a negative index
    or seed, or a prevalence / shortcut_rate outside [0, 1]."""
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


def _finish(scene: _Scene, field: np.ndarray, noise: np.ndarray, mark: _sc.Mark | None,
            size: int) -> np.ndarray:
    """Add lesions, apply exposure, noise and the shortcut ``mark``; quantise to uint8.
    Elementwise given the mark (its ``anatomy`` stage, a blur, is already in ``scene.base``),
    so pixels where ``field`` is 0 come out identical with or without lesions."""
    x = scene.base + field
    x = scene.lo + scene.span * np.clip(x, 0.0, 1.0) ** scene.gamma
    x = x * scene.bias
    x = _sc.apply(mark, x, "before_noise", size, scene.tag_level)
    if noise.shape[0] == 2:  # Rician magnitude noise (MRI)
        x = np.sqrt((x + scene.sigma * noise[0]) ** 2 + (scene.sigma * noise[1]) ** 2)
    else:
        x = x + scene.sigma * noise[0]
    x = _sc.apply(mark, x, "after_noise", size, scene.tag_level)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
