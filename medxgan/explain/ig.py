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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from pydantic import Field

from medxgan.explain._torch import logit
from medxgan.explain.base import Explainer, ExplainerConfig, Explanation


class IGConfig(ExplainerConfig):
    """baseline, blur_sigma (px), n_steps, method (captum's), internal_batch_size."""

    baseline: Literal["black", "mean", "blur"] = "black"
    blur_sigma: float = Field(4.0, gt=0)
    n_steps: int = Field(50, ge=1)
    method: str = "gausslegendre"
    internal_batch_size: int | None = 64


def baseline_images(images: torch.Tensor, kind: str, blur_sigma: float = 4.0) -> torch.Tensor:
    """IG baselines (B, 1, H, W) for ``kind`` in black / mean / blur (reflect-padded Gaussian)."""
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean((1, 2, 3), keepdim=True).expand_as(images).contiguous()
    if kind == "blur":
        return gaussian_blur(images, blur_sigma)
    raise ValueError(f"unknown IG baseline {kind!r}")


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with std ``sigma`` pixels (reflect padding)."""
    H, W = images.shape[-2:]
    r = int(min(max(1, round(3 * sigma)), H - 1, W - 1))
    t = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-t.pow(2) / (2 * sigma ** 2))
    k = k / k.sum()
    C = images.shape[1]
    x = F.pad(images, (r, r, r, r), mode="reflect")                   # (B, C, H+2r, W+2r)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)  # (B, C, H+2r, W)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)  # (B, C, H, W)


class IGExplainer(Explainer):
    """Integrated Gradients of the positive-class logit (captum)."""

    name = "ig"
    Config = IGConfig

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 **_: Any) -> Explanation:
        cfg = self.config
        base = baseline_images(images, cfg.baseline, cfg.blur_sigma)
        ig = IntegratedGradients(lambda x: logit(self.f, x))
        with torch.enable_grad():
            attr, delta = ig.attribute(images, baselines=base, n_steps=cfg.n_steps,
                                       method=cfg.method,
                                       internal_batch_size=cfg.internal_batch_size,
                                       return_convergence_delta=True)  # (B, 1, H, W), (B,)
        return Explanation(maps=attr.sum(1).detach(),
                           extras=dict(completeness_error=delta.detach().abs().float()))
