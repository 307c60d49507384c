"""The classifier spec (torch-free): how to load and call the classifier under audit.

- :class:`ClassifierSpec`: the spec YAML (kind, path, preset, normalisation, resize, outputs,
  finding / positive_index, activation, threshold, ...), validated with ``extra="forbid"``;
- :class:`MeanStd`: scalar or per-channel normalisation;
- :data:`PRESETS` (``torchxrayvision``, ``imagenet``) and the ImageNet statistics;
- :class:`ClassifierLoadError`: the one-line error of an unusable spec or file (a
  ``ValueError``).

The loader and the wrapper that uses a spec live in :mod:`medxgan.classifiers`, which
re-exports the public names of this module; importing this one never imports torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, field_validator,
                      model_validator)

from medxgan.findings import FindingError, match_finding

if TYPE_CHECKING:
    import torch

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
        """(mean, std) as float tensors: scalars, or (1, C, 1, 1) for per-channel lists
        (torch is imported here, so the spec itself stays torch-free)."""
        import torch

        def t(v):
            return torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) \
                if isinstance(v, list) else torch.tensor(float(v))
        return t(self.mean), t(self.std)


class ClassifierSpec(BaseModel):
    """How to load and call a classifier under audit.

    Attributes:
        kind: ``torchscript`` (a ``torch.jit`` file), ``torchvision`` (architecture ``arch`` +
            state_dict), ``small_cnn`` (state_dict of
            :class:`~medxgan.classifiers.small_cnn.SmallCNN`), ``onnx`` (an ONNX
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
            default: the output of the last convolutional block,
            :func:`~medxgan.classifiers.wrapper.default_target_layer`).
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
            from medxgan.storage import Store

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
