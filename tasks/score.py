"""Prefect tasks of the score stage: score one explanation part at a time, then aggregate.

Per (method, shard): ``<run>/scores/method=<m>/part-<shard>.parquet`` (long form), skipped
when it exists. The aggregate task writes ``scores.parquet``, ``summary.parquet`` and
``comparisons.parquet``, and adds the run-level ``counterfactual_similarity``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.storage import Store
from tasks.explain import part_key


def shuffle_partners(cohort_url: str, ids: list[str], seed: int) -> dict[str, str]:
    """For the ``<metric>_shuffled`` control: each explained image with boxes gets another
    such image's id (``medxgan.metrics.shuffle_partners`` over the run's ids, across shards)."""
    from medxgan.cohort.reader import Cohort
    from medxgan.metrics.controls import shuffle_partners as partners_of

    return partners_of(ids, Cohort(cohort_url).boxes_by_id(), seed)


@task(name="score-part", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def score_part(run_url: str, cohort_url: str, spec: str, method: str, shard: int,
               partners: dict[str, str], options: dict[str, Any]) -> str:
    """Score one explanation part; returns the scores part key.

    Store I/O around one ``medxgan.metrics.score_batch`` call: read the part's maps, the
    images and boxes, write the long-form scores part.
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.metrics.aggregate import SCORES, to_table
    from medxgan.metrics.batch import score_batch, scoring_inputs
    from medxgan.metrics.controls import partner_masks
    from medxgan.metrics.masks import boxes_to_masks
    from tasks.common import classifier

    store = Store(run_url)
    out = part_key("scores", method, shard)
    if store.exists(out):
        return out
    ids, maps, extras = scoring_inputs(store.read_parquet(part_key("explanations", method, shard)))
    cohort = Cohort(cohort_url)
    batch = cohort.load(ids)
    H, W = maps.shape[1:]
    size = tuple(batch.images.shape[-2:])
    masks = boxes_to_masks(batch.boxes, H, W, size)
    others = partner_masks(ids, partners, cohort.boxes_by_id(), H, W, size)
    needs_f = options.get("faithfulness", True) or options.get("robustness", False)
    df = score_batch(maps, masks, others, classifier(spec) if needs_f else None, batch.images,
                     options, method=method, ids=ids, extras=extras)
    store.write_parquet(out, to_table(df, SCORES))
    return out


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
