"""Explain one batch of images with several methods: what every caller of the explainers runs.

The explain stage (``tasks/explain.py``, one shard of a run) and the benchmarks in ``bench/``
both call :func:`explain_batch`, so a figure measured by a benchmark describes the code that
``medxgan audit`` runs. Reading images and writing explanation tables stay with the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from medxgan.catalogue import GAN_METHODS
from medxgan.explain.base import Explanation, make_explainer

OnResult = Callable[[str, Explanation], None]


def method_order(methods: Sequence[str]) -> list[str]:
    """``methods`` in the order they are run: ``medxgan`` first (its inversion's latents are
    reused by ``latent_ig`` and ``counterfactual_ig``), then the others by name."""
    return sorted(dict.fromkeys(methods), key=lambda m: (m != "medxgan", m))


def explain_batch(images: torch.Tensor, classifier: nn.Module, generator: nn.Module | None,
                  methods: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None, *,
                  ids: Sequence[str] | None = None,
                  latents: tuple[torch.Tensor, torch.Tensor] | None = None,
                  box_prior: torch.Tensor | None = None,
                  on_result: OnResult | None = None) -> dict[str, Explanation]:
    """Explain ``images`` with every method of ``methods``.

    Methods run in :func:`method_order`. Each gets ``make_explainer(method, classifier,
    config=options[method])`` and runs under ``torch.enable_grad()`` (callers may hold
    ``no_grad``). The generator methods get ``latents``: the ones passed in (e.g. read back
    from a stored ``medxgan`` explanation), or else those of this call's ``medxgan``
    explanation, so one inversion serves ``medxgan``, ``latent_ig`` and ``counterfactual_ig``.

    Args:
        images: (B, 1, H, W) float in the cohort's pixel space [0, 1].
        classifier: the classifier contract (``medxgan.explain.base``): (B, 1, H, W) -> (B,)
            positive-class logit.
        generator: medXGAN generator; required when ``methods`` holds one of ``GAN_METHODS``.
        methods: names of ``medxgan.catalogue.METHODS`` (duplicates run once).
        options: method -> config dict of that method (unknown keys raise); None: defaults.
        ids: B image ids; seeded methods (random, SmoothGrad noise, inversion starts) seed by
            id, so a map does not depend on the batch it was computed in.
        latents: ``(z_a (B, d_a), z_p (B, d_p))`` of an earlier inversion of these images.
        box_prior: (H, W) float prior map, required for ``box_prior``
            (:func:`train_box_prior`).
        on_result: called as ``on_result(method, explanation)`` right after each method, e.g.
            to write it before the next method starts (a killed shard keeps what it wrote).

    Returns:
        method -> :class:`Explanation` (maps (B, H, W) float32 raw attributions of the
        positive-class logit; extras per method), in the order run.
    """
    order = method_order(methods)
    if generator is None and any(m in GAN_METHODS for m in order):
        raise ValueError(f"methods {[m for m in order if m in GAN_METHODS]} need a generator")
    options = options or {}
    out: dict[str, Explanation] = {}
    for m in order:
        cfg = dict(options.get(m) or {})
        explainer = make_explainer(m, classifier, generator=generator,
                                   box_prior=box_prior if m == "box_prior" else None,
                                   config=cfg or None)
        kwargs = {"latents": latents} if m in GAN_METHODS and latents is not None else {}
        with torch.enable_grad():
            expl = explainer.explain(images, ids=ids, **kwargs)
        if m == "medxgan":
            latents = (expl.extras["z_a"], expl.extras["z_p"])
        out[m] = expl
        if on_result is not None:
            on_result(m, expl)
    return out


def train_box_prior(boxes_by_id: Mapping[str, np.ndarray], train_ids: Sequence[str] | set[str],
                    image_size: tuple[int, int], map_size: tuple[int, int] | None = None
                    ) -> torch.Tensor:
    """The ``box_prior`` floor's map: the average box mask of the training images.

    Args:
        boxes_by_id: image id -> (k, 4) boxes ``x0, y0, x1, y1`` in pixel-edge coordinates of
            the stored images (``Cohort.boxes_by_id()``).
        train_ids: ids of the train split; when none of them has a box, every boxed image is
            used instead.
        image_size: (H0, W0) of the stored images. map_size: (H, W) of the map (default
            ``image_size``).

    Returns: (H, W) float32 in [0, 1] (``medxgan.explain.floors.box_prior_map``).
    """
    from medxgan.explain.floors import box_prior_map

    train = set(train_ids)
    boxes = [b for i, b in boxes_by_id.items() if i in train]
    if not boxes:  # no boxed training images: fall back to every boxed image
        boxes = list(boxes_by_id.values())
    return box_prior_map(boxes, image_size, map_size)
