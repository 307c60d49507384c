"""The explain flow: every method over shards of a cohort's images, resumable.

Writes ``<run>/run.json`` (what is explained with what) first, explanation parts next, and
``<run>/explanations/manifest.json`` last.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from medxgan.config import ExplainSection, field_default
from medxgan.storage import Store
from tasks.explain import explain_shard, plan_ids
from tasks.progress import Progress


@flow(name="explain", task_runner=ThreadPoolTaskRunner(max_workers=1))
def explain_flow(cohort: str, classifier: str, run: str, methods: list[str],
                 gan: str | None = None,
                 split: str | None = field_default(ExplainSection, "split"),
                 labels: list[int] | None = None,
                 max_images: int | None = field_default(ExplainSection, "max_images"),
                 shard_size: int = field_default(ExplainSection, "shard_size"),
                 options: dict[str, dict[str, Any]] | None = None) -> dict:
    """Explain up to ``max_images`` images of ``split`` (labels ``labels``, default positives).

    Args:
        cohort: cohort URL. classifier: ClassifierSpec YAML path/URL. run: run URL.
        methods: methods of ``medxgan.explain.METHODS``. gan: trained medXGAN run URL.
        options: per-method config dicts (unknown keys are errors).
    Returns: the explanations manifest (methods, shards, image ids).
    """
    store = Store(run)
    store.remove_temporaries()  # half-written objects of a killed earlier attempt
    labels = field_default(ExplainSection, "labels") if labels is None else labels
    ids = plan_ids(cohort, split, labels, max_images)
    if not ids:
        raise ValueError(f"cohort {cohort} has no images in split {split!r} with labels {labels}")
    shards = [ids[i:i + shard_size] for i in range(0, len(ids), shard_size)]
    store.write_json("run.json", {"cohort": cohort, "classifier": classifier, "gan": gan,
                                  "methods": list(methods), "split": split, "labels": labels,
                                  "max_images": max_images, "shard_size": shard_size,
                                  "options": options or {}})
    futures = [explain_shard.submit(run, cohort, classifier, gan, list(methods), k, shard,
                                    options or {}) for k, shard in enumerate(shards)]
    bar = Progress(len(futures), "explain (shards)")
    results = []
    for fut in futures:
        results.append(fut.result())  # a failed shard fails the flow (no manifest)
        bar.update()
    bar.close()
    manifest = {"methods": list(methods), "n_shards": len(shards), "image_ids": ids,
                "written": sum(len(r["written"]) for r in results),
                "skipped": sum(len(r["skipped"]) for r in results)}
    store.write_manifest(manifest, "explanations")
    return manifest
