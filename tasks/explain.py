"""Prefect tasks of the explain stage: one task per shard of image ids, all methods inside.

Each (method, shard) is written as ``<run>/explanations/method=<m>/part-<shard>.parquet``; a
part that exists is skipped, so a rerun continues where a killed run stopped (idempotent).
"""

from __future__ import annotations

import functools
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.methods import GAN_METHODS
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
    from medxgan.explain.floors import box_prior_map

    c = Cohort(cohort_url)
    t = c.index()
    train = set(t.filter(pc.equal(t["split"], "train"))["image_id"].to_pylist())
    boxes = [b for i, b in c.boxes_by_id().items() if i in train]
    if not boxes:  # no boxed training images: fall back to every boxed image
        boxes = list(c.boxes_by_id().values())
    image_size = c.image_size or size
    return box_prior_map(boxes, image_size, size)


@task(name="explain-shard", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE,
      tags=["GPU"])
def explain_shard(run_url: str, cohort_url: str, spec: str, gan_url: str | None,
                  methods: list[str], shard: int, ids: list[str],
                  options: dict[str, dict[str, Any]]) -> dict:
    """Explain the images ``ids`` with every method not yet written for this shard.

    Returns: ``{"shard", "written": [methods], "skipped": [methods]}``.
    """
    import torch

    from medxgan.cohort.reader import Cohort
    from medxgan.explain.base import make_explainer
    from medxgan.explain.serialize import explanation_table, read_latents
    from tasks.common import classifier, generator

    store = Store(run_url)
    order = sorted(methods, key=lambda m: (m != "medxgan", m))  # medxgan first: latents reused
    todo = [m for m in order if not store.exists(part_key("explanations", m, shard))]
    skipped = [m for m in order if m not in todo]
    if not todo:
        return {"shard": shard, "written": [], "skipped": skipped}
    f = classifier(spec)
    batch = Cohort(cohort_url).load(ids)
    x = batch.images
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
    for m in todo:
        prior = _box_prior(cohort_url, tuple(x.shape[-2:])) if m == "box_prior" else None
        cfg = dict(options.get(m, {}))
        explainer = make_explainer(m, f, generator=G, box_prior=prior, config=cfg or None)
        kwargs = {"latents": latents} if m in GAN_METHODS and latents is not None else {}
        with torch.enable_grad():
            expl = explainer.explain(x, ids=ids, **kwargs)
        if m == "medxgan":
            latents = (expl.extras["z_a"], expl.extras["z_p"])
        store.write_parquet(part_key("explanations", m, shard), explanation_table(ids, expl, m))
    return {"shard": shard, "written": todo, "skipped": skipped}
