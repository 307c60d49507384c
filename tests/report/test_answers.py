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
    assert sc.outcome == "no" and sc.region == (8, 40, 16, 48)
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
    assert r.outcome == "no" and sc.outcome == "yes" and tr.outcome == "no"
    assert v.headline.startswith("SHORTCUT SUSPECTED at (56,0)–(64,8)")
    assert "90 % [80, 97]" in v.headline and "does not rely on the findings" in v.headline
    assert {"shortcut_suspected", "does_not_rely_on_findings"} <= set(v.flags)
    assert v.good is False
    assert "not judged" in tr.sentence  # universal counterfactual: medXGAN methods are not judged


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
    _, summary, comparisons = with_intervention("lesion")
    sc = shortcut_json("shortcut")
    # the region beats the findings and transplants: yes
    assert audit_verdict(summary, comparisons, None, sc).shortcut_suspected.outcome == "yes"
    # transplant no better than the random-region control: no
    weak = {**sc, "transplant_ci_low": 0.05, "control_ci_high": 0.12}
    a = audit_verdict(summary, comparisons, None, weak).shortcut_suspected
    assert a.outcome == "no" and "no better than chance" in a.sentence
    # a region weaker than the findings' own drop (0.21): no, even if it transplants
    small = {**sc, "drop": 0.15, "drop_ci_low": 0.12, "drop_ci_high": 0.18}
    a = audit_verdict(summary, comparisons, None, small).shortcut_suspected
    assert a.outcome == "no" and "though pasted" in a.sentence
    # no region found / NaN control / no shortcut.json: undecided
    assert audit_verdict(summary, comparisons, None, {**sc, "box": None}).shortcut_suspected.outcome == "undecided"
    nan = {**sc, "control_rate": None, "control_ci_low": None, "control_ci_high": None}
    assert audit_verdict(summary, comparisons, None, nan).shortcut_suspected.outcome == "undecided"
    assert audit_verdict(summary, comparisons).shortcut_suspected.outcome == "undecided"


def test_shortcut_alone_gives_a_classifier_headline():
    _, summary, comparisons = tables("shortcut")  # no intervention rows
    v = audit_verdict(summary, comparisons, None, shortcut_json("shortcut"))
    assert v.relies_on_findings.outcome == "undecided"
    assert v.shortcut_suspected.outcome == "yes"  # drop ci_low 0.40 > min_effect without intervention rows
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
