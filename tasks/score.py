"""Prefect tasks of the score stage: score one explanation part at a time, then aggregate.

Per (method, shard): ``<run>/scores/method=<m>/part-<shard>.parquet`` (long form), skipped
when it exists. Per shard, the intervention evidence of the explained images
(``scores/method=intervention/part-<shard>.parquet``: ``ablation_drop`` (+ ``_shuffled``, the
partners of the localisation controls), ``ablation_flip``, ``retention``). The aggregate task
writes ``scores.parquet``, ``summary.parquet`` and ``comparisons.parquet``, and adds the
run-level ``counterfactual_similarity``. The run-level shortcut search writes ``shortcut.json``.
Every part is skipped when it is already written.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow.compute as pc
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
    table = store.read_parquet(part_key("explanations", method, shard))
    ids, maps, extras = scoring_inputs(table)
    cohort = Cohort(cohort_url)
    batch = cohort.load(ids)
    H, W = maps.shape[1:]
    size = tuple(batch.images.shape[-2:])
    masks = boxes_to_masks(batch.boxes, H, W, size)
    others = partner_masks(ids, partners, cohort.boxes_by_id(), H, W, size)
    needs_f = options.get("faithfulness", True) or options.get("robustness", False)
    truth = _true_changes(cohort, ids, partners, batch.images, table) \
        if method == "medxgan" else {}
    df = score_batch(maps, masks, others, classifier(spec) if needs_f else None, batch.images,
                     options, method=method, ids=ids, extras=extras, **truth)
    store.write_parquet(out, to_table(df, SCORES))
    return out


def _true_changes(cohort, ids: list[str], partners: dict[str, str], images, table) -> dict:
    """``changes``, ``true_changes`` and ``partner_true_changes`` for ``score_batch`` on a
    phantom cohort (true change = image - its healthy twin, re-rendered from the records;
    ``medxgan.phantoms.true_twins``); {} for any other cohort or a part without changes."""
    import torch

    from medxgan.explain.serialize import read_changes
    from medxgan.phantoms import true_twins

    if "change" not in table.column_names:
        return {}
    twins = true_twins(cohort, ids)
    if twins is None:
        return {}
    _, changes = read_changes(table)
    true = (images - twins)[:, 0]                                        # (B, S, S)
    pids = [partners[i] for i in ids if i in partners]
    partner_true = torch.full_like(true, float("nan"))
    if pids:
        p_twins = true_twins(cohort, pids)
        if p_twins is not None:
            p_true = (cohort.load(pids).images - p_twins)[:, 0]
            rows = [k for k, i in enumerate(ids) if i in partners]
            partner_true[rows] = p_true
    return {"changes": changes, "true_changes": true, "partner_true_changes": partner_true}


@task(name="intervention-part", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def intervention_part(run_url: str, cohort_url: str, spec: str, shard: int, ids: list[str],
                      partners: dict[str, str], infill: str, seed: int) -> str:
    """Intervention evidence of one shard's explained images; returns the scores part key.

    Store I/O around one ``medxgan.metrics.ablation.ablation_scores`` call (boxes infilled at
    the stored images' resolution, on the classifier's device): ``ablation_drop``,
    ``ablation_drop_shuffled`` (the partner's boxes: the same derangement as the localisation
    controls), ``ablation_flip``, ``retention``, as rows of method ``intervention``.
    """
    from medxgan.catalogue import INTERVENTION
    from medxgan.cohort.reader import Cohort
    from medxgan.metrics.ablation import ablation_scores
    from medxgan.metrics.aggregate import SCORES, long_scores, to_table
    from medxgan.metrics.controls import partner_masks
    from medxgan.metrics.masks import boxes_to_masks
    from tasks.common import classifier

    store = Store(run_url)
    out = part_key("scores", INTERVENTION, shard)
    if store.exists(out):
        return out
    cohort = Cohort(cohort_url)
    batch = cohort.load(ids)
    H, W = batch.images.shape[-2:]
    masks = boxes_to_masks(batch.boxes, H, W)
    others = partner_masks(ids, partners, cohort.boxes_by_id(), H, W)
    values = ablation_scores(classifier(spec), batch.images, masks, others, method=infill,
                             seed=seed)
    store.write_parquet(out, to_table(long_scores(ids, INTERVENTION, values), SCORES))
    return out


def shortcut_ids(cohort_url: str, split: str | None, cap: int) -> list[str]:
    """The images of the shortcut search: positives with boxes and negatives of ``split``
    (every split when empty), about half each, at most ``cap``; each class in the order of a
    hash of the id (stable, not biased by id order), positives first."""
    from medxgan.cohort.reader import Cohort
    from medxgan.cohort.splits import unit_hash

    c = Cohort(cohort_url)
    t = c.index()
    if split:
        t = t.filter(pc.equal(t["split"], split))
    boxed = c.boxes_by_id()
    ids, labels = t["image_id"].to_pylist(), t["label"].to_pylist()
    key = lambda i: unit_hash(i, "shortcut")  # noqa: E731
    pos = sorted((i for i, y in zip(ids, labels) if y == 1 and i in boxed), key=key)
    neg = sorted((i for i, y in zip(ids, labels) if y == 0), key=key)
    n_pos = min(len(pos), cap // 2)
    n_neg = min(len(neg), cap - n_pos)
    n_pos = min(len(pos), cap - n_neg)
    return pos[:n_pos] + neg[:n_neg]


@task(name="shortcut-search", cache_policy=NO_CACHE)
def shortcut_search(run_url: str, cohort_url: str, spec: str, split: str | None, cap: int,
                    infill: str, n_boot: int, seed: int) -> dict:
    """The run-level shortcut search: ``shortcut.json`` (skipped when it exists).

    Store I/O around one ``medxgan.metrics.shortcut.find_shortcut`` call on
    :func:`shortcut_ids` (findings infilled first, occlusion outside the boxes, the strongest
    region, its transplant check). ``shortcut.json`` is ``ShortcutFinding.summary()`` plus
    ``top_image_ids`` (the gallery: the images where the region matters most, largest drop
    first), ``split``, ``n_images``, ``n_positives``, ``n_negatives``.
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.metrics.masks import boxes_to_masks
    from medxgan.metrics.shortcut import find_shortcut
    from tasks.common import classifier
    from tasks.progress import Progress

    store = Store(run_url)
    if store.exists("shortcut.json"):
        return store.read_json("shortcut.json")
    ids = shortcut_ids(cohort_url, split, cap)
    if not ids:
        raise ValueError(f"cohort {cohort_url} has no images in split {split!r} for the "
                         "shortcut search")
    bar = Progress(len(ids), "shortcut search", "images")
    batch = Cohort(cohort_url).load(ids)
    H, W = batch.images.shape[-2:]
    masks = boxes_to_masks(batch.boxes, H, W)
    found = find_shortcut(classifier(spec), batch.images, masks, batch.labels, method=infill,
                          seed=seed, n_boot=n_boot)
    bar.update(len(ids))
    bar.close()
    n_pos = int((batch.labels == 1).sum())
    out = {**_finite(found.summary()), "top_image_ids": [ids[i] for i in found.top_images],
           "split": split or None, "n_images": len(ids), "n_positives": n_pos,
           "n_negatives": len(ids) - n_pos}
    store.write_json("shortcut.json", out)
    return out


def _finite(d: dict) -> dict:
    """NaN floats as None (standard JSON)."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in d.items()}


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
