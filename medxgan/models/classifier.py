"""The classifier under audit: one uniform wrapper and the loader that builds it.

A user's classifier comes as (a) a TorchScript file, (b) a torchvision architecture name + a
``state_dict`` file, (c) a ``state_dict`` of our :class:`~medxgan.models.small_cnn.SmallCNN`,
(d) an ONNX file (converted with ``onnx2torch`` so gradients flow, and checked against
``onnxruntime`` at load) or (e) a TorchXRayVision model name + a local ``state_dict`` (or the
package's cache file; never a download). It may be binary (one logit, two logits,
probabilities) or multi-label / multi-class with named outputs (``outputs``), of which the
audited one is chosen by ``finding`` (synonyms understood, :mod:`medxgan.findings`) or
``positive_index``.

Whatever it was, :func:`load_classifier` returns an :class:`AuditedClassifier` whose
``forward`` takes a batch in the cohort's pixel space, (B, 1, H, W) float in [0, 1] at the
cohort's size, and returns ONE positive logit per image (B,): the input is resized
(``resize``: pad / crop / stretch, differentiably) to the model's ``input_size``, repeated to
3 channels where needed and normalised (scalar or per-channel mean/std, or a ``preset``).

Safety: every file read with ``torch.load`` uses ``weights_only=True``, so a pickled full
model (or any pickle that would run code) is refused, never unpickled. Mismatches (channels,
input size, output shape or names) are found by a dummy forward at load time and raised as a
one-line :class:`ClassifierLoadError` (a ``ValueError``).

Where the parts live:

- the spec (:class:`ClassifierSpec`, :class:`MeanStd`, :data:`PRESETS`,
  :class:`ClassifierLoadError`) is torch-free in :mod:`medxgan.config.classifier`;
- one loader per kind (torchscript, torchvision / small_cnn, onnx, torchxrayvision) is in
  :mod:`medxgan.models.classifier_kinds`;
- this module holds the wrapper (preprocessing, activations, Grad-CAM layer), the loader's
  common steps (read, hash, output names, dummy forward) and re-exports the names of both, so
  ``from medxgan.models.classifier import ...`` works as before.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.config.classifier import (_LEGACY, IMAGENET_MEAN, IMAGENET_STD,  # noqa: F401
                                       PRESETS, ClassifierLoadError, ClassifierSpec, MeanStd,
                                       _is_url, _split_parent)
from medxgan.models.classifier_kinds import (_check_norm_channels,  # noqa: F401
                                             _compare_onnxruntime, _guess_outputs,
                                             _inline_identity_initializers, _load_onnx,
                                             _load_pickled_module_state, _load_state_dict,
                                             _load_state_dict_model, _load_torchscript,
                                             _load_torchxrayvision, _missing, _PerImage, _read,
                                             _script_names, _xrv_safe_globals)
from medxgan.storage import one_line

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "PRESETS", "AuditedClassifier", "ClassifierLoadError",
    "ClassifierSpec", "MeanStd", "default_target_layer", "load_classifier",
]

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


def load_classifier(spec: ClassifierSpec | str) -> AuditedClassifier:
    """Load the classifier a spec (or YAML path/text) describes and check it with a dummy batch.

    Raises:
        ClassifierLoadError: unreadable or unsafe file (pickled full model), state_dict that
            does not fit the architecture, a missing optional package, an ONNX conversion
            that differs from onnxruntime, a finding not among the output names, or a
            network whose input/output does not match the spec (checked with a forward pass
            of a (2, in_channels, S, S) zero batch).
    """
    if isinstance(spec, str):
        spec = ClassifierSpec.from_yaml(spec)
    spec = spec.model_copy(deep=True)
    names: list[str] | None = None
    onnx_bytes = None
    if spec.kind == "torchxrayvision":
        model, names, data = _load_torchxrayvision(spec)
    else:
        data = _read(spec.path)
    digest = hashlib.sha256(data).hexdigest()
    if spec.kind == "torchscript":
        model, names = _load_torchscript(data, spec)
    elif spec.kind == "onnx":
        model, onnx_bytes = _load_onnx(data, spec), data
    elif spec.kind in ("torchvision", "small_cnn"):
        model = _load_state_dict_model(data, spec)
    model.eval()
    _resolve_outputs(spec, names)
    _check_forward(model, spec)
    f = AuditedClassifier(model, spec, digest)
    if onnx_bytes is not None:
        _compare_onnxruntime(f, onnx_bytes)
    return f


def _resolve_outputs(spec: ClassifierSpec, names: list[str] | None) -> None:
    """Take the model's own output names (when the spec has none), resolve ``finding``."""
    where = spec.path or f"torchxrayvision:{spec.arch}"
    if names is not None:
        if spec.outputs is not None and len(spec.outputs) != len(names):
            raise ClassifierLoadError(f"{where}: the model names {len(names)} outputs, the "
                                      f"spec {len(spec.outputs)}")
        if spec.outputs is None:
            if spec.num_outputs is not None and spec.num_outputs != len(names):
                raise ClassifierLoadError(f"{where}: the model names {len(names)} outputs, "
                                          f"the spec says num_outputs={spec.num_outputs}")
            spec.outputs, spec.num_outputs = list(names), len(names)
    if spec.finding is not None and spec.outputs is None:
        raise ClassifierLoadError(f"{where}: finding {spec.finding!r} needs the output names: "
                                  "list them in 'outputs' (or set 'positive_index')")
    try:
        spec.resolve_positive(spec.outputs)
    except ValueError as exc:
        raise ClassifierLoadError(f"{where}: {one_line(exc)}") from None


def _check_forward(model: nn.Module, spec: ClassifierSpec) -> None:
    """Dummy forward; resolves ``spec.num_outputs`` (and the default ``positive_index``) when
    the spec left them open; raises on mismatch."""
    S, C = spec.input_size, spec.in_channels
    where = spec.path or f"torchxrayvision:{spec.arch}"
    x = torch.zeros(2, C, S, S)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - report any failure as a mismatch
        raise ClassifierLoadError(f"{where}: model rejects a (2, {C}, {S}, {S}) input "
                                  f"(in_channels={C}, input_size={S} in the spec?): "
                                  f"{type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(out, torch.Tensor):
        raise ClassifierLoadError(f"{where}: model returns {type(out).__name__}, "
                                  "not a tensor")
    shape = tuple(out.shape)
    cols = 1 if out.ndim == 1 else (shape[1] if out.ndim == 2 else -1)
    if shape[0] != 2 or cols < 0:
        raise ClassifierLoadError(f"{where}: output shape {shape} for a batch of 2; "
                                  "expected (B,) or (B, k)")
    want = spec.num_outputs
    if want is None:  # take what the model gives
        if spec.output == "probabilities" and cols not in (1, 2):
            raise ClassifierLoadError(f"{where}: {cols} output columns; a binary "
                                      "classifier gives 1 or 2 probabilities")
        spec.num_outputs = cols
        try:
            spec.resolve_positive(spec.outputs)
        except ValueError as exc:
            raise ClassifierLoadError(f"{where}: {one_line(exc)}") from None
        if spec.positive_index >= cols:
            raise ClassifierLoadError(f"{where}: positive_index {spec.positive_index} "
                                      f"but only {cols} output column(s)")
    elif cols != want:
        says = f"output={spec.output!r} ({want})" if spec.output else \
            (f"{want} outputs {spec.outputs}" if spec.outputs else f"num_outputs={want}")
        raise ClassifierLoadError(f"{where}: model gives {cols} output column(s), spec "
                                  f"says {says}")
    if spec.activation == "softmax" and cols < 2:
        raise ClassifierLoadError(f"{where}: activation 'softmax' but the model gives one "
                                  "column")
    if spec.activation == "none" and not bool(((out >= 0) & (out <= 1)).all()):
        what = "output='probabilities'" if spec.output else "activation='none'"
        raise ClassifierLoadError(f"{where}: {what} but the model "
                                  "returned values outside [0, 1] (logits?)")
