"""Rule 7 of the verdict: the generator's held-out health (issue #14), told apart from a
faithful counterfactual of a shortcut (issue #20)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from medxgan.report._text import fmt
from medxgan.report.answers import Answer, box_text


def shortcut_explains_change(short: Answer | None, health: Mapping[str, Any] | None,
                             threshold: float) -> bool:
    """Does the located shortcut of question 2 explain why the generator's changes are alike?
    (A strong or weak located shortcut, and the run's changes with its region left out below
    ``threshold``: ``change_similarity_outside_shortcut``.)"""
    if short is None or short.outcome != "yes" or short.kind != "located" or not health:
        return False
    try:
        v = float(health.get("change_similarity_outside_shortcut"))
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v < threshold


def generator_health_rule(health: Mapping[str, Any] | None, sim_thr: float, flip_thr: float,
                      findings: list[str], short: Answer | None = None) -> str | None:
    """Rule 7: the exclusion reason when the generator's held-out health shows a universal
    pattern, else None; appends the sentence that reports the health to ``findings``.

    A faithful counterfactual of a classifier that relies on one fixed shortcut removes that
    shortcut from every image: its changes are alike and their mean turns negatives positive.
    So when question 2 located a strong shortcut and the run's changes with the shortcut's
    region left out differ between images (``change_similarity_outside_shortcut`` below
    ``sim_thr``), the consistent change is evidence for the shortcut, not a broken generator:
    no exclusion, and a sentence says so."""
    if not health:
        return None

    def num(k: str) -> float | None:
        v = health.get(k)
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    sim, uni = num("change_similarity"), num("universal_flip")
    if sim is None and uni is None:
        return None
    told = ", ".join(t for t in (
        None if sim is None else f"change similarity {fmt(sim, 2)}"
        + ("" if num("change_similarity_boxes") is None
           else f" (box masks: {fmt(num('change_similarity_boxes'), 2)})"),
        None if uni is None else f"universal flip {fmt(uni, 2)}") if t)
    if (sim is not None and sim >= sim_thr) or (uni is not None and uni >= flip_thr):
        outside = num("change_similarity_outside_shortcut")
        if outside is not None and shortcut_explains_change(short, health, sim_thr):
            whole = num("run_change_similarity")
            findings.append(
                f"Generator health on held-out images: {told}, at or above {fmt(sim_thr, 2)} / "
                f"{fmt(flip_thr, 2)}, but the common change lies on the shortcut found by question 2 "
                f"({short.description or box_text(short.region)}): on the explained images the changes' "
                f"similarity is {fmt(whole, 2) if whole is not None else '—'} with that region and "
                f"{fmt(outside, 2)} without it. A faithful counterfactual of a classifier that relies on "
                "the shortcut removes it from every image: this is evidence for the shortcut, not a "
                "broken generator, and the medXGAN maps stay judged.")
            return None
        findings.append(
            f"Generator health on held-out images: {told}, at or above {fmt(sim_thr, 2)} / "
            f"{fmt(flip_thr, 2)}: the generator's change is one pattern for every image (similar "
            "changes, or a mean change that makes real negatives positive), so the medXGAN maps "
            "show what the classifier reacts to everywhere, not the image's finding.")
        return f"the generator's held-out change is one universal pattern ({told})"
    findings.append(f"Generator health on held-out images: {told}, below {fmt(sim_thr, 2)} / "
                    f"{fmt(flip_thr, 2)}: the generator's changes are image-specific.")
    return None


__all__ = ["generator_health_rule", "shortcut_explains_change"]
