"""Config of the ``residual`` generator family and its training (torch-free).

The recipe is VA-GAN's (Baumgartner et al., "Visual Feature Attribution using Wasserstein
GANs", CVPR 2018): a map generator M (a small U-Net) turns an image x into x_neg = x + M(x),
a WGAN-GP critic tells real negatives from x_neg, and an L1 penalty keeps M small. As in
VA-GAN the class signal comes from data, not from the classifier's gradient: "positive" and
"negative" are what the audited classifier f calls the train images, so the critic's real
negatives are images f calls negative and M learns what f's positives have that they lack.
A direct classifier term (``cls_weight``) is an option, off by default.

:class:`ResidualConfig` is read by :func:`medxgan.generators.residual.vagan.train_residual` and saved in
every residual-family checkpoint (``GanTrainConfig.residual``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medxgan.config.inpaint import InpaintHealthConfig


class ResidualConfig(BaseModel):
    """Architecture and training of the residual family (VA-GAN style).

    Attributes:
        base: channels of the map generator's first U-Net level (doubled at every level).
        depth: its number of 2x down-samplings (image sides divisible by ``2**depth``).
        critic_base: channels of the critic's first conv (doubled at every stride-2 conv, four
            of them, no normalisation: WGAN-GP).
        steps: generator steps (None: only ``seconds`` limits the run).
        seconds: wall-clock budget of the training loop, checked between steps (None: only
            ``steps``). At least one of the two must be set; the first reached stops.
        batch: images per step (positives for M, as many real negatives for the critic).
        lr: Adam learning rate of M and the critic (constant); ``betas`` Adam's betas
            (WGAN-GP's 0.5 / 0.9 by default, VA-GAN used 0.0 / 0.9).
        critic_steps: critic updates per generator update (WGAN-GP: 5).
        gp_weight: weight of the gradient penalty (WGAN-GP: 10).
        l1_weight: weight of mean |M(x)| (intensity units in [0, 1]) in the generator loss.
        cls_weight: weight of softplus(f(x_neg)) (f's positive logit pushed down) in the
            generator loss; 0 (default) is VA-GAN (no classifier gradient at all).
        mask_tol: |x - x_neg| above which a pixel counts as changed (the reported ``mask``
            and ``area``; intensity units).
        flip: random horizontal flips of the training images.
        seed: seeds the initial weights and the batches.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        log_every: steps between entries of the loss history in the stats.
        health: the end-of-run health checks (same fields as the inpaint family's).
    """

    model_config = ConfigDict(extra="forbid")

    base: int = Field(8, ge=1)
    depth: int = Field(3, ge=1, le=6)
    critic_base: int = Field(16, ge=1)
    steps: int | None = Field(2000, ge=1)
    seconds: float | None = Field(None, gt=0)
    batch: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.9)
    critic_steps: int = Field(5, ge=1)
    gp_weight: float = Field(10.0, ge=0)
    l1_weight: float = Field(10.0, ge=0)
    cls_weight: float = Field(0.0, ge=0)
    mask_tol: float = Field(0.05, gt=0, lt=1)
    flip: bool = True
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    log_every: int = Field(100, ge=1)
    health: InpaintHealthConfig = InpaintHealthConfig()

    @model_validator(mode="after")
    def _check(self) -> "ResidualConfig":
        if self.steps is None and self.seconds is None:
            raise ValueError("set steps, seconds or both")
        return self
