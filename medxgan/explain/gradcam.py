"""Grad-CAM baseline (captum ``LayerGradCam``), upsampled bilinearly to the image size.

Paper: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017.

map = upsample(ReLU(sum_k w_k A_k)), w_k = mean over the layer's positions of d logit / d A_k,
for the target layer's activations A (B, K, h, w): the config's ``layer`` (a name from
``f.named_modules()`` or, as the classifier spec's ``target_layer``, from the wrapped
network's), else ``f.target_layer()``, else the last ``nn.Conv2d`` of f.
Maps (B, H, W) are in logit-gradient × activation units (not normalised).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from medxgan.config.explain import GradCAMConfig
from medxgan.explain._torch import logit
from medxgan.explain.base import Explainer, Explanation


def find_target_layer(f: nn.Module, name: str | None = None) -> nn.Module:
    """The Grad-CAM layer: named, else ``f.target_layer()``, else the last ``nn.Conv2d``.

    A name is looked up in ``f.named_modules()`` (``model.features.9`` for an
    :class:`~medxgan.models.classifier.AuditedClassifier`) and, failing that, in the wrapped
    network's own naming, the one the classifier spec's ``target_layer`` uses
    (``features.9``)."""
    if name is not None:
        modules = dict(f.named_modules())
        inner = getattr(f, "model", None)
        if name not in modules and isinstance(inner, nn.Module):
            modules = dict(inner.named_modules())
        if name not in modules:
            raise ValueError(f"no layer {name!r} in the classifier")
        return modules[name]
    if callable(getattr(f, "target_layer", None)):
        return f.target_layer()
    convs = [m for m in f.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the classifier has no Conv2d layer; name a layer for Grad-CAM")
    return convs[-1]


class GradCAMExplainer(Explainer):
    """Grad-CAM of the positive-class logit; extras: ``layer_size`` (B, 2) = (h, w)."""

    name = "gradcam"
    Config = GradCAMConfig

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 **_: Any) -> Explanation:
        layer = find_target_layer(self.f, self.config.layer)
        cam = LayerGradCam(lambda x: logit(self.f, x), layer)
        with torch.enable_grad():
            a = cam.attribute(images, relu_attributions=self.config.relu)  # (B, 1, h, w)
        h, w = a.shape[-2:]
        up = LayerAttribution.interpolate(a, tuple(images.shape[-2:]), self.config.upsample)
        size = torch.tensor([h, w], device=images.device).expand(images.shape[0], 2)
        return Explanation(maps=up.sum(1).detach(), extras=dict(layer_size=size))
