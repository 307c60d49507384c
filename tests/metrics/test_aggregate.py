import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from medxgan.metrics.aggregate import (
    COMPARISONS,
    SCORES,
    SUMMARY,
    bootstrap_ci,
    compare,
    crossed_bootstrap_ci,
    long_scores,
    shuffle_gap,
    summarise,
    to_table,
)


def _scores():
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(50)]
    a = rng.normal(0.6, 0.1, 50)
    a[3] = np.nan  # undefined for one image
    b = a - 0.2  # b is exactly 0.2 below a
    b[7] = np.nan
    parts = [
        long_scores(ids, "gradcam", {"pointing_game": torch.tensor(a), "pointing_game_shuffled": torch.tensor(a - 0.5)}),
        long_scores(ids, "random", {"pointing_game": b, "pointing_game_shuffled": b}),
    ]
    return pd.concat(parts, ignore_index=True), a


def test_schemas_match_the_design_contract():
    assert SCORES.names == ["image_id", "method", "metric", "value"]
    assert SUMMARY.names == ["method", "metric", "mean", "ci_low", "ci_high", "n"]
    assert COMPARISONS.names == ["method_a", "method_b", "metric", "mean_diff", "ci_low", "ci_high", "n"]
    assert SCORES.field("value").type == pa.float64()
    scores, _ = _scores()
    assert to_table(scores, SCORES).schema.equals(SCORES, check_metadata=True)
    assert to_table(summarise(scores), SUMMARY).schema == SUMMARY
    assert to_table(compare(scores), COMPARISONS).schema == COMPARISONS
    with pytest.raises(ValueError):
        long_scores(["a", "b"], "m", {"x": np.zeros(3)})


def test_bootstrap_ci_covers_the_mean_is_seeded_and_sized_right():
    v = np.random.default_rng(1).normal(2.0, 1.0, 400)
    mean, lo, hi, n = bootstrap_ci(v, seed=0)
    assert n == 400 and lo < mean < hi and mean == pytest.approx(v.mean())
    se = v.std(ddof=1) / np.sqrt(400)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(v, seed=0) == (mean, lo, hi, n)
    assert bootstrap_ci(v, seed=1) != (mean, lo, hi, n)
    assert bootstrap_ci(np.array([np.nan, np.nan]))[3] == 0 and np.isnan(bootstrap_ci(np.array([np.nan]))[0])
    assert bootstrap_ci(np.array([3.0, np.nan])) == (3.0, 3.0, 3.0, 1)


def _crossed(rng, R=40, P=40, N=40, K=8):
    """A crossed design whose outcome is mostly a property of the donor: each positive donor
    makes a recipient's version positive with its own rate (Beta(0.3, 0.3)), each negative
    donor with its own (Beta(0.3, 0.9)); the population effect is 1/2 - 1/4 = 0.25, and the
    sample of 40 donors per pool moves the estimate more than the recipients do."""
    pr, nr = rng.beta(0.3, 0.3, P), rng.beta(0.3, 0.9, N)
    dp = np.stack([rng.permutation(P)[:K] for _ in range(R)])
    dn = np.stack([rng.permutation(N)[:K] for _ in range(R)])
    a = (rng.random((R, K)) < pr[dp]).astype(float)
    b = (rng.random((R, K)) < nr[dn]).astype(float)
    return a, dp, b, dn


def test_the_crossed_bootstrap_covers_what_a_recipient_bootstrap_misses():
    rng = np.random.default_rng(3)
    a, dp, b, dn = _crossed(rng)
    m, lo, hi, n = crossed_bootstrap_ci(a, dp, 40, b, dn, 40, n_boot=300, seed=0)
    assert n == 40 and m == pytest.approx((a.mean(1) - b.mean(1)).mean()) and lo < m < hi
    assert crossed_bootstrap_ci(a, dp, 40, b, dn, 40, n_boot=300, seed=0) == (m, lo, hi, n)
    cover_crossed = cover_recipients = 0
    for _ in range(100):
        a, dp, b, dn = _crossed(rng)
        _, lo, hi, _ = crossed_bootstrap_ci(a, dp, 40, b, dn, 40, n_boot=300, seed=0)
        cover_crossed += lo <= 0.25 <= hi
        _, lo, hi, _ = bootstrap_ci(a.mean(1) - b.mean(1), n_boot=300, seed=0)
        cover_recipients += lo <= 0.25 <= hi
    assert cover_crossed >= 88            # 95 % CIs (pigeonhole: a little conservative)
    assert cover_recipients <= 75         # the donors' share of the variance is missed
    empty = np.zeros((0, 8))
    assert crossed_bootstrap_ci(empty, empty.astype(int), 4, empty, empty.astype(int), 4)[3] == 0


def test_summary_drops_nans_and_counts():
    scores, a = _scores()
    s = summarise(scores).set_index(["method", "metric"])
    row = s.loc[("gradcam", "pointing_game")]
    assert row["n"] == 49 and row["mean"] == pytest.approx(np.nanmean(a))
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    assert len(s) == 4
    assert summarise(scores).equals(summarise(scores.sample(frac=1.0, random_state=0)))


def test_paired_comparison_and_shuffle_gap():
    scores, _ = _scores()
    c = compare(scores)
    pg = c[(c.metric == "pointing_game")].iloc[0]
    assert (pg.method_a, pg.method_b) == ("gradcam", "random")
    assert pg.n == 48  # images both methods scored
    assert pg.mean_diff == pytest.approx(0.2) and pg.ci_low == pytest.approx(0.2) and pg.ci_high == pytest.approx(0.2)
    gap = c[c.metric == "pointing_game-shuffled_gap"].set_index("method_a")
    assert set(gap.index) == {"gradcam", "random"} and (gap.method_b == gap.index).all()
    assert gap.loc["gradcam", "mean_diff"] == pytest.approx(0.5) and gap.loc["random", "mean_diff"] == 0.0
    assert gap.loc["gradcam", "n"] == 49
    assert shuffle_gap(scores).equals(c[c.metric.str.endswith("-shuffled_gap")].reset_index(drop=True))
    assert len(compare(scores, shuffle_gaps=False)) == 2
    assert compare(scores.sample(frac=1.0, random_state=1)).equals(c)  # row order does not matter


def test_suffixes_are_the_catalogues():
    from medxgan import catalogue
    from medxgan.metrics import aggregate

    assert aggregate.SHUFFLED_SUFFIX is catalogue.SHUFFLED_SUFFIX
    assert aggregate.GAP_SUFFIX is catalogue.GAP_SUFFIX
    scores, _ = _scores()
    gaps = shuffle_gap(scores)
    assert set(gaps.metric) == {"pointing_game" + catalogue.GAP_SUFFIX}
