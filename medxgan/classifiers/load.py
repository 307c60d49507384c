"""Loading the classifier under audit: :func:`load_classifier` -> :class:`AuditedClassifier`.

A user's classifier comes as (a) a TorchScript file, (b) a torchvision architecture name + a
``state_dict`` file, (c) a ``state_dict`` of our :class:`~medxgan.classifiers.small_cnn.SmallCNN`,
(d) an ONNX file (converted with ``onnx2torch`` so gradients flow, and checked against
``onnxruntime`` at load) or (e) a TorchXRayVision model name + a local ``state_dict`` (or the
package's cache file; never a download). It may be binary (one logit, two logits,
probabilities) or multi-label / multi-class with named outputs (``outputs``), of which the
audited one is chosen by ``finding`` (synonyms understood, :mod:`medxgan.findings`) or
``positive_index``.

Safety: every file read with ``torch.load`` uses ``weights_only=True``, so a pickled full
model (or any pickle that would run code) is refused, never unpickled. Mismatches (channels,
input size, output shape or names) are found by a dummy forward at load time and raised as a
one-line :class:`~medxgan.config.classifier.ClassifierLoadError` (a ``ValueError``).

This module holds the loader's common steps (read, hash, output names, dummy forward); one
loader per kind is in :mod:`medxgan.classifiers.kinds`; the wrapper it returns is
:mod:`medxgan.classifiers.wrapper`.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from medxgan.classifiers.kinds import (_compare_onnxruntime, _load_onnx, _load_state_dict_model,
                                       _load_torchscript, _load_torchxrayvision, _read)
from medxgan.classifiers.wrapper import AuditedClassifier
from medxgan.config.classifier import ClassifierLoadError, ClassifierSpec
from medxgan.storage import one_line

__all__ = ["load_classifier"]


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
