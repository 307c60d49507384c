"""``medxgan check-classifier``: is this classifier fit to be audited on this cohort?

:func:`check_classifier` loads the classifier (which validates input shape, output columns and
names, and for ONNX the agreement with onnxruntime), runs a split of the cohort through it and
returns what the audit will use and how the classifier does there:

- the audited output (its name and column, the ``finding`` it was chosen by, the activation);
- AUROC; sensitivity and specificity at the spec's threshold; the expected calibration error
  of the positive probability (ECE: 15 equal-width bins over [0, 1], sum over bins of
  n_bin / n * |mean label - mean probability|);
- images per second of the forward pass on this machine (batches of ``batch_size``, no
  gradients, the cohort's images resized inside the wrapper as in the audit);
- Grad-CAM's layer, named as the spec's ``target_layer`` and the explainer's ``layer``
  option take it.

A classifier whose chosen output is constant on the images is refused with one line
(:class:`~medxgan.config.classifier.ClassifierLoadError`): every explanation of it would be
zero. :func:`format_check` renders the result as the command prints it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from medxgan.classifiers.load import load_classifier
from medxgan.classifiers.wrapper import AuditedClassifier
from medxgan.config.classifier import ClassifierLoadError, ClassifierSpec, MeanStd
from medxgan.explain.gradcam import gradcam_unsupported

ECE_BINS = 15


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of positive probabilities ``p`` against 0/1 labels ``y`` (equal-width bins; the last
    bin includes 1.0); NaN without images."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    if len(p) == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def check_classifier(spec: ClassifierSpec | str | AuditedClassifier, cohort_url: str,
                     split: str | None = "test", *, batch_size: int = 32,
                     max_images: int | None = None) -> dict[str, Any]:
    """Load a classifier, run a cohort split through it and report (see the module doc).

    Args:
        spec: a spec, a spec YAML path/URL/text, or an already loaded classifier.
        cohort_url: the cohort.
        split: the split to run (None or ``""``: every image).
        batch_size: images per forward pass.
        max_images: stop after this many images (None: the whole split).

    Returns:
        A JSON-able dict: ``kind``, ``arch``, ``path``, ``sha256``, ``num_outputs``,
        ``outputs``, ``finding``, ``positive_index``, ``output_name``, ``activation``,
        ``input`` (channels, size, resize, normalisation, preset, cohort size), ``split``,
        ``n``, ``n_labelled``, ``positives``, ``threshold``, ``auroc``, ``sensitivity``,
        ``specificity``, ``ece``, ``logit_min``, ``logit_max``, ``images_per_s``,
        ``seconds``, ``device``, ``threads``, ``target_layer`` (None where Grad-CAM cannot
        run), ``gradcam_unsupported`` (why not, one line, or None), ``onnx_opset`` (ONNX:
        ``{"file": opset, "converted_to": opset or None}``; None for other kinds).

    Raises:
        ClassifierLoadError: the classifier cannot be loaded, a finding not among its output
            names, no images in the split, or a constant chosen output.
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.classifiers.train import auroc

    f = spec if isinstance(spec, AuditedClassifier) else load_classifier(spec)
    s = f.spec
    cohort = Cohort(cohort_url)
    device = next((b.device for b in f.buffers()), torch.device("cpu"))
    logits, labels = [], []
    seconds, n = 0.0, 0
    for b in cohort.iter_batches(batch_size, split=split or None, limit=max_images):
        x = b.images.to(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            z = f(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        logits.append(z.float().cpu().numpy())
        labels.append(b.labels.numpy())
        n += len(x)
    what = f"output {s.output_name!r} (column {s.positive_index})" if s.output_name \
        else f"output column {s.positive_index}"
    if n == 0:
        raise ClassifierLoadError(f"cohort {cohort.url} has no images in split {split!r}")
    z = np.concatenate(logits).astype(np.float64)
    y = np.concatenate(labels)
    if not np.isfinite(z).all():
        raise ClassifierLoadError(f"classifier {s.path}: {what} is not finite on "
                                  f"{int((~np.isfinite(z)).sum())} of {n} images")
    if z.max() - z.min() <= 1e-6 * max(1.0, float(np.abs(z).max())):
        raise ClassifierLoadError(
            f"classifier {s.path}: {what} is constant (logit {z[0]:.4g}) on all {n} images of "
            f"split {split!r}: nothing to explain (wrong preprocessing, preset or output?)")
    p = 1 / (1 + np.exp(-z))
    lab = y >= 0
    yl, pl = y[lab], p[lab]
    pred = pl >= f.threshold
    pos, neg = yl == 1, yl == 0
    norm = s.normalisation
    no_cam = gradcam_unsupported(f)
    return {
        "kind": s.kind, "arch": s.arch, "path": s.path, "sha256": f.sha256,
        "num_outputs": s.num_outputs, "outputs": s.outputs, "finding": s.finding,
        "positive_index": s.positive_index, "output_name": s.output_name,
        "activation": s.activation,
        "input": {"channels": s.in_channels, "size": s.input_size, "resize": s.resize,
                  "preset": s.preset,
                  "normalisation": norm.model_dump() if isinstance(norm, MeanStd) else norm,
                  "cohort_size": list(cohort.image_size) if cohort.image_size else None},
        "split": split or None, "n": int(n), "n_labelled": int(lab.sum()),
        "positives": int(pos.sum()), "threshold": float(f.threshold),
        "auroc": float(auroc(pl, yl)),
        "sensitivity": float((pred & pos).sum() / pos.sum()) if pos.any() else float("nan"),
        "specificity": float((~pred & neg).sum() / neg.sum()) if neg.any() else float("nan"),
        "ece": expected_calibration_error(pl, yl),
        "logit_min": float(z.min()), "logit_max": float(z.max()),
        "images_per_s": float(n / seconds) if seconds > 0 else float("inf"),
        "seconds": float(seconds), "device": str(device), "threads": torch.get_num_threads(),
        "target_layer": None if no_cam else _layer_name(f),
        "gradcam_unsupported": no_cam,
        "onnx_opset": getattr(f.model, "onnx_opset", None),
    }


def _layer_name(f: AuditedClassifier) -> str | None:
    try:
        return f.target_layer_name()
    except ClassifierLoadError:
        return None


def _num(v: float, fmt: str = ".3f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)


def format_check(r: dict[str, Any]) -> list[str]:
    """The lines ``medxgan check-classifier`` prints for a :func:`check_classifier` result."""
    model = r["kind"] + (f" {r['arch']}" if r.get("arch") and r["kind"] != "small_cnn" else "")
    out = r["output_name"]
    chosen = (f"{out!r} (column {r['positive_index']} of {r['num_outputs']})" if out
              else f"column {r['positive_index']} of {r['num_outputs']}")
    if r.get("finding"):
        chosen += f", finding {r['finding']!r}"
    i = r["input"]
    norm = i["normalisation"]
    norm_s = norm if isinstance(norm, str) else f"mean {norm['mean']} std {norm['std']}"
    cohort = f"cohort {i['cohort_size'][0]} px -> " if i.get("cohort_size") else ""
    split = r["split"] or "all"
    opset = r.get("onnx_opset") or {}
    onnx = [] if not opset else [
        f"ONNX: opset {opset['file']}" + (
            f", converted to opset {opset['converted_to']} for onnx2torch" if
            opset.get("converted_to") else "") + "; onnxruntime agrees on the original file"]
    return [
        f"classifier: {model} ({r['path']}, sha256 {r['sha256'][:12]})", *onnx,
        f"audited output: {chosen}, activation {r['activation']}",
        f"input: {cohort}{i['size']} px ({i['resize']}), {i['channels']} channel(s), "
        f"normalisation {norm_s}" + (f", preset {i['preset']}" if i.get("preset") else ""),
        f"{split} split: {r['n']} images ({r['positives']} positive, "
        f"{r['n_labelled'] - r['positives']} negative): AUROC {_num(r['auroc'])}, "
        f"sensitivity {_num(r['sensitivity'])}, specificity {_num(r['specificity'])} at "
        f"threshold {r['threshold']:g}, ECE {_num(r['ece'])} ({ECE_BINS} bins)",
        f"speed: {_num(r['images_per_s'], '.1f')} images/s ({r['device']}, "
        f"{r['threads']} thread(s))",
        f"Grad-CAM layer: {r['target_layer'] or '(none: set target_layer)'}"
        if not r.get("gradcam_unsupported") else f"Grad-CAM: not available ({r['gradcam_unsupported']})",
    ]
