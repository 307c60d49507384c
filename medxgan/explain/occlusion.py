"""Occlusion baseline (captum ``Occlusion``).

Paper: Zeiler, Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014.

A ``window`` × ``window`` patch of value ``fill`` (pixel space [0, 1]) slides with ``stride``;
each pixel gets the mean drop of f's positive-class logit over the patches that covered it:
map = mean over patches p ∋ pixel of f(x) - f(x with p occluded), in logit units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import Occlusion

from medxgan.config.explain import OcclusionConfig
from medxgan.cpu import cpu_chunks
from medxgan.explain._torch import logit
from medxgan.explain.base import Explainer, Explanation


class OcclusionExplainer(Explainer):
    """Occlusion sensitivity of the positive-class logit."""

    name = "occlusion"
    Config = OcclusionConfig

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 **_: Any) -> Explanation:
        cfg = self.config
        occ = Occlusion(lambda x: logit(self.f, x))
        ppe = cfg.perturbations_per_eval
        c, per_pass = cpu_chunks(len(images), ppe, len(images) * ppe, images.shape[-2:],
                                 images.device)                        # medxgan.cpu
        ppe = max(1, min(ppe, per_pass // c))                          # one image: fewer too
        with torch.no_grad():
            attr = torch.cat([
                occ.attribute(images[s:s + c], sliding_window_shapes=(1, cfg.window, cfg.window),
                              strides=(1, cfg.stride, cfg.stride), baselines=cfg.fill,
                              perturbations_per_eval=ppe)
                for s in range(0, len(images), c)])
        return Explanation(maps=attr.sum(1).detach())                 # (B, H, W)
