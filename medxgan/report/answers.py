"""The three answers of the verdict, kept apart (issue #15):

1. **Does the classifier rely on the annotated findings?** (:func:`relies_answer`) — answered by
   intervention: the rows of method ``intervention`` (``medxgan.catalogue.INTERVENTION``) in
   the summary, ``ablation_drop`` = p(x) - p(x with its own boxes infilled) and its
   ``ablation_drop-shuffled_gap`` (own - another positive's boxes, paired CI).

   - **yes**: mean ``ablation_drop`` > ``min_effect`` (default 0.05) **and** the gap's CI lies
     above 0 (``gap.ci_low > 0``);
   - **no**: mean ``ablation_drop`` <= ``min_effect``, or the gap's CI reaches 0 or below
     (``gap.ci_low <= 0``: infilling the findings moves f no more than infilling another
     image's boxes);
   - **undecided**: no intervention rows, or a drop above the minimum without a shuffled-box
     control.

2. **Is a shortcut suspected?** (:func:`shortcut_answer`) — the shortcut finder's run-level
   ``shortcut.json`` (``medxgan.metrics.shortcut.ShortcutFinding.summary()``: ``box``,
   ``drop``, ``drop_ci_low``, ``drop_ci_high``, ``n``, ``transplant_rate`` and its CI,
   ``control_rate`` and its CI, ...).

   - **yes** when both hold: (a) the strongest region outside the boxes moves f more than the
     findings do: its drop's CI lies above the findings' mean ``ablation_drop`` and above
     ``min_effect`` (``drop_ci_low > max(ablation_drop mean, min_effect)``; without
     intervention rows, ``drop_ci_low > min_effect``); (b) pasting that region into negatives
     makes f call them positive more often than a random region of the same size
     (``transplant_ci_low > control_ci_high``);
   - **no** when (a) or (b) fails;
   - **undecided**: no ``shortcut.json``, no region scored on enough images, or a NaN number
     where the other test did not fail.

3. **Which explanations can be trusted for this classifier?** (:func:`trust_answer`) — rule 1 of
   ``medxgan.report.verdict`` per method: a method is trustworthy when its map beats every
   floor (non-overlapping CIs) and is image-specific (own - shuffled gap CI above 0) on every
   verdict metric. Method failures are findings about methods, not about the classifier.
   **yes** when some method is trustworthy, **no** when every judged method fails,
   **undecided** without floors or when no method could be decided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from medxgan.catalogue import INTERVENTION, method_label, metric_label
from medxgan.report._evidence import Evidence, Stat
from medxgan.report._text import fmt

Outcome = Literal["yes", "no", "undecided"]

QUESTIONS = {
    "relies_on_findings": "Does the classifier rely on the annotated findings?",
    "shortcut_suspected": "Does something outside the findings drive it (a shortcut)?",
    "trustworthy_explanations": "Which explanations can be trusted for this classifier?",
}


@dataclass(frozen=True)
class Number:
    """One deciding number: ``mean`` with its 95 % CI and n (CI / n None where not known)."""

    label: str
    mean: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None

    def text(self, digits: int = 2, percent: bool = False) -> str:
        """``0.21 [0.18, 0.24]`` (``percent``: ``21 % [18, 24]``)."""
        return ci_text(self.mean, self.ci_low, self.ci_high, digits, percent)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


@dataclass
class Answer:
    """One of the verdict's three answers.

    Attributes:
        key: ``relies_on_findings``, ``shortcut_suspected`` or ``trustworthy_explanations``.
        outcome: ``yes``, ``no`` or ``undecided``.
        sentence: one sentence with the deciding numbers.
        numbers: the deciding numbers with their CIs.
        methods: trustworthy explanations: the methods that pass (catalogue order).
        region: shortcut: the strongest region ``(x0, y0, x1, y1)`` (None when none).
    """

    key: str
    outcome: Outcome = "undecided"
    sentence: str = ""
    numbers: list[Number] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    region: tuple[int, int, int, int] | None = None

    @property
    def question(self) -> str:
        return QUESTIONS.get(self.key, self.key)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "question": self.question, "outcome": self.outcome, "sentence": self.sentence,
                "numbers": [x.to_dict() for x in self.numbers], "methods": list(self.methods),
                "region": list(self.region) if self.region is not None else None}


def ci_text(mean: float | None, lo: float | None, hi: float | None, digits: int = 2, percent: bool = False) -> str:
    """``mean [lo, hi]`` (``—`` for a missing mean; no brackets without a CI)."""
    if mean is None or _nan(mean):
        return "—"
    k = 100.0 if percent else 1.0
    unit = " %" if percent else ""
    d = 0 if percent else digits
    m = f"{k * mean:.{d}f}{unit}"
    if lo is None or hi is None or _nan(lo) or _nan(hi):
        return m
    return f"{m} [{k * lo:.{d}f}, {k * hi:.{d}f}]"


def _nan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _num(label: str, s: Stat | None) -> Number | None:
    return None if s is None else Number(label, s[0], s[1], s[2], s[3])


def box_text(box: Sequence[float] | None) -> str:
    """``(56,0)–(64,8)``: top-left and bottom-right (exclusive) pixel-edge corners."""
    if box is None:
        return "—"
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return f"({x0},{y0})–({x1},{y1})"


def relies_answer(ev: Evidence, min_effect: float = 0.05) -> Answer:
    """Question 1 (module docstring)."""
    a = Answer("relies_on_findings")
    drop = ev.stat(INTERVENTION, "ablation_drop")
    if drop is None:
        a.sentence = "Undecided: this run has no intervention evidence (no rows of method 'intervention')."
        return a
    shuf = ev.stat(INTERVENTION, "ablation_drop_shuffled")
    gap = ev.gap(INTERVENTION, "ablation_drop")
    flip = ev.stat(INTERVENTION, "ablation_flip")
    ret = ev.stat(INTERVENTION, "retention")
    a.numbers = [x for x in (
        _num("ablation drop, own boxes infilled", drop),
        _num("ablation drop, another image's boxes infilled", shuf),
        _num("own - shuffled gap", gap),
        _num("ablation flip rate", flip),
        _num("retention (only the boxes kept)", ret),
    ) if x is not None]
    own = f"infilling the annotated boxes lowers f's positive probability by {ci_text(*drop[:3])} (n={drop[3]})"
    ctrl = f"{ci_text(*shuf[:3])} for another image's boxes" if shuf is not None else "no figure for another image's boxes"
    gap_txt = "" if gap is None else f"own - shuffled {ci_text(*gap[:3])}"
    extra = []
    if flip is not None:
        extra.append(f"{ci_text(*flip[:3], percent=True)} of the positives f calls positive flip to negative")
    if ret is not None:
        extra.append(f"with only the boxes kept p is {ci_text(*ret[:3])}")
    tail = ("; " + "; ".join(extra)) if extra else ""
    if drop[0] <= min_effect:
        a.outcome = "no"
        a.sentence = f"No: {own}, not above the minimum effect {fmt(min_effect, 2)} ({ctrl}){tail}."
    elif gap is None:
        a.sentence = f"Undecided: {own}, but there is no shuffled-box control to tell it from infilling any region{tail}."
    elif gap[1] > 0:
        a.outcome = "yes"
        a.sentence = f"Yes: {own} vs {ctrl} ({gap_txt}, above 0){tail}."
    else:
        a.outcome = "no"
        a.sentence = f"No: {own}, no more than infilling another image's boxes ({ctrl}; {gap_txt} reaches 0){tail}."
    return a


def _f(d: Mapping[str, Any], k: str) -> float:
    v = d.get(k)
    return float("nan") if v is None or _nan(v) else float(v)


def shortcut_answer(shortcut: Mapping[str, Any] | None, ev: Evidence, min_effect: float = 0.05) -> Answer:
    """Question 2 (module docstring)."""
    a = Answer("shortcut_suspected")
    if shortcut is None:
        a.sentence = "Undecided: no shortcut search ran in this run (no shortcut.json)."
        return a
    box = shortcut.get("box")
    if box is None:
        a.sentence = "Undecided: the shortcut search scored no region outside the boxes on enough images."
        return a
    a.region = tuple(int(round(float(v))) for v in box)  # type: ignore[assignment]
    d, dlo, dhi = _f(shortcut, "drop"), _f(shortcut, "drop_ci_low"), _f(shortcut, "drop_ci_high")
    t, tlo, thi = _f(shortcut, "transplant_rate"), _f(shortcut, "transplant_ci_low"), _f(shortcut, "transplant_ci_high")
    c, clo, chi = _f(shortcut, "control_rate"), _f(shortcut, "control_ci_low"), _f(shortcut, "control_ci_high")
    n = int(shortcut.get("n") or 0)
    tn = int(shortcut.get("transplant_n") or 0)
    own = ev.stat(INTERVENTION, "ablation_drop")
    ref = max(own[0], min_effect) if own is not None else min_effect
    a.numbers = [Number(f"drop when the region {box_text(a.region)} is infilled", d, dlo, dhi, n)]
    if own is not None:
        a.numbers.append(Number("ablation drop, own boxes infilled", *own))
    a.numbers += [Number("transplant rate (region pasted into negatives)", t, tlo, thi, tn),
                  Number("control rate (random region of the same size)", c, clo, chi, tn)]
    stronger = None if _nan(dlo) else dlo > ref
    transplants = None if _nan(tlo) or _nan(chi) else tlo > chi
    where = f"the region {box_text(a.region)} outside the findings"
    drop_txt = f"lowers p by {ci_text(d, dlo, dhi)} when infilled (n={n})"
    ref_txt = (f"the findings' own boxes: {ci_text(*own[:3])}" if own is not None else "no intervention evidence")
    ref_txt += f"; minimum effect {fmt(min_effect, 2)}"
    tr_txt = (f"pasted into negatives it makes f call {ci_text(t, tlo, thi, percent=True)} of them positive "
              f"vs {ci_text(c, clo, chi, percent=True)} for a random region of the same size (n={tn})")
    if stronger and transplants:
        a.outcome = "yes"
        a.sentence = f"Yes: {where} {drop_txt}, more than the findings ({ref_txt}); {tr_txt}."
    elif stronger is False or transplants is False:
        a.outcome = "no"
        why = []
        if stronger is False:
            why.append(f"{where} {drop_txt}, not more than the findings ({ref_txt})")
        if transplants is False:
            why.append(f"{tr_txt}: no better than chance")
        elif transplants:
            why.append(f"though {tr_txt}")
        a.sentence = "No: " + "; ".join(why) + "."
    else:
        a.sentence = f"Undecided: {where} {drop_txt} ({ref_txt}); {tr_txt}."
    return a


def trust_answer(status: Mapping[str, bool | None], metrics: Sequence[str], ev: Evidence, *,
                 excluded: Mapping[str, str] | None = None, have_floors: bool = True) -> Answer:
    """Question 3 from rule 1's result per method (``status``: method -> localises?, in report
    order); ``excluded``: methods not judged, with the reason."""
    a = Answer("trustworthy_explanations")
    mets = " and ".join(metric_label(k) for k in metrics)
    good = [m for m, v in status.items() if v is True]
    bad = [m for m, v in status.items() if v is False]
    a.methods = good
    for m in good:
        a.numbers += [x for k in metrics if (x := _num(f"{method_label(m)} {metric_label(k)}", ev.stat(m, k))) is not None]
    names = lambda ms: ", ".join(method_label(m) for m in ms)  # noqa: E731
    by_reason: dict[str, list[str]] = {}
    for m, why in (excluded or {}).items():
        by_reason.setdefault(why, []).append(m)
    not_judged = "".join(f" {names(ms)} not judged: {why}." for why, ms in by_reason.items())
    if not have_floors or not status:
        a.sentence = ("Undecided: " + ("no floor map (random, box prior) to compare with." if not have_floors
                                      else "no explanation method was scored.") + not_judged)
        return a
    if good:
        a.outcome = "yes"
        a.sentence = (f"{names(good)}: the maps beat every floor on {mets} and mark each image's own boxes"
                      + (f"; {names(bad)} do not (a finding about those methods, not about the classifier)" if bad else "")
                      + "." + not_judged)
    elif bad and all(v is not None for v in status.values()):
        a.outcome = "no"
        a.sentence = (f"None: no explanation map beats every floor on {mets} while marking each image's own boxes "
                      f"({names(bad)} fail a rule); their maps are not evidence about the classifier." + not_judged)
    else:
        undecided = [m for m, v in status.items() if v is None]
        a.sentence = (f"Undecided: {names(undecided)} could not be judged (a metric or the shuffled-box control is missing)"
                      + (f"; {names(bad)} fail a rule" if bad else "") + "." + not_judged)
    return a


__all__ = ["QUESTIONS", "Answer", "Number", "Outcome", "box_text", "ci_text", "relies_answer", "shortcut_answer",
           "trust_answer"]
