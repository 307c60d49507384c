"""Training a baseline binary classifier on a cohort (for users without one, and for demos).

The train split (labelled images only) is held in memory (64 px cohorts of a few thousand
images are tens of MB); val and test are streamed. Adam + OneCycle (a constant lr made the
prototype's accuracy swing between epochs: docs/findings.md), random horizontal/vertical flips,
BCE on one logit. Outputs in the out store:

  - ``classifier.pt``: the state_dict (load with ``weights_only=True``),
  - ``classifier.ts``: the same network as TorchScript,
  - ``metrics.json``: AUROC / accuracy on val and test, config, hashes (``sha256`` of
    ``classifier.pt``'s bytes, ``state_dict_hash`` of its weights), seconds,
  - ``spec.yaml`` (state_dict; hookable for Grad-CAM) and ``spec_torchscript.yaml``, both
    loadable with :func:`medxgan.classifiers.load_classifier`; written last.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medxgan.cohort.loading import resize_square  # noqa: F401  (re-exported)
from medxgan.config.models import ClassifierTrainConfig  # noqa: F401  (re-exported)
from medxgan.checkpoints import seed_all, sha256, state_dict_hash, write_blob
from medxgan.classifiers.small_cnn import build_model
from medxgan.config.classifier import ClassifierSpec
from medxgan.cpu import fast_layout, fast_training
from medxgan.explain._torch import probabilities
from medxgan.storage import Store

ImageTransform = Callable[[torch.Tensor], torch.Tensor]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count 1/2); NaN with one class only."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_one_epoch(model: nn.Module, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LRScheduler, images: torch.Tensor,
                    labels: torch.Tensor, config: ClassifierTrainConfig,
                    gen: torch.Generator) -> float:
    """One pass over (images (N, 1, S, S) in [0, 1], labels (N,)); returns the mean loss."""
    model.train()
    dev = next(model.parameters()).device
    order = torch.randperm(len(images), generator=gen)
    total, seen = 0.0, 0
    n_batches = max(1, len(order) // config.batch)  # the last partial batch is dropped
    for s in range(n_batches):
        idx = order[s * config.batch:(s + 1) * config.batch]
        x = images[idx].clone()                                        # (b, 1, S, S)
        if config.flips != "none":
            fh = torch.rand(len(idx), generator=gen) < 0.5
            x[fh] = x[fh].flip(-1)
        if config.flips == "both":
            fv = torch.rand(len(idx), generator=gen) < 0.5
            x[fv] = x[fv].flip(-2)
        x, y = fast_layout(x.to(dev)), labels[idx].float().to(dev)    # medxgan.cpu
        loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, cohort, split: str, size: int, threshold: float = 0.5,
             transform: ImageTransform | None = None) -> dict[str, float]:
    """AUROC, accuracy (at ``threshold``) and count on a split, streamed in batches of 256
    images, each through the model in :func:`medxgan.cpu.cpu_batch`-sized passes
    (:func:`medxgan.explain._torch.probabilities`)."""
    model.eval()
    dev = next(model.parameters()).device
    scores, labels = [], []
    for b in cohort.iter_batches(256, split=split, labels=[0, 1]):
        x = resize_square(b.images, size)
        if transform is not None:
            x = transform(x)
        scores.append(probabilities(model, x, 256, dev).numpy())     # medxgan.cpu's passes
        labels.append(b.labels.numpy())
    if not scores:
        return {"auroc": float("nan"), "accuracy": float("nan"), "n": 0}
    p, y = np.concatenate(scores), np.concatenate(labels)
    return {"auroc": auroc(p, y), "accuracy": float(((p >= threshold) == (y == 1)).mean()),
            "n": int(len(y))}


def train_classifier(cohort_url: str, out_url: str | Store,
                     config: ClassifierTrainConfig | None = None,
                     image_transform: ImageTransform | None = None,
                     progress: Callable[[int, dict[str, float]], None] | None = None
                     ) -> dict[str, Any]:
    """Train a baseline classifier on a cohort's train split and save it to ``out_url``.

    Args:
        cohort_url: a finished cohort.
        out_url: store URL (or :class:`Store`) for the outputs listed in the module docstring.
        config: options (defaults: the prototype's small CNN, 14 epochs, OneCycle 2e-3).
        image_transform: applied to every image batch (B, 1, S, S) in [0, 1] before the
            network, in training and evaluation; ``config.remove_tag`` sets it to
            ``medxgan.phantoms.remove_tag``.
        progress: ``progress(epoch, {"loss": ..., "val_auroc": ...})`` after every epoch.

    Returns:
        The metrics dict written to ``metrics.json``.
    """
    from medxgan.cohort.reader import Cohort

    cfg = config or ClassifierTrainConfig()
    store = out_url if isinstance(out_url, Store) else Store(out_url)
    if cfg.remove_tag:
        if image_transform is not None:
            raise ValueError("give either image_transform or remove_tag, not both")
        from medxgan.phantoms import remove_tag

        image_transform = remove_tag
    cohort = Cohort(cohort_url)
    size = cfg.image_size or (cohort.image_size or (64, 64))[0]
    dev = torch.device("cuda" if cfg.device == "cuda" or
                       (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")

    imgs, labels = [], []
    for b in cohort.iter_batches(512, split="train", labels=[0, 1]):
        x = resize_square(b.images, size)
        imgs.append(image_transform(x) if image_transform is not None else x)
        labels.append(b.labels)
    if not imgs:
        raise ValueError(f"cohort {cohort.url} has no labelled images in its train split")
    images, y = torch.cat(imgs), torch.cat(labels)

    seed_all(cfg.seed)  # torch, numpy and Python global RNGs
    gen = torch.Generator().manual_seed(cfg.seed)
    model = fast_training(build_model(cfg.arch, in_channels=1, num_outputs=1).to(dev))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(images) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr, epochs=cfg.epochs,
                                                steps_per_epoch=steps_per_epoch)
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        loss = train_one_epoch(model, opt, sched, images, y, cfg, gen)
        if progress is not None:
            val = evaluate(model, cohort, "val", size, cfg.threshold, image_transform)
            progress(epoch, {"loss": loss, "val_auroc": val["auroc"],
                             "val_accuracy": val["accuracy"]})
    seconds = time.perf_counter() - t0

    model = model.cpu().eval().to(memory_format=torch.contiguous_format)  # checkpoint layout
    metrics: dict[str, Any] = {
        split: evaluate(model, cohort, split, size, cfg.threshold) for split in ("val", "test")}
    if image_transform is not None:
        metrics["test_transformed"] = evaluate(model, cohort, "test", size, cfg.threshold,
                                               image_transform)
    ts = io.BytesIO()
    with warnings.catch_warnings():  # TorchScript is deprecated, still a common user format
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), ts)
    _, state_sha256 = write_blob(store, "classifier.pt", model.state_dict())
    store.write_bytes("classifier.ts", ts.getvalue())
    metrics.update({
        "arch": cfg.arch, "input_size": size, "n_train": int(len(images)),
        "train_seconds": round(seconds, 2), "config": cfg.model_dump(mode="json"),
        "cohort_hash": cohort.content_hash, "cohort_url": cohort.url,
        "sha256": state_sha256,
        "state_dict_hash": state_dict_hash(model.state_dict()),
        "sha256_torchscript": sha256(ts.getvalue()),
        "positives_train": int((y == 1).sum()),
    })
    store.write_json("metrics.json", _finite(metrics))
    common = dict(in_channels=1, input_size=size, normalisation="unit", output="one_logit",
                  threshold=cfg.threshold)
    kind = "small_cnn" if cfg.arch.startswith("small_cnn") else "torchvision"
    spec = ClassifierSpec(kind=kind, path=store.url_of("classifier.pt"), arch=cfg.arch, **common)
    spec_ts = ClassifierSpec(kind="torchscript", path=store.url_of("classifier.ts"), **common)
    store.write_bytes("spec_torchscript.yaml", spec_ts.to_yaml().encode())
    store.write_bytes("spec.yaml", spec.to_yaml().encode())
    return metrics


def _finite(obj: Any) -> Any:
    """NaN -> None so that metrics.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj
