"""The audit verdict: three answers about the classifier, and the explanation-method rules.

``audit_verdict(summary, comparisons, scores=None, shortcut=None) -> Verdict``.

The verdict answers three questions, kept apart (``medxgan.report.answers`` has their rules):

- **relies on the findings?** by intervention (rows of method ``intervention``:
  ``ablation_drop`` and its own - shuffled gap) -> ``Verdict.relies_on_findings``;
- **shortcut suspected?** by the shortcut finder's ``shortcut.json`` (a dict, None when the run
  has none) -> ``Verdict.shortcut_suspected``;
- **which explanations can be trusted?** by rule 1 below per method ->
  ``Verdict.trustworthy_explanations`` (``.methods`` lists them).

The **headline is about the classifier** when intervention or shortcut evidence exists
(``RELIES ON THE FINDINGS: ...`` / ``DOES NOT RELY ON THE FINDINGS: ...`` /
``RELIANCE UNDECIDED: ...``, or ``SHORTCUT SUSPECTED at (x0,y0)–(x1,y1): ...`` first), followed
by the trustworthy explanations; without either it falls back to the explanation-based headline
of rules 2-5 (``LOCALISES`` / ``DOES NOT LOCALISE`` / ``PRIOR ONLY`` / ``MIXED EVIDENCE`` /
``NO VERDICT``). Flags ``relies_on_findings``, ``does_not_rely_on_findings`` and
``shortcut_suspected`` join the flags of rules 2-6, which are computed in either case.

Evidence used (tables as in docs/design.md): ``summary`` (method, metric, mean, ci_low, ci_high,
n; 95 % bootstrap over images) and ``comparisons`` (the rows with ``method_a == method_b``
and metric ``<metric>-shuffled_gap``: own minus shuffled-box score, paired bootstrap CI).
If a gap row is missing and ``scores`` (long form) is given, the gap is bootstrapped here
from ``<metric>`` and ``<metric>_shuffled`` of the same images.

Rules about the explanations (every threshold is a parameter):

1. **A map localises** on a metric k (default: ``pointing_game`` and ``relevance_mass``)
   when its mean is above **every** floor present (``random``, ``box_prior``) with
   non-overlapping 95 % CIs (``map.ci_low > floor.ci_high``) **and** its own - shuffled
   gap CI excludes zero on the positive side (``gap.ci_low > 0``): it marks *this*
   image's finding, not where findings usually are. A method localises when it does so
   on every k. Undecidable (None) when the method, a metric, every floor or the gap is
   missing.
2. **The classifier looks at the annotated findings** (``localises=True``) when every
   gradient baseline present (``gradcam``, ``ig``; all baselines if neither ran)
   localises (``require_all=False``: any of them).
3. ``does_not_localise`` (``localises=False``): no baseline map (``gradcam``, ``ig``,
   ``smoothgrad``, ``occlusion``) beats every floor on any metric k: its explanations
   are no better than chance or the average-box prior (typical of a shortcut, e.g. a
   corner tag: the maps miss the boxes).
4. ``prior_only`` (``localises=False``): some baseline map beats the random floor on some
   k with a known own - shuffled gap, but none of those gaps is positive (CI above zero):
   the maps mark where findings usually are, not this image's finding. May accompany
   ``does_not_localise``.
5. ``partial_localisation`` (``localises=False``): none of 2-4 (e.g. Grad-CAM localises
   but IG does not). ``insufficient_evidence`` (``localises=None``): no floor or no
   baseline in the summary, or a rule could not be decided.
6. **medXGAN**: mean ``counterfactual_similarity >= similarity_threshold`` (0.8) ->
   ``universal_counterfactual``: the classifier is moved by one pattern that is not the
   image's finding, and medXGAN maps are not evidence of localisation. Otherwise each of
   ``medxgan``, ``latent_ig`` and ``counterfactual_ig`` present is judged by rule 1 (flags
   ``<method>_localises`` / ``<method>_does_not_localise``). One sentence gives the
   ``counterfactual_flip`` rate and ``recon_mse``; a flip rate below ``min_flip_rate``
   adds ``weak_counterfactual``.
7. **Generator health** (``generator_health``: the kept generator checkpoint's held-out
   health from ``best.json``, issue #14): ``change_similarity >= health_similarity_threshold``
   (0.5) or ``universal_flip >= health_universal_flip`` (0.5; the mean change added to real
   negatives makes f call them positive) -> ``universal_generator``: on held-out images the
   generator's change is one pattern, so ``medxgan``, ``latent_ig`` and ``counterfactual_ig``
   are not trusted (excluded from the trustworthy explanations with that reason, as in rule
   6). Below both thresholds one sentence reports the two numbers. NaN or missing values are
   not judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from medxgan.catalogue import (
    BASELINES,
    FLOORS,
    GAN_METHODS,
    GRADIENT_BASELINES,
    INTERVENTION,
    method_label,
    metric_label,
    order_methods,
)
from medxgan.report._evidence import Evidence, Stat, beats, judge
from medxgan.report._text import fmt, fmt_ci
from medxgan.report._health import generator_health_rule as _generator_health
from medxgan.report._health import shortcut_explains_change
from medxgan.report.answers import (MIN_SHORTCUT_EFFECT, STRONG_SHORTCUT_EFFECT, Answer, box_text,
                                     relies_answer, shortcut_answer, shortcut_untrusted, trust_answer)

# Method roles come from the catalogue (``Method.verdict_role``); re-exported here by name.
MEDXGAN_METHODS = GAN_METHODS
VERDICT_METRICS = ("pointing_game", "relevance_mass")


@dataclass
class Verdict:
    """Outcome of the audit rules.

    Attributes:
        localises: True (the explanations localise the annotated findings), False (they do
            not, or only partly), None (not enough evidence to decide); rules 2-5.
        headline: one sentence, the first thing a reader sees (about the classifier when
            intervention or shortcut evidence exists).
        findings: human sentences, each with the evidence numbers (mean [95 % CI]).
        flags: machine-readable codes (``relies_on_findings``, ``shortcut_suspected``,
            ``does_not_localise``, ``prior_only``, ``universal_counterfactual``, ...; see the
            module docstring).
        relies_on_findings, shortcut_suspected, trustworthy_explanations: the three answers
            (``medxgan.report.answers.Answer``: outcome yes / no / undecided, one sentence,
            the deciding numbers with CIs).
        headline_about: ``classifier`` (headline from the answers) or ``explanations``
            (the fallback headline of rules 2-5).
    """

    localises: bool | None
    headline: str
    findings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    relies_on_findings: Answer = field(default_factory=lambda: Answer("relies_on_findings"))
    shortcut_suspected: Answer = field(default_factory=lambda: Answer("shortcut_suspected"))
    trustworthy_explanations: Answer = field(default_factory=lambda: Answer("trustworthy_explanations"))
    headline_about: str = "explanations"

    @property
    def answers(self) -> tuple[Answer, Answer, Answer]:
        """The three answers, in reading order."""
        return self.relies_on_findings, self.shortcut_suspected, self.trustworthy_explanations

    @property
    def trusted_methods(self) -> list[str]:
        return list(self.trustworthy_explanations.methods)

    @property
    def good(self) -> bool | None:
        """True / False / None for the page's colour: about the classifier when the headline
        is (shortcut or no reliance is bad, reliance good), else ``localises``."""
        if self.headline_about != "classifier":
            return self.localises
        sc = self.shortcut_suspected
        if (sc.outcome == "yes" and sc.grade != "weak") or self.relies_on_findings.outcome == "no":
            return False
        return True if self.relies_on_findings.outcome == "yes" else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (manifest, events)."""
        return {"headline": self.headline, "localises": self.localises, "flags": list(self.flags),
                "answers": {a.key: a.to_dict() for a in self.answers}, "headline_about": self.headline_about}


def audit_verdict(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame | None,
    scores: pd.DataFrame | None = None,
    shortcut: Mapping[str, Any] | None = None,
    *,
    metrics: Sequence[str] = VERDICT_METRICS,
    gradient_baselines: Sequence[str] = GRADIENT_BASELINES,
    baselines: Sequence[str] = BASELINES,
    floors: Sequence[str] = FLOORS,
    medxgan_methods: Sequence[str] = MEDXGAN_METHODS,
    require_all: bool = True,
    similarity_threshold: float = 0.8,
    min_flip_rate: float = 0.5,
    min_effect: float = 0.05,
    seed: int = 0,
    generator_health: Mapping[str, Any] | None = None,
    health_similarity_threshold: float = 0.5,
    health_universal_flip: float = 0.5,
    shortcut_min_effect: float = MIN_SHORTCUT_EFFECT,
    shortcut_strong: float = STRONG_SHORTCUT_EFFECT,
    generator_family: str | None = None,
) -> Verdict:
    """Apply the rules of the module docstring to one audit's tables.

    Args:
        summary: ``method, metric, mean, ci_low, ci_high, n``.
        comparisons: ``method_a, method_b, metric, mean_diff, ci_low, ci_high, n`` (the
            ``<metric>-shuffled_gap`` rows are used); may be None.
        scores: long-form per-image scores, used only to bootstrap a missing gap.
        shortcut: the shortcut finder's ``shortcut.json`` (``ShortcutFinding.summary()``),
            None when the run has none.
        metrics: localisation metrics every rule checks.
        gradient_baselines, baselines, floors, medxgan_methods: method roles.
        require_all: the classifier localises only if every gradient baseline does.
        similarity_threshold: mean counterfactual similarity from which medXGAN's change
            counts as one universal pattern.
        min_flip_rate: flip rate below which counterfactuals are called weak.
        min_effect: smallest mean drop of f's positive probability that counts as reliance
            (intervention).
        shortcut_min_effect, shortcut_strong: the shortcut answer's minimum effect and the
            effect from which a shortcut is strong (``medxgan.report.answers``).
        generator_family: the audit generator's family (``gan.model.family``), so that the
            sentences describe it (an image-conditioned family has no latent code and no
            inversion); None: unknown, the published family's wording.
        seed: seed of the fallback bootstrap.
        generator_health: the kept generator checkpoint's held-out health (``best.json``'s
            ``health``), None when unknown (rule 7).
        health_similarity_threshold, health_universal_flip: rule 7's thresholds.

    Returns: a ``Verdict``.
    """
    ev = Evidence(summary, comparisons, scores, seed)
    findings: list[str] = []
    flags: list[str] = []
    present_floors = [f for f in floors if f in ev.methods]
    present_base = [m for m in baselines if m in ev.methods]
    judged = [m for m in gradient_baselines if m in ev.methods] or present_base

    status: dict[str, bool | None] = {}
    excluded: dict[str, str] = {}
    localises: bool | None
    if not present_floors or not judged:
        localises = None
        flags.append("insufficient_evidence")
        missing = "no floor map (random, box prior)" if not present_floors else "no baseline explanation"
        headline = f"NO VERDICT: not enough evidence to tell whether the classifier looks at the annotated findings ({missing})."
    else:
        for m in judged:
            status[m], sents = judge(ev, m, metrics, present_floors)
            findings.extend(sents)
        for m in present_base:
            if m not in status:
                status[m], sents = judge(ev, m, metrics, present_floors)
                findings.extend(sents)
        beats_all = beats_random_known = beats_random_specific = False
        for m in present_base:
            for k in metrics:
                s = ev.stat(m, k)
                fl = [beats(s, ev.stat(f, k)) for f in present_floors]
                if fl and all(fl):
                    beats_all = True
                if "random" in present_floors and beats(s, ev.stat("random", k)):
                    g = ev.gap(m, k)
                    if g is not None:
                        beats_random_known = True
                        beats_random_specific |= g[1] > 0
        verdicts = [status[m] for m in judged]
        passed = all(v is True for v in verdicts) if require_all else any(v is True for v in verdicts)
        names = " and ".join(method_label(m) for m in judged)
        mets = " and ".join(metric_label(k) for k in metrics)
        if passed:
            localises = True
            flags.append("localises")
            headline = (
                f"LOCALISES: the classifier looks at the annotated findings: {names} maps beat the random and "
                f"box-prior floors on {mets} and point at each image's own boxes, not at boxes of another image."
            )
        elif not beats_all:
            localises = False
            flags.append("does_not_localise")
            headline = (
                "DOES NOT LOCALISE: no explanation map of the classifier beats the random or box-prior floors: "
                "it does not look at the annotated findings and may rely on a shortcut outside them."
            )
            if beats_random_known and not beats_random_specific:
                flags.append("prior_only")
        elif beats_random_known and not beats_random_specific:
            localises = False
            flags.append("prior_only")
            headline = (
                "PRIOR ONLY: the classifier's maps mark where findings usually are, not this image's finding "
                "(they beat the random floor but not their shuffled-box control)."
            )
        elif any(v is None for v in verdicts) and not any(v is False for v in verdicts):
            localises = None
            flags.append("insufficient_evidence")
            headline = (
                f"NO VERDICT: {names} beat the floors but the evidence is incomplete "
                "(a metric or the shuffled-box control is missing)."
            )
        else:
            localises = False
            flags.append("partial_localisation")
            good = [method_label(m) for m in judged if status[m]]
            bad = [method_label(m) for m in judged if not status[m]]
            headline = (
                "MIXED EVIDENCE: the classifier's explanations localise the annotated findings only in part"
                + (f" ({', '.join(good)} do, {', '.join(bad)} do not)." if good else f" ({', '.join(bad)} fail a rule).")
            )
        if "prior_only" in flags and "does_not_localise" in flags:
            findings.append("Some maps beat the random floor, but not their shuffled-box control: they mark a prior location.")

    # medXGAN
    short = shortcut_answer(shortcut, ev, shortcut_min_effect, shortcut_strong)
    universal_gen = _generator_health(generator_health, health_similarity_threshold,
                                      health_universal_flip, findings, short)
    if universal_gen is not None:
        flags.append("universal_generator")
        headline += " The generator's held-out changes are one universal pattern: medXGAN maps are not evidence of localisation."
    cs = _first_stat(ev, "counterfactual_similarity", medxgan_methods)
    if universal_gen is not None:
        for m in medxgan_methods:
            if m in ev.methods:
                excluded[m] = universal_gen
    elif cs is not None and cs[0] >= similarity_threshold and not shortcut_explains_change(
            short, generator_health, similarity_threshold):
        flags.append("universal_counterfactual")
        sentence = (
            f"medXGAN's counterfactual changes are one pattern for every image (mean counterfactual similarity "
            f"{fmt_ci(*cs[:3])} >= {fmt(similarity_threshold, 2)}): the classifier is moved by one pattern that is not "
            "the image's finding, and the medXGAN maps are not evidence of localisation."
        )
        findings.append(sentence)
        headline += " medXGAN's counterfactuals are one universal pattern: not evidence of localisation."
        for m in medxgan_methods:
            if m in ev.methods:
                excluded[m] = f"medXGAN's counterfactual change is one pattern for every image (similarity {fmt(cs[0], 2)})"
    else:
        if cs is not None and cs[0] >= similarity_threshold:
            findings.append(
                f"medXGAN's counterfactual changes are alike (mean counterfactual similarity {fmt_ci(*cs[:3])}) "
                "because they remove the shortcut found by question 2; without its region they differ: "
                "the maps are judged.")
        elif cs is not None:
            findings.append(
                f"medXGAN's counterfactual changes differ between images (mean counterfactual similarity "
                f"{fmt_ci(*cs[:3])} < {fmt(similarity_threshold, 2)})."
            )
        for m in medxgan_methods:
            if m not in ev.methods or not any(ev.stat(m, k) for k in metrics):
                continue
            ok, sents = judge(ev, m, metrics, present_floors)
            findings.extend(sents)
            if present_floors:
                status[m] = ok
            if ok is True:
                flags.append(f"{m}_localises")
                findings.append(f"{method_label(m)}: the maps localise the annotated findings (above every floor and image-specific).")
            elif ok is False:
                flags.append(f"{m}_does_not_localise")
                findings.append(f"{method_label(m)}: the maps do not localise the annotated findings.")
    flip = _first_stat(ev, "counterfactual_flip", medxgan_methods)
    fam = _generator_family(generator_family)
    latent = fam.latent  # a latent code and an inversion
    mse = _first_stat(ev, "recon_mse", medxgan_methods) if latent else None
    if flip is not None or mse is not None:
        parts = []
        if flip is not None:
            what = fam.x_neg_text
            parts.append(
                f"{what} fell below f's decision threshold for "
                f"{100 * flip[0]:.0f} % of explained images ({fmt_ci(*flip[:3])}, n={flip[3]})"
            )
        if mse is not None:
            parts.append(f"mean reconstruction MSE of the inversion {fmt_ci(*mse[:3], digits=4)} (GAN space [-1, 1])")
        findings.append("medXGAN: " + "; ".join(parts) + ".")
        if flip is not None and flip[0] < min_flip_rate:
            flags.append("weak_counterfactual")
            findings.append(
                f"The flip rate is below {100 * min_flip_rate:.0f} %: medXGAN's negative counterparts often do not "
                "convince the classifier, so its maps explain little."
            )

    # --- the three answers; the headline is about the classifier when there is evidence about it
    relies = relies_answer(ev, min_effect)
    untrusted = shortcut_untrusted(short, shortcut, [m for m, v in status.items() if v is True])
    trust = trust_answer({m: status[m] for m in order_methods(status)}, metrics, ev, excluded=excluded,
                         have_floors=bool(present_floors), untrusted=untrusted)
    about = "explanations"
    if relies.outcome == "yes":
        flags.append("relies_on_findings")
    elif relies.outcome == "no":
        flags.append("does_not_rely_on_findings")
    if short.outcome == "yes":
        flags.append("shortcut_suspected" if short.grade != "weak" else "weak_shortcut_sensitivity")
        flags.append(f"shortcut_{short.kind}" if short.kind else "shortcut")
    if ev.stat(INTERVENTION, "ablation_drop") is not None or shortcut is not None:
        about = "classifier"
        headline = _classifier_headline(relies, short, trust)
    for a in (short, relies):  # inserted first: relies, then shortcut, then the rules
        if a.sentence and not a.sentence.startswith("Undecided: no"):
            findings.insert(0, f"{a.question} {a.sentence}")
    return Verdict(localises=localises, headline=headline, findings=findings, flags=flags,
                   relies_on_findings=relies, shortcut_suspected=short, trustworthy_explanations=trust,
                   headline_about=about)


def _clause(a: Answer) -> str:
    """An answer's sentence without its "Yes: " / "No: " / "Undecided: " lead and final stop."""
    s = a.sentence
    for lead in ("Yes, weak: ", "Yes: ", "No: ", "Undecided: "):
        if s.startswith(lead):
            s = s[len(lead):]
            break
    return s.rstrip(".")


def _classifier_headline(relies: Answer, short: Answer, trust: Answer) -> str:
    """The headline from the answers about the classifier (module docstring)."""
    d = relies.numbers
    if relies.outcome == "undecided" and not d:
        rel = "no intervention evidence"
    else:
        own = d[0].text() if d else "—"
        ctrl = next((x.text() for x in d if x.label.startswith("ablation drop, another")), None)
        rel = f"infilling the annotated boxes lowers p by {own}" + (f" vs {ctrl} for another image's boxes" if ctrl else "")
    lead = {"yes": "RELIES ON THE FINDINGS", "no": "DOES NOT RELY ON THE FINDINGS"}.get(relies.outcome, "RELIANCE UNDECIDED")
    if short.outcome == "yes" and short.grade != "weak":
        where = {"located": f" at {box_text(short.region)}" if short.region is not None else "",
                 "image_wide": ", image-wide", "place_unknown": ", place unknown"}.get(short.kind or "", "")
        head = f"SHORTCUT SUSPECTED{where}: {short.summary or _clause(short)}; {lead.lower()}: {rel}."
    elif short.outcome == "yes":
        head = f"{lead}: {rel}; weak shortcut sensitivity: {short.summary or _clause(short)}."
    else:
        sc_txt = {"no": "no shortcut found", "undecided": "no shortcut search ran"
                  if short.sentence.startswith("Undecided: no shortcut search") else "shortcut search inconclusive"}
        head = f"{lead}: {rel}; {sc_txt[short.outcome]}."
    if trust.outcome == "yes":
        head += " Explanations to trust: " + ", ".join(method_label(m) for m in trust.methods) + "."
    elif trust.outcome == "no":
        head += " No explanation method passes the localisation rules."
    return head



def _generator_family(name: str | None):
    """The generator family the sentences describe (its ``latent`` and ``x_neg_text``;
    :mod:`medxgan.generators.registry`); None: unknown, the published family's wording."""
    from medxgan.generators.registry import family

    return family(name)


def _first_stat(ev: Evidence, metric: str, methods: Sequence[str]) -> Stat | None:
    """The metric's summary under the first medXGAN method that has it (else any method)."""
    for m in list(methods) + sorted(ev.methods - set(methods)):
        s = ev.stat(m, metric)
        if s is not None and not math.isnan(s[0]):
            return s
    return None


