"""The verdict's three answers (relies on the findings, shortcut suspected, trustworthy
explanations) and its headline about the classifier, on tables whose right answer is known."""

from __future__ import annotations

import pandas as pd
import pytest

from medxgan.report import audit_verdict
from tests.report._fixtures import shortcut_json, tables, with_intervention


def _swap(summary: pd.DataFrame, comparisons: pd.DataFrame, drop=None, shuffled=None, gap=None):
    """Copies with the intervention drop / shuffled drop (mean, lo, hi) or gap (mean, lo, hi) replaced."""
    s, c = summary.copy(), comparisons.copy()
    for metric, val in (("ablation_drop", drop), ("ablation_drop_shuffled", shuffled)):
        if val is not None:
            s.loc[(s.method == "intervention") & (s.metric == metric), ["mean", "ci_low", "ci_high"]] = val
    if gap is not None:
        c.loc[(c.method_a == "intervention") & (c.metric == "ablation_drop-shuffled_gap"), ["mean_diff", "ci_low", "ci_high"]] = gap
    return s, c


def test_lesion_classifier_relies_on_the_findings_and_no_shortcut():
    _, summary, comparisons = with_intervention("lesion")
    v = audit_verdict(summary, comparisons, None, shortcut_json("lesion"))
    r, sc, tr = v.answers
    assert (r.key, r.outcome) == ("relies_on_findings", "yes")
    assert sc.outcome == "no" and sc.region is None and sc.grade == "none"
    assert tr.outcome == "yes" and tr.methods[:2] == ["gradcam", "ig"]
    assert v.headline.startswith("RELIES ON THE FINDINGS: infilling the annotated boxes lowers p by 0.2")
    assert "no shortcut found" in v.headline and "Explanations to trust: Grad-CAM, IG" in v.headline
    assert "relies_on_findings" in v.flags and "shortcut_suspected" not in v.flags
    assert "localises" in v.flags  # the explanation rules still run
    assert v.good is True and v.headline_about == "classifier"
    # the deciding numbers carry their CIs
    labels = {x.label: x for x in r.numbers}
    own = labels["ablation drop, own boxes infilled"]
    assert own.ci_low < own.mean < own.ci_high and own.n == 60
    assert labels["own - shuffled gap"].ci_low > 0
    assert "[" in r.sentence and r.sentence.startswith("Yes: ")


def test_shortcut_classifier_headline_names_the_region():
    _, summary, comparisons = with_intervention("shortcut")
    v = audit_verdict(summary, comparisons, None, shortcut_json("shortcut"))
    r, sc, tr = v.answers
    assert r.outcome == "no" and sc.outcome == "yes" and sc.grade == "strong" and tr.outcome == "no"
    assert v.headline.startswith("SHORTCUT SUSPECTED at (56,0)–(64,8): a small bright object in the "
                                 "top-right corner, found in 90 % of the positives")
    # the headline keeps the deciding number (the fixture has no per-image strength: the effect)
    assert "pasted into negatives it turns them positive 0.85 [0.75, 0.93] more often" in v.headline
    assert "does not rely on the findings" in v.headline and "90 % of them positive" in sc.sentence
    assert {"shortcut_suspected", "shortcut_located", "does_not_rely_on_findings"} <= set(v.flags)
    assert v.good is False


def test_relies_rules_min_effect_and_gap():
    _, summary, comparisons = with_intervention("lesion")
    # a drop below the minimum effect: no
    s, c = _swap(summary, comparisons, drop=(0.03, 0.02, 0.04))
    assert audit_verdict(s, c).relies_on_findings.outcome == "no"
    assert audit_verdict(s, c, min_effect=0.01).relies_on_findings.outcome == "yes"
    # a gap CI that includes 0: no, whatever the drop
    s, c = _swap(summary, comparisons, gap=(0.05, -0.01, 0.1))
    v = audit_verdict(s, c)
    assert v.relies_on_findings.outcome == "no" and "does_not_rely_on_findings" in v.flags
    assert v.headline.startswith("DOES NOT RELY ON THE FINDINGS")
    # no shuffled control at all: undecided
    c2 = comparisons[comparisons.metric != "ablation_drop-shuffled_gap"]
    s2 = summary[summary.metric != "ablation_drop_shuffled"]
    v = audit_verdict(s2, c2)
    assert v.relies_on_findings.outcome == "undecided" and v.headline.startswith("RELIANCE UNDECIDED")
    # ... unless the per-image scores give the gap
    scores, _, _ = with_intervention("lesion")
    assert audit_verdict(summary, c2, scores).relies_on_findings.outcome == "yes"


def test_shortcut_rules():
    from medxgan.report.answers import shortcut_answer

    sc = shortcut_json("shortcut")
    a = shortcut_answer(sc)
    assert (a.outcome, a.grade, a.kind, a.region) == ("yes", "strong", "located", (56, 0, 64, 8))
    labels = [x.label for x in a.numbers]
    assert labels[0].startswith("still positive without the findings") and len(a.numbers) == 5
    # whatever the findings' own drop: the answer does not read the intervention rows
    _, summary, comparisons = with_intervention("lesion")
    assert audit_verdict(summary, comparisons, None, sc).shortcut_suspected.outcome == "yes"
    # an effect whose CI reaches 0 is no evidence, however large its mean
    loose = {**sc, "residual": {**sc["residual"], "effect_ci_low": -0.01},
             "located": {**sc["located"], "effect_ci_low": 0.0}}
    assert shortcut_answer(loose).outcome == "no"
    # a small effect with a CI above 0: below the minimum effect, no; above it, weak
    tiny = {**loose, "located": {**sc["located"], "effect": 0.08, "effect_ci_low": 0.02}}
    assert shortcut_answer(tiny).outcome == "no"
    assert shortcut_answer(tiny, min_effect=0.05).grade == "weak"
    # a driver few positives carry (effect 0.3) that decides f wherever it is: strong
    rare = {**sc, "residual": {**sc["residual"], "effect": 0.3, "effect_ci_low": 0.2},
            "located": {**sc["located"], "effect": 0.3, "effect_ci_low": 0.2, "strength": 0.9,
                        "strength_ci_low": 0.8, "strength_ci_high": 1.0, "strength_n": 12}}
    r = shortcut_answer(rare)
    assert r.grade == "strong" and "turns positive 0.90 [0.80, 1.00] more often" in r.sentence
    assert shortcut_answer({**rare, "located": {**rare["located"], "strength_ci_low": 0.35}}).grade == "weak"
    w = shortcut_answer(shortcut_json("weak"))
    assert (w.outcome, w.grade) == ("yes", "weak") and w.sentence.startswith("Yes, weak: a small bright object")
    # image-wide and unplaced shortcuts have no region
    wide = shortcut_answer(shortcut_json("wide"))
    assert (wide.outcome, wide.kind, wide.region) == ("yes", "image_wide", None)
    assert "noise level" in wide.sentence and wide.description == "the noise level"
    un = shortcut_answer(shortcut_json("unplaced"))
    assert (un.outcome, un.kind) == ("yes", "place_unknown") and "still calls 70 %" in un.sentence
    # a clean classifier: no, with the three kinds of evidence named
    no = shortcut_answer(shortcut_json("lesion"))
    assert no.outcome == "no" and no.grade == "none" and "image-wide" in no.sentence
    # nothing computed / no shortcut.json / an earlier format: undecided
    empty = {**sc, "residual": {}, "located": {}, "image_wide": []}
    assert shortcut_answer(empty).outcome == "undecided"
    assert shortcut_answer(None).outcome == "undecided"
    assert shortcut_answer({"box": [1, 2, 3, 4], "drop": 0.4}).outcome == "undecided"


@pytest.mark.parametrize("kind,lead", [("wide", "SHORTCUT SUSPECTED, image-wide: giving negatives the noise level"),
                                       ("unplaced", "SHORTCUT SUSPECTED, place unknown: with their findings removed")])
def test_placeless_shortcuts_say_so_in_the_headline(kind, lead):
    _, summary, comparisons = with_intervention("lesion")
    v = audit_verdict(summary, comparisons, None, shortcut_json(kind))
    assert v.headline.startswith(lead) and "relies on the findings" in v.headline  # both named
    tr = v.trustworthy_explanations
    assert tr.outcome == "no" and tr.methods == [] and "not trusted" in tr.sentence
    assert v.relies_on_findings.outcome == "yes" and v.good is False


def test_a_weak_shortcut_sensitivity_is_graded_not_hidden():
    _, summary, comparisons = with_intervention("lesion")
    v = audit_verdict(summary, comparisons, None, shortcut_json("weak"))
    assert v.headline.startswith("RELIES ON THE FINDINGS:")
    assert "weak shortcut sensitivity: a small bright object in the top-right corner" in v.headline
    assert "weak_shortcut_sensitivity" in v.flags and "shortcut_suspected" not in v.flags
    assert v.good is True and v.trustworthy_explanations.methods[:2] == ["gradcam", "ig"]


def test_a_located_shortcut_keeps_only_the_maps_that_mark_it():
    _, summary, comparisons = with_intervention("lesion")
    maps = {"gradcam": {"mass": 0.4, "ci_low": 0.3, "ci_high": 0.5, "n": 12, "area": 0.01, "marks": True},
            "ig": {"mass": 0.02, "ci_low": 0.01, "ci_high": 0.03, "n": 12, "area": 0.01, "marks": False}}
    v = audit_verdict(summary, comparisons, None, shortcut_json("shortcut", maps=maps))
    tr = v.trustworthy_explanations
    assert "gradcam" in tr.methods and "ig" not in tr.methods
    assert "IG mark the findings but are not trusted: its maps do not mark the shortcut" in tr.sentence
    # maps that were never checked against the shortcut are not trusted either
    v = audit_verdict(summary, comparisons, None, shortcut_json("shortcut"))
    assert v.trustworthy_explanations.outcome == "no"
    assert "not checked against the shortcut" in v.trustworthy_explanations.sentence


def test_shortcut_alone_gives_a_classifier_headline():
    _, summary, comparisons = tables("shortcut")  # no intervention rows
    v = audit_verdict(summary, comparisons, None, shortcut_json("shortcut"))
    assert v.relies_on_findings.outcome == "undecided"
    assert v.shortcut_suspected.outcome == "yes"
    assert v.headline.startswith("SHORTCUT SUSPECTED") and "no intervention evidence" in v.headline


@pytest.mark.parametrize("kind", ["lesion", "shortcut"])
def test_old_headline_without_intervention_or_shortcut(kind):
    _, summary, comparisons = tables(kind)
    v = audit_verdict(summary, comparisons)
    assert v.headline_about == "explanations"
    assert v.headline.startswith("LOCALISES" if kind == "lesion" else "DOES NOT LOCALISE")
    assert v.relies_on_findings.outcome == "undecided" and v.shortcut_suspected.outcome == "undecided"
    assert v.trustworthy_explanations.outcome == ("yes" if kind == "lesion" else "no")
    assert v.good is (kind == "lesion")


def test_trustworthy_lists_the_methods_that_pass():
    _, summary, comparisons = tables("lesion")
    s = summary.copy()
    s.loc[(s.method == "ig") & (s.metric == "pointing_game"), ["mean", "ci_low", "ci_high"]] = [0.1, 0.05, 0.15]
    v = audit_verdict(s, comparisons)
    tr = v.trustworthy_explanations
    assert "ig" not in tr.methods and "gradcam" in tr.methods
    assert "IG do not (a finding about those methods" in tr.sentence
    assert audit_verdict(summary[~summary.method.isin(["random", "box_prior"])], comparisons).trustworthy_explanations.outcome == "undecided"


def test_verdict_to_dict_is_json():
    import json

    _, summary, comparisons = with_intervention("shortcut")
    d = audit_verdict(summary, comparisons, None, shortcut_json("shortcut")).to_dict()
    text = json.dumps(d)
    assert d["answers"]["shortcut_suspected"]["region"] == [56, 0, 64, 8] and "relies_on_findings" in text
