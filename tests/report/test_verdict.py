"""Verdict rules on tables whose right answer is known."""

from __future__ import annotations

import pandas as pd
import pytest

from medxgan.report import audit_verdict
from tests.report._fixtures import tables


def _summary(rows):
    return pd.DataFrame(rows, columns=["method", "metric", "mean", "ci_low", "ci_high", "n"])


def _gaps(rows):
    return pd.DataFrame(
        [(m, m, k + "-shuffled_gap", d, lo, hi, 50) for m, k, d, lo, hi in rows],
        columns=["method_a", "method_b", "metric", "mean_diff", "ci_low", "ci_high", "n"],
    )


_FLOORS = [
    ("random", "pointing_game", 0.1, 0.05, 0.15, 50),
    ("random", "relevance_mass", 0.05, 0.04, 0.06, 50),
    ("box_prior", "pointing_game", 0.12, 0.06, 0.18, 50),
    ("box_prior", "relevance_mass", 0.08, 0.07, 0.09, 50),
]


def test_lesion_classifier_localises():
    _, summary, comparisons = tables("lesion")
    v = audit_verdict(summary, comparisons)
    assert v.localises is True
    assert "localises" in v.flags
    assert "does_not_localise" not in v.flags and "universal_counterfactual" not in v.flags
    assert v.headline.startswith("LOCALISES")
    assert any("Grad-CAM pointing game 0.9" in f for f in v.findings)  # evidence numbers in the sentence


def test_shortcut_classifier_does_not_localise_and_headlines_differ():
    _, s_les, c_les = tables("lesion")
    _, s_sc, c_sc = tables("shortcut")
    les, sc = audit_verdict(s_les, c_les), audit_verdict(s_sc, c_sc)
    assert sc.localises is False
    assert "does_not_localise" in sc.flags
    assert sc.headline.startswith("DOES NOT LOCALISE")
    assert les.headline.split(":")[0] != sc.headline.split(":")[0]


def test_universal_counterfactual_flag_and_sentence():
    _, summary, comparisons = tables("shortcut")
    v = audit_verdict(summary, comparisons)
    assert "universal_counterfactual" in v.flags
    text = " ".join(v.findings)
    assert "moved by one pattern that is not the image's finding" in text
    assert "medXGAN maps are not evidence of localisation" in text
    # the threshold is a parameter: above the measured 0.95 there is no flag
    v2 = audit_verdict(summary, comparisons, similarity_threshold=0.99)
    assert "universal_counterfactual" not in v2.flags


def test_flip_rate_and_recon_sentence():
    _, summary, comparisons = tables("lesion")
    v = audit_verdict(summary, comparisons)
    s = [f for f in v.findings if f.startswith("medXGAN: ")]
    assert len(s) == 1 and "%" in s[0] and "reconstruction MSE" in s[0]
    assert "weak_counterfactual" not in v.flags
    assert "weak_counterfactual" in audit_verdict(summary, comparisons, min_flip_rate=0.95).flags


def test_prior_only_when_maps_beat_random_but_not_their_shuffled_control():
    summary = _summary(
        _FLOORS
        + [
            ("gradcam", "pointing_game", 0.5, 0.4, 0.6, 50),
            ("gradcam", "relevance_mass", 0.3, 0.25, 0.35, 50),
        ]
    )
    comps = _gaps([("gradcam", "pointing_game", 0.02, -0.05, 0.09), ("gradcam", "relevance_mass", 0.0, -0.02, 0.02)])
    v = audit_verdict(summary, comps)
    assert v.localises is False
    assert "prior_only" in v.flags and "does_not_localise" not in v.flags
    assert v.headline.startswith("PRIOR ONLY")
    # the same maps with a positive gap localise
    comps_ok = _gaps([("gradcam", "pointing_game", 0.3, 0.2, 0.4), ("gradcam", "relevance_mass", 0.1, 0.05, 0.15)])
    assert audit_verdict(summary, comps_ok).localises is True


def test_overlapping_cis_do_not_count_as_beating_a_floor():
    summary = _summary(
        _FLOORS
        + [
            ("gradcam", "pointing_game", 0.25, 0.17, 0.33, 50),  # ci_low 0.17 < box_prior ci_high 0.18
            ("gradcam", "relevance_mass", 0.3, 0.25, 0.35, 50),
        ]
    )
    comps = _gaps([("gradcam", "pointing_game", 0.2, 0.1, 0.3), ("gradcam", "relevance_mass", 0.1, 0.05, 0.15)])
    v = audit_verdict(summary, comps)
    assert v.localises is False and "partial_localisation" in v.flags


def test_partial_when_one_gradient_baseline_fails():
    summary = _summary(
        _FLOORS
        + [
            ("gradcam", "pointing_game", 0.9, 0.8, 0.95, 50),
            ("gradcam", "relevance_mass", 0.3, 0.25, 0.35, 50),
            ("ig", "pointing_game", 0.12, 0.05, 0.2, 50),
            ("ig", "relevance_mass", 0.06, 0.05, 0.07, 50),
        ]
    )
    comps = _gaps(
        [
            ("gradcam", "pointing_game", 0.6, 0.5, 0.7),
            ("gradcam", "relevance_mass", 0.2, 0.15, 0.25),
            ("ig", "pointing_game", 0.0, -0.1, 0.1),
            ("ig", "relevance_mass", 0.0, -0.01, 0.01),
        ]
    )
    v = audit_verdict(summary, comps)
    assert v.localises is False and "partial_localisation" in v.flags
    assert "Grad-CAM" in v.headline
    assert audit_verdict(summary, comps, require_all=False).localises is True


def test_gap_bootstrapped_from_scores_when_comparisons_are_missing():
    scores, summary, _ = tables("lesion")
    assert audit_verdict(summary, None).localises is None  # no shuffled control: undecidable
    v = audit_verdict(summary, None, scores)
    assert v.localises is True


@pytest.mark.parametrize("drop", [("random", "box_prior"), ("gradcam", "ig", "smoothgrad", "occlusion")])
def test_insufficient_evidence(drop):
    _, summary, comparisons = tables("lesion")
    v = audit_verdict(summary[~summary["method"].isin(drop)], comparisons)
    assert v.localises is None and "insufficient_evidence" in v.flags
    assert v.headline.startswith("NO VERDICT")


def test_medxgan_maps_judged_when_counterfactuals_differ():
    _, summary, comparisons = tables("lesion")
    v = audit_verdict(summary, comparisons)
    assert "medxgan_localises" in v.flags and "latent_ig_localises" in v.flags
    s2 = summary.copy()
    s2.loc[(s2["method"] == "medxgan") & (s2["metric"] == "pointing_game"), ["mean", "ci_low", "ci_high"]] = [0.1, 0.05, 0.15]
    assert "medxgan_does_not_localise" in audit_verdict(s2, comparisons).flags


def test_generator_health_rule_excludes_a_universal_generator():
    """Rule 7: best.json's held-out health with a universal pattern takes the medXGAN methods
    out of the trusted explanations; image-specific health leaves them; NaN is not judged."""
    _, summary, comparisons = tables("lesion")
    base = audit_verdict(summary, comparisons)
    assert {"medxgan", "latent_ig"} <= set(base.trustworthy_explanations.methods)
    bad = audit_verdict(summary, comparisons, generator_health={
        "change_similarity": 0.93, "change_similarity_boxes": 0.15, "universal_flip": 0.2})
    assert "universal_generator" in bad.flags
    assert bad.trustworthy_explanations.methods == ["gradcam", "ig"]
    assert "medxgan_localises" not in bad.flags
    assert any("change similarity 0.93 (box masks: 0.15)" in f for f in bad.findings)
    assert "one universal pattern" in bad.headline
    # a universal flip alone is enough; the thresholds are parameters
    assert "universal_generator" in audit_verdict(summary, comparisons, generator_health={
        "change_similarity": 0.1, "universal_flip": 0.8}).flags
    assert "universal_generator" not in audit_verdict(
        summary, comparisons, generator_health={"change_similarity": 0.93},
        health_similarity_threshold=0.95).flags
    good = audit_verdict(summary, comparisons, generator_health={
        "change_similarity": 0.06, "universal_flip": 0.05})
    assert "universal_generator" not in good.flags
    assert good.trustworthy_explanations.methods == base.trustworthy_explanations.methods
    assert any("image-specific" in f for f in good.findings)
    nan = audit_verdict(summary, comparisons, generator_health={
        "change_similarity": float("nan"), "universal_flip": None})
    assert nan.findings == base.findings and nan.flags == base.flags


def test_a_universal_change_that_is_the_located_shortcut_is_not_a_broken_generator():
    """Rule 7 vs question 2 (issue #20): a faithful counterfactual of a tag classifier removes
    the tag from every image, so its changes are alike; when the change outside the located
    shortcut's region is image-specific the medXGAN maps stay judged."""
    from tests.report._fixtures import shortcut_json, with_intervention

    _, summary, comparisons = with_intervention("lesion")
    health = {"change_similarity": 0.86, "universal_flip": 0.59, "run_change_similarity": 0.8}
    sc = shortcut_json("shortcut", maps={m: {"mass": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 12,
                                            "area": 0.01, "marks": True}
                                        for m in ("gradcam", "ig", "medxgan", "latent_ig")})
    kept = audit_verdict(summary, comparisons, None, sc,
                         generator_health={**health, "change_similarity_outside_shortcut": 0.12})
    assert "universal_generator" not in kept.flags
    assert any("lies on the shortcut found by question 2" in f and "0.12 without it" in f
               for f in kept.findings)
    assert "medxgan" in kept.trustworthy_explanations.methods
    # the same change elsewhere too: a universal generator, excluded
    out = audit_verdict(summary, comparisons, None, sc,
                        generator_health={**health, "change_similarity_outside_shortcut": 0.7})
    assert "universal_generator" in out.flags and "medxgan" not in out.trustworthy_explanations.methods
    # no shortcut located: rule 7 as before, whatever the outside figure
    clean = audit_verdict(summary, comparisons, None, shortcut_json("lesion"),
                          generator_health={**health, "change_similarity_outside_shortcut": 0.1})
    assert "universal_generator" in clean.flags


def test_alike_changes_that_remove_the_located_shortcut_keep_the_maps_judged():
    """Rule 6 with the same exception as rule 7: the run's own counterfactual similarity is
    high because every change removes the located shortcut."""
    from tests.report._fixtures import shortcut_json, with_intervention

    _, summary, comparisons = with_intervention("shortcut")
    cs = summary[(summary.method == "medxgan") & (summary.metric == "counterfactual_similarity")]
    assert float(cs["mean"].iloc[0]) >= 0.8  # the fixture's universal pattern
    sc = shortcut_json("shortcut")
    plain = audit_verdict(summary, comparisons, None, sc)
    assert "universal_counterfactual" in plain.flags
    kept = audit_verdict(summary, comparisons, None, sc,
                         generator_health={"change_similarity_outside_shortcut": 0.1})
    assert "universal_counterfactual" not in kept.flags
    assert any("because they remove the shortcut found by question 2" in f for f in kept.findings)
