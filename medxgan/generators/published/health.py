"""Health metrics of a medXGAN generator G against its classifier f (one checkpoint).

Class agreement alone is not a health check (docs/findings.md: generators that flip f with one
universal pattern score high on it), so a checkpoint is judged by four numbers:

  - ``agree_neg`` / ``agree_pos``: over ``n`` samples, the share of G(z_a, 0) that f calls
    negative and of G(z_a, z_p) that f calls positive (threshold ``f.threshold``).
  - ``recon_mse``: mean squared error, in GAN space [-1, 1], of a quick batched inversion
    (``medxgan.generators.published.inversion.invert``, recipe ``fast``) on a fixed held-out set of real
    images.
  - ``fidelity`` / ``fidelity_shuffled``: on held-out positives with boxes, the share of the
    change |x_pos - x_neg| (x_pos = G(z_a, z_p), x_neg = G(z_a, 0) at the inverted codes)
    that falls inside the image's own boxes, and inside another positive's boxes (a cyclic
    shift, the control: a map that marks where lesions usually are scores the same on both).
  - ``change_similarity``: mean cosine similarity between different samples' changes
    G(z_a, z_p) - G(z_a, 0) (near 1: one pattern for every image).

Everything runs with G in eval mode and no parameter updates; G's train/eval mode is
restored afterwards.

The health of counterfactuals of any family (:func:`~medxgan.generators.health.counterfactual_health`)
and :func:`~medxgan.generators.health.lesion_fidelity` are :mod:`medxgan.generators.health`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from medxgan.cohort.loading import HeldOut
from medxgan.generators.health import lesion_fidelity
from medxgan.generators.published.gan import from_gan, to_gan


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
    from medxgan.generators.published.inversion import InversionConfig, invert

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
