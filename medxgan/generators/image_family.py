"""What the image-conditioned families share: no latent code, x_pos is x itself.

An image-conditioned family's generator G (``inpaint``:
:class:`~medxgan.generators.inpaint.inpainter.InpaintGenerator`, ``residual``:
:class:`~medxgan.generators.residual.vagan.ResidualGenerator`) has
``G.counterfactual(images, f) -> SearchResult`` (x_neg and the changed mask) and
``G.fill(images, mask) -> x_neg``. For the explainers (docs/design.md, "The medXGAN method"):

    map      = |x - x_neg|
    frames_k = x_neg + alpha_k (x - x_neg)

``recon_mse`` is exactly 0 (x_pos = x by construction; 0, not NaN, so the run-level
``recon_mse`` stays a number and says truthfully that nothing of x is lost). The code handed
on to ``latent_ig`` / ``counterfactual_ig`` (and stored in the ``z_a`` / ``z_p`` columns) is the
changed mask, flattened, as ``z_a`` (B, H W) in {0, 1} and its area as ``z_p`` (B, 1); both IG
methods integrate along the straight line from x_neg to x (``path`` = ``line``: the generator
path and the residual path coincide where x_pos = x).

A family subclasses :class:`ImageFamily` and implements :meth:`ImageFamily.fit` (train its
network) and :meth:`ImageFamily.build` (its generator from a checkpoint); training, health and
the run folder are :mod:`medxgan.generators.image_run`'s.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from medxgan.explain._torch import probabilities
from medxgan.generators.base import (Counterfactual, GeneratorFamily, Interpolation, Path,
                                     ProgressFn)
from medxgan.generators.image_run import Fit, end_of_run_health, train_image_run


class ImageFamily(GeneratorFamily):
    """Base of the image-conditioned families (module docstring)."""

    latent = False

    @abstractmethod
    def fit(self, pos: torch.Tensor, neg: torch.Tensor, sides: dict[str, str], own: Any,
            f: nn.Module, gan_config, run: dict[str, Any], dev: torch.device, cohort_url: str,
            progress: ProgressFn | None) -> Fit:
        """Train the family's network on the train images f calls positive (``pos``) and
        negative (``neg``) (``sides``: ``called`` or ``label`` per side) with its own config
        ``own`` and ``run`` (``seed``, ``device``, ``seconds``); G goes on ``dev``."""

    @abstractmethod
    def build(self, checkpoint: dict) -> nn.Module:
        """The generator of a loaded checkpoint dict (CPU, eval mode)."""

    # ------------------------------------------------------------------ the GAN stage
    def train(self, cohort_url, classifier, store, gan_config, train_config, progress=None):
        return train_image_run(self, cohort_url, classifier, store, gan_config, train_config,
                               progress)

    def load(self, checkpoint, store=None, sha256=None, attach_encoder=True):
        return self.build(checkpoint).eval(), None

    def health(self, G, f, cohort, gan_config, train_config):
        own = getattr(train_config, self.own_config)
        return end_of_run_health(G, f, cohort, gan_config, train_config, own=own,
                                 filler=self.infiller(G))[0]

    # ------------------------------------------------------------------ explaining
    def counterfactual(self, G, images, f, *, latents=None, inversion=None, seeds=None):
        """``G.counterfactual``'s x_neg and mask, or ``G.fill`` of the mask that ``latents``
        carries (the ``z_a`` of an earlier ``medxgan`` explanation); on the images' device."""
        p_x = p_neg = None
        if latents is not None:
            code = latents.z_a if hasattr(latents, "z_a") else latents[0]
            mask = code.to(images.device).reshape(images.shape) > 0.5
            x_neg = self.fill(G, images, mask)
        else:
            res = G.counterfactual(images.detach().cpu(), f)
            x_neg, mask = res.x_neg.to(images.device), res.mask.to(images.device)
            p_x, p_neg = res.p_x.to(images.device), res.p_neg.to(images.device)
        area = mask.flatten(1).float().mean(1)                          # (B,)
        return Counterfactual(z_a=mask.flatten(1).float(), z_p=area[:, None],
                              steps_run=torch.zeros(images.shape[0], dtype=torch.int64,
                                                    device=images.device),
                              x_neg=x_neg, mask=mask, p_x=p_x, p_neg=p_neg)

    def interpolation(self, G, f, images, cf, n, batch_size):
        B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
        x_neg = cf.x_neg
        with torch.no_grad():
            alphas = torch.linspace(0, 1, n, device=images.device)    # (n,)
            path = x_neg[:, None] + alphas[None, :, None, None, None] * (images - x_neg)[:, None]
            frames = path[:, :, 0]                                      # (B, n, H, W)
            known = cf.p_x is not None and cf.p_neg is not None         # the search's own
            inner = path[:, 1:-1] if known else path                    # f on the rest only
            m = inner.shape[1]
            inner = inner.reshape(B * m, 1, H, W)                       # (B m, 1, H, W)
            # cache-sized batches through f's channels-last copy on the CPU (medxgan.cpu), as
            # the search's own passes: 9 frames per image, a quarter of the explanation's time
            probs = probabilities(f, inner, batch_size).to(images.device).reshape(B, m)
            if known:  # frame 0 is x_neg, frame n - 1 the image: f already saw both
                probs = torch.cat([cf.p_neg.to(probs)[:, None], probs,
                                   cf.p_x.to(probs)[:, None]], 1)       # (B, n)
        return Interpolation(
            frames=frames, frame_probs=probs, x_neg=x_neg, x_pos=images.detach().clone(),
            change=(images - x_neg)[:, 0], recon_mse=torch.zeros(B, device=images.device),
            extras={"area": cf.mask.flatten(1).float().mean(1)})

    def path(self, G, images, cf, *, residual=False):
        x_neg = cf.x_neg

        def points(alphas: torch.Tensor) -> torch.Tensor:
            B, m = images.shape[0], alphas.shape[0]
            with torch.no_grad():
                pts = x_neg[:, None] + alphas[None, :, None, None, None] * (images - x_neg)[:, None]
                return pts.reshape((B * m,) + tuple(images.shape[1:]))  # (B m, 1, H, W)

        return Path("line", points)

    def fill(self, G, images, mask):
        return G.fill(images, mask)
