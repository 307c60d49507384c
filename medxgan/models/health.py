"""Health metrics of a medXGAN generator G against its classifier f (one checkpoint).

Class agreement alone is not a health check (docs/findings.md: generators that flip f with one
universal pattern score high on it), so a checkpoint is judged by four numbers:

  - ``agree_neg`` / ``agree_pos``: over ``n`` samples, the share of G(z_a, 0) that f calls
    negative and of G(z_a, z_p) that f calls positive (threshold ``f.threshold``).
  - ``recon_mse``: mean squared error, in GAN space [-1, 1], of a quick batched inversion
    (``medxgan.explain.inversion.invert``, recipe ``fast``) on a fixed held-out set of real
    images.
  - ``fidelity`` / ``fidelity_shuffled``: on held-out positives with boxes, the share of the
    change |x_pos - x_neg| (x_pos = G(z_a, z_p), x_neg = G(z_a, 0) at the inverted codes)
    that falls inside the image's own boxes, and inside another positive's boxes (a cyclic
    shift, the control: a map that marks where lesions usually are scores the same on both).
  - ``change_similarity``: mean cosine similarity between different samples' changes
    G(z_a, z_p) - G(z_a, 0) (near 1: one pattern for every image).

Everything runs with G in eval mode and no parameter updates; G's train/eval mode is
restored afterwards.

:func:`counterfactual_health` judges counterfactuals already computed for real images, for any
generator family (the ``inpaint`` family's end-of-run health, ``bench.generators``): change
similarity (next to the same statistic of the box masks), universal transfer, oracle agreement,
lesion fidelity own / shuffled, NCC with the true change (phantoms), the change inside / outside
the boxes and the null behaviour on real negatives.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from medxgan.cohort.loading import HeldOut
from medxgan.models.gan import from_gan, to_gan


@contextlib.contextmanager
def _eval(*modules: nn.Module) -> Iterator[None]:
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, t in zip(modules, modes):
            m.train(t)


def _latents(G: nn.Module, n: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, G.d_a, generator=g).to(device)
    z_p = torch.randn(n, G.d_p, generator=g).to(device)
    return z_a, z_p


@torch.no_grad()
def agreement(G: nn.Module, f: nn.Module, n: int = 1000, seed: int = 0,
              batch: int = 250) -> tuple[float, float]:
    """(share of G(z_a, 0) with p < threshold, share of G(z_a, z_p) with p >= threshold)."""
    dev = next(G.parameters()).device
    z_a, z_p = _latents(G, n, seed, dev)
    thr = float(getattr(f, "threshold", 0.5))
    neg = pos = 0
    with _eval(G):
        for s in range(0, n, batch):
            a, p = z_a[s:s + batch], z_p[s:s + batch]
            p_neg = torch.sigmoid(f(from_gan(G(a, torch.zeros_like(p)))).reshape(-1))
            p_pos = torch.sigmoid(f(from_gan(G(a, p))).reshape(-1))
            neg += int((p_neg < thr).sum())
            pos += int((p_pos >= thr).sum())
    return neg / n, pos / n


@torch.no_grad()
def change_similarity(G: nn.Module, n: int = 64, seed: int = 1) -> float:
    """Mean cosine similarity between the changes G(z_a, z_p) - G(z_a, 0) of n samples."""
    dev = next(G.parameters()).device
    z_a, z_p = _latents(G, n, seed, dev)
    with _eval(G):
        d = (G(z_a, z_p) - G(z_a, torch.zeros_like(z_p))).flatten(1)  # (n, S*S)
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = d @ d.T                                                      # (n, n)
    off = ~torch.eye(n, dtype=torch.bool, device=cos.device)
    return float(cos[off].mean())


def inversion_health(G: nn.Module, f: nn.Module, held: HeldOut, steps: int = 50,
                     seed: int = 0) -> dict[str, float]:
    """Held-out inversion MSE (GAN space) and lesion fidelity (own and shuffled boxes).

    Returns:
        ``recon_mse`` over all held-out images; ``fidelity``, ``fidelity_shuffled`` over the
        held-out positives with boxes (NaN when fewer than two), ``n_heldout``, ``n_fidelity``.
    """
    from medxgan.explain.inversion import InversionConfig, invert

    with _eval(G):
        res = invert(G, f, held.images, InversionConfig.recipe("fast", steps=steps), seed=seed)
        with torch.no_grad():
            z_a, z_p = res.z_a, res.z_p
            x_pos = G(z_a, z_p)                                        # (N, 1, S, S)
            x_neg = G(z_a, torch.zeros_like(z_p))
            mse = (x_pos - to_gan(held.images)).pow(2).flatten(1).mean(1)  # (N,)
            diff = (x_pos - x_neg).abs()[:, 0]                         # (N, S, S)
    sel = (held.labels == 1) & held.masks.flatten(1).any(1)
    out = {"recon_mse": float(mse.mean()), "n_heldout": int(len(mse)),
           "n_fidelity": int(sel.sum()), "fidelity": float("nan"),
           "fidelity_shuffled": float("nan")}
    if int(sel.sum()) >= 2:
        out["fidelity"], out["fidelity_shuffled"] = lesion_fidelity(diff[sel], held.masks[sel])
    return out


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


def evaluate_health(G: nn.Module, f: nn.Module, held: HeldOut | None, n_agreement: int = 1000,
                    inversion_steps: int = 50, n_similarity: int = 64,
                    seed: int = 0) -> dict[str, float]:
    """All health metrics of one checkpoint as a flat dict (see the module docstring)."""
    neg, pos = agreement(G, f, n_agreement, seed)
    out: dict[str, float] = {"agree_neg": neg, "agree_pos": pos,
                             "change_similarity": change_similarity(G, n_similarity, seed + 1)}
    if held is not None and len(held.images):
        out.update(inversion_health(G, f, held, inversion_steps, seed))
    return out


@torch.no_grad()
def sample_grid(G: nn.Module, n: int = 8, seed: int = 2) -> bytes:
    """PNG bytes of n rows of triples G(z_a, 0) | G(z_a, z_p) | |difference| (per-row scaled)."""
    from PIL import Image

    dev = next(G.parameters()).device
    z_a, z_p = _latents(G, n, seed, dev)
    with _eval(G):
        neg = from_gan(G(z_a, torch.zeros_like(z_p)))[:, 0].float().cpu()  # (n, S, S)
        pos = from_gan(G(z_a, z_p))[:, 0].float().cpu()
    diff = (pos - neg).abs()
    diff = diff / diff.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
    S = neg.shape[-1]
    sep = torch.ones(n, S, 2)
    rows = torch.cat([neg, sep, pos, sep, diff], 2)                    # (n, S, 3S + 4)
    grid = torch.cat([torch.cat([r, torch.ones(2, r.shape[1])]) for r in rows])
    arr = (grid.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


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
    change images - twins, and with a partner's), ``change_in_boxes`` / ``change_out_boxes``
    (mean squared change inside / outside the own boxes), ``twin_l1_in_boxes`` (mean
    |x_neg - twin| inside the boxes), ``null_change`` (mean |change| on real negatives) and
    ``n_health``.
    """
    from medxgan.metrics.counterfactual import counterfactual_ncc, universal_flip
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
    out["twin_l1_in_boxes"] = nan
    if twins is not None:
        true = (images - twins.to(images.device))[:, 0]                   # (P, S, S)
        out["counterfactual_ncc"] = float(counterfactual_ncc(d, true).nanmean())
        if P >= 2:
            partner = derangement(P, seed=seed).to(d.device)
            out["counterfactual_ncc_shuffled"] = float(counterfactual_ncc(d, true[partner])
                                                       .nanmean())
        err = (x_neg - twins.to(x_neg.device)).abs()[:, 0]
        out["twin_l1_in_boxes"] = float((err * mf).sum() / mf.sum().clamp_min(1))
    out["null_change"] = float((null_pair[0] - null_pair[1]).abs().mean()) \
        if null_pair is not None and len(null_pair[0]) else nan
    return out
