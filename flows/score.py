"""The score flow: localisation, faithfulness, robustness and medXGAN metrics of a run.

Streams explanation parts (one shard at a time), writes score parts and the intervention
evidence of each shard (``scores/method=intervention/``), then ``scores.parquet``,
``summary.parquet`` and ``comparisons.parquet``, and the run-level shortcut search
(``shortcut.json``).
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from medxgan.catalogue import INTERVENTION
from medxgan.config import ScoreSection, field_default
from medxgan.storage import Store
from tasks.progress import Progress
from tasks.score import (aggregate, intervention_part, sanity, score_part, shortcut_search,
                         shuffle_partners)


@flow(name="score", task_runner=ThreadPoolTaskRunner(max_workers=1))
def score_flow(run: str, n_boot: int = field_default(ScoreSection, "n_boot"),
               faithfulness: bool = field_default(ScoreSection, "faithfulness"),
               robustness: bool = field_default(ScoreSection, "robustness"),
               sanity_check: bool = True, seed: int = field_default(ScoreSection, "seed"),
               intervention: bool = field_default(ScoreSection, "intervention"),
               ablation_infill: str = field_default(ScoreSection, "ablation_infill"),
               shortcut: bool = field_default(ScoreSection, "shortcut"),
               shortcut_images: int = field_default(ScoreSection, "shortcut_images"),
               infill_gan: str | None = None,
               residual_images: int = field_default(ScoreSection, "residual_images")) -> dict:
    """Score every explanation of the run at ``run`` (after the explain flow); with
    ``intervention`` the intervention rows of the explained images, with ``shortcut`` the
    shortcut search on up to ``shortcut_images`` images of the explained split (its
    location-free evidence on up to ``residual_images``).

    ``ablation_infill: inpaint`` in-fills with the healthy in-filler at ``infill_gan`` (the
    audit flow trains it); without one, the run's own generator when it is an inpaint-family
    run, else ``blur`` (logged, and recorded as ``method`` in ``shortcut.json``)."""
    store = Store(run)
    store.remove_temporaries("scores")  # half-written objects of a killed earlier attempt
    info = store.read_json("run.json")
    expl = store.require_manifest("explanations")
    methods, n_shards, ids = expl["methods"], expl["n_shards"], expl["image_ids"]
    partners = shuffle_partners(info["cohort"], ids, seed)
    if ablation_infill == "inpaint" and not infill_gan:
        infill_gan = _own_infiller(info.get("gan"))
        if infill_gan is None:
            import logging

            logging.getLogger("medxgan").warning(
                "score: no healthy in-filler for this run (ablation_infill inpaint); using blur")
            ablation_infill = "blur"
    options = {"faithfulness": faithfulness, "robustness": robustness, "seed": seed,
               "method_options": info.get("options", {})}
    futures = [score_part.submit(run, info["cohort"], info["classifier"], m, s, partners, options)
               for m in methods for s in range(n_shards)]
    scored = list(methods)
    if intervention:
        size = info["shard_size"]  # the shards as explain_flow cut them
        futures += [intervention_part.submit(run, info["cohort"], info["classifier"], s,
                                             ids[s * size:(s + 1) * size], partners,
                                             ablation_infill, seed, infill_gan)
                    for s in range(n_shards)]
        scored.append(INTERVENTION)
    bar = Progress(len(futures), "score (parts)")
    for fut in futures:
        fut.result()
        bar.update()
    bar.close()
    out = aggregate(run, scored, n_shards, n_boot, seed)
    if shortcut:
        found = shortcut_search(run, info["cohort"], info["classifier"], info.get("split"),
                                shortcut_images, ablation_infill, n_boot, seed, infill_gan,
                                info.get("gan"), methods, info.get("options", {}),
                                residual_images)
        out["shortcut"] = {k: found.get(k) for k in ("effect", "effect_ci_low", "effect_ci_high",
                                                     "effect_kind", "box", "transplant_rate",
                                                     "control_rate")}
    if sanity_check:
        out["sanity"] = sanity(run, info["cohort"], info["classifier"], ids, methods,
                               info.get("options", {}), seed)
    return out


def _own_infiller(gan: str | None) -> str | None:
    """The run's generator URL when its family has a healthy in-filler (the inpaint family)."""
    if not gan:
        return None
    from medxgan.generators.registry import family_of
    from tasks.common import generator

    G = generator(gan)[0]
    return gan if family_of(G).infiller(G) is not None else None
