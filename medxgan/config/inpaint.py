"""Config of the healthy-anatomy inpainter and its training (torch-free).

:class:`InpaintConfig` is read by :func:`medxgan.models.inpaint.train_inpainter` and saved in
its stats; exported from :mod:`medxgan.config` with the other model configs.

The recipe is the prototype's (README "Generator variants"; issue #14): a U-Net with
``base`` channels, trained with L1 on images the classifier calls negative, holes of 1-3
ellipses / rectangles whose sides span the finding's size range. The generative in-filling
idea is FIDO's (Chang et al., "Explaining image classifiers by counterfactual generation",
ICLR 2019).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InpaintConfig(BaseModel):
    """Architecture and training of the inpainter.

    Attributes:
        base: channels of the U-Net's first level (doubled at every level).
        depth: number of 2x down-samplings (image sides must be divisible by ``2**depth``).
        steps: optimiser steps (None: only ``seconds`` limits the run).
        seconds: wall-clock budget of the training loop, checked between steps (None: only
            ``steps``). At least one of the two must be set; the first reached stops.
        batch: images per step.
        lr: Adam learning rate (constant).
        shapes: (min, max) number of shapes per hole mask, inclusive.
        shape_frac: (min, max) side of one shape as a fraction of the image side (the prototype's
            4-20 px at 64 px = 0.0625-0.3125), i.e. the finding's size range.
        outside_weight: weight of the L1 between the raw network output and the image *outside*
            the hole (the composite equals the image there; this term only teaches the net its
            context), relative to the L1 inside the hole.
        flip: random horizontal flips of the training images.
        seed: seeds the initial weights, the batches and the masks.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        log_every: steps between entries of the loss history in the stats.
    """

    model_config = ConfigDict(extra="forbid")

    base: int = Field(8, ge=1)
    depth: int = Field(3, ge=1, le=6)
    steps: int | None = Field(2000, ge=1)
    seconds: float | None = Field(None, gt=0)
    batch: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    shapes: tuple[int, int] = (1, 3)
    shape_frac: tuple[float, float] = (0.0625, 0.3125)
    outside_weight: float = Field(0.1, ge=0)
    flip: bool = True
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    log_every: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "InpaintConfig":
        if self.steps is None and self.seconds is None:
            raise ValueError("set steps, seconds or both")
        lo, hi = self.shapes
        if not 1 <= lo <= hi:
            raise ValueError(f"shapes must be 1 <= min <= max, got {self.shapes}")
        a, b = self.shape_frac
        if not 0 < a <= b <= 1:
            raise ValueError(f"shape_frac must be 0 < min <= max <= 1, got {self.shape_frac}")
        return self
