"""SmoothGrad baseline (captum ``NoiseTunnel`` over ``Saliency`` or ``IntegratedGradients``).

Paper: Smilkov, Thorat, Kim, Viégas, Wattenberg, "SmoothGrad: removing noise by adding noise",
ICML 2017 workshop (arXiv 1706.03825).

map = mean over k = 1..nt_samples of A(x + eps_k), eps_k ~ N(0, stdevs^2) in pixel units of
[0, 1], with A the base attribution of f's positive-class logit (``saliency``: |grad| when
``abs``, else grad; ``ig``: IG from a black baseline), channel summed.

Seeding: captum draws the noise from the global RNG, so one image's noise would depend on its
batch. Here each image's noise comes from its own generator, seeded by (seed, image id or
content): maps do not depend on the batch and are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

from medxgan.config.explain import SmoothGradConfig
from medxgan.cpu import cpu_chunks
from medxgan.explain._torch import logit
from medxgan.explain.base import Explainer, Explanation
from medxgan.explain.seeding import mix_seed, per_image_normal


class _SeededNoiseTunnel(NoiseTunnel):
    """NoiseTunnel whose noise is given: (B, nt_samples, *input_shape), image-major."""

    def __init__(self, method, noise: torch.Tensor):
        super().__init__(method)
        self._noise = noise
        self._cursor = 0

    def _add_noise_to_inputs(self, nt_samples_partition, inputs, stdevs):  # captum 0.9 hook
        k, c = nt_samples_partition, self._cursor
        eps = self._noise[:, c:c + k]                                   # (B, k, ...)
        if eps.shape[1] != k:
            raise RuntimeError("NoiseTunnel asked for more samples than were drawn")
        self._cursor += k
        (x,) = inputs
        noisy = x.repeat_interleave(k, 0) + eps.reshape((-1,) + tuple(x.shape[1:]))  # (B k, ...)
        return (noisy.requires_grad_() if self.is_gradient_method else noisy,)


class SmoothGradExplainer(Explainer):
    """SmoothGrad of the positive-class logit with per-image seeded noise."""

    name = "smoothgrad"
    Config = SmoothGradConfig

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 **_: Any) -> Explanation:
        cfg = self.config
        seeds = [mix_seed("smoothgrad", s) for s in self._seeds(images, ids, cfg.seed)]
        noise = per_image_normal(seeds, (cfg.nt_samples,) + tuple(images.shape[1:]),
                                 images.device) * cfg.stdevs          # (B, n, 1, H, W)
        fwd = lambda x: logit(self.f, x)  # noqa: E731
        kwargs: dict[str, Any] = {}
        if cfg.base == "saliency":
            method = Saliency(fwd)
            kwargs["abs"] = cfg.abs
        else:
            method = IntegratedGradients(fwd)
            kwargs.update(baselines=0.0, n_steps=cfg.ig_steps)
        k = cfg.nt_samples_batch_size or cfg.nt_samples                # samples per pass
        per_image = k * (cfg.ig_steps if cfg.base == "ig" else 1)
        c, per_pass = cpu_chunks(len(images), per_image, len(images) * per_image,
                                 images.shape[-2:], images.device)     # medxgan.cpu
        if per_pass < len(images) * per_image:                         # the CPU budget binds
            k = max(1, min(k, per_pass // c))                          # one image: fewer too
            if cfg.base == "ig":
                kwargs["internal_batch_size"] = max(per_pass, c * k)
        attrs = []
        with torch.enable_grad():
            for s in range(0, len(images), c):
                nt = _SeededNoiseTunnel(method, noise[s:s + c])
                attrs.append(nt.attribute(images[s:s + c], nt_type="smoothgrad",
                                          nt_samples=cfg.nt_samples, stdevs=float(cfg.stdevs),
                                          nt_samples_batch_size=k,
                                          **kwargs))
        return Explanation(maps=torch.cat(attrs).sum(1).detach())     # (B, H, W)
