"""Configs of the models and their training (torch-free; the torch modules import them).

- :class:`GanConfig`: architecture of the medXGAN generator and discriminator
  (``medxgan.generators.published.gan``);
- :class:`EncoderConfig`: the optional inversion encoder
  (``medxgan.generators.published.encoder``);
- :class:`GanTrainConfig`: how the generator is trained (``medxgan.generators.train_gan``:
  the published family's loop, or a family's own section);
- :class:`ClassifierTrainConfig`: the baseline classifier (``medxgan.classifiers.train``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medxgan.config.inpaint import InpaintConfig
from medxgan.config.residual import ResidualConfig


class GanConfig(BaseModel):
    """Architecture of the generator and discriminator (saved in every checkpoint).

    Attributes:
        family: the generator family (docs/design.md, "The medXGAN method"): ``inpaint``
            (default since issue #14: a healthy-anatomy in-filler trained on images f calls
            negative, configured by ``GanTrainConfig.inpaint``; of the fields here only
            ``image_size`` applies; docs/generator-families.md has the measurements that made
            it the default), ``residual`` (VA-GAN style: x_neg = x + M(x), a WGAN-GP critic
            between real negatives and x_neg, configured by ``GanTrainConfig.residual``; a
            research option, measured in docs/generator-families.md) or ``published`` (the
            paper's class-conditioned GAN, every other field here; kept for reproduction).
        image_size: side of generated images in px, at least 16 and a multiple of 8 (224 px
            for a DenseNet-121 at its own resolution); the ``published`` family's networks are
            built for 32, 64, 128 and 256 px only and refuse other sides
            (``medxgan.generators.published.gan.PUBLISHED_SIZES``).
        d_a / d_p: sizes of the anatomy / pathology codes (published 100 / 10 at 128 px,
            1000 / 100 at 64 px).
        g_width / d_width: channel multipliers (1.0 = published).
        generator: ``published`` or ``local`` (masked residual, exact zero at z_p = 0).
        upsample: ``convtranspose`` (published) or ``resize_conv`` (no checkerboard).
        discriminator: ``unconditional`` (published) or ``projection`` (class-conditional).
        local_frame: border pixels where the local residual is forced to 0.
        d_dropout: dropout probability in the discriminator (published 0.5).
    """

    model_config = ConfigDict(extra="forbid")

    family: Literal["published", "inpaint", "residual"] = "inpaint"
    image_size: int = Field(64, ge=16)
    d_a: int = Field(100, ge=1)
    d_p: int = Field(10, ge=1)
    g_width: float = Field(1.0, gt=0)
    d_width: float = Field(1.0, gt=0)
    generator: Literal["published", "local"] = "published"
    upsample: Literal["convtranspose", "resize_conv"] = "convtranspose"
    discriminator: Literal["unconditional", "projection"] = "unconditional"
    local_frame: int = Field(0, ge=0)
    d_dropout: float = Field(0.5, ge=0, lt=1)

    @field_validator("image_size", mode="before")
    @classmethod
    def _int_size(cls, v):
        return int(v)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"{v} px is not a multiple of 8")
        return v


class EncoderConfig(BaseModel):
    """How the inversion encoder is built and trained (saved in ``encoder.json``).

    Attributes:
        steps: Adam steps of latent regression (0: no encoder).
        batch: G samples per step.
        lr: Adam learning rate.
        width: channel multiplier of the conv trunk (1.0: 32 -> 256 channels at 64 px).
        time_limit_s: stop early after this many seconds (None: all ``steps``).
        compare_steps: Adam steps of the two held-out inversions in the keep-or-drop test.
        seed: seeds E's weights and the latents drawn.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(0, ge=0)
    batch: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    width: float = Field(1.0, gt=0)
    time_limit_s: float | None = Field(None, gt=0)
    compare_steps: int = Field(50, ge=0)
    seed: int = 0


class GanTrainConfig(BaseModel):
    """How to train (saved in every checkpoint).

    Attributes:
        lambda_cls: weight of the classifier loss (published: 2 brain, 1 chest X-ray).
        cls_loss: ``logits`` (BCE on f's logit) or ``double_softmax`` (published code).
        lambda_min_change: weight of mean |G(z_a, z_p) - G(z_a, 0)| (0: off).
        lambda_mask: weight of the mask-size prior mean(M) of the local generator (0: off).
        cls_shift_px: expectation over transformations for the classifier loss: f sees each
            generated image shifted by a random (sub-pixel) offset of up to this many pixels in
            x and y (0: off). A lesion survives a small shift; an adversarial pattern that
            only works at one exact position (the prototype's border comb) does not.
        cls_noise: the same, with Gaussian pixel noise of this std ([0, 1] units; 0: off).
        lambda_d_cls: projection discriminator only: weight of an auxiliary loss that trains
            its class term on *real* images, BCE(<embed(1) - embed(0), phi(x)>, y), so that it
            learns early what real positives look like (0: off, the plain projection GAN).
        lr, betas: Adam for G and D.
        batch: images per step.
        steps: total steps of the run (a resumed run continues up to this step).
        seed: seeds initial weights, batches, latents and dropout.
        checkpoint_every: steps between checkpoints (the last step is always saved).
        health_every: steps between health evaluations (at checkpoints; None: every one).
        health_samples: samples for the agreement metric.
        health_heldout: held-out positives with boxes (and half as many negatives) inverted
            for recon MSE and lesion fidelity.
        health_inversion_steps: Adam steps of the quick inversion.
        heldout_split: split the held-out set comes from (falls back to test, then train).
        time_limit_s: stop after this many seconds of this call (checked between steps; the
            step reached gets a final checkpoint with health); None: run all ``steps``.
        device: ``auto`` (CUDA with bf16 autocast when present), ``cpu`` or ``cuda``.
        encoder: the optional inversion encoder trained after G on G's samples
            (:class:`~medxgan.generators.published.encoder.EncoderConfig`; ``steps`` 0, the default: none).
        inpaint: the ``inpaint`` family's in-filler, its training, counterfactual search and
            health checks (:class:`~medxgan.config.inpaint.InpaintConfig`); only ``seed``,
            ``device``, ``time_limit_s`` (a budget when ``inpaint.seconds`` is unset),
            ``health_heldout`` and ``heldout_split`` of the fields above apply to that family.
        residual: the ``residual`` family's map generator, critic and training
            (:class:`~medxgan.config.residual.ResidualConfig`); the same fields above apply
            (``residual.seconds`` before ``time_limit_s``).
    """

    model_config = ConfigDict(extra="forbid")

    lambda_cls: float = Field(2.0, ge=0)
    cls_loss: Literal["logits", "double_softmax"] = "logits"
    lambda_min_change: float = Field(0.0, ge=0)
    lambda_mask: float = Field(0.0, ge=0)
    lambda_d_cls: float = Field(0.0, ge=0)
    cls_shift_px: float = Field(0.0, ge=0)
    cls_noise: float = Field(0.0, ge=0)
    lr: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    batch: int = Field(32, ge=2)
    steps: int = Field(2000, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)
    health_every: int | None = Field(None, ge=1)
    health_samples: int = Field(1000, ge=2)
    health_heldout: int = Field(32, ge=0)
    health_inversion_steps: int = Field(50, ge=0)
    heldout_split: str = "val"
    time_limit_s: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    encoder: EncoderConfig = EncoderConfig()
    inpaint: InpaintConfig = InpaintConfig()
    residual: ResidualConfig = ResidualConfig()


class ClassifierTrainConfig(BaseModel):
    """Baseline classifier training options.

    Attributes:
        arch: ``small_cnn`` (prototype: 3 conv blocks + GAP + linear), ``small_cnn2`` (two
            convs per block) or a torchvision name
            such as ``resnet18`` (first conv adapted to 1 channel).
        epochs, batch: passes over the train split and images per step.
        max_lr: OneCycle peak learning rate of Adam.
        weight_decay: Adam weight decay.
        flips: random flips during training: ``horizontal`` (left-right), ``both`` (also
            up-down) or ``none``.
        remove_tag: train (and additionally evaluate) on images with the phantom shortcut
            tag removed (``medxgan.phantoms.remove_tag``).
        image_size: train at this size (None: the cohort's size); saved as the spec's
            ``input_size``.
        threshold: decision threshold written to the spec and used for accuracy.
        seed: seeds weights, batch order and flips.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    """

    model_config = ConfigDict(extra="forbid")

    arch: str = "small_cnn"
    epochs: int = Field(14, ge=1)
    batch: int = Field(64, ge=2)
    max_lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    flips: Literal["none", "horizontal", "both"] = "horizontal"
    remove_tag: bool = False
    image_size: int | None = Field(None, ge=8)
    threshold: float = Field(0.5, gt=0, lt=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


__all__ = ["ClassifierTrainConfig", "EncoderConfig", "GanConfig", "GanTrainConfig"]
