"""One interface for every explanation method: ``explain(images, targets) -> Explanation``.

Contracts of the models explained:

- classifier ``f``: an ``nn.Module`` with ``f(x (B, 1, H, W) float in [0, 1]) -> (B,)``
  positive-class logit; optional attribute ``threshold`` (probability, default 0.5); optional
  method ``target_layer() -> nn.Module`` (Grad-CAM; else the last ``nn.Conv2d``).
- generator ``G`` (medxgan, latent_ig, counterfactual_ig): an ``nn.Module`` with int
  attributes ``d_a``, ``d_p``, ``image_size`` and
  ``G(z_a (B, d_a), z_p (B, d_p)) -> (B, 1, S, S)`` in [-1, 1] (GAN space: x_gan = 2 x - 1).

Every map explains f's **positive-class logit** and is raw (not min-max normalised). The models
are frozen while explaining (eval mode, parameters not updated; restored afterwards).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from medxgan.config.explain import ExplainerConfig  # noqa: F401  (re-exported)
from medxgan.explain._torch import frozen
from medxgan.explain.seeding import content_seeds, id_seeds
from medxgan.catalogue import GAN_METHODS, METHODS  # noqa: F401  (re-exported)

_MODULES = {  # method -> (module, class)
    "medxgan": ("medxgan.explain.medxgan", "MedXGANExplainer"),
    "latent_ig": ("medxgan.explain.latent_ig", "LatentIGExplainer"),
    "counterfactual_ig": ("medxgan.explain.latent_ig", "CounterfactualIGExplainer"),
    "gradcam": ("medxgan.explain.gradcam", "GradCAMExplainer"),
    "ig": ("medxgan.explain.ig", "IGExplainer"),
    "smoothgrad": ("medxgan.explain.smoothgrad", "SmoothGradExplainer"),
    "occlusion": ("medxgan.explain.occlusion", "OcclusionExplainer"),
    "random": ("medxgan.explain.floors", "RandomExplainer"),
    "box_prior": ("medxgan.explain.floors", "BoxPriorExplainer"),
}


@dataclass
class Explanation:
    """Maps for B images and what else the method computed.

    Attributes:
        maps: (B, H, W) float32 raw attributions of the positive-class logit.
        extras: method-specific values; tensors have a leading B dimension, lists have B items.
    """

    maps: torch.Tensor
    extras: dict[str, torch.Tensor | list] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.maps.shape[0]


class Explainer(ABC):
    """An explanation method bound to a classifier (and its config).

    Subclasses set ``name`` and ``Config`` and implement ``_explain``.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ExplainerConfig]] = ExplainerConfig

    def __init__(self, classifier: nn.Module, config: dict | BaseModel | None = None):
        self.f = classifier
        self.config = _resolve(self.Config, config)

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None, *,
                ids: Sequence[str] | None = None, **kwargs: Any) -> Explanation:
        """Explain f's positive-class logit on ``images``.

        Args:
            images: (B, 1, H, W) float in the cohort's pixel space [0, 1].
            targets: None, or (B,) labels that must all be 1: maps always explain the
                positive-class logit of a binary classifier.
            ids: optional B image ids; seeded methods then seed by id instead of by content.
            kwargs: method-specific (e.g. ``latents`` for medxgan / latent_ig).
        Returns:
            :class:`Explanation` with maps (B, H, W) float32 on the images' device.
        """
        x = _check_images(images)
        if targets is not None and not bool((torch.as_tensor(targets) == 1).all()):
            raise ValueError("maps explain the positive-class logit: pass targets=None (or all 1)")
        if ids is not None and len(ids) != x.shape[0]:
            raise ValueError(f"{len(ids)} ids for {x.shape[0]} images")
        with frozen(*self._modules()):
            out = self._explain(x, ids=ids, **kwargs)
        out.maps = out.maps.float()
        return out

    def _modules(self) -> list[nn.Module]:
        return [self.f]

    def _seeds(self, images: torch.Tensor, ids: Sequence[str] | None, seed: int) -> list[int]:
        """Per-image seeds: from ids when given, else from pixel content (batch independent)."""
        return id_seeds(ids, seed) if ids is not None else content_seeds(images, seed)

    @abstractmethod
    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None,
                 **kwargs: Any) -> Explanation:
        ...


def make_explainer(method: str, classifier: nn.Module, *, generator: nn.Module | None = None,
                   box_prior: torch.Tensor | None = None,
                   config: dict | BaseModel | None = None) -> Explainer:
    """The explainer for ``method`` (one of :data:`METHODS`).

    Args:
        generator: required for :data:`GAN_METHODS` (medxgan, latent_ig, counterfactual_ig).
        box_prior: (H, W) prior map, required for ``box_prior`` (see ``floors.box_prior_map``).
        config: that method's config, as a dict or its pydantic ``Config`` (unknown keys raise).
    """
    if method not in _MODULES:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    mod, cls_name = _MODULES[method]
    cls = getattr(importlib.import_module(mod), cls_name)
    if method in GAN_METHODS:
        if generator is None:
            raise ValueError(f"method {method!r} needs a generator")
        return cls(classifier, generator, config)
    if method == "box_prior":
        if box_prior is None:
            raise ValueError("method 'box_prior' needs box_prior (an (H, W) map)")
        return cls(classifier, box_prior, config)
    return cls(classifier, config)


def _resolve(cls: type[BaseModel], config: dict | BaseModel | None) -> Any:
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    if isinstance(config, BaseModel):
        config = config.model_dump()
    return cls.model_validate(config)


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"images must be a (B, 1, H, W) tensor, got {shape}")
    return images.float()
