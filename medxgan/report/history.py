"""Audit history: one summary row per (run, method, metric), trends and regression detection.

``<store>/audits/history.parquet`` has the columns of ``HISTORY_SCHEMA``:
``audit, classifier_hash, cohort_hash, run_id, time (timestamp[us, UTC]), method, metric,
mean, ci_low, ci_high, n``. A run's rows are written once per run id: appending the same
run again replaces its rows (``append_history`` is idempotent).

A **regression** (``detect_regressions``) compares the per-image scores of the previous run
with those of the current run on the images **both** runs scored (same ``image_id``, both
values defined): diff = mean(current - previous) with a paired percentile bootstrap CI
(seeded). It is a regression when the metric got worse (direction from the
``higher_is_better`` argument, else the catalogue's ``Metric.higher_is_better``) and the CI
excludes zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import pandas as pd
import pyarrow as pa

from medxgan.catalogue import METRIC_CATALOGUE, is_shuffled
from medxgan.report._text import bootstrap_mean

HISTORY_SCHEMA = pa.schema(
    [
        ("audit", pa.string()),
        ("classifier_hash", pa.string()),
        ("cohort_hash", pa.string()),
        ("run_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("method", pa.string()),
        ("metric", pa.string()),
        ("mean", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n", pa.int64()),
    ]
)
REGRESSION_COLUMNS = ["method", "metric", "prev_mean", "cur_mean", "diff", "ci_low", "ci_high", "n", "regression"]

# metric -> direction of the regression check, from the catalogue (shuffled controls have none)
HIGHER_IS_BETTER: dict[str, bool] = {m.name: m.higher_is_better for m in METRIC_CATALOGUE}


def _utc(t: datetime | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Exactly the ``HISTORY_SCHEMA`` columns with their dtypes (time as UTC)."""
    missing = [c for c in HISTORY_SCHEMA.names if c not in df.columns]
    if missing:
        raise ValueError(f"history rows lack columns {missing}")
    out = df[HISTORY_SCHEMA.names].copy()
    for c in ("audit", "classifier_hash", "cohort_hash", "run_id", "method", "metric"):
        out[c] = out[c].astype(str)
    out["time"] = pd.to_datetime(out["time"], utc=True).astype("datetime64[us, UTC]")
    for c in ("mean", "ci_low", "ci_high"):
        out[c] = out[c].astype("float64")
    out["n"] = out["n"].fillna(0).astype("int64")
    return out


def history_table(history: pd.DataFrame) -> pa.Table:
    """History DataFrame -> Arrow table with exactly ``HISTORY_SCHEMA``."""
    return pa.Table.from_pandas(_normalise(history), schema=HISTORY_SCHEMA, preserve_index=False)


def history_rows(
    audit: str,
    classifier_hash: str,
    cohort_hash: str,
    run_id: str,
    time: datetime | str | pd.Timestamp,
    summary: pd.DataFrame,
) -> pd.DataFrame:
    """The history rows of one run: its summary tagged with audit, hashes, run id and time.

    Args:
        summary: ``method, metric, mean, ci_low, ci_high, n``.
        time: the run's time; a naive time is taken as UTC.

    Returns: DataFrame with the ``HISTORY_SCHEMA`` columns, one row per summary row.
    """
    s = summary[["method", "metric", "mean", "ci_low", "ci_high", "n"]].copy()
    s.insert(0, "time", _utc(time))
    s.insert(0, "run_id", run_id)
    s.insert(0, "cohort_hash", cohort_hash)
    s.insert(0, "classifier_hash", classifier_hash)
    s.insert(0, "audit", audit)
    return _normalise(s.reset_index(drop=True))


def append_history(existing: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame:
    """Append one or more runs' rows; rows of a run id already present are replaced.

    Returns: the new history, sorted by time, run_id, method, metric.
    """
    new = _normalise(rows)
    if existing is None or len(existing) == 0:
        out = new
    else:
        old = _normalise(existing)
        old = old[~old["run_id"].isin(set(new["run_id"]))]
        out = pd.concat([old, new], ignore_index=True)
    return out.sort_values(["time", "run_id", "method", "metric"], kind="stable").reset_index(drop=True)


def previous_run_id(history: pd.DataFrame | None, *, audit: str, cohort_hash: str, run_id: str) -> str | None:
    """The latest earlier run of the same audit on the same cohort (None if there is none).

    "Earlier" is by time when ``run_id`` is in the history, else every other run counts.
    """
    if history is None or len(history) == 0:
        return None
    h = _normalise(history)
    h = h[(h["audit"] == audit) & (h["cohort_hash"] == cohort_hash)]
    runs = h.drop_duplicates("run_id")[["run_id", "time"]]
    me = runs[runs["run_id"] == run_id]
    others = runs[runs["run_id"] != run_id]
    if not me.empty:
        others = others[others["time"] <= me["time"].iloc[0]]
    if others.empty:
        return None
    return str(others.sort_values(["time", "run_id"]).iloc[-1]["run_id"])


def _direction(metric: str, higher_is_better: Mapping[str, bool] | None) -> bool:
    for table in (higher_is_better or {}, HIGHER_IS_BETTER):
        if metric in table:
            return bool(table[metric])
    if is_shuffled(metric):
        raise ValueError(f"{metric}: a shuffled control has no better direction; pass it in higher_is_better")
    raise ValueError(f"{metric}: unknown direction; pass it in higher_is_better")


def _values(scores: pd.DataFrame, method: str, metric: str) -> pd.Series:
    s = scores[(scores["method"] == method) & (scores["metric"] == metric)]
    if s["image_id"].duplicated().any():
        raise ValueError(f"scores hold more than one value per image for {method}/{metric}")
    return s.set_index("image_id")["value"].astype("float64")


def detect_regressions(
    previous_scores: pd.DataFrame,
    current_scores: pd.DataFrame,
    *,
    metrics: Sequence[str],
    methods: Sequence[str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Paired-bootstrap comparison of two runs' per-image scores.

    Args:
        previous_scores, current_scores: long form ``image_id, method, metric, value``.
        metrics: metrics to compare.
        methods: methods to compare (default: those in both runs).
        higher_is_better: metric -> direction; falls back to ``HIGHER_IS_BETTER``; a
            metric with no known direction is an error.
        seed, n_boot, level: the bootstrap (re-seeded per method and metric).

    Returns: DataFrame ``method, metric, prev_mean, cur_mean, diff, ci_low, ci_high, n,
    regression`` (one row per method and metric present in both runs; means over the n
    paired images; diff = cur_mean - prev_mean; NaNs and regression False when n == 0).
    """
    if methods is None:
        methods = sorted(set(previous_scores["method"]) & set(current_scores["method"]))
    rows = []
    for m in methods:
        for k in metrics:
            hib = _direction(k, higher_is_better)
            p, c = _values(previous_scores, m, k), _values(current_scores, m, k)
            if p.empty or c.empty:
                continue
            both = pd.concat([p.rename("p"), c.rename("c")], axis=1, join="inner").dropna()
            d = (both["c"] - both["p"]).to_numpy()
            mean, lo, hi, n = bootstrap_mean(d, n_boot=n_boot, level=level, seed=seed)
            worse_ci = (hi < 0) if hib else (lo > 0)
            reg = bool(n > 0 and worse_ci)
            pm = float(both["p"].mean()) if n else float("nan")
            cm = float(both["c"].mean()) if n else float("nan")
            rows.append((m, k, pm, cm, mean, lo, hi, n, reg))
    out = pd.DataFrame(rows, columns=REGRESSION_COLUMNS)
    return out.astype({"n": "int64", "regression": "bool"})


__all__ = [
    "HIGHER_IS_BETTER",
    "HISTORY_SCHEMA",
    "REGRESSION_COLUMNS",
    "append_history",
    "detect_regressions",
    "history_rows",
    "previous_run_id",
    "history_table",
]
