"""Choose an explainer's hyperparameters on held-out boxes: a small declared sweep.

Grad-CAM's default layer (the last block) is the right code but can be the wrong resolution
for small findings; IG's answer depends on its baseline. The audit may therefore try a small
declared set of options per method (:func:`default_candidates`) on the **validation** split's
positives with boxes, keep the best (:func:`sweep_options`) and explain and score only the
test split with it, so that the choice is never made on the images it is scored on.

Every candidate runs through :func:`~medxgan.explain.batch.explain_batch` and is scored by
:func:`~medxgan.metrics.localization.localization_scores` on the maps as the explain stage
stores them (float16, ``explanation_table`` -> ``scoring_inputs``): the functions the explain
and score stages run. Plain PyTorch; store I/O stays with the caller (``tasks/explain.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medxgan.catalogue import higher_is_better
from medxgan.config.explain import BLOCKS_MEAN

#: methods with a declared candidate set (``ExplainSection.tune`` accepts these)
TUNABLE: tuple[str, ...] = ("gradcam", "ig")


@dataclass
class SweepResult:
    """The outcome of one method's sweep.

    Attributes:
        choice: the winning candidate's options (only the swept keys, e.g. ``{"layer":
            "features.12"}``), to merge into the method's options with :func:`merge_options`.
        table: one row per candidate, in the order tried: ``{"options", <metric>,
            <tiebreak>, "n"}`` (means over the images whose metric is defined, n of them).
        metric / tiebreak: the metric maximised and the one that breaks its ties.
    """

    choice: dict[str, Any]
    table: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "pointing_game"
    tiebreak: str = "relevance_mass"

    def to_json(self) -> dict[str, Any]:
        return {"choice": self.choice, "candidates": self.table, "metric": self.metric,
                "tiebreak": self.tiebreak}


def default_candidates(method: str, classifier: nn.Module, generator: nn.Module | None = None,
                       *, size: int | None = None) -> list[dict[str, Any]]:
    """The small declared set a sweep tries for ``method``.

    - ``gradcam``: each block output of :func:`~medxgan.explain.gradcam.candidate_layers`
      (fine to coarse; the last is the default layer) and ``"blocks-mean"`` (their average);
    - ``ig``: baseline ``black`` and ``blur``. No ``twin`` baseline: :class:`IGConfig` has
      none (a generator's counterfactual as the IG start point is what ``counterfactual_ig``
      does), so a generator does not add one.

    Args:
        size: image side for :func:`candidate_layers`' probing pass.
    """
    if method == "gradcam":
        from medxgan.explain.gradcam import candidate_layers

        return [{"layer": n} for n in candidate_layers(classifier, size=size)] + \
            [{"layer": BLOCKS_MEAN}]
    if method == "ig":
        return [{"baseline": "black"}, {"baseline": "blur"}]
    raise ValueError(f"no declared candidates for method {method!r}; tunable: {list(TUNABLE)}")


def merge_options(base: Mapping[str, Any] | None, choice: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` options with ``choice`` on top (a Grad-CAM ``layer`` replaces ``layers``)."""
    out = {**(base or {}), **choice}
    if "layer" in choice and "layers" not in choice:
        out.pop("layers", None)
    if "layers" in choice and "layer" not in choice:
        out.pop("layer", None)
    return out


def _mean(v: torch.Tensor) -> tuple[float, int]:
    ok = torch.isfinite(v)
    n = int(ok.sum())
    return (float(v[ok].mean()) if n else float("nan")), n


def _key(row: Mapping[str, Any], metric: str, tiebreak: str) -> tuple[float, float]:
    """Sort key (larger is better) of a table row; NaN ranks last."""
    def signed(k: str) -> float:
        v = row[k]
        if v is None or math.isnan(v):
            return -math.inf
        return v if higher_is_better(k) is not False else -v
    return signed(metric), signed(tiebreak)


def sweep_options(images: torch.Tensor, masks: torch.Tensor, classifier: nn.Module,
                  generator: nn.Module | None, method: str,
                  candidates: Sequence[Mapping[str, Any]], *, metric: str = "pointing_game",
                  tiebreak: str = "relevance_mass", options: Mapping[str, Any] | None = None,
                  ids: Sequence[str] | None = None, batch_size: int = 32) -> SweepResult:
    """Explain ``images`` with each candidate's options and keep the best by ``metric``.

    Call it on held-out images (the validation split's positives with boxes), never on the
    images the audit scores.

    Args:
        images: (B, 1, H, W) float in [0, 1]. masks: (B, H, W) bool, the union of each image's
            boxes at the images' size (``boxes_to_masks``); images with an empty mask do not
            count (their metrics are NaN).
        classifier, generator: as for :func:`~medxgan.explain.batch.explain_batch`.
        method: the method swept. candidates: options dicts (only the swept keys).
        metric: a localisation metric (``LOCALIZATION_METRICS``) maximised (minimised when
            the catalogue says lower is better); tiebreak: the metric that breaks its ties;
            remaining ties go to the candidate listed first.
        options: the method's other options, under each candidate (:func:`merge_options`).
        ids: B image ids (seeded methods seed by id); default ``sweep-<k>``.
        batch_size: images per ``explain_batch`` call.

    Returns: :class:`SweepResult` (``choice`` and the per-candidate ``table``).
    """
    from medxgan.explain.batch import explain_batch
    from medxgan.explain.serialize import explanation_table
    from medxgan.metrics.batch import scoring_inputs
    from medxgan.metrics.localization import localization_scores

    if not candidates:
        raise ValueError(f"no candidates to sweep for {method!r}")
    B = images.shape[0]
    if masks.shape != (B, *images.shape[-2:]):
        raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
    ids = [f"sweep-{k}" for k in range(B)] if ids is None else list(ids)
    table: list[dict[str, Any]] = []
    for cand in candidates:
        opts = merge_options(options, cand)
        values: dict[str, list[torch.Tensor]] = {metric: [], tiebreak: []}
        for s in range(0, B, max(1, batch_size)):
            sl = slice(s, s + batch_size)
            expl = explain_batch(images[sl], classifier, generator, [method], {method: opts},
                                 ids=ids[sl])[method]
            # the maps as the explain stage stores them and the score stage reads them
            _, maps, _ = scoring_inputs(explanation_table(ids[sl], expl, method))
            scores = localization_scores(maps, masks[sl].to(torch.bool))
            for k in values:
                values[k].append(scores[k])
        row: dict[str, Any] = {"options": dict(cand)}
        row[tiebreak] = _mean(torch.cat(values[tiebreak]))[0]
        row[metric], row["n"] = _mean(torch.cat(values[metric]))  # n: images it is defined on
        table.append(row)
    if all(r["n"] == 0 for r in table):
        raise ValueError(f"sweep of {method!r}: no image has a box (every {metric} is undefined)")
    best = max(range(len(table)), key=lambda i: (_key(table[i], metric, tiebreak), -i))
    return SweepResult(choice=dict(table[best]["options"]), table=table, metric=metric,
                       tiebreak=tiebreak)


__all__ = ["SweepResult", "TUNABLE", "default_candidates", "merge_options", "sweep_options"]
