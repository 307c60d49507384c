"""Pre-specified acceptance criteria: PASS / FAIL / UNDECIDED with the number that decided it."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from medxgan.config import Criterion
from medxgan.report import evaluate_criteria
from medxgan.report.criteria import failed
from tests.report._fixtures import NIGHTLY_CRITERIA, shortcut_json, tables, with_intervention


def test_lesion_passes_and_shortcut_fails_the_nightly_criteria():
    _, s, c = with_intervention("lesion")
    res = evaluate_criteria(NIGHTLY_CRITERIA, s, shortcut_json("lesion"), c)
    assert [r.outcome for r in res] == ["PASS", "PASS", "PASS"]
    gap = c[(c.method_a == "intervention") & (c.metric == "ablation_drop-shuffled_gap")].iloc[0]
    assert res[0].name == "relies on the findings" and res[0].on == "ci_low"
    assert res[0].value == pytest.approx(gap.ci_low) and res[0].mean == pytest.approx(gap.mean_diff)
    assert res[1].on == "ci_high" and res[1].value == pytest.approx(0.12)  # default side for <=
    assert res[1].name == "shortcut transplant_rate ci_high <= 0.2"  # the default name
    assert res[1].reason == "ci_high 0.120 <= 0.2"
    _, s, c = with_intervention("shortcut")
    res = evaluate_criteria(NIGHTLY_CRITERIA, s, shortcut_json("shortcut"), c)
    assert [r.outcome for r in res] == ["FAIL", "FAIL", "FAIL"]
    assert res[1].reason == "ci_high 0.970 > 0.2" and len(failed(res)) == 3


def test_undecided_without_the_evidence():
    _, s, c = tables("lesion")  # no intervention rows, no shortcut.json
    res = evaluate_criteria(NIGHTLY_CRITERIA, s, None, c)
    assert [r.outcome for r in res] == ["UNDECIDED", "UNDECIDED", "PASS"]
    assert res[0].value is None and "comparisons" in res[0].reason
    assert "no shortcut.json" in res[1].reason
    assert evaluate_criteria(NIGHTLY_CRITERIA[1:2], s, {**shortcut_json("lesion"), "box": None})[0].outcome == "UNDECIDED"
    assert evaluate_criteria(None, s) == [] and evaluate_criteria([], None) == []


def test_on_mean_and_strict_comparisons():
    s = pd.DataFrame([("gradcam", "pointing_game", 0.5, 0.4, 0.6, 10)], columns=["method", "metric", "mean", "ci_low", "ci_high", "n"])
    crit = lambda **kw: {"method": "gradcam", "metric": "pointing_game", **kw}  # noqa: E731
    r = evaluate_criteria([crit(comparison=">=", threshold=0.5, on="mean"), crit(comparison=">", threshold=0.5, on="mean"),
                           crit(comparison="<", threshold=0.65), crit(comparison=">=", threshold=0.45)], s)
    assert [x.outcome for x in r] == ["PASS", "FAIL", "PASS", "FAIL"]
    assert r[3].value == 0.4 and r[3].reason == "ci_low 0.400 < 0.45"
    assert r[0].to_dict()["what"] == "Grad-CAM: pointing game"


def test_gap_bootstrapped_from_scores_when_the_row_is_missing():
    scores, s, c = with_intervention("lesion")
    c = c[c.metric != "ablation_drop-shuffled_gap"]
    assert evaluate_criteria(NIGHTLY_CRITERIA[:1], s, None, c)[0].outcome == "UNDECIDED"
    assert evaluate_criteria(NIGHTLY_CRITERIA[:1], s, None, c, scores)[0].outcome == "PASS"


@pytest.mark.parametrize("bad, where", [
    ({"evidence": "shortcut", "metric": "pointing_game", "comparison": ">", "threshold": 0}, "metric"),
    ({"evidence": "intervention", "metric": "pointing_game", "comparison": ">", "threshold": 0}, "metric"),
    ({"method": "gradcam", "metric": "ablation_drop", "comparison": ">", "threshold": 0}, "metric"),
    ({"method": "nope", "metric": "pointing_game", "comparison": ">", "threshold": 0}, "method"),
    ({"method": "gradcam", "metric": "pointing_game", "comparison": "=>", "threshold": 0}, "comparison"),
    ({"method": "gradcam", "evidence": "shortcut", "metric": "drop", "comparison": ">", "threshold": 0}, None),
    ({"metric": "drop", "comparison": ">", "threshold": 0}, None),
    ({"method": "gradcam", "metric": "pointing_game", "comparison": ">", "threshold": 0, "tresh": 1}, "tresh"),
])
def test_criteria_are_validated_with_dotted_paths(bad, where):
    from medxgan.config import AuditConfig, error_line

    with pytest.raises(ValidationError) as e:
        AuditConfig.model_validate({"name": "a", "cohort": {"source": "phantom-cxr"}, "classifier": {"train": {}},
                                    "criteria": [NIGHTLY_CRITERIA[0], bad]})
    line = error_line(e.value)
    assert line.startswith("criteria.1" + (f".{where}:" if where else ":")), line


def test_gap_and_shuffled_names_are_accepted():
    for m in ("ablation_drop", "ablation_drop_shuffled", "ablation_drop-shuffled_gap", "ablation_flip", "retention"):
        Criterion(evidence="intervention", metric=m, comparison=">=", threshold=0)
    for m in ("pointing_game-shuffled_gap", "relevance_mass_shuffled", "deletion_auc"):
        Criterion(method="ig", metric=m, comparison="<=", threshold=1)
    assert Criterion(evidence="shortcut", metric="drop", comparison="<", threshold=0.1).on == "ci_high"
