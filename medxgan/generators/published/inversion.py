"""Batched GAN inversion: find (z_a, z_p) with G(z_a, z_p) ≈ x and f(G(z)) ≈ f(x).

Paper: Dravid et al., "medXGAN: Visual Explanations for Medical Classifiers through a
Generative Latent Space", CVPR 2022 Workshops (arXiv 2204.05376), section 3.3.

For every image x (pixel space [0, 1], GAN space x_g = 2 x - 1) the per-sample loss is

    L_i(z) = w_pix · mean_pixels (G(z_a, z_p) - x_g)^2  +  BCE(p_pos(G(z)), p_pos(x))
             [+ w_prior · mean(z^2) over z = [z_a, z_p], ``fast`` only]

with p_pos = sigmoid(f(.)) (f returns the positive-class logit; the BCE target is the soft
probability f gives x). The generator G and classifier f are frozen (eval mode, parameters
not updated, BatchNorm on running statistics).

Batching without coupling: the optimiser minimises sum_i L_i. Sample i's latents enter only
L_i, so the gradient with respect to (z_a[i], z_p[i]) is dL_i/dz_i, and Adam's update is
elementwise (its moments are per coordinate), so each sample follows exactly the trajectory
it would follow alone (up to floating-point reassociation in batched kernels). Per-sample
early stop (plateau): a sample whose excess loss (L_i minus the BCE floor, the entropy of
its target probability; >= 0) has not fallen below (1 - ``tol``) times its best value for
``patience`` consecutive steps is frozen: its gradient is masked to zero and its latents are
restored after every step (Adam's momentum would otherwise keep moving it).

Seeding: the initial latents of image i, restart r, are drawn from a generator seeded with
``mix_seed(seed_i, r)``. With ``seed`` an int, ``seed_i`` is derived from ``(seed, i)``, the
index within the call, so a result depends on the image's position in the call. Results are
independent of the batch (and of batch size) when ``init`` latents are given or when ``seed``
is a per-image list (``seeding.id_seeds(ids, s)`` or ``seeding.content_seeds(images, s)``).

Recipes (``InversionConfig.recipe``):
  - ``published-brain``: random init, w_pix 10, lr 1e-3, 1000 steps (the published brain code).
  - ``published-cxr``: z_a = 0 init, w_pix 4, lr 1e-2, 5000 steps (the chest X-ray code).
  - ``fast`` (default): random init, w_pix 10, lr 0.1, 50 steps, batched, best iterate kept,
    a Gaussian latent prior (``w_prior`` 0.3, added to L_i), optional multi-start
    (``restarts``), per-sample plateau stop (``tol``, ``patience``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.config.explain import RECIPES, InversionConfig  # noqa: F401  (re-exported)
from medxgan.explain._torch import chunks, frozen, logit, to_gan, to_unit
from medxgan.explain.seeding import index_seeds, mix_seed, per_image_normal


@dataclass
class InversionResult:
    """Latents found for B images and what they generate.

    Attributes:
        z_a: (B, d_a) anatomy codes.
        z_p: (B, d_p) pathology codes.
        x_pos: (B, 1, H, W) G(z_a, z_p) in pixel space [0, 1].
        recon_mse: (B,) mean squared error of G(z_a, z_p) against x, in GAN space [-1, 1].
        loss: (B,) final inversion loss L_i.
        steps_run: (B,) int64 Adam steps applied to the returned restart.
    """

    z_a: torch.Tensor
    z_p: torch.Tensor
    x_pos: torch.Tensor
    recon_mse: torch.Tensor
    loss: torch.Tensor
    steps_run: torch.Tensor

    def __len__(self) -> int:
        return self.z_a.shape[0]

    def select(self, idx: slice | torch.Tensor | Sequence[int]) -> "InversionResult":
        """The results of a subset of images."""
        return InversionResult(*(getattr(self, k)[idx] for k in
                                 ("z_a", "z_p", "x_pos", "recon_mse", "loss", "steps_run")))


def inversion_loss(G: nn.Module, f: nn.Module, z_a: torch.Tensor, z_p: torch.Tensor,
                   x_g: torch.Tensor, target_prob: torch.Tensor, w_pix: float,
                   w_prior: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample inversion loss.

    Args:
        z_a: (N, d_a); z_p: (N, d_p).
        x_g: (N, 1, H, W) target images in GAN space [-1, 1].
        target_prob: (N,) f's probability on the target images.
    Returns:
        loss (N,), recon_mse (N,) in GAN space, g (N, 1, H, W) = G(z_a, z_p) in [-1, 1].
    """
    g = G(z_a, z_p)                                                    # (N, 1, H, W)
    mse = (g - x_g).pow(2).flatten(1).mean(1)                          # (N,)
    bce = F.binary_cross_entropy_with_logits(logit(f, to_unit(g)), target_prob,
                                             reduction="none")        # (N,)
    loss = w_pix * mse + bce
    if w_prior > 0:  # Gaussian prior on the latents: keeps them where G was trained
        loss = loss + w_prior * torch.cat([z_a, z_p], 1).pow(2).mean(1)
    return loss, mse, g


def initial_latents(G: nn.Module, seeds: Sequence[int], config: InversionConfig,
                    restart: int = 0, device: torch.device | str = "cpu"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded initial (z_a (B, d_a), z_p (B, d_p)) for restart ``restart`` of each image."""
    rs = [mix_seed("inversion", s, restart) for s in seeds]
    z = per_image_normal(rs, (int(G.d_a) + int(G.d_p),), device)      # (B, d_a + d_p)
    z_a, z_p = z[:, :G.d_a].clone(), z[:, G.d_a:].clone()
    if config.init_a == "zeros":
        z_a.zero_()
    if config.init_p == "zeros":
        z_p.zero_()
    return z_a, z_p


def invert(G: nn.Module, f: nn.Module, images01: torch.Tensor,
           config: InversionConfig | None = None, *, seed: int | Sequence[int] = 0,
           init: tuple[torch.Tensor, torch.Tensor] | None = None) -> InversionResult:
    """Invert G for a batch of images (see the module docstring for the loss and the recipes).

    Args:
        G: generator with ``d_a``, ``d_p``, ``image_size``; ``G(z_a, z_p)`` -> (N, 1, S, S)
            in [-1, 1].
        f: classifier, ``f(x (N, 1, S, S) in [0, 1])`` -> positive-class logit (N,).
        images01: (B, 1, S, S) float images in pixel space [0, 1].
        config: recipe and options (default ``InversionConfig()``, the ``fast`` recipe).
        seed: an int (per-image seeds from the index within this call) or B per-image seeds.
        init: optional initial (z_a (B, d_a), z_p (B, d_p)) for restart 0 (other restarts
            draw seeded random latents). Without it, restart 0 starts from the generator's
            encoder E(x) when G has one and ``config.use_encoder`` is set.
    Returns:
        :class:`InversionResult` (tensors on the images' device, detached).
    """
    cfg = config or InversionConfig()
    x = images01.float()
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got {tuple(x.shape)}")
    B = x.shape[0]
    S = int(getattr(G, "image_size", x.shape[-1]))
    if x.shape[-2:] != (S, S):
        raise ValueError(f"image size {tuple(x.shape[-2:])} != generator size {(S, S)}")
    seeds = index_seeds(B, seed) if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != B:
        raise ValueError(f"{len(seeds)} seeds for {B} images")
    if init is not None and (init[0].shape != (B, G.d_a) or init[1].shape != (B, G.d_p)):
        raise ValueError("init must be (z_a (B, d_a), z_p (B, d_p))")

    dev = x.device
    R = cfg.restarts
    enc = getattr(G, "encoder", None)
    with frozen(G, f):
        if init is None and cfg.use_encoder and isinstance(enc, nn.Module):
            with torch.no_grad():
                init = enc(to_gan(x))                                  # (z_a, z_p) of E(x)
        # every (image, restart) pair is one independent sample, image-major: n = i * R + r
        za0, zp0 = [], []
        for r in range(R):
            za, zp = initial_latents(G, seeds, cfg, r, dev)
            if r == 0 and init is not None:
                za = init[0].detach().to(dev, torch.float32)
                zp = init[1].detach().to(dev, torch.float32)
            za0.append(za)
            zp0.append(zp)
        z_a0 = torch.stack(za0, 1).reshape(B * R, -1)                  # (B R, d_a)
        z_p0 = torch.stack(zp0, 1).reshape(B * R, -1)                  # (B R, d_p)
        x_rep = x.repeat_interleave(R, 0)                              # (B R, 1, S, S)
        parts = [_invert_samples(G, f, x_rep[s], z_a0[s], z_p0[s], cfg)
                 for s in chunks(B * R, cfg.batch_size)]
    z_a, z_p, g, mse, loss, steps = (torch.cat(t) for t in zip(*parts))
    best = loss.reshape(B, R).argmin(1)                                # (B,)
    pick = torch.arange(B, device=dev) * R + best
    return InversionResult(z_a=z_a[pick], z_p=z_p[pick], x_pos=to_unit(g[pick]).clamp(0, 1),
                           recon_mse=mse[pick], loss=loss[pick], steps_run=steps[pick])


def _invert_samples(G: nn.Module, f: nn.Module, x01: torch.Tensor, z_a0: torch.Tensor,
                    z_p0: torch.Tensor, cfg: InversionConfig) -> tuple[torch.Tensor, ...]:
    """Optimise N independent samples together; returns z_a, z_p, g, mse, loss, steps (N...)."""
    N = x01.shape[0]
    dev = x01.device
    x_g = to_gan(x01)                                                  # (N, 1, S, S)
    with torch.no_grad():
        target = torch.sigmoid(logit(f, x01))                          # (N,)
        # BCE's floor is the entropy of the soft target; the convergence test uses the excess
        floor = F.binary_cross_entropy(target, target, reduction="none")  # (N,)
    z_a = z_a0.clone().requires_grad_(True)
    z_p = z_p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z_a, z_p], lr=cfg.lr, betas=cfg.betas)
    active = torch.ones(N, dtype=torch.bool, device=dev)
    steps = torch.zeros(N, dtype=torch.int64, device=dev)
    streak = torch.zeros(N, dtype=torch.int64, device=dev)
    best_e = torch.full((N,), float("inf"), device=dev)
    best_loss = torch.full((N,), float("inf"), device=dev)
    best_a, best_p = z_a0.clone(), z_p0.clone()
    best_steps = torch.zeros_like(steps)

    for _ in range(cfg.steps):
        if not bool(active.any()):
            break
        loss, _, _ = inversion_loss(G, f, z_a, z_p, x_g, target, cfg.w_pix, cfg.w_prior)
        with torch.no_grad():
            l = loss.detach()
            _update_best(l, z_a, z_p, steps, best_loss, best_a, best_p, best_steps)
            if cfg.tol > 0:
                e = l - floor                                          # w_pix MSE + KL >= 0
                improved = e < best_e * (1.0 - cfg.tol)                # (N,) plateau test
                streak = torch.where(improved, torch.zeros_like(streak), streak + 1)
                best_e = torch.minimum(best_e, e)
                active = active & (streak < cfg.patience)
        if not bool(active.any()):
            break
        opt.zero_grad(set_to_none=False)
        (loss * active).sum().backward()                               # frozen samples: zero grad
        held_a, held_p = z_a.detach().clone(), z_p.detach().clone()
        opt.step()
        with torch.no_grad():
            keep = ~active
            z_a[keep] = held_a[keep]                                   # Adam momentum must not
            z_p[keep] = held_p[keep]                                   # move frozen samples
            steps += active.long()

    with torch.no_grad():
        loss, mse, g = inversion_loss(G, f, z_a, z_p, x_g, target, cfg.w_pix, cfg.w_prior)
        if cfg.keep_best:
            _update_best(loss, z_a, z_p, steps, best_loss, best_a, best_p, best_steps)
            loss, mse, g = inversion_loss(G, f, best_a, best_p, x_g, target, cfg.w_pix, cfg.w_prior)
            return best_a, best_p, g, mse, loss, best_steps
        return z_a.detach(), z_p.detach(), g, mse, loss, steps


def _update_best(l: torch.Tensor, z_a: torch.Tensor, z_p: torch.Tensor, steps: torch.Tensor,
                 best_loss: torch.Tensor, best_a: torch.Tensor, best_p: torch.Tensor,
                 best_steps: torch.Tensor) -> None:
    """In place: where ``l`` beats ``best_loss``, remember the current latents and step count."""
    better = l < best_loss                                             # (N,)
    best_loss[better] = l[better]
    best_a[better] = z_a.detach()[better]
    best_p[better] = z_p.detach()[better]
    best_steps[better] = steps[better]
