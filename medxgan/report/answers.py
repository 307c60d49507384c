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
        region: shortcut: the main located region ``(x0, y0, x1, y1)`` (None when none).
        grade: shortcut: ``strong``, ``weak`` (outcome yes) or ``none`` (no).
        kind: shortcut: ``located``, ``image_wide`` or ``place_unknown`` (outcome yes).
        description: shortcut: what and where, e.g. ``a small bright object in the top-right
            corner, found in 85 % of the positives``.
        summary: shortcut: the headline's clause (the deciding evidence only).
    """

    key: str
    outcome: Outcome = "undecided"
    sentence: str = ""
    numbers: list[Number] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    region: tuple[int, int, int, int] | None = None
    grade: str | None = None
    kind: str | None = None
    description: str | None = None
    summary: str | None = None

    @property
    def question(self) -> str:
        return QUESTIONS.get(self.key, self.key)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "question": self.question, "outcome": self.outcome, "sentence": self.sentence,
                "numbers": [x.to_dict() for x in self.numbers], "methods": list(self.methods),
                "region": list(self.region) if self.region is not None else None,
                "grade": self.grade, "kind": self.kind, "description": self.description,
                "summary": self.summary}


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


def _f(d: Mapping[str, Any] | None, k: str) -> float:
    v = (d or {}).get(k)
    return float("nan") if v is None or _nan(v) else float(v)


MIN_SHORTCUT_EFFECT = 0.1
"""Smallest effect (a difference of shares of images f calls positive) that counts as shortcut
evidence, its 95 % CI above 0 as well (calibrated on the shortcut panel, docs/benchmarks.md)."""
STRONG_SHORTCUT_EFFECT = 0.5
"""A shortcut is graded strong when an effect's 95 % CI lies at or above this: it is shown to
decide f alone for at least half of the images it is given to (else weak). For the located evidence the per-image ``strength`` is
read (the transplant rate among negatives that received a region, minus the control), so that
a driver that most images carry rarely and a driver that every image carries are graded by
how surely they decide f, not by how common they are (which the answer reports apart)."""


@dataclass(frozen=True)
class _Ev:
    kind: str          # location_free | located | image_wide
    name: str
    mean: float
    lo: float
    hi: float
    n: int
    rate: float
    control: float

    def shown(self, min_effect: float) -> bool:
        return self.mean >= min_effect and self.lo > 0


def _evidence(sc: Mapping[str, Any]) -> list[_Ev]:
    """The shortcut search's effects, each with its control (``ShortcutFinding.summary()``)."""
    r, lo = sc.get("residual") or {}, sc.get("located") or {}
    out = [_Ev("location_free", "residual", _f(r, "effect"), _f(r, "effect_ci_low"),
               _f(r, "effect_ci_high"), int(r.get("n") or 0), _f(r, "rate"), _f(r, "control_rate")),
           _Ev("located", "transplant", _f(lo, "effect"), _f(lo, "effect_ci_low"),
               _f(lo, "effect_ci_high"), int(lo.get("n") or 0), _f(lo, "transplant_rate"),
               _f(lo, "control_rate"))]
    for w in sc.get("image_wide") or []:
        out.append(_Ev("image_wide", str(w.get("name")), _f(w, "effect"), _f(w, "ci_low"),
                       _f(w, "ci_high"), int(w.get("n") or 0), _f(w, "rate"), _f(w, "control_rate")))
    return out


def located_text(sc: Mapping[str, Any]) -> str | None:
    """``a small bright object in the top-right corner, found in 85 % of the positives`` (the
    main cluster of the located search), None without one."""
    cl = ((sc.get("located") or {}).get("clusters") or [None])[0]
    if not cl:
        return None
    share = _f(cl, "share")
    found = "" if _nan(share) else f", found in {100 * share:.0f} % of the positives"
    return f"a {cl.get('appearance')} {cl.get('place_text')}{found}"


def _wide_text(e: _Ev) -> str:
    from medxgan.metrics.shortcut_wide import describe

    return (f"giving negatives {describe(e.name)} of a positive makes f call "
            f"{ci_text(e.rate, None, None, percent=True)} of them positive (of another negative: "
            f"{ci_text(e.control, None, None, percent=True)}; difference {ci_text(e.mean, e.lo, e.hi)}, n={e.n})")


def _residual_text(e: _Ev) -> str:
    return (f"with their findings removed, f still calls {ci_text(e.rate, None, None, percent=True)} of the "
            f"positives positive (negatives with the same in-filling: {ci_text(e.control, None, None, percent=True)}; "
            f"difference {ci_text(e.mean, e.lo, e.hi)}, n={e.n})")


def _transplant_text(e: _Ev, sc: Mapping[str, Any]) -> str:
    what = located_text(sc) or "the region found"
    lo = sc.get("located") or {}
    st = _f(lo, "strength")
    strength = "" if _nan(st) else (
        f"; a negative that receives one turns positive {ci_text(st, _f(lo, 'strength_ci_low'), _f(lo, 'strength_ci_high'))}"
        " more often than the control")
    return (f"{what}: the regions found in positives, pasted into negatives, make f call "
            f"{ci_text(e.rate, None, None, percent=True)} of them positive (those found in negatives: "
            f"{ci_text(e.control, None, None, percent=True)}; difference {ci_text(e.mean, e.lo, e.hi)}, n={e.n}"
            f"{strength})")


def shortcut_answer(shortcut: Mapping[str, Any] | None, ev: Evidence | None = None,
                    min_effect: float = MIN_SHORTCUT_EFFECT,
                    strong: float = STRONG_SHORTCUT_EFFECT) -> Answer:
    """Question 2 (module docstring): yes when any kind of evidence shows an effect of at least
    ``min_effect`` with its CI above 0, whatever the findings' own effect; graded ``strong``
    when one's CI lies at or above ``strong`` (the located evidence: its per-image strength's),
    else ``weak``. ``ev`` is unused (kept for the signature)."""
    a = Answer("shortcut_suspected")
    if shortcut is None:
        a.sentence = "Undecided: no shortcut search ran in this run (no shortcut.json)."
        return a
    if "residual" not in shortcut:
        a.sentence = ("Undecided: this run's shortcut.json comes from the single-patch search of earlier "
                      "versions; score the run again for the three kinds of shortcut evidence.")
        return a
    evs = _evidence(shortcut)
    for e in evs:
        if not _nan(e.mean):
            lab = {"location_free": "still positive without the findings (positives - negatives)",
                   "located": "region pasted into negatives (positive donor - negative donor)"}.get(
                       e.kind, f"image-wide: {e.name} (positive donor - negative donor)")
            a.numbers.append(Number(lab, e.mean, e.lo, e.hi, e.n))
            if e.kind == "located" and not _nan(_f(shortcut.get("located"), "strength")):
                lo = shortcut["located"]
                a.numbers.append(Number("strength: rate of recipient-donor pairs given a region - control",
                                        _f(lo, "strength"),
                                        _f(lo, "strength_ci_low"), _f(lo, "strength_ci_high"),
                                        int(lo.get("strength_n") or 0)))
    box = shortcut.get("box")
    shown = [e for e in evs if not _nan(e.lo) and e.shown(min_effect)]
    if not shown:
        if all(_nan(e.lo) for e in evs):
            a.sentence = "Undecided: no shortcut evidence could be computed (no positives with boxes or no negatives)."
            return a
        a.outcome, a.grade = "no", "none"
        parts = [t for t in (
            _residual_text(evs[0]) if not _nan(evs[0].mean) else None,
            (f"no region outside the findings transplants ({ci_text(evs[1].mean, evs[1].lo, evs[1].hi)})"
             if not _nan(evs[1].mean) else "the search found no region outside the findings that decides f"),
            ("no image-wide property does (largest difference "
             + ci_text(*max(((e.mean, e.lo, e.hi) for e in evs[2:]), key=lambda t: t[1]))
             + ")") if len(evs) > 2 else None) if t]
        a.sentence = ("No: nothing outside the findings moves f by the minimum effect "
                      f"{fmt(min_effect, 2)} or more: " + "; ".join(parts) + ".")
        return a
    a.outcome = "yes"
    loc_strength = _f(shortcut.get("located"), "strength_ci_low")
    a.grade = "strong" if any(e.lo >= strong for e in shown) or (
        any(e.kind == "located" for e in shown) and not _nan(loc_strength)
        and loc_strength >= strong) else "weak"
    loc = next((e for e in shown if e.kind == "located"), None)
    wide = max((e for e in shown if e.kind == "image_wide"), key=lambda e: e.lo, default=None)
    res = next((e for e in shown if e.kind == "location_free"), None)
    texts = []
    if loc is not None:
        a.kind = "located"
        a.region = tuple(int(round(float(v))) for v in box) if box is not None else None  # type: ignore[assignment]
        a.description = located_text(shortcut)
        texts.append(_transplant_text(loc, shortcut))
    if wide is not None:
        a.kind = a.kind or "image_wide"
        a.description = a.description or f"the {_wide_name(wide.name)}"
        texts.append(_wide_text(wide))
    if res is not None:
        a.kind = a.kind or "place_unknown"
        texts.append(_residual_text(res))
    lead = "Yes" if a.grade == "strong" else "Yes, weak"
    a.sentence = f"{lead}: " + "; ".join(texts) + "."
    a.summary = _summary(a, loc, wide, res, shortcut)
    return a


def _summary(a: Answer, loc: _Ev | None, wide: _Ev | None, res: _Ev | None,
             sc: Mapping[str, Any]) -> str:
    """The headline's clause: what and where, and the one number that decides it."""
    if loc is not None:
        lo = sc.get("located") or {}
        st = _f(lo, "strength")
        num = (f"a negative that receives such a region turns positive "
               f"{ci_text(st, _f(lo, 'strength_ci_low'), _f(lo, 'strength_ci_high'))} more often than one "
               "that receives a negative's") if not _nan(st) else \
            f"pasted into negatives it turns them positive {ci_text(loc.mean, loc.lo, loc.hi)} more often"
        return f"{a.description or 'a region outside the findings'}; {num}"
    if wide is not None:
        return _wide_text(wide)
    return _residual_text(res) if res is not None else ""


def _wide_name(name: str) -> str:
    return {"noise": "noise level", "histogram": "intensity distribution", "border": "image border"}.get(name, name)


def shortcut_untrusted(short: Answer, shortcut: Mapping[str, Any] | None,
                       candidates: Sequence[str]) -> dict[str, str]:
    """Methods among ``candidates`` (those that localise the findings) that are still not to be
    trusted because f's decision rests on a strong shortcut their maps do not show (question 3
    follows question 2): a located shortcut that the method's map does not mark on the images
    that carry it (``shortcut.json``'s ``maps``: ``medxgan.metrics.shortcut_run
    .maps_on_shortcut``), or an image-wide / unplaced shortcut, which no map can show.
    Returns method -> reason."""
    if short.outcome != "yes" or short.grade == "weak" or not candidates:
        return {}
    if short.kind == "image_wide":
        why = (f"f relies on an image-wide property ({short.description or 'outside the findings'}), "
               "which no map can show")
        return {m: why for m in candidates}
    if short.kind != "located":
        why = ("f relies on something outside the findings that the search could not place; "
               "a map that marks the findings does not show it")
        return {m: why for m in candidates}
    maps = (shortcut or {}).get("maps") or {}
    out = {}
    for m in candidates:
        mk = maps.get(m)
        if not mk:
            out[m] = "its maps were not checked against the shortcut's regions"
        elif not mk.get("marks"):
            out[m] = (f"its maps do not mark the shortcut f relies on (relevance mass "
                      f"{ci_text(_f(mk, 'mass'), _f(mk, 'ci_low'), _f(mk, 'ci_high'))} in the found regions, "
                      f"which cover {100 * _f(mk, 'area'):.1f} % of the image; n={mk.get('n')})")
    return out


def trust_answer(status: Mapping[str, bool | None], metrics: Sequence[str], ev: Evidence, *,
                 excluded: Mapping[str, str] | None = None, have_floors: bool = True,
                 untrusted: Mapping[str, str] | None = None) -> Answer:
    """Question 3 from rule 1's result per method (``status``: method -> localises?, in report
    order); ``excluded``: methods not judged, with the reason; ``untrusted``: methods that
    localise the findings but are not trusted (:func:`shortcut_untrusted`), with the reason."""
    a = Answer("trustworthy_explanations")
    mets = " and ".join(metric_label(k) for k in metrics)
    untrusted = dict(untrusted or {})
    good = [m for m, v in status.items() if v is True and m not in untrusted]
    bad = [m for m, v in status.items() if v is False]
    a.methods = good
    for m in good:
        a.numbers += [x for k in metrics if (x := _num(f"{method_label(m)} {metric_label(k)}", ev.stat(m, k))) is not None]
    names = lambda ms: ", ".join(method_label(m) for m in ms)  # noqa: E731
    by_reason: dict[str, list[str]] = {}
    for m, why in (excluded or {}).items():
        by_reason.setdefault(why, []).append(m)
    not_judged = "".join(f" {names(ms)} not judged: {why}." for why, ms in by_reason.items())
    by_why: dict[str, list[str]] = {}
    for m, why in untrusted.items():
        by_why.setdefault(why, []).append(m)
    not_judged += "".join(f" {names(ms)} mark the findings but are not trusted: {why}."
                          for why, ms in by_why.items())
    if not have_floors or not status:
        a.sentence = ("Undecided: " + ("no floor map (random, box prior) to compare with." if not have_floors
                                      else "no explanation method was scored.") + not_judged)
        return a
    if good:
        a.outcome = "yes"
        a.sentence = (f"{names(good)}: the maps beat every floor on {mets} and mark each image's own boxes"
                      + (f"; {names(bad)} do not (a finding about those methods, not about the classifier)" if bad else "")
                      + "." + not_judged)
    elif untrusted and not any(v is None for m, v in status.items() if m not in untrusted):
        a.outcome = "no"
        a.sentence = ("None: no explanation map shows what f's decision rests on." + not_judged
                      + (f" {names(bad)} fail a localisation rule." if bad else ""))
    elif bad and all(v is not None for v in status.values()):
        a.outcome = "no"
        a.sentence = (f"None: no explanation map beats every floor on {mets} while marking each image's own boxes "
                      f"({names(bad)} fail a rule); their maps are not evidence about the classifier." + not_judged)
    else:
        undecided = [m for m, v in status.items() if v is None]
        a.sentence = (f"Undecided: {names(undecided)} could not be judged (a metric or the shuffled-box control is missing)"
                      + (f"; {names(bad)} fail a rule" if bad else "") + "." + not_judged)
    return a


__all__ = ["MIN_SHORTCUT_EFFECT", "QUESTIONS", "STRONG_SHORTCUT_EFFECT", "Answer", "Number", "Outcome", "box_text",
           "ci_text", "located_text", "relies_answer", "shortcut_answer", "shortcut_untrusted", "trust_answer"]
