"""medXGAN: the difference map and counterfactual interpolation of a class-conditioned GAN.

Paper: Dravid, Schiffers, Gong, Katsaggelos, "medXGAN: Visual Explanations for Medical
Classifiers through a Generative Latent Space", CVPR 2022 Workshops (arXiv 2204.05376).

For each image x the generator is inverted (``inversion.invert``) to latents (z_a, z_p); then

    x_pos = G(z_a, z_p)          reconstruction (positive counterpart)
    x_neg = G(z_a, 0)            negative counterpart (same anatomy, pathology code off)
    map   = |x_pos - x_neg|      difference map, in pixel units of [0, 1]
    frames_k = G(z_a, alpha_k z_p), alpha_k = k / (n_frames - 1)   interpolation

all shown in pixel space [0, 1]. ``counterfactual_flip`` says whether f calls x_neg negative
(p_neg < f.threshold).

The image-conditioned generator families (``G.image_conditioned``: ``inpaint``,
:class:`medxgan.models.inpaint.InpaintGenerator`, and ``residual``,
:class:`medxgan.models.residual.ResidualGenerator`) have no latent code: x_neg is
``G.counterfactual(x, f).x_neg`` (inpaint: the in-filling of the smallest region whose
in-filling makes f call x negative; residual: clamp(x + M(x), 0, 1)), x_pos is x itself, so

    map      = |x - x_neg|
    frames_k = x_neg + alpha_k (x - x_neg)

and ``recon_mse`` is exactly 0 (x_pos = x by construction; 0, not NaN, so the run-level
``recon_mse`` stays a number and says truthfully that nothing of x is lost). Its "latents",
which ``explain_batch`` hands to ``latent_ig`` / ``counterfactual_ig`` and the explain stage
stores in the ``z_a`` / ``z_p`` columns, are the changed mask, flattened, as ``z_a``
(B, H W) in {0, 1} and its area as ``z_p`` (B, 1): ``G.fill(x, mask)`` is x_neg (inpaint: the
in-filling of the mask; residual: x + M(x) where the mask is non-empty).
Extra ``area`` (B,): share of the image in-filled (residual: changed by more than
``mask_tol``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medxgan.config.explain import MedXGANConfig
from medxgan.explain._torch import chunks, logit, threshold, to_unit
from medxgan.explain.base import Explainer, Explanation
from medxgan.explain.inversion import InversionResult, invert


Latents = InversionResult | tuple[torch.Tensor, torch.Tensor]


class MedXGANExplainer(Explainer):
    """Difference map |G(z_a, z_p) - G(z_a, 0)| after inverting G on each image.

    ``explain(images (B, 1, H, W) in [0, 1], ids=None, latents=None)``: pass ``latents`` (an
    :class:`InversionResult` or ``(z_a (B, d_a), z_p (B, d_p))``) to skip the inversion.

    Extras (leading dim B): ``x_pos``, ``x_neg`` (B, 1, H, W) in [0, 1]; ``change`` (B, H, W)
    = x_pos - x_neg; ``z_a`` (B, d_a); ``z_p`` (B, d_p); ``recon_mse`` (B,) in GAN space;
    ``steps_run`` (B,); ``p_x``, ``p_pos``, ``p_neg`` (B,) f's probabilities;
    ``counterfactual_flip`` (B,) float 1.0 / 0.0; ``frames`` (B, n_frames, H, W) in [0, 1];
    ``frame_probs`` (B, n_frames).
    """

    name = "medxgan"
    Config = MedXGANConfig

    def __init__(self, classifier: nn.Module, generator: nn.Module,
                 config: dict | MedXGANConfig | None = None):
        super().__init__(classifier, config)
        self.G = generator

    def _modules(self) -> list[nn.Module]:
        return [self.f, self.G]

    def invert(self, images: torch.Tensor, ids: Sequence[str] | None = None) -> InversionResult:
        """Invert G on (B, 1, H, W) images with per-image (id or content) seeds."""
        return invert(self.G, self.f, images, self.config.inversion,
                      seed=self._seeds(images, ids, self.config.seed))

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 latents: Latents | None = None, **_: Any) -> Explanation:
        cfg = self.config
        if getattr(self.G, "image_conditioned", False):
            return _explain_image(self.G, self.f, images, latents, cfg.n_frames,
                                    cfg.batch_size)
        inv = self.invert(images, ids) if latents is None else None
        z_a, z_p = (inv.z_a, inv.z_p) if inv is not None else _unpack(latents)
        B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
        n = cfg.n_frames
        alphas = torch.linspace(0, 1, n, device=images.device)        # (n,)
        with torch.no_grad():
            za = z_a.repeat_interleave(n, 0)                            # (B n, d_a)
            zp = (z_p[:, None, :] * alphas[None, :, None]).reshape(B * n, -1)  # (B n, d_p)
            frames, probs = _render(self.G, self.f, za, zp, cfg.batch_size)
            frames = frames.reshape(B, n, H, W)                         # (B, n, H, W)
            probs = probs.reshape(B, n)                                 # (B, n)
            x_neg, x_pos = frames[:, :1], frames[:, -1:]                # (B, 1, H, W)
            p_x = torch.sigmoid(logit(self.f, images))
            g = self.G(z_a, z_p)
            recon = (g - (2 * images - 1)).pow(2).flatten(1).mean(1)   # (B,) GAN space
        change = (x_pos - x_neg)[:, 0]                                  # (B, H, W)
        p_neg = probs[:, 0]
        extras: dict[str, Any] = dict(
            x_pos=x_pos, x_neg=x_neg, change=change, z_a=z_a.detach(), z_p=z_p.detach(),
            recon_mse=recon,
            steps_run=inv.steps_run if inv is not None else _steps_of(latents, B, z_a.device),
            p_x=p_x, p_pos=probs[:, -1], p_neg=p_neg,
            counterfactual_flip=(p_neg < threshold(self.f)).float(),
            frames=frames, frame_probs=probs)
        return Explanation(maps=change.abs(), extras=extras)


def image_counterfactual(G: nn.Module, f: nn.Module, images: torch.Tensor,
                         latents: Latents | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """An image-conditioned family's (x_neg (B, 1, H, W) in [0, 1], mask (B, 1, H, W) bool) of
    images on their device: ``G.counterfactual``'s, or ``G.fill`` of the mask carried by
    ``latents`` (the ``z_a`` of an earlier ``medxgan`` explanation)."""
    if latents is not None:
        mask = _unpack(latents)[0].to(images.device).reshape(images.shape) > 0.5
        return G.fill(images, mask), mask
    res = G.counterfactual(images.detach().cpu(), f)
    return res.x_neg.to(images.device), res.mask.to(images.device)


def _explain_image(G: nn.Module, f: nn.Module, images: torch.Tensor,
                   latents: Latents | None, n: int, batch_size: int) -> Explanation:
    """medxgan for an image-conditioned family (module docstring)."""
    B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
    with torch.no_grad():
        x_neg, mask = image_counterfactual(G, f, images, latents)
        alphas = torch.linspace(0, 1, n, device=images.device)        # (n,)
        path = x_neg[:, None] + alphas[None, :, None, None, None] * (images - x_neg)[:, None]
        path = path.reshape(B * n, 1, H, W)                             # (B n, 1, H, W)
        probs = torch.cat([torch.sigmoid(logit(f, path[s])) for s in chunks(B * n, batch_size)])
        frames, probs = path[:, 0].reshape(B, n, H, W), probs.reshape(B, n)
        p_x = torch.sigmoid(logit(f, images))
    change = (images - x_neg)[:, 0]                                     # (B, H, W)
    area = mask.flatten(1).float().mean(1)                              # (B,)
    p_neg = probs[:, 0]
    zeros = torch.zeros(B, device=images.device)
    extras: dict[str, Any] = dict(
        x_pos=images.detach().clone(), x_neg=x_neg, change=change,
        z_a=mask.flatten(1).float(), z_p=area[:, None], recon_mse=zeros,
        steps_run=torch.zeros(B, dtype=torch.int64, device=images.device),
        p_x=p_x, p_pos=p_x, p_neg=p_neg,
        counterfactual_flip=(p_neg < threshold(f)).float(),
        frames=frames, frame_probs=probs, area=area)
    return Explanation(maps=change.abs(), extras=extras)


def _unpack(latents: Latents) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(latents, InversionResult):
        return latents.z_a, latents.z_p
    z_a, z_p = latents
    return z_a, z_p


def _steps_of(latents: Latents | None, B: int, device: torch.device) -> torch.Tensor:
    if isinstance(latents, InversionResult):
        return latents.steps_run
    return torch.zeros(B, dtype=torch.int64, device=device)


def _render(G: nn.Module, f: nn.Module, z_a: torch.Tensor, z_p: torch.Tensor,
            batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """G(z_a, z_p) in [0, 1] as (N, H, W) and f's probability (N,), in chunks."""
    xs, ps = [], []
    for s in chunks(z_a.shape[0], batch_size):
        x = to_unit(G(z_a[s], z_p[s])).clamp(0, 1)                    # (b, 1, H, W)
        xs.append(x[:, 0])
        ps.append(torch.sigmoid(logit(f, x)))
    return torch.cat(xs), torch.cat(ps)
