"""Prefect tasks of the score stage: score one explanation part at a time, then aggregate.

Per (method, shard): ``<run>/scores/method=<m>/part-<shard>.parquet`` (long form), skipped
when it exists. The aggregate task writes ``scores.parquet``, ``summary.parquet`` and
``comparisons.parquet``, and adds the run-level ``counterfactual_similarity``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.storage import Store
from tasks.explain import GAN_METHODS, part_key

_EMPTY = np.zeros((0, 4), np.float32)


def shuffle_partners(cohort_url: str, ids: list[str], seed: int) -> dict[str, str]:
    """For the ``<metric>_shuffled`` control: each explained image with boxes gets another
    such image's id (a seeded derangement over all of them, across shards)."""
    from medxgan.cohort.reader import Cohort
    from medxgan.metrics.localization import derangement

    boxes = Cohort(cohort_url).boxes_by_id()
    boxed = sorted(i for i in set(ids) if len(boxes.get(i, _EMPTY)))
    if len(boxed) < 2:
        return {}
    d = derangement(len(boxed), seed=seed).tolist()
    return {boxed[i]: boxed[j] for i, j in enumerate(d)}


@task(name="score-part", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def score_part(run_url: str, cohort_url: str, spec: str, method: str, shard: int,
               partners: dict[str, str], options: dict[str, Any]) -> str:
    """Score one explanation part; returns the scores part key."""
    import torch

    from medxgan.cohort.reader import Cohort
    from medxgan.explain.serialize import read_maps
    from medxgan.metrics.aggregate import long_scores, to_table, SCORES
    from medxgan.metrics.faithfulness import deletion_auc, insertion_auc
    from medxgan.metrics.localization import localization_scores
    from medxgan.metrics.masks import boxes_to_masks
    from tasks.common import classifier

    store = Store(run_url)
    out = part_key("scores", method, shard)
    if store.exists(out):
        return out
    table = store.read_parquet(part_key("explanations", method, shard))
    ids, maps = read_maps(table)
    cohort = Cohort(cohort_url)
    batch = cohort.load(ids)
    H, W = maps.shape[1:]
    size = tuple(batch.images.shape[-2:])
    masks = boxes_to_masks(batch.boxes, H, W, size)
    boxes = cohort.boxes_by_id()
    partner = [boxes.get(partners[i], _EMPTY) if i in partners else _EMPTY for i in ids]
    values: dict[str, Any] = dict(localization_scores(maps, masks))
    shuffled = localization_scores(maps, boxes_to_masks(partner, H, W, size))
    values.update({f"{k}_shuffled": v for k, v in shuffled.items()})
    if options.get("faithfulness", True):
        f = classifier(spec)
        with torch.no_grad():
            values["deletion_auc"] = deletion_auc(f, batch.images, maps)
            values["insertion_auc"] = insertion_auc(f, batch.images, maps)
    if options.get("robustness", False) and method not in GAN_METHODS:
        values["noise_stability"] = _noise_stability(method, spec, batch.images, ids, options)
    if method == "medxgan":
        for col in ("recon_mse", "counterfactual_flip"):
            if col in table.column_names:
                values[col] = torch.tensor(table.column(col).to_numpy(), dtype=torch.float64)
    df = long_scores(ids, method, values)
    store.write_parquet(out, to_table(df, SCORES))
    return out


def _noise_stability(method: str, spec: str, images, ids: list[str], options: dict) -> Any:
    import torch

    from medxgan.explain.base import make_explainer
    from medxgan.metrics.robustness import noise_stability
    from tasks.common import classifier

    cfg = options.get("method_options", {}).get(method) or None
    ex = make_explainer(method, classifier(spec), config=cfg) if method != "box_prior" else None
    if ex is None:
        return torch.full((len(ids),), float("nan"), dtype=torch.float64)

    def fn(x):
        with torch.enable_grad():
            return ex.explain(x, ids=ids).maps
    return noise_stability(fn, images, k=4, sigma=0.05, seed=options.get("seed", 0))


@task(name="aggregate-scores", cache_policy=NO_CACHE)
def aggregate(run_url: str, methods: list[str], n_shards: int, n_boot: int, seed: int) -> dict:
    """Concatenate score parts, add counterfactual_similarity, write scores/summary/comparisons."""
    import torch

    from medxgan.explain.serialize import read_changes
    from medxgan.metrics.aggregate import (COMPARISONS, SCORES, SUMMARY, compare, long_scores,
                                           summarise, to_table)
    from medxgan.metrics.counterfactual import counterfactual_similarity

    store = Store(run_url)
    frames = [store.read_parquet(part_key("scores", m, s)).to_pandas()
              for m in methods for s in range(n_shards)]
    if "medxgan" in methods:
        ids, changes = [], []
        for s in range(n_shards):
            i, c = read_changes(store.read_parquet(part_key("explanations", "medxgan", s)))
            ids += i
            changes.append(c)
        ch = torch.cat(changes)
        if len(ids) >= 2:
            sim = counterfactual_similarity(ch, sample=32, seed=seed)
            frames.append(long_scores(ids, "medxgan", {"counterfactual_similarity": sim}))
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCORES.names)
    scores = scores.sort_values(["method", "metric", "image_id"], kind="stable").reset_index(drop=True)
    summary = summarise(scores, n_boot=n_boot, seed=seed)
    comparisons = compare(scores, n_boot=n_boot, seed=seed)
    store.write_parquet("scores.parquet", to_table(scores, SCORES))
    store.write_parquet("summary.parquet", to_table(summary, SUMMARY))
    store.write_parquet("comparisons.parquet", to_table(comparisons, COMPARISONS))
    return {"n_scores": int(len(scores)), "n_images": int(scores["image_id"].nunique()),
            "methods": sorted(set(scores["method"]))}


@task(name="sanity-check", cache_policy=NO_CACHE)
def sanity(run_url: str, cohort_url: str, spec: str, ids: list[str], methods: list[str],
           options: dict[str, dict], seed: int) -> dict:
    """Model-randomisation check of the gradient baselines on up to 16 explained images."""
    import torch

    from medxgan.cohort.reader import Cohort
    from medxgan.explain.base import make_explainer
    from medxgan.metrics.sanity import model_randomisation
    from tasks.common import classifier

    f = classifier(spec)
    x = Cohort(cohort_url).load(ids[:16]).images
    out = {}
    for m in [m for m in methods if m in ("gradcam", "ig", "smoothgrad", "occlusion")]:
        def factory(model, m=m):
            ex = make_explainer(m, model, config=options.get(m) or None)

            def fn(images):
                with torch.enable_grad():
                    return ex.explain(images).maps
            return fn
        r = model_randomisation(factory, f, x, seed=seed)
        out[m] = {"median_abs_rho": r["median_abs_rho"], "passed": r["passed"],
                  "threshold": r["threshold"], "n_images": int(x.shape[0])}
    Store(run_url).write_json("sanity.json", out)
    return out
