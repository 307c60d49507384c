"""Latent Integrated Gradients (medXGAN + IG): IG along the generator's latent path.

Paper: Dravid et al., "medXGAN: Visual Explanations for Medical Classifiers through a
Generative Latent Space", CVPR 2022 Workshops (arXiv 2204.05376), "medXGAN + IG"; IG from
Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML 2017.

With latents (z_a, z_p) of an image (from the inversion), the path is
x_i = G(z_a, alpha_i z_p) mapped to [0, 1], alpha_i = i / (n - 1), i = 0..n-1, from the baseline
x_0 = x_neg to x_{n-1} = x_pos. With g_i = grad_x f(x_i) (f's positive-class **logit**):

- ``exact`` (default): map = sum_{i=1}^{n-1} gbar_i ⊙ (x_i - x_{i-1}), a Riemann sum of the
  line integral of grad f along the path, so completeness holds up to discretisation error:
  sum(map) ≈ f(x_pos) - f(x_neg), in logit units. ``rule="right"``: gbar_i = g_i (as written
  in docs/design.md); ``rule="trapezoid"`` (default): gbar_i = (g_i + g_{i-1}) / 2, same cost, error
  O(1/n^2) instead of O(1/n) (tiny-model test: completeness error 1e-7 vs 8e-4 logits at n=101).
- ``published``: map = (x_pos - x_neg) ⊙ mean_i g_i (the published code; no completeness).

``path="residual"`` (beyond the paper) ends the path at the *real* image instead of its
reconstruction: x_i = G(z_a, alpha_i z_p) + alpha_i r with the inversion residual
r = x - G(z_a, z_p), so the path runs from the medXGAN counterfactual x_neg to x itself and
completeness reads sum(map) ≈ f(x) - f(x_neg). It is IG with the generated negative as the
baseline: what the generator cannot draw (a lesion it does not reconstruct) is carried by r
and still attributed, where the generator path attributes only what G reproduced.

The path is the generator family's (:meth:`~medxgan.generators.base.GeneratorFamily.path`;
the family is :func:`medxgan.generators.registry.family_of` of G). For the image-conditioned
families (``inpaint``, ``residual``; no latent code, x_pos = x) both methods take the straight
line x_i = x_neg + alpha_i (x - x_neg) from the family's counterfactual x_neg (``latents``
carry its mask, as the ``medxgan`` explanation's extras do) to the real image: the generator
path and the residual path coincide there, so ``latent_ig`` and ``counterfactual_ig`` give the
same map (the ``path`` extra reads ``line``), with completeness sum(map) ≈ f(x) - f(x_neg);
the audit offers only ``counterfactual_ig`` then (``medxgan.catalogue.not_offered``).

Maps are (B, H, W) (the channel summed). Extras: ``form`` and ``rule`` (B names each),
``completeness_error``
(B,) = |sum(map) - (f(x_pos) - f(x_neg))| in logit units (for both forms), ``delta_logit``
(B,), ``x_neg`` / ``x_pos`` (B, 1, H, W) in [0, 1].

Path points of all images are evaluated together, ``batch_size`` points per forward/backward
(on the CPU in passes of at most :func:`medxgan.cpu.cpu_batch` points: 16 at 128 px).
Memory is O(batch_size · H · W): only the running sum and the previous point are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medxgan.config.explain import CounterfactualIGConfig, LatentIGConfig
from medxgan.cpu import cpu_batch
from medxgan.explain._torch import logit
from medxgan.explain.base import Explainer, Explanation
from medxgan.explain.medxgan import Latents


class LatentIGExplainer(Explainer):
    """IG from x_neg to x_pos along the generator family's path (the published family:
    alpha ↦ G(z_a, alpha z_p) from G(z_a, 0) to G(z_a, z_p)).

    ``explain(images (B, 1, H, W) in [0, 1], ids=None, latents=None)``: ``latents`` (an
    ``InversionResult`` or ``(z_a, z_p)``, e.g. the medxgan explanation's extras) skips
    the inversion or search.
    """

    name = "latent_ig"
    Config = LatentIGConfig

    def __init__(self, classifier: nn.Module, generator: nn.Module,
                 config: dict | LatentIGConfig | None = None):
        super().__init__(classifier, config)
        self.G = generator

    def _modules(self) -> list[nn.Module]:
        return [self.f, self.G]

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 latents: Latents | None = None, **_: Any) -> Explanation:
        from medxgan.generators.registry import family_of

        cfg = self.config
        fam = family_of(self.G)
        cf = fam.counterfactual(self.G, images, self.f, latents=latents,
                                inversion=cfg.inversion,
                                seeds=lambda: self._seeds(images, ids, cfg.seed))
        path = fam.path(self.G, images, cf, residual=cfg.path == "residual")
        B = images.shape[0]
        n = cfg.n_points
        k = max(1, cfg.batch_size // B)                                # alphas per pass
        alphas = torch.linspace(0, 1, n, device=images.device)
        total = None                                                   # (B, 1, H, W)
        prev_x = prev_g = None
        first_logit = last_logit = None
        for s in range(0, n, k):
            a = alphas[s:s + k]                                        # (m,)
            x, g, lg = _grads_at(self.f, path(a), B, a.shape[0])      # (B, m, 1, H, W)
            if s == 0:
                first_logit = lg[:, 0]
                total = torch.zeros_like(x[:, 0])
            last_logit = lg[:, -1]
            if prev_x is not None:                                     # stitch chunk borders
                x = torch.cat([prev_x, x], 1)
                g = torch.cat([prev_g, g], 1)
            if cfg.form == "published":
                total = total + g[:, (0 if prev_x is None else 1):].sum(1)
            else:
                dx = x[:, 1:] - x[:, :-1]                              # (B, m', 1, H, W)
                gi = g[:, 1:] if cfg.rule == "right" else 0.5 * (g[:, 1:] + g[:, :-1])
                total = total + (gi * dx).sum(1)
            prev_x, prev_g = x[:, -1:], g[:, -1:]
            if s == 0:
                x_neg = x[:, 0]
        x_pos = prev_x[:, 0]                                           # (B, 1, H, W)
        if cfg.form == "published":
            attr = (x_pos - x_neg) * total / n
        else:
            attr = total
        maps = attr.sum(1)                                             # (B, H, W)
        delta = last_logit - first_logit                               # (B,) logit units
        err = (maps.flatten(1).sum(1) - delta).abs()
        rule = cfg.rule if cfg.form == "exact" else "mean"
        extras = dict(form=[cfg.form] * B, rule=[rule] * B, path=[path.name] * B,
                      completeness_error=err.detach(),
                      delta_logit=delta.detach(), x_neg=x_neg.detach().clamp(0, 1),
                      x_pos=x_pos.detach().clamp(0, 1))
        if cf.recon_mse is not None:
            extras["recon_mse"] = cf.recon_mse
        return Explanation(maps=maps.detach(), extras=extras)


class CounterfactualIGExplainer(LatentIGExplainer):
    """IG from the medXGAN counterfactual x_neg = G(z_a, 0) to the real image x, along
    G(z_a, alpha z_p) + alpha (x - G(z_a, z_p)) (method ``counterfactual_ig``; beyond the paper).

    It is Integrated Gradients whose baseline is the image's generated negative twin: the
    generator supplies an anatomy-matched "what if it were negative" image, and whatever the
    generator failed to draw (a lesion it cannot reproduce, reconstruction error) is carried
    by the residual and attributed by f's gradient. Completeness: sum(map) ≈ f(x) - f(x_neg).
    """

    name = "counterfactual_ig"
    Config = CounterfactualIGConfig


def _grads_at(f: nn.Module, x: torch.Tensor, B: int, m: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """f's logit and its input gradient at the path points x (B m, 1, H, W), reshaped to
    (B, m, 1, H, W), (B, m, 1, H, W) and (B, m). On the CPU the points go through f in
    :func:`medxgan.cpu.cpu_batch`-sized passes (each point's gradient is its own)."""
    x = x.detach()
    step = cpu_batch(len(x), x.shape[-2:], x.device)                   # medxgan.cpu
    outs, grads = [], []
    for s in range(0, len(x), step):
        xs = x[s:s + step].requires_grad_(True)
        with torch.enable_grad():
            out = logit(f, xs)                                         # (n,)
            (grad,) = torch.autograd.grad(out.sum(), xs)
        outs.append(out.detach())
        grads.append(grad)
    shape = (B, m) + tuple(x.shape[1:])
    return x.reshape(shape), torch.cat(grads).reshape(shape), torch.cat(outs).reshape(B, m)
