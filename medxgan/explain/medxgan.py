"""medXGAN: the difference map and counterfactual interpolation of the audit's generator.

Paper: Dravid, Schiffers, Gong, Katsaggelos, "medXGAN: Visual Explanations for Medical
Classifiers through a Generative Latent Space", CVPR 2022 Workshops (arXiv 2204.05376).

For each image x the generator's family (:func:`medxgan.generators.registry.family_of`, the
protocol :class:`~medxgan.generators.base.GeneratorFamily`) gives the counterfactual x_neg and
the positive counterpart x_pos, then

    map      = |x_pos - x_neg|   difference map, in pixel units of [0, 1]
    frames_k = the family's path at alpha_k = k / (n_frames - 1), x_neg to x_pos

all in pixel space [0, 1]. The published family inverts G (x_pos = G(z_a, z_p),
x_neg = G(z_a, 0), frames G(z_a, alpha_k z_p); :mod:`medxgan.generators.published.family`); the
image-conditioned families (``inpaint``, ``residual``; :mod:`medxgan.generators.image_family`)
have x_pos = x, frames x_neg + alpha_k (x - x_neg), ``recon_mse`` exactly 0 and an extra
``area``. ``counterfactual_flip`` says whether f calls x_neg negative (p_neg < f.threshold).
The code that rebuilds x_neg (latents, or the changed mask and its area) is returned as the
``z_a`` / ``z_p`` extras, which ``explain_batch`` hands to ``latent_ig`` / ``counterfactual_ig``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medxgan.config.explain import MedXGANConfig
from medxgan.explain._torch import logit, threshold
from medxgan.explain.base import Explainer, Explanation

#: What the generator methods accept as ``latents``: a family's own fit result (the
#: published family's ``InversionResult``) or ``(z_a, z_p)`` of an earlier explanation.
Latents = Any


class MedXGANExplainer(Explainer):
    """Difference map |x_pos - x_neg| of the generator's counterfactual of each image.

    ``explain(images (B, 1, H, W) in [0, 1], ids=None, latents=None)``: pass ``latents`` (an
    ``InversionResult`` or ``(z_a, z_p)``: the ``z_a`` / ``z_p`` extras of an earlier
    explanation) to skip the inversion or search.

    Extras (leading dim B): ``x_pos``, ``x_neg`` (B, 1, H, W) in [0, 1]; ``change`` (B, H, W)
    = x_pos - x_neg; ``z_a`` (B, d_a); ``z_p`` (B, d_p); ``recon_mse`` (B,) in GAN space;
    ``steps_run`` (B,); ``p_x``, ``p_pos``, ``p_neg`` (B,) f's probabilities;
    ``counterfactual_flip`` (B,) float 1.0 / 0.0; ``frames`` (B, n_frames, H, W) in [0, 1];
    ``frame_probs`` (B, n_frames); and the family's own (``area`` (B,)).
    """

    name = "medxgan"
    Config = MedXGANConfig

    def __init__(self, classifier: nn.Module, generator: nn.Module,
                 config: dict | MedXGANConfig | None = None):
        super().__init__(classifier, config)
        self.G = generator

    def _modules(self) -> list[nn.Module]:
        return [self.f, self.G]

    def invert(self, images: torch.Tensor, ids: Sequence[str] | None = None):
        """Invert a latent family's G on (B, 1, H, W) images with per-image (id or content)
        seeds (an ``InversionResult``)."""
        from medxgan.generators.published.inversion import invert

        return invert(self.G, self.f, images, self.config.inversion,
                      seed=self._seeds(images, ids, self.config.seed))

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 latents: Latents | None = None, **_: Any) -> Explanation:
        from medxgan.generators.registry import family_of

        cfg = self.config
        fam = family_of(self.G)
        cf = fam.counterfactual(self.G, images, self.f, latents=latents,
                                inversion=cfg.inversion,
                                seeds=lambda: self._seeds(images, ids, cfg.seed))
        it = fam.interpolation(self.G, self.f, images, cf, cfg.n_frames, cfg.batch_size)
        if cf.p_x is not None:   # the family's search computed it
            p_x = cf.p_x.to(images.device, torch.float32)
        else:
            with torch.no_grad():
                p_x = torch.sigmoid(logit(self.f, images))
        p_neg = it.frame_probs[:, 0]
        extras: dict[str, Any] = dict(
            x_pos=it.x_pos, x_neg=it.x_neg, change=it.change, z_a=cf.z_a.detach(),
            z_p=cf.z_p.detach(), recon_mse=it.recon_mse, steps_run=cf.steps_run,
            p_x=p_x, p_pos=p_x if it.p_pos is None else it.p_pos, p_neg=p_neg,
            counterfactual_flip=(p_neg < threshold(self.f)).float(),
            frames=it.frames, frame_probs=it.frame_probs, **it.extras)
        return Explanation(maps=it.change.abs(), extras=extras)
