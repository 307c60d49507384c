"""medXGAN's own metrics on its counterfactual pair (x_pos, x_neg) of each image.

- ``counterfactual_flip``: 1.0 if f(x_neg) falls below the decision threshold (the
  negative counterpart really is a negative for f), else 0.0.
- ``counterfactual_similarity``: mean cosine similarity between an image's change
  d = x_pos - x_neg and the changes of a seeded sample of **other** explained images.
  Near 1 says the generator applies one pattern that moves f on every image (a universal
  adversarial pattern of f), not this image's pathology. It depends on the pool of images
  passed together: score one run's images in one call.
(``recon_mse`` comes with the explanation extras.)
"""

from __future__ import annotations

import torch


def counterfactual_flip(p_neg: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Did f's positive probability of x_neg fall below ``threshold``?

    Args:
        p_neg: (B,) f's positive probability of x_neg, in [0, 1].

    Returns: (B,) float64, 1.0 flipped / 0.0 not; NaN where p_neg is NaN.
    """
    p = p_neg.detach().to(torch.float64).reshape(-1)
    return torch.where(p.isnan(), p, (p < threshold).to(torch.float64))


def counterfactual_similarity(changes: torch.Tensor, *, sample: int = 32, seed: int = 0) -> torch.Tensor:
    """Mean cosine similarity of each image's change with other images' changes.

    Args:
        changes: (B, C, H, W) or (B, H, W) x_pos - x_neg (any consistent pixel scale).
        sample: number of other images compared with each. When B - 1 <= sample every
            other image is used (exact, O(B) via the sum of unit vectors); otherwise
            ``sample`` others are drawn uniformly with replacement (never the image itself).
        seed: seed of the draw.

    Returns: (B,) float64 in [-1, 1]; NaN where the change is all zero or B < 2.
    """
    B = changes.shape[0]
    d = changes.detach().to(torch.float64).reshape(B, -1)  # (B, D)
    norm = d.norm(dim=1, keepdim=True)  # (B, 1)
    ok = norm[:, 0] > 0
    u = torch.where(norm > 0, d / norm.clamp(min=1e-300), torch.zeros_like(d))  # (B, D) unit rows
    nan = torch.full((B,), float("nan"), dtype=torch.float64)
    n_ok = int(ok.sum())
    if n_ok < 2:
        return nan
    if B - 1 <= sample:
        # every other image with a non-zero change: (u_i . (sum_j u_j - u_i)) / (n_ok - 1)
        s = (u * (u.sum(0, keepdim=True) - u)).sum(1) / (n_ok - ok.to(torch.float64))
        return torch.where(ok, s, nan)
    g = torch.Generator().manual_seed(seed)
    off = torch.randint(1, B, (B, sample), generator=g)  # (B, S) never 0
    j = (torch.arange(B)[:, None] + off) % B  # (B, S) other images
    cos = torch.stack([(u * u[j[:, k]]).sum(1) for k in range(sample)], 1)  # (B, S), O(B D) memory
    w = ok[j].to(torch.float64)  # skip zero changes
    s = (cos * w).sum(1) / w.sum(1)
    return torch.where(ok, s, nan)
