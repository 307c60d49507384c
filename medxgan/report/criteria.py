"""Pre-specified acceptance criteria (``criteria:`` of the audit YAML) judged on one run.

``evaluate_criteria(criteria, summary, shortcut=None, comparisons=None, scores=None)
-> list[CriterionResult]``.

Each criterion (``medxgan.config.Criterion``) names one number of the run's evidence:

- ``method: <m>`` or ``evidence: intervention`` (method ``intervention``) with a metric of the
  summary (``<metric>``, ``<metric>_shuffled``: ``mean``, ``ci_low``, ``ci_high``, ``n``) or the
  own - shuffled gap ``<metric>-shuffled_gap`` (the comparisons row with ``method_a ==
  method_b``; bootstrapped from ``scores`` when that row is missing, as the verdict does);
- ``evidence: shortcut`` with a number of ``shortcut.json`` (``ShortcutFinding.summary()``):
  ``effect`` (the strongest of the three kinds of shortcut evidence), ``residual_effect``
  (location-free), ``transplant_effect`` (located), ``wide_effect`` (image-wide), each with
  ``<metric>_ci_low`` / ``_ci_high``, or the located region's ``transplant_rate`` / ``drop``;
  a located number is undecided when no region was found.

The deciding number is the criterion's ``on`` (``ci_low`` / ``mean`` / ``ci_high``; default
``ci_low`` for ``>=`` / ``>``, ``ci_high`` for ``<=`` / ``<``): **PASS** when
``number <comparison> threshold`` holds, **FAIL** when it does not, **UNDECIDED** when the
number is missing (no such row, no ``shortcut.json``, no region found, NaN).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pandas as pd

from medxgan.catalogue import GAP_SUFFIX, INTERVENTION, method_label, metric_label
from medxgan.config.audit import Criterion
from medxgan.report._evidence import Evidence, Stat
from medxgan.report._text import fmt

CriterionOutcome = Literal["PASS", "FAIL", "UNDECIDED"]

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_SHORTCUT_KEYS = {  # metric -> (mean, ci_low, ci_high, n) keys of shortcut.json
    "effect": ("effect", "effect_ci_low", "effect_ci_high", "effect_n"),
    "residual_effect": ("residual_effect", "residual_effect_ci_low", "residual_effect_ci_high",
                        "residual_n"),
    "transplant_effect": ("transplant_effect", "transplant_effect_ci_low",
                          "transplant_effect_ci_high", "transplant_n"),
    "wide_effect": ("wide_effect", "wide_effect_ci_low", "wide_effect_ci_high", "wide_n"),
    "transplant_rate": ("transplant_rate", "transplant_ci_low", "transplant_ci_high", "transplant_n"),
    "drop": ("drop", "drop_ci_low", "drop_ci_high", "n"),
}
_LOCATED = ("transplant_rate", "drop", "transplant_effect")  # need a located region


@dataclass(frozen=True)
class CriterionResult:
    """One criterion judged on one run.

    Attributes:
        name: the criterion's name (``Criterion.label``).
        outcome: ``PASS``, ``FAIL`` or ``UNDECIDED``.
        source: ``intervention``, ``shortcut`` or the method's name.
        metric, comparison, threshold, on: the criterion.
        value: the deciding number (the ``on`` value); None when missing.
        mean, ci_low, ci_high, n: the evidence it was read from (None when missing).
        reason: one sentence, e.g. ``ci_low 0.180 > 0`` or why it is undecided.
    """

    name: str
    outcome: CriterionOutcome
    source: str
    metric: str
    comparison: str
    threshold: float
    on: str
    value: float | None
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    reason: str

    @property
    def passed(self) -> bool:
        return self.outcome == "PASS"

    @property
    def what(self) -> str:
        """``counterfactual IG (medXGAN baseline): pointing game``."""
        src = "shortcut search" if self.source == "shortcut" else method_label(self.source)
        base = self.metric[: -len(GAP_SUFFIX)] if self.metric.endswith(GAP_SUFFIX) else self.metric
        met = metric_label(base) + (" own - shuffled gap" if base != self.metric else "")
        if self.source == "shortcut":
            met = {"transplant_rate": "transplant rate", "drop": "drop of the strongest region"}.get(self.metric, self.metric)
        return f"{src}: {met}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "what": self.what}


def _stat_of(c: Criterion, ev: Evidence, shortcut: Mapping[str, Any] | None) -> tuple[Stat | None, str]:
    """The criterion's (mean, ci_low, ci_high, n), or None and why."""
    if c.evidence == "shortcut":
        if shortcut is None:
            return None, "no shortcut search in this run (no shortcut.json)"
        if c.metric in _LOCATED and shortcut.get("box") is None:
            return None, "the shortcut search found no region outside the findings"
        keys = _SHORTCUT_KEYS[c.metric]
        vals = [shortcut.get(k) for k in keys[:3]]
        if vals[0] is None or _bad(vals[0]):
            return None, f"shortcut.json has no {c.metric}"
        n = shortcut.get(keys[3])
        return (float(vals[0]), _float(vals[1]), _float(vals[2]), int(n) if n is not None else 0), ""
    method = INTERVENTION if c.evidence == "intervention" else str(c.method)
    if c.metric.endswith(GAP_SUFFIX):
        s = ev.gap(method, c.metric[: -len(GAP_SUFFIX)])
        return s, "" if s is not None else f"no {c.metric} of {method_label(method)} in the comparisons"
    s = ev.stat(method, c.metric)
    return s, "" if s is not None else f"no {metric_label(c.metric)} of {method_label(method)} in the summary"


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _bad(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def evaluate_one(c: Criterion, ev: Evidence, shortcut: Mapping[str, Any] | None) -> CriterionResult:
    """Judge one validated criterion (module docstring)."""
    s, why = _stat_of(c, ev, shortcut)
    on = str(c.on)
    value = None
    if s is not None:
        v = {"mean": s[0], "ci_low": s[1], "ci_high": s[2]}[on]
        value = None if _bad(v) else float(v)
        if value is None:
            why = f"{on} is not known"
    if value is None:
        outcome: CriterionOutcome = "UNDECIDED"
        reason = f"undecided: {why}"
    else:
        ok = _OPS[c.comparison](value, c.threshold)
        outcome = "PASS" if ok else "FAIL"
        rel = c.comparison if ok else {">=": "<", ">": "<=", "<=": ">", "<": ">="}[c.comparison]
        reason = f"{on} {fmt(value)} {rel} {c.threshold:g}"
    mean, lo, hi, n = (s if s is not None else (None, None, None, None))
    return CriterionResult(
        name=c.label, outcome=outcome, source=c.evidence or str(c.method), metric=c.metric, comparison=c.comparison,
        threshold=float(c.threshold), on=on, value=value, mean=None if mean is None or _bad(mean) else float(mean),
        ci_low=None if lo is None or _bad(lo) else float(lo), ci_high=None if hi is None or _bad(hi) else float(hi),
        n=None if n is None else int(n), reason=reason)


def evaluate_criteria(
    criteria: Iterable[Criterion | Mapping[str, Any]] | None,
    summary: pd.DataFrame | None,
    shortcut: Mapping[str, Any] | None = None,
    comparisons: pd.DataFrame | None = None,
    scores: pd.DataFrame | None = None,
    *,
    seed: int = 0,
) -> list[CriterionResult]:
    """Judge every criterion on one run's evidence.

    Args:
        criteria: ``AuditConfig.criteria`` (``Criterion`` models, or dicts validated here).
        summary: ``method, metric, mean, ci_low, ci_high, n`` (``summary.parquet``).
        shortcut: ``shortcut.json`` as a dict, None when the run has none.
        comparisons: ``comparisons.parquet`` (for ``<metric>-shuffled_gap`` criteria).
        scores: long-form scores, only to bootstrap a missing gap row.
        seed: seed of that bootstrap.

    Returns: one ``CriterionResult`` per criterion, in the given order.
    """
    ev = Evidence(summary, comparisons, scores, seed)
    out = []
    for c in criteria or ():
        crit = c if isinstance(c, Criterion) else Criterion.model_validate(dict(c))
        out.append(evaluate_one(crit, ev, shortcut))
    return out


def failed(results: Iterable[CriterionResult]) -> list[CriterionResult]:
    """The results that did not pass (FAIL), e.g. for a ``medxgan.audit.criteria-failed`` event."""
    return [r for r in results if r.outcome == "FAIL"]


__all__ = ["CriterionOutcome", "CriterionResult", "evaluate_criteria", "evaluate_one", "failed"]
