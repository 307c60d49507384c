"""Robustness: is the map stable under small input noise?

``noise_stability``: the mean, over K noise draws, of the Spearman rank correlation
(tie-aware) between the map of x and the map of x + e, e ~ N(0, (sigma * range(x))^2)
per pixel, where range(x) = max(x) - min(x) of that image (so sigma is relative to the
image's intensity range). The noisy image is **not** clipped to [0, 1] (clipping would
halve the noise on dark backgrounds). Draws whose correlation is undefined (a constant
map) are left out of the mean; NaN if every draw is undefined.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medxgan.metrics._ranks import spearman

ExplainFn = Callable[[torch.Tensor], torch.Tensor]


def noise_stability(
    explain_fn: ExplainFn, images: torch.Tensor, *, k: int = 4, sigma: float = 0.05, seed: int = 0
) -> torch.Tensor:
    """Mean Spearman correlation between the map of x and the maps of K noisy copies.

    Args:
        explain_fn: images (B, 1, H, W) -> maps (B, h, w); called K + 1 times on B images.
        images: (B, 1, H, W) float in [0, 1].
        k: number of noise draws.
        sigma: noise standard deviation as a fraction of each image's intensity range.
        seed: seed of the noise (the same seed gives the same noise for the same images).

    Returns: (B,) float64 in [-1, 1].
    """
    B = images.shape[0]
    x = images.to(torch.float32)
    rng = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(B, 1, 1, 1)  # (B, 1, 1, 1)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((k, *x.shape), generator=g, dtype=torch.float32)  # (K, B, 1, H, W)
    ref = explain_fn(x).detach().reshape(B, -1)  # (B, hw)
    rhos = torch.stack(
        [spearman(ref, explain_fn(x + sigma * rng * noise[i].to(x.device)).detach().reshape(B, -1)) for i in range(k)]
    )  # (K, B)
    return torch.nanmean(rhos, dim=0)
