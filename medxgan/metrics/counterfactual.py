"""medXGAN's own metrics on its counterfactual pair (x_pos, x_neg) of each image.

- ``counterfactual_flip``: 1.0 if f(x_neg) falls below the decision threshold (the
  negative counterpart really is a negative for f), else 0.0.
- ``counterfactual_similarity``: mean cosine similarity between an image's change
  d = x_pos - x_neg and the changes of a seeded sample of **other** explained images.
  Near 1 says the generator applies one pattern that moves f on every image (a universal
  adversarial pattern of f), not this image's pathology. It depends on the pool of images
  passed together: score one run's images in one call. Its mean over images (with
  ``sample >= B - 1``) is the mean pairwise cosine of the changes, the "change similarity".
- ``counterfactual_ncc``: normalised cross-correlation of an image's change with its true
  change (on phantoms: image minus its healthy twin, ``medxgan.phantoms.healthy_twin``).
- ``universal_flip``: share of real negatives f calls positive after adding the mean change.
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


def similarity_outside(changes: torch.Tensor, region: torch.Tensor, *, sample: int = 32,
                       seed: int = 0) -> tuple[float, float]:
    """Mean change similarity of images with and without a region: does a change that is one
    pattern for every image lie on that region (a shortcut found elsewhere), or elsewhere too?

    Args:
        changes: (B, H, W) x_pos - x_neg.
        region: (H, W) bool, the region left out of the second figure.

    Returns: (mean :func:`counterfactual_similarity` of the whole changes, the same with the
    region's pixels zeroed); NaN where it is undefined (fewer than two non-zero changes).
    """
    whole = counterfactual_similarity(changes, sample=sample, seed=seed)
    out = counterfactual_similarity(changes * (~region.to(torch.bool)).to(changes.dtype),
                                    sample=sample, seed=seed)
    mean = lambda t: float(t[~t.isnan()].mean()) if bool((~t.isnan()).any()) else float("nan")  # noqa: E731
    return mean(whole), mean(out)


def counterfactual_ncc(change: torch.Tensor, true_change: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of each image's change with its true change.

    NCC = sum((a - mean a)(b - mean b)) / sqrt(sum (a - mean a)^2 * sum (b - mean b)^2) over the
    pixels of one image, the measure VA-GAN (Baumgartner et al. 2018) scores against known
    disease effect maps. On phantoms the true change is ``x - healthy_twin`` (the lesion).

    Args:
        change: (B, ...) x - x_neg (any consistent pixel scale).
        true_change: same shape, x - x_true_negative.

    Returns: (B,) float64 in [-1, 1]; NaN where either change is constant over the image.
    """
    if change.shape != true_change.shape:
        raise ValueError(f"shapes differ: {tuple(change.shape)} vs {tuple(true_change.shape)}")
    B = change.shape[0]
    a = change.detach().to(torch.float64).reshape(B, -1)  # (B, D)
    b = true_change.detach().to(torch.float64).reshape(B, -1).to(a.device)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    ncc = (a * b).sum(1) / den.clamp(min=1e-300)
    return torch.where(den > 0, ncc.clamp(-1.0, 1.0), torch.full_like(ncc, float("nan")))


@torch.no_grad()
def universal_flip(mean_change: torch.Tensor, negatives: torch.Tensor, classifier,
                   threshold: float | None = None, batch: int = 256) -> float:
    """Share of real negatives that f calls positive after adding a mean change.

    A counterfactual method that found f's universal adversarial pattern, not the pathology,
    has a mean change that turns most negatives positive (``docs/findings.md``); image-specific
    changes average out to little.

    Args:
        mean_change: (H, W), (1, H, W) or (1, 1, H, W): the mean of x_pos - x_neg over images,
            in the images' [0, 1] intensity scale.
        negatives: (N, 1, H, W) real negative images in [0, 1].
        classifier: f(x (B, 1, H, W) in [0, 1]) -> positive logit (B,); optional ``threshold``.
        threshold: on f's probability (default: ``classifier.threshold``, else 0.5).

    Returns: the share in [0, 1] (NaN when ``negatives`` is empty). Images are clipped to
    [0, 1] after adding the change.
    """
    thr = float(threshold if threshold is not None else getattr(classifier, "threshold", 0.5))
    if len(negatives) == 0:
        return float("nan")
    H, W = negatives.shape[-2:]
    d = mean_change.detach().to(negatives.dtype).reshape(1, 1, H, W)
    hits = 0
    for s in range(0, len(negatives), batch):
        xb = (negatives[s:s + batch] + d.to(negatives.device)).clamp(0.0, 1.0)
        hits += int((torch.sigmoid(classifier(xb).float()) >= thr).sum())
    return hits / len(negatives)
