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
- ``counterfactual_dice``: Dice of the pixels the counterfactual changed with the pixels the
  true change covers (on phantoms: where the image differs from its healthy twin), both at
  :data:`SUPPORT_TOL`: does x_neg remove the whole lesion and nothing else?
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


SUPPORT_TOL = 0.5 / 255
"""A pixel is changed when it moves by at least half an 8-bit grey level (intensity in [0, 1]):
a phantom's healthy twin is byte-identical to the image outside its lesions, so the true
support is every pixel the lesion touched."""


def counterfactual_dice(change: torch.Tensor, true_change: torch.Tensor,
                        tol: float = SUPPORT_TOL) -> torch.Tensor:
    """Dice of each image's changed pixels with its truly changed pixels.

    Dice = 2 |A ∩ T| / (|A| + |T|), A = {|change| >= tol}, T = {|true_change| >= tol}: the
    mask overlap counterfactual work reports against a lesion segmentation (mask-and-inpaint
    methods on BraTS), here against the support of the rendered lesion.

    Args:
        change: (B, ...) x - x_neg in [0, 1] intensity units.
        true_change: same shape, x - x_true_negative.
        tol: the smallest change that counts, intensity in [0, 1].

    Returns: (B,) float64 in [0, 1]; NaN where the true change is empty (no lesion).
    """
    return mask_overlap(change, true_change, tol)["dice"]


def mask_overlap(change: torch.Tensor, true_change: torch.Tensor, tol: float = SUPPORT_TOL
                 ) -> dict[str, torch.Tensor]:
    """Dice and its two halves, per image: where a counterfactual's mask Dice is lost.

    With A = {|change| >= tol} and T = {|true_change| >= tol}: ``dice`` = 2 |A ∩ T| / (|A| +
    |T|) (:func:`counterfactual_dice`), ``precision`` = |A ∩ T| / |A| (the share of changed
    pixels that are lesion: low when the in-filling redraws healthy anatomy around it) and
    ``recall`` = |A ∩ T| / |T| (the share of the lesion that was changed: low when part of it
    stays). Dice is their harmonic mean.

    Args:
        change: (B, ...) x - x_neg in [0, 1] intensity units.
        true_change: same shape, x - x_true_negative.
        tol: the smallest change that counts, intensity in [0, 1].

    Returns: {"dice", "precision", "recall"}: (B,) float64 in [0, 1] each; NaN where the true
    change is empty (no lesion), ``precision`` also NaN where nothing changed.
    """
    if change.shape != true_change.shape:
        raise ValueError(f"shapes differ: {tuple(change.shape)} vs {tuple(true_change.shape)}")
    B = change.shape[0]
    a = change.detach().abs().reshape(B, -1) >= tol                     # (B, D)
    t = true_change.detach().abs().reshape(B, -1).to(a.device) >= tol
    inter = (a & t).sum(1).to(torch.float64)
    n_a, n_t = a.sum(1).to(torch.float64), t.sum(1).to(torch.float64)
    nan = torch.full_like(inter, float("nan"))
    lesion = n_t > 0
    return {"dice": torch.where(lesion, 2 * inter / (n_a + n_t).clamp(min=1), nan),
            "precision": torch.where(lesion & (n_a > 0), inter / n_a.clamp(min=1), nan),
            "recall": torch.where(lesion, inter / n_t.clamp(min=1), nan)}


@torch.no_grad()
def healthy_control(filler, negatives: torch.Tensor, classifier, *, side_range: tuple[float, float]
                    = (0.08, 0.2), per_image: int = 4, seed: int = 0,
                    threshold: float | None = None, batch: int = 256) -> float:
    """Share of in-fillings of real negatives that f calls positive: does the in-filler invent
    findings?

    Each negative f calls negative gets ``per_image`` random square holes of a lesion's size
    (side a uniform share ``side_range`` of the image side), each in-filled alone; the rate is
    over all in-fillings. A healthy-anatomy in-filler draws no finding, so the rate stays near
    0; an in-filler that paints texture f reads as disease raises it (and with it every
    counterfactual and intervention that in-fills).

    Args:
        filler: ``filler(x, m) -> x_fill``, x (N, 1, H, W) in [0, 1], m (N, 1, H, W) {0, 1}.
        negatives: (N, 1, H, W) real negatives in [0, 1] (those f calls positive are skipped).
        classifier: f(x) -> positive logit (N,); optional ``threshold``.

    Returns: the share in [0, 1]; NaN when no negative f calls negative was given.
    """
    thr = float(threshold if threshold is not None else getattr(classifier, "threshold", 0.5))
    if len(negatives) == 0:
        return float("nan")
    dev = next(iter(filler.parameters())).device
    H, W = negatives.shape[-2:]
    g = torch.Generator().manual_seed(seed)
    hits = total = 0
    for s in range(0, len(negatives), batch):
        xb = negatives[s:s + batch].to(dev)
        called = torch.sigmoid(classifier(xb).float().reshape(-1)) < thr
        xb = xb[called]
        if not len(xb):
            continue
        x = xb.repeat(per_image, 1, 1, 1)                                 # (k n, 1, H, W)
        n = len(x)
        side = (torch.empty(n).uniform_(*side_range, generator=g) * min(H, W)).round()
        side = side.clamp(min=2).long()
        y0 = (torch.rand(n, generator=g) * (H - side + 1)).floor().long()
        x0 = (torch.rand(n, generator=g) * (W - side + 1)).floor().long()
        ys, xs = torch.arange(H)[None, :], torch.arange(W)[None, :]
        rows = (ys >= y0[:, None]) & (ys < (y0 + side)[:, None])           # (n, H)
        cols = (xs >= x0[:, None]) & (xs < (x0 + side)[:, None])           # (n, W)
        m = (rows[:, :, None] & cols[:, None, :])[:, None].to(dev, x.dtype)
        for t in range(0, n, batch):
            filled = filler(x[t:t + batch], m[t:t + batch])
            hits += int((torch.sigmoid(classifier(filled).float().reshape(-1)) >= thr).sum())
        total += n
    return hits / total if total else float("nan")


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
