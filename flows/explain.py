"""The explain flow: every method over shards of a cohort's images, resumable.

Writes ``<run>/tuning.json`` (when ``tune`` names methods: their options chosen on another
split's boxes), ``<run>/run.json`` (what is explained with what, tuned options included),
explanation parts next, and ``<run>/explanations/manifest.json`` last.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import TASK_KNOB, limits, named_timeouts, on_run_start
from medxgan.config import ExplainSection, field_default
from medxgan.storage import Store
from tasks.explain import explain_shard, plan_ids, tune_method
from tasks.progress import Progress


@flow(name="explain", task_runner=ThreadPoolTaskRunner(max_workers=1), on_running=[on_run_start])
def explain_flow(cohort: str, classifier: str, run: str, methods: list[str],
                 gan: str | None = None,
                 split: str | None = field_default(ExplainSection, "split"),
                 labels: list[int] | None = None,
                 max_images: int | None = field_default(ExplainSection, "max_images"),
                 shard_size: int = field_default(ExplainSection, "shard_size"),
                 options: dict[str, dict[str, Any]] | None = None,
                 tune: list[str] | None = None,
                 tune_split: str = field_default(ExplainSection, "tune_split"),
                 tune_images: int = field_default(ExplainSection, "tune_images"),
                 task_timeout_s: float | None = None) -> dict:
    """Explain up to ``max_images`` images of ``split`` (labels ``labels``, default positives).

    Args:
        cohort: cohort URL. classifier: ClassifierSpec YAML path/URL. run: run URL.
        methods: methods of ``medxgan.explain.METHODS``. gan: trained medXGAN run URL.
        options: per-method config dicts (unknown keys are errors).
        tune: methods whose options are first chosen on up to ``tune_images`` positives with
            boxes of ``tune_split`` (never the explained split), see :func:`tune_options`.
        task_timeout_s: the limit (s) of each shard and tuning task (None: the environment's,
            ``MEDXGAN_TASK_TIMEOUT_S``); one past it fails the flow with one line.
    Returns: the explanations manifest (methods, shards, image ids).
    """
    store = Store(run)
    store.remove_temporaries()  # half-written objects of a killed earlier attempt
    seconds = task_timeout_s or limits().task_timeout_s
    if gan:  # one name per map: refuse a method the generator's family does not offer
        from medxgan.catalogue import not_offered
        from tasks.common import generator_family

        if bad := not_offered(methods, generator_family(gan).name):
            raise ValueError("; ".join(f"{m}: not offered: {why}" for m, why in bad.items()))
    labels = field_default(ExplainSection, "labels") if labels is None else labels
    options = {m: dict(o) for m, o in (options or {}).items()}
    if tune:
        if bad := [m for m in tune if m not in methods]:
            raise ValueError(f"tune: {bad} not among the explained methods {list(methods)}")
        if not split or tune_split == split:
            raise ValueError(f"tune_split {tune_split!r} must differ from the explained split "
                             f"{split or 'all'!r}")
        options = tune_options(store, cohort, classifier, list(tune), tune_split, tune_images,
                               options, seconds)
    ids = plan_ids(cohort, split, labels, max_images)
    if not ids:
        raise ValueError(f"cohort {cohort} has no images in split {split!r} with labels {labels}")
    shards = [ids[i:i + shard_size] for i in range(0, len(ids), shard_size)]
    info = {"cohort": cohort, "classifier": classifier, "gan": gan, "methods": list(methods),
            "split": split, "labels": labels, "max_images": max_images,
            "shard_size": shard_size, "options": options}  # options: tuned choices merged in
    if tune:
        info["tuning"] = {"methods": list(tune), "split": tune_split, "max_images": tune_images}
    store.write_json("run.json", info)
    shard_task = explain_shard.with_options(timeout_seconds=seconds)
    futures = [shard_task.submit(run, cohort, classifier, gan, list(methods), k, shard,
                                 options) for k, shard in enumerate(shards)]
    bar = Progress(len(futures), "explain (shards)")
    results = []
    for k, fut in enumerate(futures):
        with named_timeouts(f"explanation shard {k} of {run}", seconds, TASK_KNOB):
            results.append(fut.result())  # a failed shard fails the flow (no manifest)
        bar.update()
    bar.close()
    manifest = {"methods": list(methods), "n_shards": len(shards), "image_ids": ids,
                "written": sum(len(r["written"]) for r in results),
                "skipped": sum(len(r["skipped"]) for r in results)}
    store.write_manifest(manifest, "explanations")
    return manifest


def tune_options(store: Store, cohort: str, classifier: str, tune: list[str], split: str,
                 max_images: int, options: dict[str, dict[str, Any]],
                 timeout_s: float | None = None) -> dict[str, dict[str, Any]]:
    """``options`` with each tuned method's choice merged in; writes ``tuning.json``.

    ``tuning.json`` maps method -> the ``tune_method`` entry (candidates table and choice). An
    entry already there for the same split, image cap and other options is reused (a rerun
    does not sweep again); the file is rewritten after each method that was swept. Each sweep
    is limited to ``timeout_s`` (None: ``MEDXGAN_TASK_TIMEOUT_S``).
    """
    from medxgan.explain.sweep import merge_options

    seconds = timeout_s or limits().task_timeout_s
    tuning = store.read_json("tuning.json") if store.exists("tuning.json") else {}
    for m in tune:
        base = options.get(m) or {}
        old = tuning.get(m)
        if not (old and old.get("split") == split and old.get("max_images") == max_images
                and old.get("base") == base):
            with named_timeouts(f"tuning {m} on {split}", seconds, TASK_KNOB):
                tuning[m] = tune_method.with_options(timeout_seconds=seconds).submit(
                    cohort, classifier, m, split, max_images, base).result()
            store.write_json("tuning.json", tuning)
        options[m] = merge_options(base, tuning[m]["choice"])
    return options
