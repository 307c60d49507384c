"""Health of counterfactuals, for any generator family (docs/design.md, "The medXGAN method").

Class agreement alone is not a health check (docs/findings.md: generators that flip f with one
universal pattern score high on it). :func:`counterfactual_health` judges counterfactuals
already computed for real positives: change similarity (next to the same statistic of the box
masks), universal transfer, oracle agreement, lesion fidelity own / shuffled
(:func:`lesion_fidelity`), NCC with the true change (phantoms), the change inside / outside
the boxes and the null behaviour on real negatives. The image-conditioned families' end-of-run
health (:mod:`medxgan.generators.image_run`) and ``bench.generators`` use it; the published
family's per-checkpoint health (:mod:`medxgan.generators.published.health`) uses
:func:`lesion_fidelity`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["counterfactual_health", "lesion_fidelity"]


def lesion_fidelity(change: torch.Tensor, masks: torch.Tensor, *, seed: int = 0
                    ) -> tuple[float, float]:
    """Mean share of |change| inside each image's own boxes and inside another positive's.

    Args:
        change: (P, S, S) changes |x_pos - x_neg| of P >= 2 positives (any sign: abs taken).
        masks: (P, S, S) bool lesion masks of the same images.
        seed: seed of the partner derangement.
    Returns:
        (own, shuffled): the control scores each change against its partner's masks, the
        seeded derangement of the score stage's ``<metric>_shuffled`` control
        (``medxgan.metrics.localization.derangement``, as ``shuffle_partners`` uses it).
    """
    from medxgan.metrics.localization import derangement

    d, m = change.abs(), masks.to(change.dtype)
    total = d.flatten(1).sum(1).clamp_min(1e-12)                       # (P,)
    own = (d * m).flatten(1).sum(1) / total
    partner = derangement(m.shape[0], seed=seed).to(m.device) if m.shape[0] > 1 else None
    other = m[partner] if partner is not None else torch.zeros_like(m)  # (P, S, S)
    shuffled = (d * other).flatten(1).sum(1) / total
    return float(own.mean()), float(shuffled.mean())


def _mean_pairwise_cosine(v: torch.Tensor) -> float:
    """Mean cosine similarity over pairs of different rows of v (N, ...) (zero rows skipped)."""
    from medxgan.metrics.counterfactual import counterfactual_similarity

    sim = counterfactual_similarity(v, sample=max(len(v), 1))
    return float(sim.nanmean()) if bool((~sim.isnan()).any()) else float("nan")


@torch.no_grad()
def counterfactual_health(f: nn.Module, images: torch.Tensor, x_neg: torch.Tensor,
                          masks: torch.Tensor, *, change: torch.Tensor | None = None,
                          negatives: torch.Tensor | None = None,
                          null_pair: tuple[torch.Tensor, torch.Tensor] | None = None,
                          twins: torch.Tensor | None = None, oracle: nn.Module | None = None,
                          seed: int = 0) -> dict[str, float]:
    """Health of counterfactuals x_neg of real positives (any generator family).

    Args:
        f: the audited classifier (logit (B,), optional ``threshold``).
        images: (P, 1, S, S) real positives in [0, 1]; masks: (P, S, S) bool, their boxes.
        x_neg: (P, 1, S, S) their counterfactuals in [0, 1].
        change: (P, S, S) the change the generator reports (default ``images - x_neg``; the
            published family's is x_pos - x_neg).
        negatives: (N, 1, S, S) real negatives f calls negative (universal transfer), or None.
        null_pair: (real negatives (M, 1, S, S), whatever f says of them; the family's
            counterfactuals of them) for the null check, or None.
        twins: (P, 1, S, S) true healthy twins (phantoms) or None.
        oracle: a second classifier trained with another seed, or None.
        seed: seed of the shuffled-partner derangement.

    Returns: a flat dict (NaN where an input is missing): ``flip_rate`` (f calls x_neg
    negative), ``change_similarity`` (mean pairwise cosine of the changes) and
    ``change_similarity_boxes`` (the same of the box masks: what image-specific changes that
    follow the lesions score), ``universal_flip`` (share of ``negatives`` f calls positive after
    adding the mean change), ``oracle_flip`` (share of x_neg the oracle calls negative, among
    images it calls positive), ``fidelity`` / ``fidelity_shuffled`` (:func:`lesion_fidelity`),
    ``counterfactual_ncc`` / ``counterfactual_ncc_shuffled`` (NCC with the image's own true
    change images - twins, and with a partner's), ``mask_dice`` / ``mask_dice_shuffled`` (Dice
    of the changed pixels with the true lesion's, and with a partner's:
    :func:`medxgan.metrics.counterfactual.counterfactual_dice`), ``mask_precision`` /
    ``mask_recall`` (Dice's halves, :func:`medxgan.metrics.counterfactual.mask_overlap`: the
    share of changed pixels that are lesion, the share of the lesion changed),
    ``change_in_boxes`` / ``change_out_boxes`` (mean squared change inside / outside the own
    boxes), ``twin_l1_in_boxes`` (mean
    |x_neg - twin| inside the boxes), ``null_change`` (mean |change| on real negatives) and
    ``n_health``.
    """
    from medxgan.metrics.counterfactual import (counterfactual_dice, counterfactual_ncc,
                                                mask_overlap, universal_flip)
    from medxgan.metrics.localization import derangement

    nan = float("nan")
    thr = float(getattr(f, "threshold", 0.5))
    P = len(images)
    d = (images - x_neg)[:, 0] if change is None else change              # (P, S, S)
    m = masks.to(torch.bool)
    out: dict[str, float] = {"n_health": float(P)}
    if P == 0:
        return out
    p_neg = torch.cat([torch.sigmoid(f(x_neg[s:s + 256]).float().reshape(-1))
                       for s in range(0, P, 256)])
    out["flip_rate"] = float((p_neg < thr).float().mean())
    out["change_similarity"] = _mean_pairwise_cosine(d)
    out["change_similarity_boxes"] = _mean_pairwise_cosine(m.float())
    out["universal_flip"] = universal_flip(d.mean(0), negatives, f) \
        if negatives is not None and len(negatives) else nan
    out["oracle_flip"] = nan
    if oracle is not None:
        thr_o = float(getattr(oracle, "threshold", 0.5))
        po_x = torch.sigmoid(oracle(images).float().reshape(-1))
        po_neg = torch.sigmoid(oracle(x_neg).float().reshape(-1))
        sel = po_x >= thr_o
        out["oracle_flip"] = float((po_neg[sel] < thr_o).float().mean()) if bool(sel.any()) \
            else nan
    out["fidelity"], out["fidelity_shuffled"] = lesion_fidelity(d, m, seed=seed) if P >= 2 \
        else (nan, nan)
    sq = d.pow(2)
    mf = m.to(sq.dtype)
    out["change_in_boxes"] = float((sq * mf).sum() / mf.sum().clamp_min(1))
    out["change_out_boxes"] = float((sq * (1 - mf)).sum() / (1 - mf).sum().clamp_min(1))
    out["counterfactual_ncc"] = out["counterfactual_ncc_shuffled"] = nan
    out["mask_dice"] = out["mask_dice_shuffled"] = nan
    out["mask_precision"] = out["mask_recall"] = nan
    out["twin_l1_in_boxes"] = nan
    if twins is not None:
        true = (images - twins.to(images.device))[:, 0]                   # (P, S, S)
        out["counterfactual_ncc"] = float(counterfactual_ncc(d, true).nanmean())
        removed = images[:, 0] - x_neg[:, 0]                              # (P, S, S)
        overlap = mask_overlap(removed, true)
        out["mask_dice"] = float(overlap["dice"].nanmean())
        out["mask_precision"] = float(overlap["precision"].nanmean())
        out["mask_recall"] = float(overlap["recall"].nanmean())
        if P >= 2:
            partner = derangement(P, seed=seed).to(d.device)
            out["counterfactual_ncc_shuffled"] = float(counterfactual_ncc(d, true[partner])
                                                       .nanmean())
            out["mask_dice_shuffled"] = float(counterfactual_dice(removed, true[partner])
                                              .nanmean())
        err = (x_neg - twins.to(x_neg.device)).abs()[:, 0]
        out["twin_l1_in_boxes"] = float((err * mf).sum() / mf.sum().clamp_min(1))
    out["null_change"] = float((null_pair[0] - null_pair[1]).abs().mean()) \
        if null_pair is not None and len(null_pair[0]) else nan
    return out
