"""Grad-CAM baseline (captum ``LayerGradCam``), upsampled bilinearly to the image size.

Paper: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017.

map = upsample(ReLU(sum_k w_k A_k)), w_k = mean over the layer's positions of d logit / d A_k,
for the target layer's activations A (B, K, h, w): the config's ``layer`` (a name from
``f.named_modules()`` or, as the classifier spec's ``target_layer``, from the wrapped
network's), else ``f.target_layer()``, else the last ``nn.Conv2d`` of f.
Maps (B, H, W) are in logit-gradient × activation units (not normalised).

Several layers (``layers: [names]``, or ``layer: "blocks-mean"`` = every block output of
:func:`candidate_layers`): each layer's map as above, upsampled to the image size, min-max
scaled to [0, 1] per image, then averaged, as pytorch-grad-cam's multi-layer option does
(``aggregate_multi_layers`` with ``scale_cam_image``); such maps are unitless, in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from medxgan.config.explain import BLOCKS_MEAN, GradCAMConfig
from medxgan.cpu import cpu_chunks
from medxgan.explain._torch import frozen, logit
from medxgan.explain.base import Explainer, Explanation

__all__ = ["BLOCKS_MEAN", "GradCAMExplainer", "candidate_layers", "find_target_layer",
           "gradcam_unsupported"]

#: why Grad-CAM cannot explain a TorchScript classifier (one line, for errors and the check)
NO_HOOKS = ("TorchScript modules take no forward hooks, so Grad-CAM cannot run on this "
            "classifier; drop gradcam from explain.methods (and explain.tune), or give the "
            "model as ONNX or a torchvision state_dict")


def gradcam_unsupported(f: nn.Module) -> str | None:
    """Why Grad-CAM cannot run on classifier ``f`` (one line), or None. A loaded TorchScript
    module refuses ``register_forward_hook``; a freshly scripted one accepts it and never
    calls it (silently empty maps), so any ScriptModule inside f is refused."""
    if any(isinstance(m, torch.jit.ScriptModule) for m in f.modules()):
        return NO_HOOKS
    return None


def find_target_layer(f: nn.Module, name: str | None = None) -> nn.Module:
    """The Grad-CAM layer: named, else ``f.target_layer()``, else the last ``nn.Conv2d``.

    A name is looked up in ``f.named_modules()`` (``model.features.9`` for an
    :class:`~medxgan.classifiers.wrapper.AuditedClassifier`) and, failing that, in the wrapped
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


_TRAILING = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.BatchNorm2d, nn.GroupNorm,
             nn.InstanceNorm2d)


def _network(f: nn.Module) -> nn.Module:
    """The network whose module names are the spec's naming: ``f.model`` when f wraps one."""
    inner = getattr(f, "model", None)
    return inner if isinstance(inner, nn.Module) else f


def _units(net: nn.Module) -> list[str]:
    """Modules whose outputs may end a stage, in definition order: the children of a
    ``features`` ``nn.Sequential`` (SmallCNN, VGG, DenseNet), else each ``Conv2d`` extended
    over the BatchNorm / activation leaves that follow it (the block's output)."""
    features = getattr(net, "features", None)
    if isinstance(features, nn.Sequential) and any(isinstance(m, nn.Conv2d)
                                                   for m in features.modules()):
        return [f"features.{n}" for n, _ in features.named_children()]
    leaves = [(n, m) for n, m in net.named_modules() if n and not list(m.children())]
    out = []
    for i, (_, m) in enumerate(leaves):
        if isinstance(m, nn.Conv2d):
            j = i
            while j + 1 < len(leaves) and isinstance(leaves[j + 1][1], _TRAILING):
                j += 1
            out.append(leaves[j][0])
    return list(dict.fromkeys(out))


def candidate_layers(f: nn.Module, *, size: int | None = None) -> list[str]:
    """The classifier's block outputs, coarse last, in the spec's naming (``features.12``):
    the layers a Grad-CAM sweep tries.

    - torchvision ResNet-style (``layer1`` ... ``layer4``): each stage's last residual block,
      ``layer<k>.<last>`` (the last one is :func:`default_target_layer`'s ``layer4[-1]``);
    - otherwise the last block output at each spatial resolution, found by one forward pass
      of a grey (1, 1, size, size) image with hooks: the module that ends each stage, right
      before its pooling / strided convolution (after BatchNorm and ReLU). For SmallCNN with
      two convs per block at 64 px: ``features.5`` (64 px), ``features.12`` (32),
      ``features.19`` (16, the default layer); for a DenseNet ``features.relu0``,
      ``features.denseblock1`` ... ``features.norm5``.

    Args:
        f: the classifier (an AuditedClassifier, or any network taking (B, 1, H, W)).
        size: image side of the probing forward pass (default: ``f.spec.input_size``, else
            64); it only matters for networks that collapse tiny inputs.
    """
    net = _network(f)
    stages = [getattr(net, f"layer{k}", None) for k in range(1, 5)]
    if all(isinstance(s, nn.Sequential) and len(s) for s in stages):
        return [f"layer{k}.{len(s) - 1}" for k, s in enumerate(stages, 1)]
    names = _units(net)
    if not names:
        raise ValueError("the classifier has no Conv2d layer; name Grad-CAM layers explicitly")
    if size is None:
        size = int(getattr(getattr(f, "spec", None), "input_size", 64) or 64)
    seen: dict[tuple[int, int], str] = {}  # resolution -> the last unit (in run order) there

    def hook(name: str):
        def record(_m, _inp, out):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out[0, 0].numel() > 1:
                seen[tuple(out.shape[-2:])] = name
        return record

    mods = dict(net.named_modules())
    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    try:
        p = next(f.parameters(), None)
        x = torch.full((1, 1, size, size), 0.5, device=p.device if p is not None else "cpu")
        with frozen(f), torch.no_grad():
            f(x)
    finally:
        for h in handles:
            h.remove()
    order = sorted(seen, key=lambda hw: -(hw[0] * hw[1]))
    return list(dict.fromkeys(seen[hw] for hw in order))


def _unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) maps min-max scaled to [0, 1] per image (a constant map becomes 0)."""
    flat = maps.flatten(1)
    lo = flat.min(1).values[:, None, None]
    rng = flat.max(1).values[:, None, None] - lo
    return (maps - lo) / (rng + 1e-7)  # pytorch-grad-cam's scale_cam_image: / (1e-7 + max)


class GradCAMExplainer(Explainer):
    """Grad-CAM of the positive-class logit; extras: ``layer_size`` (B, 2) = (h, w) of the
    layer (several layers: the finest one's)."""

    name = "gradcam"
    Config = GradCAMConfig

    def _one(self, images: torch.Tensor, name: str | None) -> tuple[torch.Tensor, tuple[int, int]]:
        if why := gradcam_unsupported(self.f):
            raise ValueError(why)
        layer = find_target_layer(self.f, name)
        cam = LayerGradCam(lambda x: logit(self.f, x), layer)
        c, _ = cpu_chunks(len(images), 1, len(images), images.shape[-2:],
                          images.device)                                   # medxgan.cpu
        with torch.enable_grad():
            a = torch.cat([cam.attribute(images[s:s + c], relu_attributions=self.config.relu)
                           for s in range(0, len(images), c)])            # (B, 1, h, w)
        up = LayerAttribution.interpolate(a, tuple(images.shape[-2:]), self.config.upsample)
        return up.sum(1).detach(), tuple(a.shape[-2:])                    # (B, H, W)

    def _explain(self, images: torch.Tensor, *, ids: Sequence[str] | None = None,
                 **_: Any) -> Explanation:
        cfg = self.config
        if cfg.layers or cfg.layer == BLOCKS_MEAN:
            names = list(cfg.layers or candidate_layers(self.f, size=images.shape[-1]))
            done = [self._one(images, n) for n in names]
            maps = torch.stack([_unit_scale(m) for m, _ in done]).mean(0)
            h, w = max((hw for _, hw in done), key=lambda hw: hw[0] * hw[1])
        else:
            maps, (h, w) = self._one(images, cfg.layer)
        size = torch.tensor([h, w], device=images.device).expand(images.shape[0], 2)
        return Explanation(maps=maps, extras=dict(layer_size=size))
