"""True healthy twins of a phantom cohort's images, re-rendered from their records.

A phantom image's ``source_ref`` is ``f"{kind}:seed={seed}:index={index}"`` (+ ``":tag=1"``;
:func:`medxgan.phantoms.phantom_image`); the cohort manifest's ``phantom`` record (written by
the ingest flow) holds ``prevalence``, ``shortcut_rate``, ``shortcut``,
``shortcut_negative_rate`` and ``lesion_scale`` (the defaults of
:func:`medxgan.phantoms.phantom_image` when absent, as in older cohorts and the benches'), and its
``image_size`` the rendered side. :func:`medxgan.phantoms.healthy_twin` with those arguments is
the same subject without its lesions, so ``image - twin`` is the true change that
``counterfactual_ncc`` compares a generator's change with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medxgan.phantoms.rendering import KINDS, _render


def healthy_twin(kind: str, index: int, *, size: int = 64, seed: int = 0,
                 prevalence: float = 0.5, shortcut_rate: float = 0.0, shortcut: str = "tag",
                 shortcut_negative_rate: float | None = None, lesion_scale: float = 1.0,
                 force_shortcut: bool | None = None) -> np.ndarray:
    """The same subject as :func:`medxgan.phantoms.phantom_image` with the same arguments,
    without its lesions.

    Ground truth for counterfactuals: same label draw, anatomy, exposure, noise and shortcut, so
    the twin is byte-identical to the image everywhere except at the lesions' pixels (all inside
    the image's boxes); ``image - twin`` is the true change. For a negative it is the image.

    Returns: (size, size) uint8 pixels.
    """
    return _render(kind, index, size=size, seed=seed, prevalence=prevalence,
                   shortcut_rate=shortcut_rate, lesions=False, shortcut=shortcut,
                   shortcut_negative_rate=shortcut_negative_rate, lesion_scale=lesion_scale,
                   force_shortcut=force_shortcut).pixels


def parse_source_ref(ref: str) -> tuple[str, int, int] | None:
    """``(kind, seed, index)`` of a phantom ``source_ref``; None for any other record."""
    parts = str(ref or "").split(":")
    if len(parts) < 3 or parts[0] not in KINDS:
        return None
    kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    try:
        return parts[0], int(kv["seed"]), int(kv["index"])
    except (KeyError, ValueError):
        return None


def true_twins(cohort, ids: Sequence[str]) -> torch.Tensor | None:
    """The lesion-free twins of images ``ids`` of a phantom cohort.

    Args:
        cohort: a :class:`medxgan.cohort.reader.Cohort`.
        ids: image ids of that cohort.

    Returns: (B, 1, S, S) float32 in [0, 1] at the stored size (a negative's twin is the
    image), or None when the cohort is not a phantom cohort (any id without a phantom
    ``source_ref``), its stored size is not square, or an id is unknown.
    """
    size = cohort.image_size
    if size is None or size[0] != size[1]:
        return None
    idx = cohort.index()
    refs = dict(zip(idx["image_id"].to_pylist(), idx["source_ref"].to_pylist()))
    ph = cohort.manifest.get("phantom") or {}
    opts = {"prevalence": float(ph.get("prevalence", 0.5)),
            "shortcut_rate": float(ph.get("shortcut_rate", 0.0)),
            "shortcut": str(ph.get("shortcut") or "tag"),
            "shortcut_negative_rate": ph.get("shortcut_negative_rate"),
            "lesion_scale": float(ph.get("lesion_scale", 1.0))}
    out = []
    for i in ids:
        rec = parse_source_ref(refs.get(i, ""))
        if rec is None:
            return None
        kind, seed, index = rec
        px = healthy_twin(kind, index, size=int(size[0]), seed=seed, **opts)
        out.append(px.astype(np.float32) / 255.0)
    if not out:
        return torch.zeros(0, 1, int(size[0]), int(size[1]))
    return torch.from_numpy(np.stack(out))[:, None]


__all__ = ["parse_source_ref", "true_twins"]
