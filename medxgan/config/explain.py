"""Configs of GAN inversion and of every explanation method (torch-free).

The explainers in ``medxgan.explain`` import their ``Config`` from here; the audit config
(:class:`~medxgan.config.audit.ExplainSection`) nests them, so that a typo in a method's
options fails when the audit YAML is loaded, before any work.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medxgan.catalogue import METHODS

RECIPES: dict[str, dict[str, Any]] = {
    "published-brain": dict(init_a="normal", init_p="normal", w_pix=10.0, lr=1e-3, steps=1000,
                            keep_best=False, tol=0.0, restarts=1, w_prior=0.0),
    "published-cxr": dict(init_a="zeros", init_p="normal", w_pix=4.0, lr=1e-2, steps=5000,
                          keep_best=False, tol=0.0, restarts=1, w_prior=0.0),
    "fast": dict(init_a="normal", init_p="normal", w_pix=10.0, lr=0.1, steps=50,
                 keep_best=True, tol=1e-4, patience=10, restarts=1, w_prior=0.3),
}


class InversionConfig(BaseModel):
    """How to invert G (defaults: the ``fast`` recipe).

    Attributes:
        name: the recipe this config starts from; ``InversionConfig(name="published-brain")``
            takes that recipe's values for every key not given explicitly.
        steps: Adam steps per sample (at most; early stop may end a sample sooner).
        lr: Adam learning rate.
        betas: Adam betas.
        w_pix: weight of the pixel MSE (computed in GAN space [-1, 1]) against the BCE term.
        init_a / init_p: initial z_a / z_p: ``normal`` (N(0, I), seeded per image) or ``zeros``.
        restarts: independent starts per image; each image keeps its lowest-loss restart.
        keep_best: return each sample's lowest-loss iterate instead of the last one.
        tol: relative improvement of the best excess loss under which a step counts as a
            plateau step (0: never stop early).
        patience: consecutive plateau steps that freeze a sample.
        batch_size: samples (images x restarts) optimised together; larger calls are chunked.
        use_encoder: when G carries an inversion encoder (``G.encoder``, attached by
            ``load_generator`` only where it beat random starts on held-out images) and no
            ``init`` is given, restart 0 starts from E(x) instead of ``init_a`` / ``init_p``.
        w_prior: weight of a Gaussian latent prior w_prior * mean(z^2) over [z_a, z_p] (beyond
            the paper; 0 in the published recipes). Without it lr 0.1 drives z_a off the
            region G was trained on and G(z_a, 0) stops being a negative: on the 64 px phantom
            bench, 0.3 raised the counterfactual flip rate of ``fast`` from 0.56 to 0.88
            (published-brain: 0.88) at recon MSE 0.046 (published: 0.048).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "fast"
    steps: int = Field(50, ge=0)
    lr: float = Field(0.1, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    w_pix: float = Field(10.0, ge=0)
    init_a: Literal["normal", "zeros"] = "normal"
    init_p: Literal["normal", "zeros"] = "normal"
    restarts: int = Field(1, ge=1)
    keep_best: bool = True
    tol: float = Field(1e-4, ge=0)
    patience: int = Field(10, ge=1)
    w_prior: float = Field(0.3, ge=0)
    batch_size: int = Field(256, ge=1)
    use_encoder: bool = True

    @model_validator(mode="before")
    @classmethod
    def _fill_recipe(cls, data: Any) -> Any:
        """``{"name": recipe, ...}`` starts from that recipe's values; explicit keys win."""
        if isinstance(data, dict) and "name" in data:
            name = data["name"]
            if name not in RECIPES:
                raise ValueError(f"unknown inversion recipe {name!r}; "
                                 f"choose from {sorted(RECIPES)}")
            return {**RECIPES[name], **data}
        return data

    @classmethod
    def recipe_names(cls) -> tuple[str, ...]:
        return tuple(RECIPES)

    @classmethod
    def recipe(cls, name: str = "fast", **overrides: Any) -> "InversionConfig":
        """The named recipe with ``overrides`` applied (unknown keys raise)."""
        return cls.model_validate({**overrides, "name": name})


class ExplainerConfig(BaseModel):
    """Base of every method's config: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: Grad-CAM ``layer`` value: the mean of every block output's map
#: (``medxgan.explain.gradcam.candidate_layers``), each scaled to [0, 1] per image
BLOCKS_MEAN = "blocks-mean"


class GradCAMConfig(ExplainerConfig):
    """``layer``: module name in ``f.named_modules()`` or the spec's naming (None:
    target_layer() / last Conv2d), or ``"blocks-mean"``; ``layers``: several module names whose
    maps are averaged (each upsampled and scaled to [0, 1] per image, as pytorch-grad-cam's
    multi-layer option); ``relu``: ReLU on the map (standard Grad-CAM); ``upsample``:
    interpolation mode."""

    layer: str | None = None
    layers: tuple[str, ...] | None = None
    relu: bool = True
    upsample: str = "bilinear"

    @model_validator(mode="after")
    def _one_layer_option(self) -> "GradCAMConfig":
        if self.layers is not None and (self.layer is not None or not self.layers):
            raise ValueError("gradcam: give either 'layer' or a non-empty 'layers', not both")
        return self


class IGConfig(ExplainerConfig):
    """baseline, blur_sigma (px), n_steps, method (captum's), internal_batch_size."""

    baseline: Literal["black", "mean", "blur"] = "black"
    blur_sigma: float = Field(4.0, gt=0)
    n_steps: int = Field(50, ge=1)
    method: str = "gausslegendre"
    internal_batch_size: int | None = 64


class SmoothGradConfig(ExplainerConfig):
    """base (saliency | ig), nt_samples, stdevs (pixel units), abs (saliency only),
    ig_steps (ig only), nt_samples_batch_size (captum batching), seed."""

    base: Literal["saliency", "ig"] = "saliency"
    nt_samples: int = Field(25, ge=1)
    stdevs: float = Field(0.15, ge=0)
    abs: bool = True
    ig_steps: int = Field(20, ge=1)
    nt_samples_batch_size: int | None = 5
    seed: int = 0


class OcclusionConfig(ExplainerConfig):
    """window, stride (px), fill value in [0, 1], perturbations_per_eval (captum batching)."""

    window: int = Field(8, ge=1)
    stride: int = Field(4, ge=1)
    fill: float = 0.0
    perturbations_per_eval: int = Field(16, ge=1)


class RandomConfig(ExplainerConfig):
    seed: int = 0


class MedXGANConfig(ExplainerConfig):
    """Options of the medXGAN explainer.

    Attributes:
        inversion: inversion recipe and options (``{"name": "published-brain"}`` picks a recipe).
        n_frames: interpolation frames from x_neg (alpha 0) to x_pos (alpha 1).
        seed: base seed; each image's inversion seed comes from (seed, image id or content).
        batch_size: generator / classifier evaluations per forward pass for the frames.
    """

    inversion: InversionConfig = InversionConfig()
    n_frames: int = Field(11, ge=2)
    seed: int = 0
    batch_size: int = Field(256, ge=1)


class LatentIGConfig(ExplainerConfig):
    """Options of latent IG.

    Attributes:
        n_points: path points including both ends (101 published).
        form: ``exact`` path sum (completeness) or ``published`` (x_pos - x_neg) ⊙ mean grad.
        rule: gradient point per segment of the exact form: ``right`` (g_i) or ``trapezoid``.
        path: ``generator`` (published: x_neg -> x_pos through G) or ``residual`` (x_neg -> the
            real image, the reconstruction residual added linearly along the way).
        batch_size: path points (over all images) per forward/backward pass.
        inversion: used when no latents are passed; seed: base seed of the inversion.
    """

    n_points: int = Field(101, ge=2)
    form: Literal["exact", "published"] = "exact"
    rule: Literal["right", "trapezoid"] = "trapezoid"
    path: Literal["generator", "residual"] = "generator"
    batch_size: int = Field(128, ge=1)
    inversion: InversionConfig = InversionConfig()
    seed: int = 0


class CounterfactualIGConfig(LatentIGConfig):
    """Latent IG on the residual path (see the module docstring); ``path`` is fixed."""

    path: Literal["residual"] = "residual"


class MethodOptions(BaseModel):
    """``explain.method_options`` of the audit config: one optional field per method of
    ``medxgan.catalogue.METHODS``, holding that method's options (unknown methods and unknown
    keys are errors). A method left out runs with its defaults."""

    model_config = ConfigDict(extra="forbid")

    gradcam: GradCAMConfig | None = None
    ig: IGConfig | None = None
    smoothgrad: SmoothGradConfig | None = None
    occlusion: OcclusionConfig | None = None
    medxgan: MedXGANConfig | None = None
    latent_ig: LatentIGConfig | None = None
    counterfactual_ig: CounterfactualIGConfig | None = None
    random: RandomConfig | None = None
    box_prior: ExplainerConfig | None = None

    def given(self) -> dict[str, dict[str, Any]]:
        """method -> the options as written in the config (keys not given are left out)."""
        given = self.model_dump(mode="json", exclude_unset=True)
        return {m: opts for m, opts in given.items() if opts is not None}


#: method name -> its options model (the config of ``make_explainer(method, ...)``).
METHOD_CONFIGS: dict[str, type[ExplainerConfig]] = {
    name: MethodOptions.model_fields[name].annotation.__args__[0]  # type: ignore[union-attr]
    for name in MethodOptions.model_fields}

if tuple(METHOD_CONFIGS) != METHODS:  # the catalogue and this model must name the same methods
    raise RuntimeError(f"MethodOptions fields {list(METHOD_CONFIGS)} differ from the catalogue's "
                       f"methods {list(METHODS)}: add or remove the field here")

__all__ = ["BLOCKS_MEAN", "RECIPES", "CounterfactualIGConfig", "ExplainerConfig", "GradCAMConfig",
           "IGConfig", "InversionConfig", "LatentIGConfig", "METHOD_CONFIGS", "MedXGANConfig",
           "MethodOptions", "OcclusionConfig", "RandomConfig", "SmoothGradConfig"]
