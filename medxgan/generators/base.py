"""The generator family protocol: what the GAN stage and the explainers ask of a family.

A generator *family* (``gan.model.family``; docs/design.md, "Generator families as plug-ins")
is one :class:`GeneratorFamily` subclass, registered under its name in
:mod:`medxgan.generators.registry`. Nothing outside ``medxgan/generators/`` branches on the
family: the GAN stage (:mod:`medxgan.generators.stage`), the explainers
(:mod:`medxgan.explain.medxgan`, :mod:`medxgan.explain.latent_ig`), the score stage's in-filler,
the CLI and the report ask the family object instead.

Entry points (G is the ``nn.Module`` that :meth:`GeneratorFamily.load` returns; images are
(B, 1, H, W) float in [0, 1]; f is the classifier contract, ``f(x) -> (B,)`` positive logit):

- **train** ``(cohort_url, f, store, gan_config, train_config, progress) -> summary``: train
  (or resume, or reuse) a run in the run folder contract (:mod:`medxgan.generators.run`);
- **load** ``(checkpoint dict, store, sha256) -> (G, encoder record or None)``;
- **counterfactual** ``(G, images, f) -> Counterfactual``: x_neg (and, for the
  image-conditioned families, the changed ``mask``) plus the code that rebuilds it;
- **fill** ``(G, images, mask) -> x_neg``: the counterfactual rebuilt from a carried mask;
- **health** ``(G, f, cohort, gan_config, train_config) -> dict``: held-out health;
- **interpolation** / **path**: the frames of the ``medxgan`` strip and the path that
  ``latent_ig`` / ``counterfactual_ig`` integrate along, from x_neg (alpha = 0) to x_pos.

:class:`SearchResult` is the image-conditioned families' own counterfactual result
(``G.counterfactual(images, f)``), shared by the in-filling search and the residual family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from medxgan.config.explain import InversionConfig
    from medxgan.config.models import GanConfig, GanTrainConfig
    from medxgan.storage import Store

ProgressFn = Callable[[int, dict[str, float]], None]
Seeds = Callable[[], Sequence[int]]  # per-image seeds, computed only when a family needs them


@dataclass
class SearchResult:
    """Counterfactuals of a batch of B images by an image-conditioned family (CPU tensors).

    Attributes:
        x_neg: (B, 1, H, W) float32 in [0, 1], the counterfactual (= x where f already said
            negative).
        mask: (B, 1, H, W) bool, the changed (in-filled) region (empty where f already said
            negative).
        p_x: (B,) float32, f's positive probability of x.
        p_neg: (B,) float32, f's positive probability of x_neg.
        area: (B,) float32, share of the image's pixels in the mask.
        threshold: the decision threshold used.
    """

    x_neg: torch.Tensor
    mask: torch.Tensor
    p_x: torch.Tensor
    p_neg: torch.Tensor
    area: torch.Tensor
    threshold: float

    @property
    def flipped(self) -> torch.Tensor:
        """(B,) bool: f calls x_neg negative (``p_neg < threshold``)."""
        return self.p_neg < self.threshold


@dataclass
class Counterfactual:
    """A family's counterfactuals of B images, as the explainers receive them.

    Attributes:
        z_a, z_p: the code that rebuilds them (the ``medxgan`` explanation's ``z_a`` / ``z_p``
            columns, handed on to ``latent_ig`` / ``counterfactual_ig``): the latents
            (B, d_a), (B, d_p) of a latent family; the changed mask flattened (B, H W) and
            its area (B, 1) of an image-conditioned one.
        steps_run: (B,) int64 optimisation steps that fitted the code (0: none).
        x_neg: (B, 1, H, W) in [0, 1] on the images' device, or None where the family draws
            it on its path (a latent family: G(z_a, 0)).
        mask: (B, 1, H, W) bool, the changed region, or None (a latent family).
        recon_mse: (B,) the fit's reconstruction error when the family fitted its code to
            these images (an inversion), else None.
        p_x, p_neg: (B,) f's probability of the images and of x_neg where the family's
            search already computed them (the inpaint family's ``SearchResult``), else None;
            the explainer and the interpolation reuse them instead of running f again.
    """

    z_a: torch.Tensor
    z_p: torch.Tensor
    steps_run: torch.Tensor
    x_neg: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    recon_mse: torch.Tensor | None = None
    p_x: torch.Tensor | None = None
    p_neg: torch.Tensor | None = None


@dataclass
class Interpolation:
    """The ``medxgan`` explanation's part that depends on the family (tensors lead with B).

    Attributes:
        frames: (B, n, H, W) in [0, 1], x_neg (frame 0) to x_pos (frame n - 1).
        frame_probs: (B, n) f's probability of each frame.
        x_neg, x_pos: (B, 1, H, W) in [0, 1]; change: (B, H, W) = x_pos - x_neg.
        recon_mse: (B,) how far x_pos is from x (GAN space [-1, 1]; 0 where x_pos is x).
        p_pos: (B,) f's probability of x_pos, or None where x_pos is x itself.
        extras: further family extras (``area`` of the image-conditioned families).
    """

    frames: torch.Tensor
    frame_probs: torch.Tensor
    x_neg: torch.Tensor
    x_pos: torch.Tensor
    change: torch.Tensor
    recon_mse: torch.Tensor
    p_pos: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Path:
    """A family's path from x_neg (alpha = 0) to its end (alpha = 1): ``path(alphas (m,))`` ->
    points (B m, 1, H, W) in [0, 1], image-major, without gradients; ``name`` is what the IG
    explanations report in their ``path`` column."""

    def __init__(self, name: str, points: Callable[[torch.Tensor], torch.Tensor]):
        self.name = name
        self._points = points

    def __call__(self, alphas: torch.Tensor) -> torch.Tensor:
        return self._points(alphas)


class GeneratorFamily(ABC):
    """One generator family (module docstring). Subclass it, implement the abstract methods,
    and register it: ``register("<name>", <Name>Family)`` in :mod:`medxgan.generators.registry`
    (the name is also a value of ``GanConfig.family``).

    Attributes:
        name: ``gan.model.family`` (set by ``register``).
        latent: the family has a latent code (z_a, z_p) found by inversion, so its generator
            path differs from the straight line to x (``latent_ig`` is offered); False for an
            image-conditioned family (x_pos is x).
        own_config: its section of ``gan.train`` (``GanTrainConfig.<own_config>``), or None
            when it is trained by ``gan.train`` itself.
        progress: the GAN stage's progress label.
        x_neg_text: how the report names x_neg.
    """

    name: str = ""
    latent: ClassVar[bool] = False
    own_config: ClassVar[str | None] = None
    progress: ClassVar[str] = "train generator (steps)"
    x_neg_text: ClassVar[str] = "the counterfactual x_neg"

    # ------------------------------------------------------------------ the GAN stage
    @abstractmethod
    def train(self, cohort_url: str, classifier: nn.Module, store: Store, gan_config: GanConfig,
              train_config: GanTrainConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Train (or resume, or reuse) a run of this family in ``store`` (the run folder
        contract of :mod:`medxgan.generators.run`); returns the run summary, also written to
        ``manifest.json``."""

    @abstractmethod
    def load(self, checkpoint: dict, store: Store | None = None, sha256: str | None = None,
             attach_encoder: bool = True) -> tuple[nn.Module, dict | None]:
        """(G on the CPU in eval mode, the ``encoder.json`` record of an inversion encoder
        attached to G or None) of a loaded checkpoint dict (``sha256``: of its file, which an
        encoder record must name)."""

    @abstractmethod
    def health(self, G: nn.Module, f: nn.Module, cohort, gan_config: GanConfig,
               train_config: GanTrainConfig) -> dict[str, float]:
        """Health of G on the cohort's held-out split (as the run's ``best.json`` holds it)."""

    def planned_steps(self, train_config: GanTrainConfig) -> int:
        """The steps training is planned for (the progress bar's total; 1 when only a
        seconds budget is set)."""
        own = getattr(train_config, self.own_config) if self.own_config else None
        return (own.steps or 1) if own is not None else train_config.steps

    # ------------------------------------------------------------------ explaining
    @abstractmethod
    def counterfactual(self, G: nn.Module, images: torch.Tensor, f: nn.Module, *,
                       latents: Any = None, inversion: InversionConfig | None = None,
                       seeds: Seeds | None = None) -> Counterfactual:
        """The counterfactuals of ``images``; ``latents`` (a :class:`Counterfactual`'s
        ``(z_a, z_p)`` from an earlier call, or a family's own fit result) rebuilds them
        without a new search or inversion. ``inversion`` and ``seeds`` serve a family that
        inverts G."""

    @abstractmethod
    def interpolation(self, G: nn.Module, f: nn.Module, images: torch.Tensor,
                      cf: Counterfactual, n: int, batch_size: int) -> Interpolation:
        """The ``medxgan`` strip of ``n`` frames from x_neg to x_pos and what goes with it,
        f evaluated ``batch_size`` images at a time."""

    @abstractmethod
    def path(self, G: nn.Module, images: torch.Tensor, cf: Counterfactual, *,
             residual: bool = False) -> Path:
        """The path IG integrates along: from x_neg to x_pos, or with ``residual`` to x
        itself (the two coincide where x_pos is x)."""

    def fill(self, G: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x_neg (B, 1, H, W) of images given the changed mask (B, 1, H, W) a counterfactual
        carried."""
        raise NotImplementedError(f"the {self.name} generator family has no mask to fill")

    def infiller(self, G: nn.Module) -> nn.Module | None:
        """A healthy-anatomy in-filler ``(x, m) -> x_fill`` of any mask (the score stage's
        ``ablation_infill: inpaint``), or None when the family has none."""
        return None
