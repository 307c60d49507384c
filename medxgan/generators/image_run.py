"""The image-conditioned families' training run: the GAN stage's contract, other recipes.

The families ``inpaint`` and ``residual`` (:class:`~medxgan.generators.image_family.ImageFamily`)
train through :func:`train_image_run` (docs/design.md, "The medXGAN method"). The run:

1. loads the cohort's train split at ``gan_config.image_size`` and splits it by what the
   audited classifier f calls each image (whatever their label: the generator learns what f
   sees as healthy; when f calls none negative, the labelled negatives, ``stats.train_on``
   says which; likewise for the residual family's positives);
2. lets the family fit its network (:meth:`ImageFamily.fit`: the inpaint family trains an
   in-filler on the negatives, the residual family a map generator against a WGAN-GP critic)
   with ``train_config.<family>``. Seed and device from ``train_config``; wall-clock budget
   ``<family>.seconds``, else ``train_config.time_limit_s``; ``<family>.steps`` caps the steps;
3. judges it on the held-out split (:func:`end_of_run_health`): the held-out positives with
   boxes are given counterfactuals by the family and scored by
   :func:`medxgan.generators.health.counterfactual_health` (boxes are used for scoring only:
   the run keeps its one, last checkpoint, so no checkpoint is selected on any boxes);
4. writes, in this order, ``checkpoints/step-XXXXXXX.pt`` (the network's weights,
   architecture, configs, health, loss history, cohort and classifier hashes; no URL, no time;
   loads with ``weights_only=True``), ``checkpoints/step-XXXXXXX.png`` (rows x | x_neg |
   |x - x_neg| of held-out positives), ``best.pt`` + ``best.json`` and
   ``checkpoints/latest.json`` (pointers with the blob's sha256 and the generator's
   ``content_hash``, :func:`~medxgan.generators.run.generator_content_hash`),
   ``manifest.json`` last.

A store whose ``best.json`` names a readable checkpoint of the same configs is reused (no
training; its manifest is rewritten if missing).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medxgan.checkpoints import (CKPT_FORMAT, load_blob, pointer, read_json, seed_all, step_key,
                                 write_blob)
from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.explain._torch import probabilities
from medxgan.generators.base import GeneratorFamily, ProgressFn
from medxgan.generators.run import REQUIRED, device, generator_content_hash
from medxgan.storage import Store

log = logging.getLogger(__name__)


@dataclass
class Fit:
    """What a family's :meth:`~medxgan.generators.image_family.ImageFamily.fit` trained.

    Attributes:
        net: the trained network (its state_dict is the checkpoint's ``generator``).
        G: the generator module the explainers use, on the training device.
        arch: checkpoint entries that rebuild it (``{"inpainter": {"base", "depth"}}``, ...).
        stats: the training loop's stats (``steps``, ``params``, ``n_images``, ``final_loss``,
            ``history``, optional ``amortise``).
        train_on: which images it learnt from (``called_negative``, ...).
    """

    net: nn.Module
    G: nn.Module
    arch: dict[str, Any]
    stats: dict[str, Any]
    train_on: str


def _negatives(cohort, split: str, size: int, n: int) -> torch.Tensor:
    """Up to ``n`` labelled negatives of ``split`` (else test, train) at ``size`` px."""
    from medxgan.cohort.loading import resize_square

    for sp in dict.fromkeys([split, "test", "train"]):
        xs: list[torch.Tensor] = []
        for b in cohort.iter_batches(256, split=sp, labels=[0]):
            xs.append(resize_square(b.images, size))
            if sum(len(x) for x in xs) >= n:
                break
        if xs:
            return torch.cat(xs)[:n]
    return torch.zeros(0, 1, size, size)


def _oracle(cohort_url: str, store: Store, own, dev: torch.device) -> nn.Module | None:
    """The oracle classifier (``<family>.health.oracle_epochs`` > 0, ``own`` the family's
    training config), trained once into ``<run>/oracle/`` and reused."""
    from medxgan.classifiers.load import load_classifier
    from medxgan.classifiers.train import train_classifier
    from medxgan.config.models import ClassifierTrainConfig

    h = own.health
    if h.oracle_epochs <= 0:
        return None
    sub = store.child("oracle")
    if not sub.exists("spec.yaml"):
        train_classifier(cohort_url, sub, ClassifierTrainConfig(
            arch=h.oracle_arch, epochs=h.oracle_epochs, seed=h.oracle_seed,
            device="cuda" if dev.type == "cuda" else "cpu"))
    return load_classifier(sub.url_of("spec.yaml")).to(dev).eval()


def end_of_run_health(G: nn.Module, f: nn.Module, cohort, gc: GanConfig, tc: GanTrainConfig,
                      oracle: nn.Module | None = None, own: Any = None,
                      filler: nn.Module | None = None
                      ) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor] | None]:
    """Health of an image-conditioned generator G (``G.counterfactual(images, f)``) on the
    held-out split (module docstring, 3); ``own`` is the family's training config (default:
    the section of ``tc`` named after ``gc.family``); ``filler``: the family's healthy
    in-filler (``GeneratorFamily.infiller``), whose ``healthy_control`` is measured on the
    held-out negatives (:func:`medxgan.metrics.counterfactual.healthy_control`; NaN without).

    Returns: (health dict, (positives, their x_neg) for the sample grid, or None)."""
    own = own if own is not None else getattr(tc, gc.family)
    from medxgan.cohort.loading import load_heldout, resize_square
    from medxgan.generators.health import counterfactual_health
    from medxgan.metrics.counterfactual import healthy_control
    from medxgan.phantoms.twins import true_twins

    S = gc.image_size
    held = load_heldout(cohort, S, tc.health_heldout, tc.heldout_split)
    if held is None:
        return {}, None
    sel = (held.labels == 1) & held.masks.flatten(1).any(1)
    x = held.images[sel]                                               # (P, 1, S, S)
    ids = [i for i, s in zip(held.ids or [], sel.tolist()) if s]
    res = G.counterfactual(x, f)
    negs = _negatives(cohort, tc.heldout_split, S, own.health.negatives)
    called_neg = negs[probabilities(f, negs) < float(getattr(f, "threshold", 0.5))]
    null = G.counterfactual(negs, f).x_neg if len(negs) else negs
    twins = true_twins(cohort, ids) if ids else None
    if twins is not None:
        twins = resize_square(twins, S)
    health = counterfactual_health(f, x, res.x_neg, held.masks[sel], negatives=called_neg,
                                   null_pair=(negs, null), twins=twins, oracle=oracle,
                                   seed=tc.seed)
    health["area"] = float(res.area.mean()) if len(res.area) else float("nan")
    health["healthy_control"] = healthy_control(filler, called_neg, f, seed=tc.seed) \
        if filler is not None else float("nan")
    health["recon_mse"] = 0.0  # x_pos = x: nothing of the image is lost (medxgan.explain)
    return health, (x, res.x_neg)


def _grid(x: torch.Tensor, x_neg: torch.Tensor, n: int = 8) -> bytes:
    """PNG of up to n rows x | x_neg | |x - x_neg| (the change scaled per row)."""
    from PIL import Image

    x, x_neg = x[:n, 0].float().cpu(), x_neg[:n, 0].float().cpu()       # (n, S, S)
    d = (x - x_neg).abs()
    d = d / d.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
    S = x.shape[-1]
    sep = torch.ones(len(x), S, 2)
    rows = torch.cat([x, sep, x_neg, sep, d], 2)
    grid = torch.cat([torch.cat([r, torch.ones(2, r.shape[1])]) for r in rows]) if len(rows) \
        else torch.ones(2, 2)
    buf = io.BytesIO()
    Image.fromarray((grid.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _reuse(store: Store, gc: GanConfig, tc: GanTrainConfig) -> dict | None:
    """The checkpoint named by ``best.json`` when it is readable and of the same configs."""
    best = read_json(store, "best.json")
    if best is None:
        return None
    try:
        obj, _ = load_blob(store, best["key"], best.get("sha256"), REQUIRED, "generator")
    except Exception as exc:  # noqa: BLE001 - a torn run is trained again
        log.warning("%s: best.json's checkpoint unreadable (%s); training again", store.url, exc)
        return None
    if obj.get("gan_config") != gc.model_dump(mode="json") or \
            obj.get("train_config") != tc.model_dump(mode="json"):
        raise ValueError(f"{store.url} holds a {gc.family} run with other configs; use a new "
                         "out URL")
    return obj


def _split_by_f(f: nn.Module, data, dev: torch.device, cohort_url: str
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """(train images f calls positive, those it calls negative, ``train_on``): a side of which
    f calls no image falls back to the labelled images of that class (a degenerate f; logged,
    and ``train_on[side]`` reads ``label`` instead of ``called``)."""
    called = probabilities(f, data.images.to(dev)) >= float(getattr(f, "threshold", 0.5))
    sides = {"positive": data.images[called], "negative": data.images[~called]}
    train_on = {"positive": "called", "negative": "called"}
    for name, label in (("positive", 1), ("negative", 0)):
        if len(sides[name]) == 0:
            log.warning("f calls no train image of %s %s; using the labelled %ss", cohort_url,
                        name, name)
            sides[name], train_on[name] = data.images[data.labels == label], "label"
    if len(sides["negative"]) == 0:
        raise ValueError(f"{cohort_url}: no train image is negative, for f or by label: "
                         "nothing to learn healthy anatomy from")
    return sides["positive"], sides["negative"], train_on


def train_image_run(family: GeneratorFamily, cohort_url: str, classifier: nn.Module, store: Store,
                    gc: GanConfig, tc: GanTrainConfig,
                    progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train (or reuse) a run of an image-conditioned ``family`` (an
    :class:`~medxgan.generators.image_family.ImageFamily`) in ``store``; returns the run
    summary, also written to ``manifest.json`` (the keys of the published family's summary,
    ``family`` and the training ``stats``)."""
    from medxgan.cohort.loading import load_train_data
    from medxgan.cohort.reader import Cohort

    t0 = time.perf_counter()
    fc = getattr(tc, family.own_config)
    dev = device(tc.device)
    cohort = Cohort(cohort_url)
    f = classifier.to(dev).eval()
    f.requires_grad_(False)
    meta = {"classifier_sha256": str(getattr(classifier, "sha256", "")),
            "cohort_hash": cohort.content_hash}
    obj, stats, reused = _reuse(store, gc, tc), {}, True
    if obj is None:
        reused = False
        store.write_json("config.json", {"gan_config": gc.model_dump(mode="json"),
                                         "train_config": tc.model_dump(mode="json"), **meta,
                                         "cohort_url": cohort.url, "family": family.name})
        data = load_train_data(cohort, gc.image_size)
        pos, neg, sides = _split_by_f(f, data, dev, cohort.url)
        seconds = fc.seconds if fc.seconds is not None else tc.time_limit_s
        run = {"seed": tc.seed, "device": "cuda" if dev.type == "cuda" else "cpu",
               "seconds": seconds}
        seed_all(tc.seed)
        fit = family.fit(pos, neg, sides, fc, f, gc, run, dev, cohort.url, progress)
        stats = fit.stats
        health, sample = end_of_run_health(fit.G, f, cohort, gc, tc,
                                           _oracle(cohort_url, store, fc, dev), own=fc,
                                           filler=family.infiller(fit.G))
        if progress is not None:
            progress(int(stats["steps"]), dict(health))
        key = step_key(int(stats["steps"]))
        obj = {"format": CKPT_FORMAT, "family": family.name, "step": int(stats["steps"]),
               "generator": {k: v.detach().cpu() for k, v in fit.net.state_dict().items()},
               **fit.arch, "gan_config": gc.model_dump(mode="json"),
               "train_config": tc.model_dump(mode="json"),
               "health": {k: float(v) for k, v in health.items()},
               "stats": {**{k: stats[k] for k in ("steps", "params", "n_images", "final_loss",
                                                  "history")}, "train_on": fit.train_on,
                         **({"amortise": stats["amortise"]} if "amortise" in stats else {})},
               **meta}
        blob, digest = write_blob(store, key, obj)
        if sample is not None:
            store.write_bytes(key.replace(".pt", ".png"), _grid(*sample))
        ptr = {**pointer(obj["step"], key, digest, obj["health"]),
               "content_hash": generator_content_hash(obj)}
        store.write_bytes("best.pt", blob)
        store.write_json("best.json", ptr)
        store.write_json("checkpoints/latest.json", ptr)
    summary = {"family": family.name, "steps": int(obj["step"]), "resumed_from": None,
               "reused": reused, "last_health": obj.get("health", {}), "encoder": None,
               "best": read_json(store, "best.json"),
               "latest": read_json(store, "checkpoints/latest.json"),
               "gan_config": gc.model_dump(mode="json"), "train_config": tc.model_dump(mode="json"),
               "stats": {**{k: v for k, v in stats.items() if k != "config"},
                         **(obj.get("stats") or {})},
               "seconds": round(time.perf_counter() - t0, 2), "device": str(dev), **meta,
               "cohort_url": cohort.url}
    store.write_manifest(summary)
    return summary


__all__ = ["Fit", "end_of_run_health", "train_image_run"]
