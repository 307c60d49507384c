"""Intervention evidence: does f rely on the annotated findings? (issue #15, question 1)

Whatever explanation method works or fails, the question "does the classifier use the
findings?" is a property of f that an intervention answers directly: remove the findings
(infill the boxes) and watch f's positive probability ``p = sigmoid(f(x))``.

Per image (all (B,) float64, probabilities in [0, 1], drops in [-1, 1]):

- ``ablation_drop`` = p(x) - p(x with the image's own boxes infilled). NaN without boxes.
- ``ablation_drop_shuffled`` = p(x) - p(x with *another* positive's boxes infilled in this
  image): the image-specificity control, with the partner masks of the localisation controls
  (``medxgan.metrics.controls``: the same seeded derangement). NaN without a partner. A
  classifier that uses the findings gives own >> shuffled; one that uses something else
  (a shortcut) gives own ~ shuffled ~ 0.
- ``ablation_flip``: 1.0 if f calls the image positive (p >= threshold) and, once its own
  boxes are infilled, negative (p < threshold); 0.0 if it stays positive; NaN for images f
  calls negative and for images without boxes.
- ``retention`` = p(x with everything **outside** the boxes infilled): how much of f's
  belief the findings alone carry. NaN without boxes.

Infill methods (:func:`infill`): ``blur`` (default: the image blurred with
``medxgan.metrics.faithfulness.gaussian_blur``, sigma 5 px, the baseline of the deletion
curves), ``mean`` (each image's mean intensity), ``noisy_linear`` (ROAD's noisy linear
imputation), ``twin`` (a given counterfactual image, e.g. the healthy twin of a phantom or
a generator's x_neg, inside the mask) and ``inpaint`` (a healthy-anatomy in-filler
``inpainter(x, m)``, the run's: ``medxgan.generators.inpaint``; the audit's default since issue #20,
measured on the shortcut panel: a blurred opacity is still an opacity, ROAD's noise is texture
that classifiers of faint findings read as positive).

The classifier contract is ``medxgan.classifiers``: images (B, 1, H, W) float in [0, 1]
-> positive-class logit (B,) (or (B, 1)), decision ``threshold`` attribute on the probability
(0.5 when absent). It is called under ``torch.no_grad()`` on its own device (the device of its
first parameter or buffer; the images' device when it has none), its mode is not changed, and
all infilled variants go through it as one flat batch in chunks of ``batch_size`` images.

Cost: 4 B forward passes. ``noisy_linear`` adds a conjugate-gradient solve per variant; the
``retention`` variant (everything outside the boxes unknown) is the slowest, up to 4 (H + W)
iterations of a 3x3 convolution over the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from medxgan.cpu import cpu_batch, inference_copy
from medxgan.metrics.faithfulness import gaussian_blur

InfillMethod = Literal["blur", "mean", "noisy_linear", "twin", "inpaint"]
INFILL_METHODS: tuple[str, ...] = ("blur", "mean", "noisy_linear", "twin", "inpaint")
ABLATION_METRICS: tuple[str, ...] = ("ablation_drop", "ablation_drop_shuffled", "ablation_flip",
                                     "retention")
"""Metric names as in ``scores.parquet`` (design: planned contracts)."""

BLUR_SIGMA = 5.0
"""Gaussian sigma of the ``blur`` infill, pixels (as the deletion/insertion blur baseline)."""

ROAD_NOISE = 0.01
"""Std of the noise added to ``noisy_linear`` infill, in [0, 1] pixel units."""

# ROAD's neighbour weights (Rong et al. 2022, NoisyLinearImputer): 1/6 for the 4 direct
# neighbours, 1/12 for the 4 diagonal ones.
_ROAD_KERNEL = torch.tensor([[1 / 12, 1 / 6, 1 / 12],
                             [1 / 6, 0.0, 1 / 6],
                             [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64)

Classifier = Callable[[torch.Tensor], torch.Tensor]


def _check(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got {tuple(images.shape)}")
    B, _, H, W = images.shape
    if tuple(masks.shape) != (B, H, W):
        raise ValueError(f"masks must be (B, H, W) = {(B, H, W)} at image resolution, "
                         f"got {tuple(masks.shape)}")


def fill_source(images: torch.Tensor, method: str, *, twin: torch.Tensor | None = None,
                blur_sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """The image every masked pixel is taken from, for the mask-independent methods.

    Args:
        images: (B, 1, H, W) float in [0, 1].
        method: ``blur``, ``mean`` or ``twin`` (``noisy_linear`` depends on the mask: use
            :func:`infill`).
        twin: (B, 1, H, W) counterfactual images, for ``twin``.
        blur_sigma: Gaussian sigma of ``blur``, pixels.

    Returns: (B, 1, H, W) float like ``images``.
    """
    if method == "blur":
        return gaussian_blur(images, blur_sigma)
    if method == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images)
    if method == "twin":
        if twin is None or tuple(twin.shape) != tuple(images.shape):
            raise ValueError(f"infill 'twin' needs twin images of shape {tuple(images.shape)}")
        return twin.to(images.device, images.dtype)
    raise ValueError(f"unknown infill {method!r}: use one of {', '.join(INFILL_METHODS)}")


def _neighbour_sum(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each pixel's 8 neighbours inside the image (zero outside): (N, 1, H, W)."""
    return F.conv2d(v, kernel, padding=1)


def noisy_linear_infill(images: torch.Tensor, masks: torch.Tensor, *, seed: int = 0,
                        noise: float = ROAD_NOISE, tol: float = 1e-6, atol: float = 1e-6,
                        max_iter: int | None = None) -> torch.Tensor:
    """ROAD's noisy linear imputation, batched.

    Rong, Leemann, Borisov, Kasneci, Kasneci, "A Consistent and Efficient Evaluation Strategy
    for Attribution Methods", ICML 2022 (ROAD, ``NoisyLinearImputer``). Every masked pixel
    equals the weighted mean of its in-image 8-neighbours (weights 1/6 direct, 1/12 diagonal;
    masked neighbours are unknowns too), i.e. the sparse linear system
    ``deg_i x_i - sum_j w_ij x_j = 0`` on the masked pixels with the non-masked pixels as
    boundary values (a discrete harmonic interpolation: constants and linear ramps are
    reproduced exactly); then Gaussian noise is added to the infilled pixels.

    What is simplified: the system is solved with batched conjugate gradients on all images at
    once (3x3 convolutions on the masked pixels; symmetric positive definite because the
    weights are symmetric) to relative residual ``tol`` or ``max_iter`` iterations, instead of
    a direct sparse solve per image; the noise std is in [0, 1] pixel units (ROAD: 0.01 in
    normalised network-input units); the result is clamped to [0, 1]. The solve runs on the
    union bounding box of the batch's masks (+ 1 px), which gives the same result. A mask that
    covers the whole image (nothing known) is filled with the image's mean (+ noise).

    Args:
        images: (B, 1, H, W) float in [0, 1].
        masks: (B, H, W) bool, True = infill.
        seed: seed of the noise (drawn on the CPU, so it does not depend on the device).
        noise: noise std, [0, 1] pixel units.
        tol, atol: stop when every image's residual norm (L2 over its masked pixels, pixel
            units) is below ``max(tol * initial norm, atol * sqrt(masked pixels))``.
        max_iter: most CG iterations (default 4 (H + W)).

    Returns: (B, 1, H, W) float like ``images``; pixels outside the mask are unchanged.
    """
    _check(images, masks)
    B, _, H, W = images.shape
    dt = torch.float64 if images.dtype == torch.float64 else torch.float32
    m_full = masks.to(images.device, torch.bool)
    g = torch.Generator().manual_seed(int(seed))
    eps = torch.randn(B, 1, H, W, generator=g, dtype=dt).to(images.device) * noise  # full grid
    rows, cols = m_full.any(2).any(0), m_full.any(1).any(0)  # (H,), (W,)
    if not bool(rows.any()):
        return images.clone()
    # Work on the union bounding box of the masks + 1 px: every masked pixel's neighbours lie in
    # it, and where the crop meets the image edge the zero padding is the image edge.
    r = torch.nonzero(rows).flatten()
    c = torch.nonzero(cols).flatten()
    y0, y1 = max(int(r[0]) - 1, 0), min(int(r[-1]) + 2, H)
    x0, x1 = max(int(c[0]) - 1, 0), min(int(c[-1]) + 2, W)
    x = images[..., y0:y1, x0:x1].to(dt)
    m = m_full[:, None, y0:y1, x0:x1]  # (B, 1, h, w)
    mf = m.to(dt)
    k = _ROAD_KERNEL.to(images.device, dt).view(1, 1, 3, 3)
    # (1, 1, h, w) sum of the in-image neighbours' weights; exact on every masked pixel (its
    # neighbours are all in the crop, and a crop edge without margin is the image edge)
    deg = _neighbour_sum(torch.ones(1, 1, y1 - y0, x1 - x0, dtype=dt, device=x.device), k)
    known = x * (1 - mf)
    n_known = (1 - mf).sum(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    start = torch.where(n_known > 0, known.sum(dim=(1, 2, 3), keepdim=True) / n_known.clamp(min=1),
                        x.mean(dim=(1, 2, 3), keepdim=True))  # (B, 1, 1, 1)
    u = start.expand_as(x) * mf  # initial guess on the masked pixels, 0 elsewhere

    def A(v: torch.Tensor) -> torch.Tensor:  # v zero outside the mask -> (L v) on the mask
        return (deg * v - _neighbour_sum(v, k)) * mf

    b = _neighbour_sum(known, k) * mf  # known neighbours' contribution
    res = b - A(u)
    p = res.clone()
    rr = (res * res).sum(dim=(1, 2, 3))  # (B,)
    n_masked = mf.sum(dim=(1, 2, 3))  # (B,)
    stop = torch.maximum(rr.sqrt() * tol, atol * n_masked.sqrt()).clamp(min=1e-30)
    for _ in range(max_iter if max_iter is not None else 4 * (H + W)):
        active = rr.sqrt() > stop
        if not bool(active.any()):
            break
        Ap = A(p)
        pAp = (p * Ap).sum(dim=(1, 2, 3))
        alpha = torch.where(active & (pAp > 0), rr / pAp.clamp(min=1e-30), torch.zeros_like(rr))
        u = u + alpha.view(B, 1, 1, 1) * p
        res = res - alpha.view(B, 1, 1, 1) * Ap
        rr_new = (res * res).sum(dim=(1, 2, 3))
        beta = torch.where(rr > 0, rr_new / rr.clamp(min=1e-30), torch.zeros_like(rr))
        p = res + beta.view(B, 1, 1, 1) * p
        rr = rr_new
    filled = (u + eps[..., y0:y1, x0:x1]).clamp(0.0, 1.0)
    out = images.clone()
    out[..., y0:y1, x0:x1] = torch.where(m, filled, x).to(images.dtype)
    return out


def infill(images: torch.Tensor, masks: torch.Tensor, method: InfillMethod = "blur", *,
           seed: int = 0, twin: torch.Tensor | None = None,
           blur_sigma: float = BLUR_SIGMA, inpainter: Callable | None = None,
           batch_size: int = 256) -> torch.Tensor:
    """Replace the masked pixels of each image.

    Args:
        images: (B, 1, H, W) float in [0, 1].
        masks: (B, H, W) bool at image resolution, True = replace.
        method: ``blur`` (Gaussian blur of the image, ``blur_sigma`` px, reflect padding),
            ``mean`` (the image's mean intensity), ``noisy_linear`` (ROAD,
            :func:`noisy_linear_infill`), ``twin`` (the pixels of ``twin``) or ``inpaint``
            (``inpainter(x, m)``, m (N, 1, H, W) float in {0, 1}, on its own device,
            ``batch_size`` images at a time).
        seed: seed of ``noisy_linear``'s noise (unused by the other methods).
        twin: (B, 1, H, W) counterfactual images in [0, 1], for ``twin``.
        blur_sigma: Gaussian sigma of ``blur``, pixels.

    Returns: (B, 1, H, W) like ``images``; unmasked pixels unchanged.
    """
    _check(images, masks)
    m = masks.to(images.device, torch.bool)
    if method == "noisy_linear":
        return noisy_linear_infill(images, m, seed=seed)
    if method == "inpaint":
        if inpainter is None:
            raise ValueError("infill 'inpaint' needs an inpainter (the run's healthy in-filler)")
        dev = next(iter(inpainter.parameters())).device
        b = cpu_batch(batch_size, images.shape[-2:], dev)              # medxgan.cpu
        with torch.no_grad():
            out = [inpainter(images[s:s + b].to(dev),
                             m[s:s + b, None].to(dev, images.dtype)).to(images.device)
                   for s in range(0, len(images), b)]
        return torch.where(m[:, None], torch.cat(out).to(images.dtype), images) if out else images
    src = fill_source(images, method, twin=twin, blur_sigma=blur_sigma)
    return torch.where(m[:, None], src, images)


def classifier_device(classifier: Classifier, fallback: torch.device) -> torch.device:
    """Device of the classifier's first parameter or buffer (``fallback`` when it has none)."""
    if isinstance(classifier, torch.nn.Module):
        for t in classifier.parameters():
            return t.device
        for t in classifier.buffers():
            return t.device
    return fallback


def positive_probability(classifier: Classifier, images: torch.Tensor,
                         batch_size: int = 256) -> torch.Tensor:
    """p = sigmoid(classifier(x)) of a batch, in chunks of ``batch_size`` images (fewer on the
    CPU, :func:`medxgan.cpu.cpu_batch`; a module through its channels-last copy,
    :func:`medxgan.cpu.inference_copy`).

    Args:
        images: (N, 1, H, W) float in [0, 1], on the classifier's device.

    Returns: (N,) float64 on the images' device.
    """
    classifier = inference_copy(classifier, images[:2])
    out = []
    b = cpu_batch(batch_size, images.shape[-2:], images.device)         # medxgan.cpu
    with torch.no_grad():
        for s in range(0, len(images), b):
            out.append(torch.sigmoid(classifier(images[s:s + b]).reshape(-1)
                                     .to(torch.float64)))
    if not out:
        return torch.zeros(0, dtype=torch.float64, device=images.device)
    return torch.cat(out)


def threshold_of(classifier: Classifier) -> float:
    """The classifier's decision threshold on the positive probability (0.5 when absent)."""
    return float(getattr(classifier, "threshold", 0.5))


def ablation_scores(classifier: Classifier, images: torch.Tensor, masks: torch.Tensor,
                    partner_masks: torch.Tensor, *, method: InfillMethod = "blur", seed: int = 0,
                    twin: torch.Tensor | None = None, inpainter: Callable | None = None,
                    batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Intervention evidence of B images (module doc for the definitions).

    Args:
        classifier: images (N, 1, H, W) in [0, 1] -> positive logit (N,); ``threshold``
            attribute on the probability (default 0.5).
        images: (B, 1, H, W) float in [0, 1].
        masks: (B, H, W) bool, union of each image's own boxes at image resolution
            (``masks.boxes_to_masks(boxes, H, W)``).
        partner_masks: (B, H, W) bool, the partner's boxes (``controls.partner_masks``);
            empty where the image has no partner.
        method: infill method (:func:`infill`).
        seed: seed of the ``noisy_linear`` noise (own, shuffled and retention variants use
            seed, seed + 1, seed + 2).
        twin: (B, 1, H, W) counterfactual images, for ``method="twin"``.
        inpainter: the healthy in-filler, for ``method="inpaint"``.
        batch_size: most images per forward pass.

    Returns: ``ablation_drop``, ``ablation_drop_shuffled``, ``ablation_flip``, ``retention``
    (:data:`ABLATION_METRICS` order), each (B,) float64 on the CPU, NaN where undefined.
    """
    _check(images, masks)
    _check(images, partner_masks)
    dev = classifier_device(classifier, images.device)
    x = images.to(dev, torch.float32)
    own = masks.to(dev, torch.bool)
    partner = partner_masks.to(dev, torch.bool)
    tw = twin.to(dev, torch.float32) if twin is not None else None
    B = len(x)
    kw = {"twin": tw, "inpainter": inpainter, "batch_size": batch_size}
    variants = torch.cat([
        x,
        infill(x, own, method, seed=seed, **kw),
        infill(x, partner, method, seed=seed + 1, **kw),
        infill(x, ~own, method, seed=seed + 2, **kw),
    ])  # (4B, 1, H, W)
    p = positive_probability(classifier, variants, batch_size).view(4, B).cpu()  # (4, B)
    p0, p_own, p_partner, p_kept = p
    nan = torch.full((B,), float("nan"), dtype=torch.float64)
    has_own = own.flatten(1).any(1).cpu()
    has_partner = partner.flatten(1).any(1).cpu()
    thr = threshold_of(classifier)
    called_pos = p0 >= thr
    flip = (p_own < thr).to(torch.float64)
    return {
        "ablation_drop": torch.where(has_own, p0 - p_own, nan),
        "ablation_drop_shuffled": torch.where(has_partner, p0 - p_partner, nan),
        "ablation_flip": torch.where(has_own & called_pos, flip, nan),
        "retention": torch.where(has_own, p_kept, nan),
    }
