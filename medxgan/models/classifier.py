"""The classifier under audit: a spec (YAML), a safe loader and one uniform wrapper.

A user's classifier comes as (a) a TorchScript file, (b) a torchvision architecture name + a
``state_dict`` file, (c) a ``state_dict`` of our :class:`SmallCNN`, (d) an ONNX file
(converted with ``onnx2torch`` so gradients flow, and checked against ``onnxruntime`` at load)
or (e) a TorchXRayVision model name + a local ``state_dict`` (or the package's cache file;
never a download). It may be binary (one logit, two logits, probabilities) or multi-label /
multi-class with named outputs (``outputs``), of which the audited one is chosen by
``finding`` (synonyms understood, :mod:`medxgan.findings`) or ``positive_index``.

Whatever it was, :func:`load_classifier` returns an :class:`AuditedClassifier` whose
``forward`` takes a batch in the cohort's pixel space, (B, 1, H, W) float in [0, 1] at the
cohort's size, and returns ONE positive logit per image (B,): the input is resized
(``resize``: pad / crop / stretch, differentiably) to the model's ``input_size``, repeated to
3 channels where needed and normalised (scalar or per-channel mean/std, or a ``preset``).

Safety: every file read with ``torch.load`` uses ``weights_only=True``, so a pickled full
model (or any pickle that would run code) is refused, never unpickled. Mismatches (channels,
input size, output shape or names) are found by a dummy forward at load time and raised as a
one-line :class:`ClassifierLoadError` (a ``ValueError``).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml
from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, field_validator,
                      model_validator)
from torch import nn

from medxgan.findings import FindingError, match_finding
from medxgan.storage import Store, one_line

_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the logit

#: ImageNet's per-channel statistics (torchvision's pretrained models).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: What each ``preset`` fills in (keys the spec does not set itself). TorchXRayVision scales
#: x in [0, 1] to [-1024, 1024] (= (x - 0.5) / (1 / 2048)), 224 px, its centre crop.
PRESETS: dict[str, dict[str, Any]] = {
    "torchxrayvision": {"in_channels": 1, "input_size": 224, "resize": "crop",
                        "normalisation": {"mean": 0.5, "std": 1 / 2048}},
    "imagenet": {"in_channels": 3, "input_size": 224,
                 "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}},
}

#: The legacy ``output`` keys as (activation, columns); None: 1 or 2 columns.
_LEGACY = {"one_logit": ("logit", 1), "two_logits": ("softmax", 2), "probabilities": ("none", None)}


class ClassifierLoadError(ValueError):
    """A classifier file or spec cannot be used (one-line message)."""


class MeanStd(BaseModel):
    """Normalisation ``(x - mean) / std`` of pixel values in [0, 1]: scalars, or one value per
    input channel (``mean: [0.485, 0.456, 0.406]``)."""

    model_config = ConfigDict(extra="forbid")
    mean: float | list[float]
    std: float | list[float]

    @field_validator("mean", "std")
    @classmethod
    def _lengths(cls, v: float | list[float]) -> float | list[float]:
        if isinstance(v, list) and len(v) not in (1, 3):
            raise ValueError("a per-channel list has 1 or 3 values")
        return v

    @model_validator(mode="after")
    def _positive(self) -> "MeanStd":
        std = self.std if isinstance(self.std, list) else [self.std]
        if not all(s > 0 for s in std):
            raise ValueError("std must be > 0")
        return self

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float tensors: scalars, or (1, C, 1, 1) for per-channel lists."""
        def t(v):
            return torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) \
                if isinstance(v, list) else torch.tensor(float(v))
        return t(self.mean), t(self.std)


class ClassifierSpec(BaseModel):
    """How to load and call a classifier under audit.

    Attributes:
        kind: ``torchscript`` (a ``torch.jit`` file), ``torchvision`` (architecture ``arch`` +
            state_dict), ``small_cnn`` (state_dict of :class:`SmallCNN`), ``onnx`` (an ONNX
            file, converted with onnx2torch, checked against onnxruntime) or
            ``torchxrayvision`` (``arch`` = a TorchXRayVision DenseNet name such as
            ``densenet121-res224-all``; ``path`` = its state_dict, or none for the package's
            cache file). A TorchXRayVision model's ``pathologies`` become ``outputs``.
        path: file path or store URL (``s3://bucket/key``) of the weights / TorchScript / ONNX
            file. A relative path in a YAML file is relative to that file's folder.
        arch: torchvision model name (``resnet18``), ``small_cnn`` / ``small_cnn2``, or a
            TorchXRayVision model name; ignored for torchscript and onnx.
        preset: ``torchxrayvision`` (1 channel, 224 px, [-1024, 1024], centre crop; the default
            of that kind) or ``imagenet`` (3 channels, 224 px, ImageNet mean/std); fills only
            the keys the spec does not set.
        in_channels: channels the network expects (1 or 3; grey input is repeated to 3). For
            state_dict kinds without an explicit value, taken from the first conv weight.
        input_size: side in pixels the network expects; the cohort's images are resized to it
            inside ``forward`` (differentiably).
        normalisation: ``unit`` (x in [0, 1] as is), ``minus_one_one`` (2x - 1) or mean/std
            (scalars or per-channel lists).
        resize: how a non-square image becomes the square ``input_size``: ``pad`` (black,
            centred), ``crop`` (centre crop of the short side) or ``stretch``.
        outputs: names of the output columns (optional; multi-label / multi-class models).
        finding: the audited finding, matched case-insensitively against ``outputs`` with NIH
            / RSNA synonyms (:func:`medxgan.findings.match_finding`); resolves
            ``positive_index``.
        activation: what turns the outputs into probabilities: ``sigmoid`` (multi-label
            logits: the chosen column), ``softmax`` (multi-class logits: the chosen class
            against the rest, log p_c - log(1 - p_c)), ``none`` (already probabilities) or
            ``logit`` (already the positive logit).
        output: the binary keys kept from before: ``two_logits`` (= softmax, 2 columns),
            ``one_logit`` (= logit, 1 column, the default) or ``probabilities`` (= none, 1 or
            2 columns).
        positive_index: output column of the audited class (default: the last of 1 or 2).
        threshold: decision threshold on the positive probability.
        target_layer: module name for Grad-CAM, in the model's own naming (``features.9``;
            default: the output of the last convolutional block, :func:`default_target_layer`).
        num_outputs: output columns (``num_classes`` is accepted too); default from
            ``outputs`` / ``output``, else what the model gives.
        onnx_tolerance: largest max-abs difference of raw outputs and positive logits between
            the onnx2torch conversion and onnxruntime for the ONNX file to be accepted.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: Literal["torchscript", "torchvision", "small_cnn", "onnx", "torchxrayvision"]
    path: str | None = None
    arch: str | None = None
    preset: Literal["torchxrayvision", "imagenet"] | None = None
    in_channels: Literal[1, 3] = 1
    input_size: int = Field(64, ge=8)
    normalisation: MeanStd | Literal["minus_one_one", "unit"] = "unit"
    resize: Literal["pad", "crop", "stretch"] = "stretch"
    outputs: list[str] | None = None
    finding: str | None = None
    activation: Literal["sigmoid", "softmax", "none", "logit"] | None = None
    output: Literal["two_logits", "one_logit", "probabilities"] | None = None
    positive_index: int | None = None
    threshold: float = Field(0.5, gt=0, lt=1)
    target_layer: str | None = None
    num_outputs: int | None = Field(None, ge=1, validation_alias=AliasChoices(
        "num_outputs", "num_classes"))
    onnx_tolerance: float = Field(1e-4, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _presets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("kind") == "torchxrayvision" and data.get("preset") is None:
            data["preset"] = "torchxrayvision"
        if data.get("preset") == "torchxrayvision" and data.get("output") is None:
            data.setdefault("activation", "sigmoid")
        for k, v in PRESETS.get(data.get("preset"), {}).items():  # type: ignore[arg-type]
            data.setdefault(k, v)
        return data

    @model_validator(mode="after")
    def _check(self) -> "ClassifierSpec":
        if self.kind in ("torchvision", "torchxrayvision") and not self.arch:
            raise ValueError(f"kind {self.kind!r} needs 'arch' (e.g. "
                             f"{'resnet18' if self.kind == 'torchvision' else 'densenet121-res224-all'})")
        if self.kind == "small_cnn" and self.arch not in (None, "small_cnn", "small_cnn2"):
            raise ValueError(f"kind 'small_cnn' cannot have arch {self.arch!r}")
        if self.kind != "torchxrayvision" and not self.path:
            raise ValueError(f"kind {self.kind!r} needs 'path'")
        norm = self.normalisation
        if isinstance(norm, MeanStd):
            for v in (norm.mean, norm.std):
                if isinstance(v, list) and len(v) not in (1, self.in_channels):
                    raise ValueError(f"per-channel normalisation has {len(v)} values but "
                                     f"in_channels={self.in_channels}")
        if self.outputs is not None:
            if not self.outputs:
                raise ValueError("outputs: give at least one name")
            if self.num_outputs is not None and self.num_outputs != len(self.outputs):
                raise ValueError(f"num_outputs={self.num_outputs} but {len(self.outputs)} "
                                 "output names")
            self.num_outputs = len(self.outputs)
        if self.output is None and self.activation is None:
            if (self.num_outputs or 1) > 1:
                raise ValueError(f"{self.num_outputs} outputs: set 'activation' (sigmoid for a "
                                 "multi-label, softmax for a multi-class model)")
            self.output = "one_logit"
        if self.output is not None:
            self._check_legacy()
        if self.activation == "softmax" and self.num_outputs == 1:
            raise ValueError("activation 'softmax' needs at least 2 output columns")
        self.resolve_positive(self.outputs)
        return self

    def _check_legacy(self) -> None:
        """The binary ``output`` keys, exactly as before (1 or 2 columns)."""
        act, expected = _LEGACY[self.output]
        if self.activation is not None and self.activation != act:
            raise ValueError(f"output {self.output!r} means activation {act!r}, not "
                             f"{self.activation!r}")
        self.activation = act
        if self.num_outputs is None:
            self.num_outputs = expected
        elif expected is not None and self.num_outputs != expected:
            raise ValueError(f"output {self.output!r} has {expected} column(s), "
                             f"not num_outputs={self.num_outputs}")
        elif self.num_outputs not in (1, 2):
            raise ValueError("a binary classifier has 1 or 2 outputs; for more, name them "
                             "('outputs') and set 'activation' instead of 'output'")

    def resolve_positive(self, names: list[str] | None) -> None:
        """Set ``positive_index`` from ``finding`` and the output ``names`` (when known), or
        the default (last of 1 or 2 columns); check its range.

        Raises:
            ValueError (FindingError): the finding is not among the names, or disagrees with
                an explicit positive_index; several columns but no choice.
        """
        if self.finding is not None and names is not None:
            k = match_finding(self.finding, names)
            if self.positive_index is not None and self.positive_index != k:
                raise FindingError(f"finding {self.finding!r} is output {k} "
                                   f"({names[k]!r}), but positive_index is "
                                   f"{self.positive_index}")
            self.positive_index = k
        n = self.num_outputs
        if self.positive_index is None and n is not None and self.finding is None:
            if n > 2:
                raise ValueError(f"{n} outputs: choose the audited one with 'finding' "
                                 "(a name in outputs) or 'positive_index'")
            self.positive_index = n - 1
        if self.positive_index is not None and not (0 <= self.positive_index < (n or 2)):
            raise ValueError(f"positive_index {self.positive_index} outside the "
                             f"{n or 2} output column(s)")

    @property
    def output_name(self) -> str | None:
        """Name of the audited output column, when the outputs are named."""
        if self.outputs and self.positive_index is not None:
            return self.outputs[self.positive_index]
        return None

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
        if base is not None and spec.path and not _is_url(spec.path) \
                and not os.path.isabs(spec.path):
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
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, still a user format
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file
            raise ClassifierLoadError(f"{spec.path}: not a TorchScript file "
                                      f"({type(exc).__name__}: {one_line(exc)})") from None
        names = _script_names(model)
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


def _load_state_dict_model(data: bytes, spec: ClassifierSpec) -> nn.Module:
    """A torchvision / SmallCNN network with the state_dict's weights; the stem's channels
    come from the first conv weight unless the spec (or its preset) sets ``in_channels``."""
    from medxgan.models.small_cnn import build_model

    state = _load_state_dict(data, spec.path)
    arch = spec.arch or "small_cnn"
    stem = next((int(v.shape[1]) for k, v in state.items()
                 if k.endswith("weight") and v.ndim == 4), None)
    if stem is not None and stem != spec.in_channels:
        if "in_channels" in spec.model_fields_set or stem not in (1, 3):
            raise ClassifierLoadError(f"{spec.path}: state_dict does not fit {arch} with "
                                      f"{spec.in_channels} input channel(s): its first conv "
                                      f"takes {stem}")
        spec.in_channels = stem
        _check_norm_channels(spec)
    num_outputs = spec.num_outputs or _guess_outputs(state)
    try:
        model = build_model(arch, spec.in_channels, num_outputs)
    except ValueError as exc:
        raise ClassifierLoadError(f"{spec.path}: {one_line(exc)}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ClassifierLoadError(f"{spec.path}: state_dict does not fit "
                                  f"{arch} with {spec.in_channels} "
                                  f"input channel(s) and {num_outputs} output(s): "
                                  f"{one_line(exc)}") from None
    return model


def _check_norm_channels(spec: ClassifierSpec) -> None:
    norm = spec.normalisation
    if isinstance(norm, MeanStd):
        for v in (norm.mean, norm.std):
            if isinstance(v, list) and len(v) not in (1, spec.in_channels):
                raise ClassifierLoadError(f"{spec.path}: per-channel normalisation has "
                                          f"{len(v)} values but the model takes "
                                          f"{spec.in_channels} channel(s)")


def _script_names(model: nn.Module) -> list[str] | None:
    """Output names a TorchScript model carries as a list-of-str attribute, if any."""
    for attr in ("pathologies", "targets", "outputs", "class_names", "classes"):
        try:
            v = getattr(model, attr)
        except (AttributeError, RuntimeError):
            continue
        if isinstance(v, (list, tuple)) and v and all(isinstance(n, str) for n in v):
            return list(v)
    return None


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


def _missing(package: str, extra: str, kind: str) -> ClassifierLoadError:
    return ClassifierLoadError(f"kind {kind!r} needs the package {package!r}: pip install "
                               f"'medxgan-audit[{extra}]'")


def _load_onnx(data: bytes, spec: ClassifierSpec) -> nn.Module:
    """An ONNX file as a differentiable torch module (onnx2torch); a fixed batch of 1 is
    served image by image."""
    try:
        import onnx
    except ImportError:
        raise _missing("onnx", "onnx", "onnx") from None
    try:
        from onnx2torch import convert
    except ImportError:
        raise _missing("onnx2torch", "onnx", "onnx") from None
    try:
        proto = onnx.load_from_string(data)
        graph_inputs = {i.name for i in proto.graph.initializer}
        inp = next(i for i in proto.graph.input if i.name not in graph_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise ClassifierLoadError(f"{spec.path}: not an ONNX model ({type(exc).__name__}: "
                                  f"{one_line(exc)[:160]})") from None
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inp.type.tensor_type.shape.dim]
    if len(dims) == 4:
        want = (spec.in_channels, spec.input_size, spec.input_size)
        for got, w, what in zip(dims[1:], want, ("in_channels", "input_size", "input_size")):
            if got is not None and got != w:
                raise ClassifierLoadError(f"{spec.path}: the ONNX input is "
                                          f"{tuple(d or '?' for d in dims)}, the spec says "
                                          f"{what}={w} (in_channels={want[0]}, "
                                          f"input_size={want[1]})")
    _inline_identity_initializers(proto)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert(proto)
    except Exception as exc:  # noqa: BLE001 - an operator onnx2torch lacks, ...
        raise ClassifierLoadError(f"{spec.path}: onnx2torch cannot convert it "
                                  f"({type(exc).__name__}: {one_line(exc)[:200]}); export it "
                                  "as TorchScript instead") from None
    if dims and dims[0] == 1:
        model = _PerImage(model)
    return model


def _inline_identity_initializers(proto) -> None:
    """torch.onnx.export deduplicates equal weights into ``Identity`` nodes of one
    initializer (e.g. the zero biases of BatchNorm folded into convs); onnx2torch wants
    weights as initializers, so each such node becomes a copy of its initializer."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in inits:
            copy = type(inits[node.input[0]])()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            inits[copy.name] = copy
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


class _PerImage(nn.Module):
    """Serves a network exported with a fixed batch of 1 one image at a time."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x[i:i + 1]) for i in range(x.shape[0])])


def _compare_onnxruntime(f: AuditedClassifier, data: bytes, n: int = 4) -> None:
    """Outputs of the converted network vs onnxruntime on a seeded batch of images in [0, 1]:
    refused when raw outputs or positive logits differ by more than ``onnx_tolerance``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise _missing("onnxruntime", "onnx", "onnx") from None
    spec = f.spec
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, spec.input_size, spec.input_size, generator=g)
    with torch.no_grad():
        x = f.preprocess(images)
        ours = f.model(x).float()
        feed = x.numpy().astype("float32")
        name = sess.get_inputs()[0].name
        fixed = sess.get_inputs()[0].shape[0] == 1
        theirs = [sess.run(None, {name: feed[i:i + 1] if fixed else feed})[0]
                  for i in (range(n) if fixed else [0])]
        import numpy as np

        theirs = torch.from_numpy(np.concatenate(theirs)).float()
        if theirs.shape != ours.shape:
            raise ClassifierLoadError(f"{spec.path}: onnxruntime gives outputs "
                                      f"{tuple(theirs.shape)}, the conversion "
                                      f"{tuple(ours.shape)}")
        diff = max(float((ours - theirs).abs().max()),
                   float((f._to_logit(ours) - f._to_logit(theirs)).abs().max()))
    if not diff <= spec.onnx_tolerance:
        raise ClassifierLoadError(f"{spec.path}: refused: the onnx2torch conversion differs "
                                  f"from onnxruntime by {diff:.3g} (max abs diff of outputs "
                                  f"and logits on {n} images; tolerance "
                                  f"{spec.onnx_tolerance:g})")


#: Classes a TorchXRayVision cache file (a pickled full DenseNet) may name; unpickled with
#: ``weights_only=True`` and only these allowed, never arbitrary code.
def _xrv_safe_globals() -> list:
    import collections

    import torchxrayvision as xrv

    m = xrv.models
    return [m.DenseNet, m._DenseLayer, m._DenseBlock, m._Transition, nn.Sequential, nn.Conv2d,
            nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, set,
            collections.OrderedDict]


def _load_torchxrayvision(spec: ClassifierSpec) -> tuple[nn.Module, list[str], bytes]:
    """(model, pathologies, file bytes) of a TorchXRayVision DenseNet built with
    ``weights=None`` and loaded from ``spec.path`` or the package's cache file."""
    where = f"torchxrayvision:{spec.arch}"
    saved = warnings.filters[:]  # the package silences every warning when imported
    try:
        import torchxrayvision as xrv
    except ImportError:
        raise _missing("torchxrayvision", "xrv", "torchxrayvision") from None
    finally:
        warnings.filters[:] = saved
    urls = xrv.models.model_urls
    if spec.arch not in urls or not spec.arch.startswith("densenet"):
        dense = sorted(k for k in urls if k.startswith("densenet"))
        raise ClassifierLoadError(f"{where}: not a TorchXRayVision DenseNet name; one of "
                                  f"{', '.join(dense)} (other models: export TorchScript)")
    info = urls[spec.arch]
    names = [str(n) for n in info["labels"]]
    model = xrv.models.DenseNet(weights=None, num_classes=len(names),
                                **xrv.models.get_densenet_params(spec.arch))
    if spec.path:
        data = _read(spec.path)
        state = _load_state_dict(data, spec.path)
    else:
        cached = os.path.join(os.path.expanduser(xrv.utils.get_cache_dir()),
                              os.path.basename(info["weights_url"]))
        if not os.path.isfile(cached):
            raise ClassifierLoadError(f"{where}: no weights: set 'path' to a state_dict file "
                                      f"(torch.save(model.state_dict(), ...)) or put "
                                      f"{cached}; weights are never downloaded")
        with open(cached, "rb") as fh:
            data = fh.read()
        spec.path = cached
        state = _load_pickled_module_state(data, cached, _xrv_safe_globals())
    state.pop("op_threshs", None)  # raw logits: the audit calibrates nothing itself
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ClassifierLoadError(f"{spec.path}: state_dict does not fit TorchXRayVision "
                                  f"{spec.arch}: {one_line(exc)}") from None
    return model, names, data


def _load_pickled_module_state(data: bytes, where: str, allowed: list
                               ) -> dict[str, torch.Tensor]:
    """A state_dict, or the state of a full module pickled with only ``allowed`` classes
    (``weights_only=True`` with those globals allowed; anything else is refused)."""
    try:
        return _load_state_dict(data, where)
    except ClassifierLoadError:
        pass
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ClassifierLoadError(f"{where}: refused: neither a state_dict nor a module of "
                                  f"the allowed classes loadable with weights_only=True: "
                                  f"{type(exc).__name__}: {one_line(exc)[:160]}") from None
    if not isinstance(obj, nn.Module):
        raise ClassifierLoadError(f"{where}: holds {type(obj).__name__}, not a model")
    for mod in obj.modules():  # modules pickled by old torch versions
        if not hasattr(mod, "_non_persistent_buffers_set"):
            mod._non_persistent_buffers_set = set()
    return dict(obj.state_dict())


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
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


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
