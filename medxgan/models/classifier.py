"""The classifier under audit: a spec (YAML), a safe loader and one uniform wrapper.

A user's binary classifier comes as (a) a TorchScript file, (b) a torchvision architecture
name + a ``state_dict`` file, or (c) a ``state_dict`` of our :class:`SmallCNN`. Whatever it
was, :func:`load_classifier` returns an :class:`AuditedClassifier` whose ``forward`` takes a
batch in the cohort's pixel space, (B, 1, H, W) float in [0, 1], and returns the
positive-class logit (B,). Grey images are repeated to 3 channels, resized to the model's
input size and normalised as the spec says.

Safety: ``state_dict`` files are read with ``torch.load(weights_only=True)`` only, so a
pickled full model (or any pickle that would run code) is refused, never unpickled.
Mismatches (channels, input size, output shape) are found by a dummy forward at load time
and raised as a one-line :class:`ClassifierLoadError` (a ``ValueError``).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from medxgan.storage import Store, one_line

_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the logit


class ClassifierLoadError(ValueError):
    """A classifier file or spec cannot be used (one-line message)."""


class MeanStd(BaseModel):
    """Normalisation ``(x - mean) / std`` of pixel values in [0, 1]."""

    model_config = ConfigDict(extra="forbid")
    mean: float
    std: float = Field(gt=0)


class ClassifierSpec(BaseModel):
    """How to load and call a binary classifier.

    Attributes:
        kind: ``torchscript`` (a ``torch.jit`` file), ``torchvision`` (architecture ``arch`` +
            state_dict) or ``small_cnn`` (state_dict of :class:`SmallCNN`).
        path: file path or store URL (``s3://bucket/key``) of the weights / TorchScript file.
            A relative path in a YAML file is relative to that file's folder.
        arch: torchvision model name (``resnet18``), ``small_cnn`` or ``small_cnn2``; ignored
            for torchscript.
        in_channels: channels the network expects (1 or 3; grey input is repeated to 3).
        input_size: side in pixels the network expects; other cohort sizes are resized.
        normalisation: ``unit`` (x in [0, 1] as is), ``minus_one_one`` (2x - 1) or mean/std.
        output: ``two_logits``, ``one_logit`` or ``probabilities`` (1 or 2 columns).
        positive_index: output column of the positive class (default: last column).
        threshold: decision threshold on the positive probability.
        target_layer: module name for Grad-CAM (default: the output of the last convolutional
            block, :func:`default_target_layer`).
        num_outputs: output columns; default 2 for two_logits, 1 for one_logit, and whatever
            the model gives (1 or 2) for probabilities.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["torchscript", "torchvision", "small_cnn"]
    path: str
    arch: str | None = None
    in_channels: Literal[1, 3] = 1
    input_size: int = Field(64, ge=8)
    normalisation: MeanStd | Literal["minus_one_one", "unit"] = "unit"
    output: Literal["two_logits", "one_logit", "probabilities"] = "one_logit"
    positive_index: int | None = None
    threshold: float = Field(0.5, gt=0, lt=1)
    target_layer: str | None = None
    num_outputs: int | None = None

    @model_validator(mode="after")
    def _check(self) -> "ClassifierSpec":
        if self.kind == "torchvision" and not self.arch:
            raise ValueError("kind 'torchvision' needs 'arch' (e.g. resnet18)")
        if self.kind == "small_cnn" and self.arch not in (None, "small_cnn", "small_cnn2"):
            raise ValueError(f"kind 'small_cnn' cannot have arch {self.arch!r}")
        expected = {"two_logits": 2, "one_logit": 1}.get(self.output)
        if self.num_outputs is None:
            self.num_outputs = expected
        elif expected is not None and self.num_outputs != expected:
            raise ValueError(f"output {self.output!r} has {expected} column(s), "
                             f"not num_outputs={self.num_outputs}")
        elif self.num_outputs not in (1, 2):
            raise ValueError("a binary classifier has 1 or 2 outputs")
        if self.positive_index is None and self.num_outputs is not None:
            self.positive_index = self.num_outputs - 1
        if self.positive_index is not None and not (
                0 <= self.positive_index < (self.num_outputs or 2)):
            raise ValueError(f"positive_index {self.positive_index} outside the "
                             f"{self.num_outputs or 2} output column(s)")
        return self

    @classmethod
    def from_yaml(cls, path_or_text: str) -> "ClassifierSpec":
        """Parse a spec from a YAML file (path or store URL) or from YAML text."""
        text, base = path_or_text, None
        looks_like_file = "\n" not in path_or_text and path_or_text.strip().endswith(
            (".yaml", ".yml"))
        if looks_like_file:
            folder, name = _split_parent(path_or_text.strip())
            text = Store(folder).read_bytes(name).decode()
            base = folder
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ClassifierLoadError("classifier spec must be a YAML mapping")
        spec = cls.model_validate(data)
        if base is not None and not _is_url(spec.path) and not os.path.isabs(spec.path):
            spec.path = f"{base.rstrip('/')}/{spec.path}"
        return spec

    def to_yaml(self) -> str:
        """The spec as YAML text (round-trips through :meth:`from_yaml`)."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


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
    worse on our phantoms (bench/quality.py, README "Explanation quality"). None when the model
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
    """A frozen binary classifier seen through the cohort's pixel space.

    Attributes:
        model: the wrapped network (eval mode, parameters frozen).
        spec: the :class:`ClassifierSpec` it was loaded from (``num_outputs`` resolved).
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
        mean, std = (norm.mean, norm.std) if isinstance(norm, MeanStd) else \
            ((0.5, 0.5) if norm == "minus_one_one" else (0.0, 1.0))
        self.register_buffer("_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("_std", torch.tensor(std), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "AuditedClassifier":
        """The audited classifier always stays in eval mode (BatchNorm, dropout fixed)."""
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> (B, in_channels, S, S) normalised network input."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images (B, 1, H, W), got {tuple(x.shape)}")
        S = self.spec.input_size
        if x.shape[-2:] != (S, S):
            down = x.shape[-1] > S or x.shape[-2] > S
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False,
                              antialias=down)                           # (B, 1, S, S)
        x = (x - self._mean) / self._std
        if self.spec.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)                                 # (B, 3, S, S)
        return x

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

    def _to_logit(self, out: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if out.ndim == 1:
            out = out[:, None]                                          # (B, 1)
        k = self.spec.positive_index or 0
        if self.spec.output == "one_logit":
            return out[:, 0]
        if self.spec.output == "two_logits":
            return out[:, k] - out[:, 1 - k]
        p = out[:, k].clamp(_EPS, 1 - _EPS)                             # probabilities
        return torch.log(p) - torch.log1p(-p)


def load_classifier(spec: ClassifierSpec | str) -> AuditedClassifier:
    """Load the classifier a spec (or YAML path/text) describes and check it with a dummy batch.

    Raises:
        ClassifierLoadError: unreadable or unsafe file (pickled full model), state_dict that
            does not fit the architecture, or a network whose input/output does not match the
            spec (checked with a forward pass of a (2, in_channels, S, S) zero batch).
    """
    if isinstance(spec, str):
        spec = ClassifierSpec.from_yaml(spec)
    spec = spec.model_copy()
    data = _read(spec.path)
    digest = hashlib.sha256(data).hexdigest()
    if spec.kind == "torchscript":
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, still a user format
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file
            raise ClassifierLoadError(f"{spec.path}: not a TorchScript file "
                                      f"({type(exc).__name__}: {one_line(exc)})") from None
    else:
        from medxgan.models.small_cnn import build_model

        state = _load_state_dict(data, spec.path)
        num_outputs = spec.num_outputs or _guess_outputs(state)
        model = build_model(spec.arch or "small_cnn", spec.in_channels, num_outputs)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ClassifierLoadError(f"{spec.path}: state_dict does not fit "
                                      f"{spec.arch or 'small_cnn'} with {spec.in_channels} "
                                      f"input channel(s) and {num_outputs} output(s): "
                                      f"{one_line(exc)}") from None
    model.eval()
    _check_forward(model, spec)
    return AuditedClassifier(model, spec, digest)


def _check_forward(model: nn.Module, spec: ClassifierSpec) -> None:
    """Dummy forward; resolves ``spec.num_outputs`` for probabilities; raises on mismatch."""
    S, C = spec.input_size, spec.in_channels
    x = torch.zeros(2, C, S, S)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - report any failure as a mismatch
        raise ClassifierLoadError(f"{spec.path}: model rejects a (2, {C}, {S}, {S}) input "
                                  f"(in_channels={C}, input_size={S} in the spec?): "
                                  f"{type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(out, torch.Tensor):
        raise ClassifierLoadError(f"{spec.path}: model returns {type(out).__name__}, "
                                  "not a tensor")
    shape = tuple(out.shape)
    cols = 1 if out.ndim == 1 else (shape[1] if out.ndim == 2 else -1)
    if shape[0] != 2 or cols < 0:
        raise ClassifierLoadError(f"{spec.path}: output shape {shape} for a batch of 2; "
                                  "expected (B,) or (B, k)")
    want = spec.num_outputs
    if want is None:  # probabilities: take what the model gives
        if cols not in (1, 2):
            raise ClassifierLoadError(f"{spec.path}: {cols} output columns; a binary "
                                      "classifier gives 1 or 2 probabilities")
        spec.num_outputs = cols
        spec.positive_index = cols - 1 if spec.positive_index is None else spec.positive_index
        if spec.positive_index >= cols:
            raise ClassifierLoadError(f"{spec.path}: positive_index {spec.positive_index} "
                                      f"but only {cols} output column(s)")
    elif cols != want:
        raise ClassifierLoadError(f"{spec.path}: model gives {cols} output column(s), spec "
                                  f"says output={spec.output!r} ({want})")
    if spec.output == "probabilities" and not bool(((out >= 0) & (out <= 1)).all()):
        raise ClassifierLoadError(f"{spec.path}: output='probabilities' but the model "
                                  "returned values outside [0, 1] (logits?)")


def _load_state_dict(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """A state_dict from bytes with ``weights_only=True``; anything else is refused."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, zip errors, TorchScript files
        raise ClassifierLoadError(
            f"{where}: refused: not a plain state_dict loadable with weights_only=True "
            f"(a pickled full model or other pickle is never unpickled; save "
            f"model.state_dict() instead): {type(exc).__name__}: "
            f"{one_line(exc)[:160]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClassifierLoadError(f"{where}: file holds {type(state).__name__}, "
                                  "not a state_dict of tensors")
    return state


def _guess_outputs(state: dict[str, torch.Tensor]) -> int:
    """Output columns from the last 2-D weight of a state_dict (probabilities specs)."""
    last = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(last[-1].shape[0]) if last else 1


def _read(path: str) -> bytes:
    folder, name = _split_parent(path)
    try:
        return Store(folder).read_bytes(name)
    except FileNotFoundError:
        raise ClassifierLoadError(f"classifier file {path} does not exist") from None


def _split_parent(path: str) -> tuple[str, str]:
    """(parent URL, last key) of a file path or store URL."""
    path = path.rstrip("/")
    if "/" not in path:
        return ".", path
    parent, name = path.rsplit("/", 1)
    if parent in ("s3:/", "s3:"):
        raise ClassifierLoadError(f"{path}: an s3 URL needs a bucket and a key")
    return parent or "/", name


def _is_url(path: str) -> bool:
    return "://" in path
