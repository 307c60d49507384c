"""Synthetic phantom cohorts: chest-radiograph-like and brain-MRI-like slices with known lesions.

Our ground-truth test beds. Two kinds (:data:`KINDS`, the phantom sources of
:mod:`medxgan.catalogue`):

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
``min(shortcut_rate, 0.02)`` of negatives (``shortcut_negative_rate`` sets another share).
Other shortcut kinds (``shortcut``: a band, a moving marker, text, a tube, a second scanner,
another exposure, a collimation border) are drawn the same way (:mod:`.shortcuts`); faint
findings with ``lesion_scale`` < 1; :func:`shortcut_region` is where a subject's shortcut lies. It is not a finding and gets no box; the image's
``source_ref`` ends in ``:tag=1``. :func:`remove_tag` overwrites the tag region of a batch with
the mirrored background just below it (apply it to every image, tagged or not, to train a
"clean" classifier on the same cohort).

This module is the public API (:func:`phantom_image`, :func:`healthy_twin`, :func:`generate`,
:func:`true_twins` (a cohort's twins by image id; both twin functions live in :mod:`.twins`),
:func:`tag_box`, :func:`remove_tag`, :data:`KINDS`) and re-exports the internals that tests and
benchmarks use. The work is split by job:

* :mod:`.rendering`: one subject end to end (:func:`_render`, the healthy twin, boxes), kinds
  and size limits;
* :mod:`.tag`: the shortcut tag (:func:`tag_box`, :func:`remove_tag`);
* :mod:`.geometry`: pixel grid, pose, smooth noise, soft shapes, the :class:`_Scene`;
* :mod:`.chest`: chest X-ray anatomy; :mod:`.brain`: brain MRI anatomy;
* :mod:`.lesions`: placing and rasterising opacities and tumours.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from medxgan.cohort.writer import CohortImage

# Every module-level name of the former single-file ``medxgan/phantoms.py`` stays importable from
# here, private ones included (tests and benchmarks import ``_render``): re-exports, not unused.
# ruff: noqa: F401
from medxgan.phantoms.brain import _brain_anatomy
from medxgan.phantoms.chest import _cxr_anatomy, _cxr_lung_f, _cxr_params, _cxr_region_parts
from medxgan.phantoms.geometry import (
    _ellipse,
    _Frame,
    _frame,
    _Grid,
    _grid,
    _Scene,
    _smooth_noise,
    _smoother,
    _soft,
)
from medxgan.phantoms.lesions import _draw, _Lesion, _place_lesions, _Shape, _smoothstep
from medxgan.phantoms.rendering import (
    _STREAMS,
    KINDS,
    MAX_SIZE,
    MIN_SIZE,
    _check,
    _finish,
    _Phantom,
    _render,
    _streams,
)
from medxgan.phantoms.shortcuts import IMAGE_WIDE_KINDS, SHORTCUT_KINDS, corner_box
from medxgan.phantoms.tag import _TAG_MARGIN, _TAG_SIDE, NEGATIVE_TAG_RATE, remove_tag, tag_box

from medxgan.phantoms.twins import healthy_twin, parse_source_ref, true_twins  # noqa: E402

__all__ = ["IMAGE_WIDE_KINDS", "KINDS", "MAX_SIZE", "MIN_SIZE", "NEGATIVE_TAG_RATE", "SHORTCUT_KINDS",
           "corner_box", "generate", "healthy_twin", "parse_source_ref", "phantom_image", "remove_tag",
           "shortcut_region", "tag_box", "true_twins"]


def phantom_image(kind: str, index: int, *, size: int = 64, seed: int = 0,
                  prevalence: float = 0.5, shortcut_rate: float = 0.0, shortcut: str = "tag",
                  shortcut_negative_rate: float | None = None, lesion_scale: float = 1.0,
                  force_shortcut: bool | None = None) -> CohortImage:
    """Render phantom number ``index`` of a ``kind`` cohort.

    Args:
        kind: one of :data:`KINDS`.
        index: image number (>= 0); images are independent of each other and of the cohort size.
        size: side in pixels (32..1024); anatomy scales with it.
        seed: cohort seed (>= 0).
        prevalence: probability that the image is positive.
        shortcut_rate: probability that a positive carries the shortcut.
        shortcut: which shortcut (:data:`SHORTCUT_KINDS`; default the demo's ``tag``).
        shortcut_negative_rate: probability that a negative carries it (default
            ``min(shortcut_rate, 0.02)``; equal to ``shortcut_rate``: label-independent).
        lesion_scale: lesion intensities times this (faint findings below 1).
        force_shortcut: True / False: the same subject with / without the shortcut, whatever
            its draw (None: as drawn).

    Returns:
        A :class:`CohortImage` with id ``f"{kind}-{seed}-{index:06d}"``, (size, size) uint8
        pixels, ``source_ref`` ``f"{kind}:seed={seed}:index={index}"`` (+ ``":tag=1"`` when it
        carries the shortcut) and one box per visible lesion (``finding`` "opacity" or
        "tumour").
    """
    p = _render(kind, index, size=size, seed=seed, prevalence=prevalence,
                shortcut_rate=shortcut_rate, shortcut=shortcut,
                shortcut_negative_rate=shortcut_negative_rate, lesion_scale=lesion_scale,
                force_shortcut=force_shortcut)
    ref = f"{kind}:seed={seed}:index={index}" + (":tag=1" if p.tagged else "")
    return CohortImage(image_id=f"{kind}-{seed}-{index:06d}", label=p.label, pixels=p.pixels,
                       source_ref=ref, boxes=p.boxes)


def shortcut_region(kind: str, index: int, *, size: int = 64, seed: int = 0,
                    prevalence: float = 0.5, shortcut: str = "tag",
                    lesion_scale: float = 1.0) -> np.ndarray:
    """Where the shortcut lies when this subject carries it: (size, size) bool, the pixels that
    differ between the subject rendered with and without it (lesions included, so a shortcut
    drawn over a lesion counts where it changes a pixel). Nearly every pixel for the image-wide
    kinds (``noise``, ``exposure``)."""
    opts = dict(size=size, seed=seed, prevalence=prevalence, shortcut_rate=1.0,
                shortcut=shortcut, lesion_scale=lesion_scale)
    on = _render(kind, index, force_shortcut=True, **opts).pixels
    off = _render(kind, index, force_shortcut=False, **opts).pixels
    return on != off


def generate(kind: str, n: int, *, size: int = 64, seed: int = 0, prevalence: float = 0.5,
             shortcut_rate: float = 0.0, **options) -> Iterator[CohortImage]:
    """Yield :func:`phantom_image` for indices ``0 .. n-1`` (``options``: its other keyword
    arguments: ``shortcut``, ``shortcut_negative_rate``, ``lesion_scale``)."""
    for i in range(n):
        yield phantom_image(kind, i, size=size, seed=seed, prevalence=prevalence,
                            shortcut_rate=shortcut_rate, **options)
