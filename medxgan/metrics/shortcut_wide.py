"""Image-wide (placeless) shortcut interventions: noise level, intensity histogram, border.

A shortcut need not have a place: a second scanner makes positives noisier, another exposure
makes them brighter, a collimation frame lines every edge. No region search finds those. Each
intervention here moves one image-wide property of a negative towards a **donor**'s, and f's
answer is compared between donors of the two classes (the matched control):

- ``noise``: the high-frequency residual ``r = x - blur(x, 1 px)`` is rescaled so that its
  robust standard deviation (1.4826 x MAD, on the pixels outside the masks) equals the donor's:
  ``x' = blur(x) + k r`` with ``k = sigma_donor / sigma_x`` (clamped to [0, 4]);
- ``histogram``: exact histogram matching (each pixel takes the donor's intensity of the same
  rank): exposure, contrast and every other property of the intensity distribution;
- ``border``: the donor's frame of width ``max(2, round(side / 8))`` px is pasted in.

Every recipient (a negative f calls negative, findings of neither class present: the caller
passes images with the findings in-filled) gets :data:`DONOR_DRAWS` positive donors and as many
negative donors (distinct, drawn without replacement while the pool lasts; never itself); its
**paired difference** is ``1[f calls the positive-donor version positive] - 1[f calls the
negative-donor version positive]`` averaged over its draws, and the **effect** is the mean over
recipients, with a CI that resamples the recipients and both donor pools
(:func:`medxgan.metrics.aggregate.crossed_bootstrap_ci`). One draw per recipient (before
session 22) let the luck of the draw move the effect by an sd of 0.10 on a clean control, enough
for a false alarm; the average over 8 draws estimates the same quantity with the draw's share
of the variance cut about 8-fold, and the CI keeps the donor sample's uncertainty, which a
bootstrap over recipients alone would drop (``docs/benchmarks.md``, "Several donors per
recipient"). When the two classes do not differ in the property, both versions are alike and
the effect is about 0, however sensitive f is to the property; when they differ and f relies on
it, the positive-donor version turns positive. Probabilities are ``p = sigmoid(f(x))``; images
(N, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import torch

from medxgan.metrics.ablation import positive_probability
from medxgan.metrics.aggregate import crossed_bootstrap_ci
from medxgan.metrics.faithfulness import gaussian_blur

WIDE_INTERVENTIONS: tuple[str, ...] = ("noise", "histogram", "border")
NOISE_SIGMA_PX = 1.0
"""Gaussian sigma (px) of the blur that separates the noise residual from the image."""
DONOR_DRAWS = 8
"""Donors of each class per recipient (module docstring); the search's forward passes grow with
it (6 x recipients x draws images)."""


def draw_donors(n_recipients: int, pool: int, draws: int, generator: torch.Generator,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
    """(R, draws) donor indices into a pool of ``pool``: each row a random order of the pool
    (without replacement; cycled when ``draws`` exceeds what the row may draw), ``exclude``
    (R, pool) bool marking donors a recipient must not get (itself): they are left out of its
    row (a row that excludes the whole pool gets its first excluded donor)."""
    r = torch.rand(n_recipients, pool, generator=generator)
    m = torch.full((n_recipients,), pool, dtype=torch.long)
    if exclude is not None:
        r = r.masked_fill(exclude, 2.0)        # ranked last
        m = m - exclude.sum(1)
    order = r.argsort(1)
    cols = torch.arange(draws)[None, :] % m.clamp(min=1)[:, None]
    return order.gather(1, cols)


def noise_sigma(x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Robust noise level of each image: 1.4826 x MAD of ``x - blur(x, 1 px)`` over ``keep``.

    Args:
        x: (B, 1, H, W) float in [0, 1].
        keep: (B, H, W) bool, the pixels to measure on (None: all).

    Returns: (B,) float, intensity units.
    """
    r = (x - gaussian_blur(x, NOISE_SIGMA_PX))[:, 0]                 # (B, H, W)
    if keep is not None:
        r = torch.where(keep, r, torch.full_like(r, float("nan")))
    flat = r.flatten(1)
    med = flat.nanmedian(1, keepdim=True).values
    mad = (flat - med).abs().nanmedian(1).values
    return 1.4826 * torch.nan_to_num(mad, nan=0.0)


def set_noise(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``blur(x) + k (x - blur(x))`` clamped to [0, 1]; k (B,) >= 0 (k < 1 denoises)."""
    s = gaussian_blur(x, NOISE_SIGMA_PX)
    return (s + k.view(-1, 1, 1, 1).to(x.dtype) * (x - s)).clamp(0.0, 1.0)


def match_histogram(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Exact histogram matching: pixel of rank i in ``x`` takes ``ref``'s value of rank i.

    Args: x, ref: (B, 1, H, W) of the same shape. Returns: (B, 1, H, W)."""
    flat = x.flatten(1)
    idx = flat.argsort(dim=1, stable=True)
    out = torch.empty_like(flat)
    out.scatter_(1, idx, ref.flatten(1).sort(1).values.to(flat.dtype))
    return out.view_as(x)


def paste_border(x: torch.Tensor, donor: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` with the donor's frame of ``width`` px on all four sides."""
    H, W = x.shape[-2:]
    frame = torch.ones(H, W, dtype=torch.bool, device=x.device)
    frame[width:H - width, width:W - width] = False
    return torch.where(frame, donor, x)


def border_width(side: int) -> int:
    """Width of the ``border`` intervention's frame, px."""
    return max(2, round(side / 8))


def wide_transplants(classifier, recipients: torch.Tensor, pos_donors: torch.Tensor,
                     neg_donors: torch.Tensor, *, keep_r: torch.Tensor, keep_p: torch.Tensor,
                     keep_n: torch.Tensor, recipient_ids: torch.Tensor | None = None,
                     neg_ids: torch.Tensor | None = None, threshold: float = 0.5,
                     seed: int = 0, n_boot: int = 1000, batch_size: int = 256,
                     draws: int = DONOR_DRAWS) -> list[dict]:
    """Every intervention of :data:`WIDE_INTERVENTIONS` on every recipient, with ``draws``
    positive and as many negative donors each (module docstring).

    Args:
        classifier: images -> positive logit.
        recipients: (R, 1, H, W) negatives f calls negative (findings in-filled as the donors').
        pos_donors: (P, 1, H, W) positives with their findings in-filled.
        neg_donors: (N, 1, H, W) negatives treated alike.
        keep_r, keep_p, keep_n: (., H, W) bool, pixels outside the in-filled masks (where the
            noise level is measured).
        recipient_ids, neg_ids: (R,), (N,) ids that tell a recipient from itself among the
            negative donors (a recipient never gets itself); None: no such overlap.
        threshold: f's decision threshold on p.
        seed: donor draws and bootstrap.
        n_boot: bootstrap resamples.
        batch_size: images per forward pass (the CPU budget of :mod:`medxgan.cpu` applies).
        draws: donors of each class per recipient (:data:`DONOR_DRAWS`).

    Returns: one dict per intervention: ``name``, ``rate`` (share of positive-donor versions f
    calls positive, over recipients and draws), ``control_rate`` (negative-donor versions),
    ``effect`` with ``ci_low`` / ``ci_high`` (the recipients' paired differences, each averaged
    over its draws), ``n`` (recipients), ``draws``, ``dp`` (mean p difference of the two
    versions), ``p_pos`` / ``p_neg`` (their mean p). Empty list without recipients or donors.
    """
    R, P, N = len(recipients), len(pos_donors), len(neg_donors)
    if R == 0 or P == 0 or N == 0:
        return []
    K = max(1, int(draws))
    g = torch.Generator().manual_seed(int(seed) + 7)
    same = None
    if recipient_ids is not None and neg_ids is not None and N > 1:
        same = recipient_ids.reshape(-1, 1).cpu() == neg_ids.reshape(1, -1).cpu()   # (R, N)
    dp = draw_donors(R, P, K, g)
    dn = draw_donors(R, N, K, g, exclude=same)
    dev = recipients.device
    dp, dn = dp.to(dev), dn.to(dev)
    s_r = noise_sigma(recipients, keep_r).clamp(min=1e-4)
    s_p, s_n = noise_sigma(pos_donors, keep_p), noise_sigma(neg_donors, keep_n)
    w = border_width(min(recipients.shape[-2:]))
    names = WIDE_INTERVENTIONS
    p = torch.empty(len(names), 2, R, K)
    for k in range(K):       # one draw at a time: 6R images in memory, as with one draw
        a, b = dp[:, k], dn[:, k]
        variants = (
            (set_noise(recipients, (s_p[a] / s_r).clamp(0, 4)),
             set_noise(recipients, (s_n[b] / s_r).clamp(0, 4))),
            (match_histogram(recipients, pos_donors[a]), match_histogram(recipients, neg_donors[b])),
            (paste_border(recipients, pos_donors[a], w), paste_border(recipients, neg_donors[b], w)),
        )
        batch = torch.cat([torch.cat(v) for v in variants])     # (6R, 1, H, W)
        p[..., k] = positive_probability(classifier, batch, batch_size).view(len(names), 2, R).cpu()
    dp_np, dn_np = dp.cpu().numpy(), dn.cpu().numpy()
    out = []
    for i, name in enumerate(names):
        pp, pn = p[i]                                            # (R, K) each
        cp, cn = (pp >= threshold).double(), (pn >= threshold).double()
        m, lo, hi, n = crossed_bootstrap_ci(cp.numpy(), dp_np, P, cn.numpy(), dn_np, N,
                                            n_boot=n_boot, seed=seed)
        out.append({"name": name, "rate": float(cp.mean()), "control_rate": float(cn.mean()),
                    "effect": m, "ci_low": lo, "ci_high": hi, "n": n, "draws": K,
                    "dp": float((pp - pn).mean()), "p_pos": float(pp.mean()),
                    "p_neg": float(pn.mean())})
    return out


def describe(name: str) -> str:
    """What an image-wide intervention changes, in words."""
    return {"noise": "the noise level (grain)",
            "histogram": "the intensity distribution (exposure, contrast)",
            "border": "the image border (collimation, frame)"}.get(name, name)


__all__ = ["DONOR_DRAWS", "WIDE_INTERVENTIONS", "border_width", "describe", "draw_donors",
           "match_histogram", "noise_sigma", "paste_border", "set_noise", "wide_transplants"]
