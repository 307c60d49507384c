"""The classifier under audit as the audit sees it: one positive logit of the cohort's pixels.

:class:`AuditedClassifier` wraps whatever network :func:`medxgan.classifiers.load.load_classifier`
built: its ``forward`` takes a batch in the cohort's pixel space, (B, 1, H, W) float in [0, 1]
at the cohort's size, and returns ONE positive logit per image (B,): the input is resized
(``resize``: pad / crop / stretch, differentiably) to the model's ``input_size``, repeated to
3 channels where needed and normalised (scalar or per-channel mean/std, or a ``preset``); the
chosen output column is turned into a logit by the spec's ``activation``.
:func:`default_target_layer` is Grad-CAM's layer of a network.

The spec (:class:`~medxgan.config.classifier.ClassifierSpec`) is torch-free in
:mod:`medxgan.config.classifier`; the loaders are :mod:`medxgan.classifiers.load` (the common
steps) and :mod:`medxgan.classifiers.kinds` (one per kind). This module imports neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.config.classifier import ClassifierLoadError, ClassifierSpec, MeanStd

__all__ = ["AuditedClassifier", "default_target_layer"]

_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the logit


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.BatchNorm2d, nn.GroupNorm,
                nn.InstanceNorm2d)


def _is_conv(m: nn.Module) -> bool:
    """An ``nn.Conv2d``, or its TorchScript counterpart."""
    return isinstance(m, nn.Conv2d) or getattr(m, "original_name", None) == "Conv2d"


def default_target_layer(model: nn.Module) -> nn.Module | None:
    """Grad-CAM's usual layer: the *output* of the last convolutional block (after its
    normalisation and activation), as pytorch-grad-cam picks it.

    - torchvision ResNet-style (``layer4``): its last residual block, ``layer4[-1]``;
    - a ``features`` ``nn.Sequential`` (SmallCNN, VGG, DenseNet): ``features[-1]``;
    - otherwise the last ``Conv2d`` followed by the BatchNorm / activation modules that come
      right after it in definition order (the last of them), or the Conv2d itself.

    A raw Conv2d output (before BatchNorm and ReLU) is signed and was measured to localise
    worse on our phantoms (bench/quality.py, docs/benchmarks.md). None when the model
    has no Conv2d.
    """
    layer4 = getattr(model, "layer4", None)
    if isinstance(layer4, nn.Sequential) and len(layer4):
        return layer4[-1]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features) and any(
            _is_conv(m) for m in features.modules()):
        return features[-1]
    leaves = [m for _, m in model.named_modules() if not list(m.children())]
    conv_at = [i for i, m in enumerate(leaves) if _is_conv(m)]
    if not conv_at:
        return None
    i = conv_at[-1]
    while i + 1 < len(leaves) and isinstance(leaves[i + 1], _ACTIVATIONS):
        i += 1
    return leaves[i]


class AuditedClassifier(nn.Module):
    """A frozen classifier seen through the cohort's pixel space, as one positive logit.

    Attributes:
        model: the wrapped network (eval mode, parameters frozen).
        spec: the :class:`ClassifierSpec` it was loaded from (``num_outputs``,
            ``positive_index``, ``outputs`` and ``activation`` resolved).
        threshold: decision threshold on :meth:`prob`.
        sha256: SHA-256 of the loaded file (hex), for provenance.
    """

    def __init__(self, model: nn.Module, spec: ClassifierSpec, sha256: str = ""):
        super().__init__()
        self.model = model
        self.spec = spec
        self.threshold = float(spec.threshold)
        self.sha256 = sha256
        norm = spec.normalisation
        if isinstance(norm, MeanStd):
            mean, std = norm.tensors()
        else:
            mean, std = (torch.tensor(0.5), torch.tensor(0.5)) if norm == "minus_one_one" \
                else (torch.tensor(0.0), torch.tensor(1.0))
        self.register_buffer("_mean", mean, persistent=False)
        self.register_buffer("_std", std, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "AuditedClassifier":
        """The audited classifier always stays in eval mode (BatchNorm, dropout fixed)."""
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> (B, in_channels, S, S) normalised network input.

        Non-square images are padded (black, centred), centre-cropped or stretched as
        ``spec.resize`` says, then resized bilinearly to S (antialiased when shrinking); every
        step is differentiable.
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images (B, 1, H, W), got {tuple(x.shape)}")
        S = self.spec.input_size
        H, W = x.shape[-2:]
        if H != W and self.spec.resize == "pad":
            side = max(H, W)
            top, left = (side - H) // 2, (side - W) // 2
            x = F.pad(x, (left, side - W - left, top, side - H - top))   # (B, 1, side, side)
        elif H != W and self.spec.resize == "crop":
            side = min(H, W)                          # TorchXRayVision's XRayCenterCrop
            top, left = H // 2 - side // 2, W // 2 - side // 2
            x = x[..., top:top + side, left:left + side]               # (B, 1, side, side)
        if x.shape[-2:] != (S, S):
            down = x.shape[-1] > S or x.shape[-2] > S
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False,
                              antialias=down)                           # (B, 1, S, S)
        if self.spec.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)                                 # (B, 3, S, S)
        return (x - self._mean) / self._std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Positive-class logit (B,) of images x (B, 1, H, W) float in [0, 1]."""
        return self._to_logit(self.model(self.preprocess(x)))

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        """Positive-class probability (B,) of images x (B, 1, H, W) in [0, 1]."""
        return torch.sigmoid(self.forward(x))

    def target_layer(self) -> nn.Module:
        """The Grad-CAM layer: ``spec.target_layer``, else :func:`default_target_layer`."""
        if self.spec.target_layer:
            try:
                return self.model.get_submodule(self.spec.target_layer)
            except AttributeError as exc:
                raise ClassifierLoadError(
                    f"target_layer {self.spec.target_layer!r} not in the model") from exc
        layer = default_target_layer(self.model)
        if layer is None:
            raise ClassifierLoadError("model has no Conv2d layer; set target_layer in the spec")
        return layer

    def target_layer_name(self) -> str:
        """The Grad-CAM layer's module name in the spec's naming (``features.9``: relative to
        the wrapped model), as ``target_layer`` and the explainer's ``layer`` option take it."""
        if self.spec.target_layer:
            return self.spec.target_layer
        layer = self.target_layer()
        for name, m in self.model.named_modules():
            if m is layer:
                return name
        return ""

    def _to_logit(self, out: torch.Tensor) -> torch.Tensor:
        """Raw outputs (B,) or (B, k) -> the chosen column's logit (B,)."""
        out = out.float()
        if out.ndim == 1:
            out = out[:, None]                                          # (B, 1)
        k = self.spec.positive_index or 0
        act = self.spec.activation
        if act in ("logit", "sigmoid"):
            return out[:, k]
        if act == "softmax":  # log p_k - log(1 - p_k) = z_k - logsumexp(z_j, j != k)
            rest = torch.cat([out[:, :k], out[:, k + 1:]], dim=1)      # (B, k - 1)
            return out[:, k] - torch.logsumexp(rest, dim=1)
        p = out[:, k].clamp(_EPS, 1 - _EPS)                             # probabilities
        return torch.log(p) - torch.log1p(-p)
