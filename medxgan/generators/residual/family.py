"""The ``residual`` family (a research option, issue #14): VA-GAN's additive map generator,
x_neg = clamp(x + M(x), 0, 1) (Baumgartner et al., CVPR 2018; :mod:`.vagan`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medxgan.generators.image_family import ImageFamily
from medxgan.generators.image_run import Fit
from medxgan.generators.residual.vagan import ResidualGenerator, ResidualNet, train_residual


class ResidualFamily(ImageFamily):
    """``gan.model.family: residual``, configured by ``gan.train.residual``."""

    own_config = "residual"
    progress = "train residual map generator (steps)"
    x_neg_text = "the counterfactual x_neg (residual family)"

    def fit(self, pos: torch.Tensor, neg: torch.Tensor, sides: dict[str, str], own: Any,
            f: nn.Module, gan_config, run: dict[str, Any], dev: torch.device, cohort_url: str,
            progress=None) -> Fit:
        """The map generator against a WGAN-GP critic: positives in, negatives as the
        critic's real images."""
        if len(pos) == 0:
            raise ValueError(f"{cohort_url}: no train image is positive, for f or by "
                             "label: nothing for the residual family to learn from")
        net, stats = train_residual(pos, neg, own, classifier=f, progress=progress, **run)
        G = ResidualGenerator(net.to(dev), gan_config.image_size, own.mask_tol)
        arch = {"residual_net": {"base": net.base, "depth": net.depth}}
        return Fit(net, G, arch, stats,
                   f"{sides['positive']}_positive+{sides['negative']}_negative")

    def build(self, checkpoint: dict) -> ResidualGenerator:
        arch = checkpoint["residual_net"]
        net = ResidualNet(int(arch["base"]), int(arch["depth"]))
        net.load_state_dict(checkpoint["generator"])
        tol = (checkpoint.get("train_config") or {}).get("residual", {}).get("mask_tol", 0.05)
        return ResidualGenerator(net.eval(), int(checkpoint["gan_config"]["image_size"]),
                                 tol).eval()
