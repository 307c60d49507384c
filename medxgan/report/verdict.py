"""The audit verdict: does the classifier look at the annotated findings?

``audit_verdict(summary, comparisons, scores=None) -> Verdict``.

Evidence used (tables as in DESIGN.md): ``summary`` (method, metric, mean, ci_low, ci_high,
n; 95 % bootstrap over images) and ``comparisons`` (the rows with ``method_a == method_b``
and metric ``<metric>-shuffled_gap``: own minus shuffled-box score, paired bootstrap CI).
If a gap row is missing and ``scores`` (long form) is given, the gap is bootstrapped here
from ``<metric>`` and ``<metric>_shuffled`` of the same images.

Rules (every threshold is a parameter):

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from medxgan.catalogue import (
    BASELINES,
    FLOORS,
    GAN_METHODS,
    GAP_SUFFIX,
    GRADIENT_BASELINES,
    SHUFFLED_SUFFIX,
    method_label,
    metric_label,
)
from medxgan.report._text import bootstrap_mean, fmt, fmt_ci

# Method roles come from the catalogue (``Method.verdict_role``); re-exported here by name.
MEDXGAN_METHODS = GAN_METHODS
VERDICT_METRICS = ("pointing_game", "relevance_mass")

_Stat = tuple[float, float, float, int]  # mean, ci_low, ci_high, n


@dataclass
class Verdict:
    """Outcome of the audit rules.

    Attributes:
        localises: True (looks at the annotated findings), False (does not, or only
            partly), None (not enough evidence to decide).
        headline: one sentence, the first thing a reader sees.
        findings: human sentences, each with the evidence numbers (mean [95 % CI]).
        flags: machine-readable codes (``does_not_localise``, ``prior_only``,
            ``universal_counterfactual``, ...; see the module docstring).
    """

    localises: bool | None
    headline: str
    findings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


class _Evidence:
    """Lookups into summary / comparisons / scores with the verdict's conventions."""

    def __init__(self, summary: pd.DataFrame, comparisons: pd.DataFrame | None, scores: pd.DataFrame | None, seed: int):
        self.summary = summary if summary is not None else pd.DataFrame(columns=["method", "metric", "mean", "ci_low", "ci_high", "n"])
        self.comparisons = comparisons
        self.scores = scores
        self.seed = seed
        self.methods = set(self.summary["method"]) if len(self.summary) else set()

    def stat(self, method: str, metric: str) -> _Stat | None:
        s = self.summary
        r = s[(s["method"] == method) & (s["metric"] == metric)]
        if r.empty or pd.isna(r["mean"].iloc[0]):
            return None
        r = r.iloc[0]
        return float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]), int(r["n"]) if not pd.isna(r["n"]) else 0

    def gap(self, method: str, metric: str) -> _Stat | None:
        c = self.comparisons
        if c is not None and len(c):
            r = c[(c["method_a"] == method) & (c["method_b"] == method) & (c["metric"] == metric + GAP_SUFFIX)]
            if not r.empty and not pd.isna(r["mean_diff"].iloc[0]):
                r = r.iloc[0]
                return float(r["mean_diff"]), float(r["ci_low"]), float(r["ci_high"]), int(r["n"])
        if self.scores is not None and len(self.scores):
            sc = self.scores[self.scores["method"] == method]
            own = sc[sc["metric"] == metric].set_index("image_id")["value"]
            shuf = sc[sc["metric"] == metric + SHUFFLED_SUFFIX].set_index("image_id")["value"]
            both = pd.concat([own.rename("own"), shuf.rename("shuf")], axis=1, join="inner").dropna()
            if len(both):
                return bootstrap_mean((both["own"] - both["shuf"]).to_numpy(), seed=self.seed)
        return None


def _beats(m: _Stat | None, f: _Stat | None) -> bool | None:
    """Non-overlapping CIs with m above f; None when either is missing."""
    if m is None or f is None:
        return None
    return m[1] > f[2]


def _judge(ev: _Evidence, method: str, metrics: Sequence[str], floors: Sequence[str]) -> tuple[bool | None, list[str]]:
    """Rule 1 for one method: (localises?, one evidence sentence per metric)."""
    sentences, ok = [], []
    present_floors = [f for f in floors if f in ev.methods]
    for k in metrics:
        s = ev.stat(method, k)
        if s is None:
            ok.append(None)
            continue
        parts = []
        beats = []
        for f in present_floors:
            fs = ev.stat(f, k)
            b = _beats(s, fs)
            beats.append(b)
            if fs is not None:
                parts.append(f"{method_label(f)} {fmt_ci(*fs[:3])}")
        g = ev.gap(method, k)
        gap_ok = None if g is None else g[1] > 0
        above = None if not beats or any(b is None for b in beats) else all(beats)
        if above is None or gap_ok is None:
            ok.append(None if above is not False and gap_ok is not False else False)
        else:
            ok.append(above and gap_ok)
        floor_txt = " vs " + " and ".join(parts) if parts else " (no floor to compare with)"
        verdict_txt = (
            "above every floor" if above else ("not above every floor" if above is False else "floors not comparable")
        )
        below = [f for f in present_floors if (fs := ev.stat(f, k)) is not None and s[0] < fs[0]]
        if below:
            verdict_txt += ", its mean below the " + " and ".join(method_label(f) for f in below)
        gap_txt = (
            "no shuffled-box control"
            if g is None
            else f"own - shuffled {fmt_ci(*g[:3], signed=True)} ("
            + ("image-specific" if gap_ok else "not distinguishable from another image's boxes")
            + ")"
        )
        sentences.append(
            f"{method_label(method)} {metric_label(k)} {fmt_ci(*s[:3])} (n={s[3]}){floor_txt}: {verdict_txt}; {gap_txt}."
        )
    if any(o is False for o in ok):
        return False, sentences
    if not ok or any(o is None for o in ok):
        return None, sentences
    return True, sentences


def audit_verdict(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame | None,
    scores: pd.DataFrame | None = None,
    *,
    metrics: Sequence[str] = VERDICT_METRICS,
    gradient_baselines: Sequence[str] = GRADIENT_BASELINES,
    baselines: Sequence[str] = BASELINES,
    floors: Sequence[str] = FLOORS,
    medxgan_methods: Sequence[str] = MEDXGAN_METHODS,
    require_all: bool = True,
    similarity_threshold: float = 0.8,
    min_flip_rate: float = 0.5,
    seed: int = 0,
) -> Verdict:
    """Apply the rules of the module docstring to one audit's tables.

    Args:
        summary: ``method, metric, mean, ci_low, ci_high, n``.
        comparisons: ``method_a, method_b, metric, mean_diff, ci_low, ci_high, n`` (the
            ``<metric>-shuffled_gap`` rows are used); may be None.
        scores: long-form per-image scores, used only to bootstrap a missing gap.
        metrics: localisation metrics every rule checks.
        gradient_baselines, baselines, floors, medxgan_methods: method roles.
        require_all: the classifier localises only if every gradient baseline does.
        similarity_threshold: mean counterfactual similarity from which medXGAN's change
            counts as one universal pattern.
        min_flip_rate: flip rate below which counterfactuals are called weak.
        seed: seed of the fallback bootstrap.

    Returns: a ``Verdict``.
    """
    ev = _Evidence(summary, comparisons, scores, seed)
    findings: list[str] = []
    flags: list[str] = []
    present_floors = [f for f in floors if f in ev.methods]
    present_base = [m for m in baselines if m in ev.methods]
    judged = [m for m in gradient_baselines if m in ev.methods] or present_base

    localises: bool | None
    if not present_floors or not judged:
        localises = None
        flags.append("insufficient_evidence")
        missing = "no floor map (random, box prior)" if not present_floors else "no baseline explanation"
        headline = f"NO VERDICT: not enough evidence to tell whether the classifier looks at the annotated findings ({missing})."
    else:
        status = {}
        for m in judged:
            status[m], sents = _judge(ev, m, metrics, present_floors)
            findings.extend(sents)
        for m in present_base:
            if m not in status:
                status[m], sents = _judge(ev, m, metrics, present_floors)
                findings.extend(sents)
        beats_all = beats_random_known = beats_random_specific = False
        for m in present_base:
            for k in metrics:
                s = ev.stat(m, k)
                fl = [_beats(s, ev.stat(f, k)) for f in present_floors]
                if fl and all(fl):
                    beats_all = True
                if "random" in present_floors and _beats(s, ev.stat("random", k)):
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
    cs = _first_stat(ev, "counterfactual_similarity", medxgan_methods)
    if cs is not None and cs[0] >= similarity_threshold:
        flags.append("universal_counterfactual")
        sentence = (
            f"medXGAN's counterfactual changes are one pattern for every image (mean counterfactual similarity "
            f"{fmt_ci(*cs[:3])} >= {fmt(similarity_threshold, 2)}): the classifier is moved by one pattern that is not "
            "the image's finding, and the medXGAN maps are not evidence of localisation."
        )
        findings.append(sentence)
        headline += " medXGAN's counterfactuals are one universal pattern: not evidence of localisation."
    else:
        if cs is not None:
            findings.append(
                f"medXGAN's counterfactual changes differ between images (mean counterfactual similarity "
                f"{fmt_ci(*cs[:3])} < {fmt(similarity_threshold, 2)})."
            )
        for m in medxgan_methods:
            if m not in ev.methods or not any(ev.stat(m, k) for k in metrics):
                continue
            ok, sents = _judge(ev, m, metrics, present_floors)
            findings.extend(sents)
            if ok is True:
                flags.append(f"{m}_localises")
                findings.append(f"{method_label(m)}: the maps localise the annotated findings (above every floor and image-specific).")
            elif ok is False:
                flags.append(f"{m}_does_not_localise")
                findings.append(f"{method_label(m)}: the maps do not localise the annotated findings.")
    flip = _first_stat(ev, "counterfactual_flip", medxgan_methods)
    mse = _first_stat(ev, "recon_mse", medxgan_methods)
    if flip is not None or mse is not None:
        parts = []
        if flip is not None:
            parts.append(
                f"the negative counterpart G(z_a, 0) fell below f's decision threshold for "
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
    return Verdict(localises=localises, headline=headline, findings=findings, flags=flags)


def _first_stat(ev: _Evidence, metric: str, methods: Sequence[str]) -> _Stat | None:
    """The metric's summary under the first medXGAN method that has it (else any method)."""
    for m in list(methods) + sorted(ev.methods - set(methods)):
        s = ev.stat(m, metric)
        if s is not None and not math.isnan(s[0]):
            return s
    return None


