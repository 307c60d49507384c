"""The image-conditioned generator families' training run: the GAN stage's contract, other recipes.

``train_gan`` dispatches here when ``gan_config.family`` is ``inpaint`` or ``residual``
(docs/design.md, "The medXGAN method"). The run:

1. loads the cohort's train split at ``gan_config.image_size`` and splits it by what the
   audited classifier f calls each image (whatever their label: the generator learns what f
   sees as healthy; when f calls none negative, the labelled negatives, ``stats.train_on``
   says which; likewise for the residual family's positives);
2. ``inpaint``: trains an :class:`~medxgan.models.inpaint.Inpainter` on the negatives
   (:func:`~medxgan.models.inpaint.train_inpainter` with ``train_config.inpaint``);
   ``residual``: trains a :class:`~medxgan.models.residual.ResidualNet` against a WGAN-GP
   critic, positives in, negatives as the critic's real images
   (:func:`~medxgan.models.residual.train_residual` with ``train_config.residual``). Seed and
   device from ``train_config``; wall-clock budget ``<family>.seconds``, else
   ``train_config.time_limit_s``; ``<family>.steps`` caps the steps;
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
loaded checkpoint into the :class:`~medxgan.models.inpaint.InpaintGenerator` or
:class:`~medxgan.models.residual.ResidualGenerator` that ``load_generator`` returns.
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
from medxgan.explain._torch import probabilities
from medxgan.models.checkpoints import CKPT_FORMAT, load_blob, pointer, read_json, write_blob
from medxgan.models.inpaint import InpaintGenerator, Inpainter, train_inpainter
from medxgan.models.residual import ResidualGenerator, ResidualNet, train_residual
from medxgan.storage import Store

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, dict[str, float]], None]


FAMILIES = ("inpaint", "residual")  # the image-conditioned families trained here


def _family_config(tc: GanTrainConfig, family: str):
    """``tc.inpaint`` or ``tc.residual``: the family's own training config."""
    if family not in FAMILIES:
        raise ValueError(f"not an image-conditioned family: {family!r}")
    return getattr(tc, family)


def generator_from_checkpoint(obj: dict) -> InpaintGenerator | ResidualGenerator:
    """The generator of a loaded inpaint- or residual-family checkpoint (CPU, eval mode)."""
    if obj.get("family") == "residual":
        arch = obj["residual_net"]
        net = ResidualNet(int(arch["base"]), int(arch["depth"]))
        net.load_state_dict(obj["generator"])
        tol = (obj.get("train_config") or {}).get("residual", {}).get("mask_tol", 0.05)
        return ResidualGenerator(net.eval(), int(obj["gan_config"]["image_size"]), tol).eval()
    arch = obj["inpainter"]
    net = Inpainter(int(arch["base"]), int(arch["depth"]))
    net.load_state_dict(obj["generator"])
    ic = (obj.get("train_config") or {}).get("inpaint", {})
    mask_net = None
    if obj.get("mask_net") is not None:  # the optional amortised mask
        from medxgan.models.amortised import MaskNet

        a = obj["mask_net"]
        mask_net = MaskNet(int(a["base"]), int(a["depth"]))
        mask_net.load_state_dict(a["state_dict"])
        mask_net.eval()
    return InpaintGenerator(net.eval(), int(obj["gan_config"]["image_size"]), ic.get("search"),
                            mask_net, ic.get("amortise")).eval()


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


def _oracle(cohort_url: str, store: Store, tc: GanTrainConfig, device: torch.device,
            family: str = "inpaint") -> nn.Module | None:
    """The oracle classifier (``<family>.health.oracle_epochs`` > 0), trained once into
    ``<run>/oracle/`` and reused."""
    from medxgan.models.classifier import load_classifier
    from medxgan.models.train_classifier import ClassifierTrainConfig, train_classifier

    h = _family_config(tc, family).health
    if h.oracle_epochs <= 0:
        return None
    sub = store.child("oracle")
    if not sub.exists("spec.yaml"):
        train_classifier(cohort_url, sub, ClassifierTrainConfig(
            arch=h.oracle_arch, epochs=h.oracle_epochs, seed=h.oracle_seed,
            device="cuda" if device.type == "cuda" else "cpu"))
    return load_classifier(sub.url_of("spec.yaml")).to(device).eval()


def end_of_run_health(G: InpaintGenerator | ResidualGenerator, f: nn.Module, cohort,
                      gc: GanConfig, tc: GanTrainConfig, oracle: nn.Module | None = None
                      ) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor] | None]:
    """Health of an image-conditioned generator on the held-out split (module docstring, 3).

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
    negs = _negatives(cohort, tc.heldout_split, S, _family_config(tc, gc.family).health.negatives)
    called_neg = negs[probabilities(f, negs) < float(getattr(f, "threshold", 0.5))]
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


def _amortise(G: InpaintGenerator, f: nn.Module, pos: torch.Tensor, ic, seed: int,
              dev: torch.device) -> tuple[dict, dict]:
    """Distil the search's masks of up to ``ic.amortise.images`` train images f calls positive
    into a mask net, attach it to G; returns (its checkpoint record, stats)."""
    from medxgan.models.amortised import train_mask_net

    a = ic.amortise
    t0 = time.perf_counter()
    res = G.counterfactual(pos[:a.images], f)                     # G has no mask net yet
    search_s = time.perf_counter() - t0
    ok = res.flipped
    if not bool(ok.any()):
        log.warning("the search flipped none of %d train positives: no amortised mask",
                    len(res.flipped))
        return None, {"n_images": 0, "search_seconds": search_s}
    net, st = train_mask_net(pos[:a.images][ok], res.mask[ok], a,
                             seed=seed, device=dev)
    G.mask_net = net
    rec = {"base": a.base, "depth": a.depth,
           "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    return rec, {**st, "search_seconds": search_s, "searched": len(res.flipped)}


def train_image_run(cohort_url: str, classifier: nn.Module, store: Store, gc: GanConfig,
                    tc: GanTrainConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train (or reuse) an image-conditioned family's run (``gc.family``: ``inpaint`` or
    ``residual``) in ``store``; returns the run summary, also written to ``manifest.json``
    (the keys of ``train_gan``'s summary, ``family`` and the training ``stats``)."""
    from medxgan.cohort.loading import load_train_data
    from medxgan.cohort.reader import Cohort
    from medxgan.models.checkpoints import seed_all, step_key
    from medxgan.models.train_gan import generator_content_hash

    t0 = time.perf_counter()
    family = gc.family
    fc = _family_config(tc, family)
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
                                         "cohort_url": cohort.url, "family": family})
        data = load_train_data(cohort, gc.image_size)
        pos, neg, sides = _split_by_f(f, data, dev, cohort.url)
        seconds = fc.seconds if fc.seconds is not None else tc.time_limit_s
        run = {"seed": tc.seed, "device": "cuda" if dev.type == "cuda" else "cpu",
               "seconds": seconds}
        seed_all(tc.seed)
        if family == "inpaint":
            net, stats = train_inpainter(neg, fc, progress=progress, **run)
            G = InpaintGenerator(net.to(dev), gc.image_size, fc.search.model_dump(mode="json"),
                                 amortise=fc.amortise.model_dump(mode="json"))
            arch = {"inpainter": {"base": net.base, "depth": net.depth}}
            if fc.amortise.images > 0 and len(pos):
                arch["mask_net"], stats["amortise"] = _amortise(G, f, pos, fc, tc.seed, dev)
            train_on = f"{sides['negative']}_negative"
        else:
            if len(pos) == 0:
                raise ValueError(f"{cohort.url}: no train image is positive, for f or by "
                                 "label: nothing for the residual family to learn from")
            net, stats = train_residual(pos, neg, fc, classifier=f, progress=progress, **run)
            G = ResidualGenerator(net.to(dev), gc.image_size, fc.mask_tol)
            arch = {"residual_net": {"base": net.base, "depth": net.depth}}
            train_on = f"{sides['positive']}_positive+{sides['negative']}_negative"
        health, sample = end_of_run_health(G, f, cohort, gc, tc,
                                           _oracle(cohort_url, store, tc, dev, family))
        if progress is not None:
            progress(int(stats["steps"]), dict(health))
        key = step_key(int(stats["steps"]))
        obj = {"format": CKPT_FORMAT, "family": family, "step": int(stats["steps"]),
               "generator": {k: v.detach().cpu() for k, v in net.state_dict().items()},
               **arch, "gan_config": gc.model_dump(mode="json"),
               "train_config": tc.model_dump(mode="json"),
               "health": {k: float(v) for k, v in health.items()},
               "stats": {**{k: stats[k] for k in ("steps", "params", "n_images", "final_loss",
                                                  "history")}, "train_on": train_on,
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
    summary = {"family": family, "steps": int(obj["step"]), "resumed_from": None,
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


__all__ = ["FAMILIES", "end_of_run_health", "generator_from_checkpoint", "train_image_run"]
