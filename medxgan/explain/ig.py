"""Integrated Gradients baseline (captum ``IntegratedGradients``).

Paper: Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.

map = (x - x') ⊙ integral_0^1 grad f(x' + t (x - x')) dt, channel summed, for the positive-class
logit f, with baseline x': ``black`` (zeros), ``mean`` (the image's own mean intensity
everywhere) or ``blur`` (the image blurred by a Gaussian of ``blur_sigma`` pixels).
Extras: ``completeness_error`` (B,) = |sum(map) - (f(x) - f(x'))| (captum's convergence delta),
in logit units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import IntegratedGradients

from medxgan.config.explain import IGConfig
from medxgan.cpu import cpu_chunks
from medxgan.explain._torch import logit
from medxgan.explain.base import Explainer, Explanation
from medxgan.metrics.faithfulness import gaussian_blur  # the one blur (ceil(3 sigma) radius)


def baseline_images(images: torch.Tensor, kind: str, blur_sigma: float = 4.0) -> torch.Tensor:
    """IG baselines (B, 1, H, W) for ``kind`` in black / mean / blur (reflect-padded Gaussian)."""
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean((1, 2, 3), keepdim=True).expand_as(images).contiguous()
    if kind == "blur":
        return gaussian_blur(images, blur_sigma)
    raise ValueError(f"unknown IG baseline {kind!r}")


class IGExplainer(Explainer):
    """Integrated Gradients of the positive-class logit (captum)."""

    name = "ig"
    Config = IGConfig

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 **_: Any) -> Explanation:
        cfg = self.config
        base = baseline_images(images, cfg.baseline, cfg.blur_sigma)
        ig = IntegratedGradients(lambda x: logit(self.f, x))
        c, per_pass = cpu_chunks(len(images), 1,   # captum splits the steps: 1 input at least
                                 cfg.internal_batch_size or len(images) * cfg.n_steps,
                                 images.shape[-2:], images.device)     # medxgan.cpu
        attrs, deltas = [], []
        with torch.enable_grad():
            for s in range(0, len(images), c):
                a, d = ig.attribute(images[s:s + c], baselines=base[s:s + c],
                                    n_steps=cfg.n_steps, method=cfg.method,
                                    internal_batch_size=per_pass,
                                    return_convergence_delta=True)     # (c, 1, H, W), (c,)
                attrs.append(a)
                deltas.append(d)
        attr, delta = torch.cat(attrs), torch.cat(deltas)
        return Explanation(maps=attr.sum(1).detach(),
                           extras=dict(completeness_error=delta.detach().abs().float()))
