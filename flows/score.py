"""The score flow: localisation, faithfulness, robustness and medXGAN metrics of a run.

Streams explanation parts (one shard at a time), writes score parts, then ``scores.parquet``,
``summary.parquet`` and ``comparisons.parquet``.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from medxgan.config import ScoreSection, field_default
from medxgan.storage import Store
from tasks.progress import Progress
from tasks.score import aggregate, sanity, score_part, shuffle_partners


@flow(name="score", task_runner=ThreadPoolTaskRunner(max_workers=1))
def score_flow(run: str, n_boot: int = field_default(ScoreSection, "n_boot"),
               faithfulness: bool = field_default(ScoreSection, "faithfulness"),
               robustness: bool = field_default(ScoreSection, "robustness"),
               sanity_check: bool = True, seed: int = field_default(ScoreSection, "seed")) -> dict:
    """Score every explanation of the run at ``run`` (after the explain flow)."""
    store = Store(run)
    store.remove_temporaries("scores")  # half-written objects of a killed earlier attempt
    info = store.read_json("run.json")
    expl = store.require_manifest("explanations")
    methods, n_shards, ids = expl["methods"], expl["n_shards"], expl["image_ids"]
    partners = shuffle_partners(info["cohort"], ids, seed)
    options = {"faithfulness": faithfulness, "robustness": robustness, "seed": seed,
               "method_options": info.get("options", {})}
    futures = [score_part.submit(run, info["cohort"], info["classifier"], m, s, partners, options)
               for m in methods for s in range(n_shards)]
    bar = Progress(len(futures), "score (parts)")
    for fut in futures:
        fut.result()
        bar.update()
    bar.close()
    out = aggregate(run, methods, n_shards, n_boot, seed)
    if sanity_check:
        out["sanity"] = sanity(run, info["cohort"], info["classifier"], ids, methods,
                               info.get("options", {}), seed)
    return out
