"""Audit history: schema, idempotent append, previous run, regression detection, gallery choice."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from medxgan.report import HISTORY_SCHEMA, append_history, detect_regressions, history_rows, select_gallery
from medxgan.report.history import history_table, previous_run_id
from tests.report._fixtures import make_scores, summarise


def _rows(run, day, audit="a", cohort="c1", seed=0):
    s = summarise(make_scores("lesion", n=20, seed=seed))
    return history_rows(audit, "clf", cohort, run, pd.Timestamp("2026-11-01") + pd.Timedelta(days=day), s)


def test_history_rows_match_schema():
    r = _rows("r1", 0)
    t = history_table(r)
    assert t.schema.equals(HISTORY_SCHEMA)
    assert t.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert set(r["run_id"]) == {"r1"} and len(r) == len(summarise(make_scores("lesion", n=20)))
    assert str(r["time"].iloc[0]) == "2026-11-01 00:00:00+00:00"  # naive -> UTC


def test_append_history_is_idempotent_and_replaces_a_run():
    r1, r2 = _rows("r1", 0), _rows("r2", 1, seed=1)
    h = append_history(append_history(None, r1), r2)
    assert len(h) == len(r1) + len(r2)
    again = append_history(h, r2)
    pd.testing.assert_frame_equal(again, h)
    # a rerun of r1 with different numbers replaces r1's rows, not adds to them
    r1b = r1.assign(mean=r1["mean"] + 1.0)
    h2 = append_history(h, r1b)
    assert len(h2) == len(h)
    assert (h2[h2["run_id"] == "r1"]["mean"].to_numpy() == r1b.sort_values(["method", "metric"])["mean"].to_numpy()).all()
    assert list(h2.drop_duplicates("run_id")["run_id"]) == ["r1", "r2"]  # time order


def test_previous_run_same_audit_and_cohort():
    h = append_history(None, pd.concat([_rows("r1", 0), _rows("r2", 1), _rows("x", 2, cohort="c2"), _rows("r3", 3), _rows("o", 2, audit="b")]))
    assert previous_run_id(h, audit="a", cohort_hash="c1", run_id="r3") == "r2"
    assert previous_run_id(h, audit="a", cohort_hash="c1", run_id="r1") is None
    assert previous_run_id(h, audit="a", cohort_hash="c1", run_id="new") == "r3"
    assert previous_run_id(None, audit="a", cohort_hash="c1", run_id="r1") is None


def test_regression_found_for_a_planted_drop_and_not_for_no_change():
    prev = make_scores("lesion", n=60, seed=0)
    cur = make_scores("lesion", n=60, seed=0, shift={("gradcam", "relevance_mass"): -0.05, ("ig", "deletion_auc"): +0.05})
    r = detect_regressions(prev, cur, metrics=["relevance_mass", "deletion_auc"], methods=["gradcam", "ig"], seed=0)
    got = {(m, k): bool(x) for m, k, x in r[["method", "metric", "regression"]].itertuples(index=False)}
    assert got == {
        ("gradcam", "relevance_mass"): True,
        ("gradcam", "deletion_auc"): False,
        ("ig", "relevance_mass"): False,
        ("ig", "deletion_auc"): True,  # lower is better: an increase is a regression
    }
    row = r[(r["method"] == "gradcam") & (r["metric"] == "relevance_mass")].iloc[0]
    assert row["diff"] == pytest.approx(-0.05, abs=0.01) and row["ci_high"] < 0 and row["n"] == 60
    same = detect_regressions(prev, prev, metrics=["relevance_mass", "pointing_game"], seed=0)
    assert not same["regression"].any() and (same["diff"] == 0).all()


def test_improvement_and_noise_are_not_regressions():
    prev = make_scores("lesion", n=60, seed=0)
    better = make_scores("lesion", n=60, seed=0, shift={("gradcam", "relevance_mass"): +0.05})
    noisy = make_scores("lesion", n=60, seed=1)  # same classifier, fresh noise
    assert not detect_regressions(prev, better, metrics=["relevance_mass"], methods=["gradcam"]).regression.any()
    r = detect_regressions(prev, noisy, metrics=["relevance_mass"], methods=["gradcam", "ig", "random"], seed=0)
    assert not r["regression"].any()


def test_regression_pairs_only_common_images_and_needs_a_direction():
    prev = make_scores("lesion", n=30, seed=0)
    cur = make_scores("lesion", n=60, seed=0, shift={("gradcam", "relevance_mass"): -0.1})
    r = detect_regressions(prev, cur, metrics=["relevance_mass"], methods=["gradcam"])
    assert int(r["n"].iloc[0]) == 30
    with pytest.raises(ValueError, match="direction"):
        detect_regressions(prev, cur, metrics=["relevance_mass_shuffled"], methods=["gradcam"])
    ok = detect_regressions(prev, cur, metrics=["relevance_mass_shuffled"], methods=["gradcam"], higher_is_better={"relevance_mass_shuffled": False})
    assert len(ok) == 1


def test_select_gallery_best_and_worst():
    s = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e", "f", "a"],
            "method": ["gradcam"] * 6 + ["ig"],
            "metric": ["relevance_mass"] * 7,
            "value": [0.5, 0.9, float("nan"), 0.1, 0.7, 0.3, 0.0],
        }
    )
    assert select_gallery(s, k=2) == (["b", "e"], ["d", "f"])
    best, worst = select_gallery(s, k=3)
    assert best == ["b", "e", "a"] and worst == ["d", "f"]  # disjoint; NaN skipped
    d = s.assign(metric="deletion_auc")  # lower is better
    assert select_gallery(d, metric="deletion_auc", k=1) == (["d"], ["b"])
