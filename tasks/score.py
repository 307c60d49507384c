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
from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.settings import get_settings
from medxgan.storage import Store
from tasks.explain import part_key


def shuffle_partners(cohort_url: str, ids: list[str], seed: int) -> dict[str, str]:
    """For the ``<metric>_shuffled`` control: each explained image with boxes gets another
    such image's id (``medxgan.metrics.shuffle_partners`` over the run's ids, across shards)."""
    from medxgan.cohort.reader import Cohort
    from medxgan.metrics.controls import shuffle_partners as partners_of

    return partners_of(ids, Cohort(cohort_url).boxes_by_id(), seed)


@task(name="score-part", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE,
      timeout_seconds=get_settings().task_timeout_s)
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


def infiller(infill: str, infill_gan: str | None):
    """The healthy in-filler of a run (the generator at ``infill_gan``, of a family that has
    one: ``inpaint``) when ``infill`` is ``inpaint``, else None."""
    if infill != "inpaint":
        return None
    if not infill_gan:
        raise ValueError("score.ablation_infill 'inpaint' needs the run's healthy in-filler "
                         "(an inpaint-family GAN run); set ablation_infill to blur, mean or "
                         "noisy_linear to score without one")
    from tasks.common import generator, generator_family

    filler = generator_family(infill_gan).infiller(generator(infill_gan)[0])
    if filler is None:
        raise ValueError(f"{infill_gan} is a {generator_family(infill_gan).name!r} generator "
                         "run, not a healthy in-filler (family: inpaint)")
    return filler


@task(name="intervention-part", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE,
      timeout_seconds=get_settings().task_timeout_s)
def intervention_part(run_url: str, cohort_url: str, spec: str, shard: int, ids: list[str],
                      partners: dict[str, str], infill: str, seed: int,
                      infill_gan: str | None = None) -> str:
    """Intervention evidence of one shard's explained images; returns the scores part key.

    Store I/O around one ``medxgan.metrics.ablation.ablation_scores`` call (boxes infilled at
    the stored images' resolution by ``infill``: ``inpaint`` with the healthy in-filler at
    ``infill_gan``, or a fixed infill; on the classifier's device): ``ablation_drop``,
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
                             seed=seed, inpainter=infiller(infill, infill_gan))
    store.write_parquet(out, to_table(long_scores(ids, INTERVENTION, values), SCORES))
    return out


@task(name="shortcut-search", cache_policy=NO_CACHE,
      timeout_seconds=get_settings().task_timeout_s)
def shortcut_search(run_url: str, cohort_url: str, spec: str, split: str | None, cap: int,
                    infill: str, n_boot: int, seed: int, infill_gan: str | None = None,
                    gan: str | None = None, methods: list[str] | None = None,
                    options: dict[str, dict] | None = None,
                    residual_cap: int | None = None) -> dict:
    """The run-level shortcut search: ``shortcut.json`` (skipped when it exists).

    Store I/O around one ``medxgan.metrics.shortcut_run.cohort_shortcut`` call (the three
    kinds of evidence: location-free, located with its transplant, image-wide; the healthy
    in-filler at ``infill_gan`` when ``infill`` is ``inpaint``) and, where a region was found,
    ``maps_on_shortcut`` for the run's ``methods`` (with the run's generator ``gan``).
    ``shortcut.json`` is ``medxgan.metrics.shortcut_run.shortcut_json`` plus ``maps``.
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.metrics.shortcut_run import (cohort_shortcut, finite, maps_on_shortcut,
                                              shortcut_json)
    from tasks.common import classifier, generator
    from tasks.progress import Progress

    store = Store(run_url)
    if store.exists("shortcut.json"):
        return store.read_json("shortcut.json")
    cohort = Cohort(cohort_url)
    bar = Progress(3, "shortcut search (stages)")
    f = classifier(spec)
    G_fill = infiller(infill, infill_gan)
    found, ids, batch = cohort_shortcut(cohort, f, split=split, cap=cap, inpainter=G_fill,
                                        method=infill if G_fill is None else "blur", seed=seed,
                                        n_boot=n_boot, residual_cap=residual_cap)
    bar.update()
    out = shortcut_json(found, ids, batch.labels, split)
    maps = {}
    if methods and len(found.top_images):
        G = generator(gan)[0] if gan else None
        maps = maps_on_shortcut(found, batch.images, f, G, list(methods), options, ids=ids,
                                n_boot=n_boot, seed=seed)
    bar.update()
    out["maps"] = finite(maps)
    store.write_json("shortcut.json", out)
    bar.update()
    bar.close()
    return out


@task(name="aggregate-scores", cache_policy=NO_CACHE,
      timeout_seconds=get_settings().task_timeout_s)
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


@task(name="sanity-check", cache_policy=NO_CACHE,
      timeout_seconds=get_settings().task_timeout_s)
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
