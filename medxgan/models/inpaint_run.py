"""The ``inpaint`` generator family's training run: the GAN stage's contract, another recipe.

``train_gan`` dispatches here when ``gan_config.family == "inpaint"`` (docs/design.md, "The
medXGAN method"). The run:

1. loads the cohort's train split at ``gan_config.image_size`` and keeps the images the audited
   classifier f calls negative (whatever their label: the in-filler learns what f sees as
   healthy; when f calls none negative, the labelled negatives, ``stats.train_on`` says which);
2. trains an :class:`~medxgan.models.inpaint.Inpainter` on them
   (:func:`~medxgan.models.inpaint.train_inpainter` with ``train_config.inpaint``; seed and
   device from ``train_config``; wall-clock budget ``inpaint.seconds``, else
   ``train_config.time_limit_s``; ``inpaint.steps`` caps the steps);
3. judges it on the held-out split (:func:`end_of_run_health`): the held-out positives with
   boxes are given counterfactuals by the family's search and scored by
   :func:`medxgan.models.health.counterfactual_health` (boxes are used for scoring only: the
   run keeps its one, last checkpoint, so no checkpoint is selected on any boxes);
4. writes, in this order, ``checkpoints/step-XXXXXXX.pt`` (in-filler weights, architecture,
   configs, health, loss history, cohort and classifier hashes; no URL, no time; loads with
   ``weights_only=True``), ``checkpoints/step-XXXXXXX.png`` (rows x | x_neg | |x - x_neg| of
   held-out positives), ``best.pt`` + ``best.json`` and ``checkpoints/latest.json`` (pointers
   with the blob's sha256 and the generator's ``content_hash``,
   :func:`~medxgan.models.train_gan.generator_content_hash`), ``manifest.json`` last.

A store whose ``best.json`` names a readable checkpoint of the same configs is reused (no
training; its manifest is rewritten if missing). :func:`generator_from_checkpoint` turns a
loaded checkpoint into the :class:`~medxgan.models.inpaint.InpaintGenerator` that
``load_generator`` returns.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.models.checkpoints import CKPT_FORMAT, load_blob, pointer, read_json, write_blob
from medxgan.models.inpaint import InpaintGenerator, Inpainter, train_inpainter
from medxgan.storage import Store

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, dict[str, float]], None]


def generator_from_checkpoint(obj: dict) -> InpaintGenerator:
    """The :class:`InpaintGenerator` of a loaded inpaint-family checkpoint (CPU, eval mode)."""
    arch = obj["inpainter"]
    net = Inpainter(int(arch["base"]), int(arch["depth"]))
    net.load_state_dict(obj["generator"])
    search = (obj.get("train_config") or {}).get("inpaint", {}).get("search")
    return InpaintGenerator(net.eval(), int(obj["gan_config"]["image_size"]), search).eval()


@torch.no_grad()
def _probs(f: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    out = [torch.sigmoid(f(x[s:s + batch]).float().reshape(-1)).cpu()
           for s in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.zeros(0)


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


def _oracle(cohort_url: str, store: Store, tc: GanTrainConfig, device: torch.device
            ) -> nn.Module | None:
    """The oracle classifier (``inpaint.health.oracle_epochs`` > 0), trained once into
    ``<run>/oracle/`` and reused."""
    from medxgan.models.classifier import load_classifier
    from medxgan.models.train_classifier import ClassifierTrainConfig, train_classifier

    h = tc.inpaint.health
    if h.oracle_epochs <= 0:
        return None
    sub = store.child("oracle")
    if not sub.exists("spec.yaml"):
        train_classifier(cohort_url, sub, ClassifierTrainConfig(
            arch=h.oracle_arch, epochs=h.oracle_epochs, seed=h.oracle_seed,
            device="cuda" if device.type == "cuda" else "cpu"))
    return load_classifier(sub.url_of("spec.yaml")).to(device).eval()


def end_of_run_health(G: InpaintGenerator, f: nn.Module, cohort, gc: GanConfig,
                      tc: GanTrainConfig, oracle: nn.Module | None = None
                      ) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor] | None]:
    """Health of an inpaint-family generator on the held-out split (module docstring, 3).

    Returns: (health dict, (positives, their x_neg) for the sample grid, or None)."""
    from medxgan.cohort.loading import load_heldout, resize_square
    from medxgan.models.health import counterfactual_health
    from medxgan.phantoms.twins import true_twins

    S = gc.image_size
    held = load_heldout(cohort, S, tc.health_heldout, tc.heldout_split)
    if held is None:
        return {}, None
    sel = (held.labels == 1) & held.masks.flatten(1).any(1)
    x = held.images[sel]                                               # (P, 1, S, S)
    ids = [i for i, s in zip(held.ids or [], sel.tolist()) if s]
    res = G.counterfactual(x, f)
    negs = _negatives(cohort, tc.heldout_split, S, tc.inpaint.health.negatives)
    called_neg = negs[_probs(f, negs) < float(getattr(f, "threshold", 0.5))]
    null = G.counterfactual(negs, f).x_neg if len(negs) else negs
    twins = true_twins(cohort, ids) if ids else None
    if twins is not None:
        twins = resize_square(twins, S)
    health = counterfactual_health(f, x, res.x_neg, held.masks[sel], negatives=called_neg,
                                   null_pair=(negs, null), twins=twins, oracle=oracle,
                                   seed=tc.seed)
    health["area"] = float(res.area.mean()) if len(res.area) else float("nan")
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
    from medxgan.models.train_gan import _REQUIRED

    best = read_json(store, "best.json")
    if best is None:
        return None
    try:
        obj, _ = load_blob(store, best["key"], best.get("sha256"), _REQUIRED, "generator")
    except Exception as exc:  # noqa: BLE001 - a torn run is trained again
        log.warning("%s: best.json's checkpoint unreadable (%s); training again", store.url, exc)
        return None
    if obj.get("gan_config") != gc.model_dump(mode="json") or \
            obj.get("train_config") != tc.model_dump(mode="json"):
        raise ValueError(f"{store.url} holds an inpaint run with other configs; use a new out URL")
    return obj


def train_inpaint_run(cohort_url: str, classifier: nn.Module, store: Store, gc: GanConfig,
                      tc: GanTrainConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train (or reuse) the inpaint family's run in ``store``; returns the run summary, also
    written to ``manifest.json`` (the keys of ``train_gan``'s summary, ``family`` and the
    training ``stats``)."""
    from medxgan.cohort.loading import load_train_data
    from medxgan.cohort.reader import Cohort
    from medxgan.models.checkpoints import seed_all, step_key
    from medxgan.models.train_gan import generator_content_hash

    t0 = time.perf_counter()
    dev = torch.device("cuda" if tc.device == "cuda" or
                       (tc.device == "auto" and torch.cuda.is_available()) else "cpu")
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
                                         "cohort_url": cohort.url, "family": "inpaint"})
        data = load_train_data(cohort, gc.image_size)
        p = _probs(f, data.images.to(dev))
        neg = data.images[p < float(getattr(f, "threshold", 0.5))]
        train_on = "called_negative"
        if len(neg) == 0:  # a degenerate f: the labelled negatives, said in the stats
            log.warning("f calls no train image of %s negative; training the in-filler on "
                        "the labelled negatives", cohort.url)
            neg, train_on = data.images[data.labels == 0], "label_negative"
        if len(neg) == 0:
            raise ValueError(f"{cohort.url}: no train image is negative, for f or by label: "
                             "nothing to train a healthy-anatomy in-filler on")
        ic = tc.inpaint
        seconds = ic.seconds if ic.seconds is not None else tc.time_limit_s
        seed_all(tc.seed)
        net, stats = train_inpainter(neg, ic, progress=progress, seed=tc.seed,
                                     device="cuda" if dev.type == "cuda" else "cpu",
                                     seconds=seconds)
        G = InpaintGenerator(net.to(dev), gc.image_size, ic.search.model_dump(mode="json"))
        health, sample = end_of_run_health(G, f, cohort, gc, tc, _oracle(cohort_url, store,
                                                                          tc, dev))
        if progress is not None:
            progress(int(stats["steps"]), dict(health))
        key = step_key(int(stats["steps"]))
        obj = {"format": CKPT_FORMAT, "family": "inpaint", "step": int(stats["steps"]),
               "generator": {k: v.detach().cpu() for k, v in net.state_dict().items()},
               "inpainter": {"base": net.base, "depth": net.depth},
               "gan_config": gc.model_dump(mode="json"),
               "train_config": tc.model_dump(mode="json"),
               "health": {k: float(v) for k, v in health.items()},
               "stats": {**{k: stats[k] for k in ("steps", "params", "n_images", "final_loss",
                                                  "history")}, "train_on": train_on}, **meta}
        blob, digest = write_blob(store, key, obj)
        if sample is not None:
            store.write_bytes(key.replace(".pt", ".png"), _grid(*sample))
        ptr = {**pointer(obj["step"], key, digest, obj["health"]),
               "content_hash": generator_content_hash(obj)}
        store.write_bytes("best.pt", blob)
        store.write_json("best.json", ptr)
        store.write_json("checkpoints/latest.json", ptr)
    summary = {"family": "inpaint", "steps": int(obj["step"]), "resumed_from": None,
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


__all__ = ["end_of_run_health", "generator_from_checkpoint", "train_inpaint_run"]
