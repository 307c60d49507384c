"""The audit's explain and score stages on a cohort's images, in memory, for the benchmarks.

:func:`explain_and_score` is what ``medxgan explain`` + ``medxgan score`` compute for the same
images, shard size and seed, without Prefect or a run folder: per batch
``medxgan.explain.explain_batch``, each map in its stored form (the float16 explanation table
of ``medxgan.explain.serialize``), then ``medxgan.metrics.score_batch`` against the image's own
boxes and its run-wide partner's (``medxgan.metrics.shuffle_partners``). tests/
test_one_pipeline.py checks that its rows equal the flows' ``scores.parquet``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import torch
from torch import nn

from medxgan.catalogue import METHODS


def explain_and_score(cohort, classifier: nn.Module, generator: nn.Module | None,
                      ids: Sequence[str], methods: Sequence[str],
                      options: Mapping[str, Mapping[str, Any]] | None = None, *,
                      seed: int = 0, batch_size: int = 32, faithfulness: bool = True,
                      robustness: bool = False,
                      aliases: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
                      device: str | torch.device = "cpu"
                      ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Explain and score ``ids`` as the explain and score flows do.

    Args:
        cohort: a ``medxgan.cohort.Cohort``.
        classifier: the classifier contract on ``device``; generator: G on ``device`` or None.
        ids: the image ids, in the order the explain flow plans them; batches are consecutive
            runs of ``batch_size`` ids (the flow's ``shard_size``).
        methods: product methods (``medxgan.catalogue.METHODS``) and names of ``aliases``.
        options: name -> explainer config (the flow's ``options``; an alias's entry is merged
            under its fixed config).
        seed: the score flow's seed (partners, noise). faithfulness, robustness: as the score
            flow's flags.
        aliases: bench-only rows, name -> (method, fixed config), e.g.
            ``{"ig_blur": ("ig", {"baseline": "blur"})}``.
        device: where images are explained (scoring runs where the images are).

    Returns:
        (scores: DataFrame ``image_id, method, metric, value`` as ``scores.parquet`` rows
        without the run-level ``counterfactual_similarity``; seconds per image by name).
    """
    from medxgan.explain import explain_batch, train_box_prior
    from medxgan.explain.serialize import explanation_table
    from medxgan.metrics import partner_masks, score_batch, scoring_inputs, shuffle_partners
    from medxgan.metrics.masks import boxes_to_masks

    aliases = dict(aliases or {})
    unknown = [m for m in methods if m not in METHODS and m not in aliases]
    if unknown:
        raise ValueError(f"unknown methods {unknown}")
    options = dict(options or {})
    product = [m for m in methods if m not in aliases]
    boxes = cohort.boxes_by_id()
    partners = shuffle_partners(ids, boxes, seed)
    score_opts = {"faithfulness": faithfulness, "robustness": robustness, "seed": seed,
                  "method_options": options}
    if robustness and any(m in aliases for m in methods):
        raise ValueError("robustness re-explains by method name: not for aliases")
    needs_prior = "box_prior" in product or any(a[0] == "box_prior" for a in aliases.values())
    prior = None
    frames, seconds = [], {m: 0.0 for m in methods}
    for s in range(0, len(ids), batch_size):
        part = list(ids[s:s + batch_size])
        batch = cohort.load(part)
        x = batch.images.to(device)                                    # (B, 1, H, W)
        size = tuple(x.shape[-2:])
        if needs_prior and prior is None:  # the explain stage's rule (train split's boxes)
            t = cohort.index()
            train = t.filter(pc.equal(t["split"], "train"))["image_id"].to_pylist()
            prior = train_box_prior(boxes, train, cohort.image_size or size, size)
        clock = [time.perf_counter()]

        def timed(m: str, _expl, clock=clock) -> None:
            now = time.perf_counter()
            seconds[m] += now - clock[0]
            clock[0] = now

        expls = explain_batch(x, classifier, generator, product, options, ids=part,
                              box_prior=prior, on_result=timed)
        latents = (expls["medxgan"].extras["z_a"], expls["medxgan"].extras["z_p"]) \
            if "medxgan" in expls else None
        for name in [m for m in methods if m in aliases]:
            base, fixed = aliases[name]
            clock[0] = time.perf_counter()
            cfg = {base: {**options.get(name, {}), **fixed}}
            expls[name] = explain_batch(x, classifier, generator, [base], cfg, ids=part,
                                        latents=latents, box_prior=prior)[base]
            seconds[name] += time.perf_counter() - clock[0]
        for name in [m for m in methods if m in expls]:
            _, maps, extras = scoring_inputs(explanation_table(part, expls[name], name))
            H, W = maps.shape[1:]
            masks = boxes_to_masks(batch.boxes, H, W, size)
            others = partner_masks(part, partners, boxes, H, W, size)
            frames.append(score_batch(maps, masks, others, classifier, x, score_opts,
                                      method=name, ids=part, extras=extras))
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["image_id", "method", "metric", "value"])
    return scores, {m: v / max(1, len(ids)) for m, v in seconds.items()}
