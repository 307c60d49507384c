"""The shortcut search of one cohort: which images, the search, and ``shortcut.json``.

One code path: the audit's score stage (``tasks.score.shortcut_search``) and the shortcut panel
(``python -m bench.shortcuts``) both call :func:`cohort_shortcut`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


def shortcut_sample(cohort, split: str | None, cap: int) -> list[str]:
    """The images of the shortcut search: positives with boxes and negatives of ``split``
    (every split when empty), about half each, at most ``cap``; each class in the order of a
    hash of the id (stable, not biased by id order), positives first. A larger ``cap`` gives a
    superset (each class's order is fixed).

    Args:
        cohort: a :class:`medxgan.cohort.reader.Cohort`.
    """
    return _take(*_ordered(cohort, split), cap)


def _ordered(cohort, split: str | None) -> tuple[list[str], list[str]]:
    """(positives with boxes, negatives) of ``split``, each in the order of the id's hash
    (one read of the cohort's index)."""
    import pyarrow.compute as pc

    from medxgan.cohort.splits import unit_hash

    t = cohort.index()
    if split:
        t = t.filter(pc.equal(t["split"], split))
    boxed = cohort.boxes_by_id()
    ids, labels = t["image_id"].to_pylist(), t["label"].to_pylist()
    key = lambda i: unit_hash(i, "shortcut")  # noqa: E731
    pos = sorted((i for i, y in zip(ids, labels) if y == 1 and i in boxed), key=key)
    neg = sorted((i for i, y in zip(ids, labels) if y == 0), key=key)
    return pos, neg


def _take(pos: list[str], neg: list[str], cap: int) -> list[str]:
    """At most ``cap`` of the ordered classes, about half each, positives first."""
    n_pos = min(len(pos), cap // 2)
    n_neg = min(len(neg), cap - n_pos)
    n_pos = min(len(pos), cap - n_neg)
    return pos[:n_pos] + neg[:n_neg]


def cohort_shortcut(cohort, classifier: nn.Module, *, split: str | None, cap: int,
                    inpainter: nn.Module | None = None, method: str = "blur", seed: int = 0,
                    n_boot: int = 1000, residual_cap: int | None = None, **options: Any):
    """:func:`medxgan.metrics.shortcut.find_shortcut` on :func:`shortcut_sample`'s images.

    Args:
        cohort: a :class:`medxgan.cohort.reader.Cohort`.
        classifier: the audited classifier.
        split, cap: the sample of the located and image-wide evidence (the ``core``).
        residual_cap: the larger sample of the location-free evidence (``shortcut_sample``
            is nested: its first ``cap`` images are the core); None or <= ``cap``: the core.
        inpainter: the healthy in-filler (None: the fixed infill ``method``).
        options: other keyword arguments of ``find_shortcut``.

    Returns: (the :class:`~medxgan.metrics.shortcut.ShortcutFinding`, the image ids in the
    search's order, the loaded batch).

    Raises:
        ValueError: no image of ``split`` to search.
    """
    from medxgan.metrics.masks import boxes_to_masks
    from medxgan.metrics.shortcut import find_shortcut

    pos, neg = _ordered(cohort, split)
    ids = _take(pos, neg, max(cap, residual_cap or 0))
    core_ids = set(_take(pos, neg, cap)) if len(ids) > cap else None
    if not ids:
        raise ValueError(f"cohort {cohort.url} has no images in split {split!r} for the "
                         "shortcut search")
    batch = cohort.load(ids)
    H, W = batch.images.shape[-2:]
    masks = boxes_to_masks(batch.boxes, H, W)
    core = None if core_ids is None else torch.tensor([i in core_ids for i in ids])
    found = find_shortcut(classifier, batch.images, masks, batch.labels, inpainter=inpainter,
                          method=method, seed=seed, n_boot=n_boot, core=core, **options)
    return found, ids, batch


def shortcut_json(found, ids: list[str], labels, split: str | None) -> dict[str, Any]:
    """``shortcut.json``: ``ShortcutFinding.summary()`` with image ids for the gallery
    (``top_image_ids``) and the sample (``split``; ``n_images``, ``n_positives``,
    ``n_negatives`` of the located and image-wide evidence (the core);
    ``n_residual_images``, the location-free evidence's); NaN as null."""
    core = np.ones(len(ids), bool) if found.core is None else np.asarray(found.core, bool)
    pos = np.asarray(labels == 1, bool)
    out = {**found.summary(), "top_image_ids": [ids[i] for i in found.top_images],
           "split": split or None, "n_images": int(core.sum()),
           "n_positives": int((pos & core).sum()), "n_negatives": int((~pos & core).sum()),
           "n_residual_images": len(ids)}
    return finite(out)


MARK_FACTOR = 3.0
"""A map marks the shortcut when its relevance mass in the found regions (lower CI bound) is
at least this many times the regions' share of the image, and at least :data:`MARK_FLOOR`."""
MARK_FLOOR = 0.1


def maps_on_shortcut(found, images, classifier: nn.Module, generator: nn.Module | None,
                     methods: list[str], options: dict[str, dict] | None, *, ids: list[str],
                     k: int = 16, n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Does each explanation method mark the shortcut f relies on? (question 3)

    On up to ``k`` images with a found region (the gallery's order: largest drop first), each
    method's map of the **original** image (findings included) is scored by its relevance mass
    (``medxgan.metrics.localization.relevance_mass``: positive relevance inside / all positive
    relevance) in the image's found region grown by 1 px.

    Args:
        found: a :class:`~medxgan.metrics.shortcut.ShortcutFinding`.
        images: (B, 1, H, W) the search's images (``found``'s indices point into them).
        classifier, generator: as for ``medxgan.explain.batch.explain_batch`` (the generator is
            needed only by the generator methods; those are skipped without one).
        methods: explanation methods (floors are skipped).
        options: per-method options (the run's).
        ids: the images' ids (seeded methods).

    Returns: method -> ``mass``, ``ci_low``, ``ci_high``, ``n``, ``area`` (mean share of the
    image in the grown regions), ``marks`` (``ci_low >= max(MARK_FACTOR * area, MARK_FLOOR)``);
    {} when no region was found.
    """
    import numpy as np
    import torch

    from medxgan.catalogue import FLOORS, GAN_METHODS
    from medxgan.explain.batch import explain_batch
    from medxgan.metrics.aggregate import bootstrap_ci
    from medxgan.metrics.localization import relevance_mass
    from medxgan.metrics.shortcut import dilate_masks

    top = [int(i) for i in found.top_images[:k]]
    use = [m for m in methods if m not in FLOORS and (generator is not None or m not in GAN_METHODS)]
    if not top or not use:
        return {}
    rows = {int(b): r for r, b in enumerate(found.searched)}
    regions = dilate_masks(torch.from_numpy(np.stack([found.masks[rows[i]] for i in top])), 1)
    x = images[top]
    area = float(regions.flatten(1).float().mean(1).mean())
    maps = explain_batch(x, classifier, generator, use, options, ids=[ids[i] for i in top])
    out = {}
    for m, ex in maps.items():
        mass = relevance_mass(ex.maps.float(), regions)
        mean, lo, hi, n = bootstrap_ci(np.asarray(mass, np.float64), n_boot=n_boot, seed=seed)
        out[m] = {"mass": mean, "ci_low": lo, "ci_high": hi, "n": n, "area": area,
                  "marks": bool(lo == lo and lo >= max(MARK_FACTOR * area, MARK_FLOOR))}
    return out


def finite(obj: Any) -> Any:
    """NaN / inf floats as None, recursively (standard JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


__all__ = ["MARK_FACTOR", "MARK_FLOOR", "cohort_shortcut", "finite", "maps_on_shortcut",
           "shortcut_json", "shortcut_sample"]
