"""Prefect tasks of the explain stage: one task per shard of image ids, all methods inside.

Each (method, shard) is written as ``<run>/explanations/method=<m>/part-<shard>.parquet``; a
part that exists is skipped, so a rerun continues where a killed run stopped (idempotent).
Before the shards, ``tune_method`` chooses a method's options on another split's boxes
(``medxgan.explain.sweep``); the flow writes its result to ``<run>/tuning.json``. Both tasks
default to ``MEDXGAN_TASK_TIMEOUT_S`` (the flow passes its own limit).
"""

from __future__ import annotations

import functools
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.catalogue import GAN_METHODS
from medxgan.settings import get_settings
from medxgan.storage import Store


def part_key(kind: str, method: str, shard: int) -> str:
    """``<kind>/method=<method>/part-<shard>.parquet`` (kind: explanations or scores)."""
    return f"{kind}/method={method}/part-{shard:05d}.parquet"


def plan_ids(cohort_url: str, split: str | None, labels: list[int] | None,
             max_images: int | None) -> list[str]:
    """The image ids to explain: the split's images with those labels, sorted, capped.

    Images are taken in sorted order of a hash of the id (stable and not biased by id order).
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.cohort.splits import unit_hash

    t = Cohort(cohort_url).index()
    if split:
        t = t.filter(pc.equal(t["split"], split))
    if labels:
        t = t.filter(pc.is_in(t["label"], value_set=pa.array(labels, pa.int8())))
    ids = sorted(t["image_id"].to_pylist(), key=lambda i: unit_hash(i, "explain"))
    return ids[:max_images] if max_images else ids


@functools.lru_cache(maxsize=4)
def _box_prior(cohort_url: str, size: tuple[int, int]):
    from medxgan.cohort.reader import Cohort
    from medxgan.explain.batch import train_box_prior

    c = Cohort(cohort_url)
    t = c.index()
    train = t.filter(pc.equal(t["split"], "train"))["image_id"].to_pylist()
    return train_box_prior(c.boxes_by_id(), train, c.image_size or size, size)


@task(name="explain-shard", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE,
      tags=["GPU"], timeout_seconds=get_settings().task_timeout_s)
def explain_shard(run_url: str, cohort_url: str, spec: str, gan_url: str | None,
                  methods: list[str], shard: int, ids: list[str],
                  options: dict[str, dict[str, Any]]) -> dict:
    """Explain the images ``ids`` with every method not yet written for this shard.

    Store I/O around one ``medxgan.explain.explain_batch`` call: read the images (and the
    stored medxgan latents when medxgan itself is not rerun), write each method's part as soon
    as it is done.

    Returns: ``{"shard", "written": [methods], "skipped": [methods]}``.
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.explain.batch import explain_batch, method_order
    from medxgan.explain.serialize import explanation_table, read_latents
    from tasks.common import classifier, generator

    store = Store(run_url)
    order = method_order(methods)  # medxgan first: latents reused
    todo = [m for m in order if not store.exists(part_key("explanations", m, shard))]
    skipped = [m for m in order if m not in todo]
    if not todo:
        return {"shard": shard, "written": [], "skipped": skipped}
    x = Cohort(cohort_url).load(ids).images
    G = None
    if any(m in GAN_METHODS for m in todo):
        if not gan_url:
            raise ValueError(f"methods {GAN_METHODS} need a trained generator (gan URL)")
        G = generator(gan_url)[0]
    latents = None
    if "medxgan" not in todo and "medxgan" in methods and any(
            m in GAN_METHODS and m != "medxgan" for m in todo):
        _, z_a, z_p = read_latents(store.read_parquet(part_key("explanations", "medxgan", shard)))
        latents = (z_a, z_p)
    prior = _box_prior(cohort_url, tuple(x.shape[-2:])) if "box_prior" in todo else None

    def write(m: str, expl) -> None:
        store.write_parquet(part_key("explanations", m, shard), explanation_table(ids, expl, m))

    explain_batch(x, classifier(spec), G, todo, options, ids=ids, latents=latents,
                  box_prior=prior, on_result=write)
    return {"shard": shard, "written": todo, "skipped": skipped}


def plan_tune_ids(cohort_url: str, split: str, max_images: int | None) -> list[str]:
    """The tuning images: ``split``'s positives with at least one box, in :func:`plan_ids`'s
    order, capped at ``max_images``."""
    from medxgan.cohort.reader import Cohort

    boxes = Cohort(cohort_url).boxes_by_id()
    ids = [i for i in plan_ids(cohort_url, split, [1], None) if len(boxes.get(i, ())) > 0]
    return ids[:max_images] if max_images else ids


@task(name="tune-method", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE,
      tags=["GPU"], timeout_seconds=get_settings().task_timeout_s)
def tune_method(cohort_url: str, spec: str, method: str, split: str, max_images: int,
                options: dict[str, Any] | None) -> dict:
    """Sweep ``method``'s declared candidates on ``split``'s positives with boxes.

    Store I/O around one ``medxgan.explain.sweep.sweep_options`` call: read the images and
    their boxes (masks at the images' size, as the score stage builds them).

    Returns: the method's ``tuning.json`` entry: ``split``, ``max_images``, ``image_ids``,
    ``base`` (the options swept under), ``metric``, ``tiebreak``, ``candidates`` (the table)
    and ``choice``.
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.explain.sweep import default_candidates, sweep_options
    from medxgan.metrics.masks import boxes_to_masks
    from tasks.common import classifier

    ids = plan_tune_ids(cohort_url, split, max_images)
    if not ids:
        raise ValueError(f"tuning {method}: cohort {cohort_url} has no positives with boxes in "
                         f"split {split!r}")
    batch = Cohort(cohort_url).load(ids)
    H, W = batch.images.shape[-2:]
    masks = boxes_to_masks(batch.boxes, H, W, (H, W))
    f = classifier(spec)
    cands = default_candidates(method, f, None, size=int(W))  # no twin baseline (see sweep)
    res = sweep_options(batch.images, masks, f, None, method, cands, options=options, ids=ids)
    return {"split": split, "max_images": max_images, "image_ids": ids,
            "base": dict(options or {}), **res.to_json()}
