"""Aggregation of per-image scores: long-form table, bootstrap summary, paired comparisons.

Tables (column names and dtypes as in docs/design.md; Arrow schemas exported below):

- scores (``SCORES``): ``image_id, method, metric, value`` (float64, NaN = undefined).
- summary (``SUMMARY``): ``method, metric, mean, ci_low, ci_high, n``: mean over images
  of the non-NaN values, 95 % percentile bootstrap CI (1000 seeded resamples of the
  images), n = number of non-NaN values.
- comparisons (``COMPARISONS``): ``method_a, method_b, metric, mean_diff, ci_low,
  ci_high, n``: mean of the per-image difference a - b over the images both methods
  scored (both values non-NaN), paired bootstrap CI, for every pair of methods (a < b
  alphabetically) and every metric. The image-specificity control is in the same table:
  rows with ``method_a == method_b == m`` and ``metric == "<metric>-shuffled_gap"`` give
  own minus shuffled (``<metric>`` - ``<metric>_shuffled``) per image, paired over the
  images where both are defined.

The bootstrap is vectorised: one (n_boot, n) index matrix per group. The generator is
re-seeded with ``seed`` for every group, so a group's CI does not depend on which other
methods or metrics are in the table, and values are ordered by image_id before
resampling, so the result does not depend on the order of the rows (shards may arrive
in any order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from medxgan.catalogue import GAP_SUFFIX, SHUFFLED_SUFFIX  # one definition, also importable from here

SCORES = pa.schema(
    [("image_id", pa.string()), ("method", pa.string()), ("metric", pa.string()), ("value", pa.float64())]
)
SUMMARY = pa.schema(
    [
        ("method", pa.string()),
        ("metric", pa.string()),
        ("mean", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n", pa.int64()),
    ]
)
COMPARISONS = pa.schema(
    [
        ("method_a", pa.string()),
        ("method_b", pa.string()),
        ("metric", pa.string()),
        ("mean_diff", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n", pa.int64()),
    ]
)


def long_scores(image_ids: Sequence[str], method: str, values: Mapping[str, torch.Tensor | np.ndarray]) -> pd.DataFrame:
    """Per-image metric values of one method as long-form rows.

    Args:
        image_ids: B ids.
        method: method name (``medxgan``, ``gradcam``, ...).
        values: metric name -> (B,) values.

    Returns: DataFrame with the ``SCORES`` columns, B * len(values) rows.
    """
    B = len(image_ids)
    frames = []
    for metric, v in values.items():
        arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        arr = arr.astype(np.float64).reshape(-1)
        if arr.shape[0] != B:
            raise ValueError(f"{metric}: {arr.shape[0]} values for {B} images")
        frames.append(pd.DataFrame({"image_id": list(image_ids), "method": method, "metric": metric, "value": arr}))
    if not frames:
        return SCORES.empty_table().to_pandas()
    return pd.concat(frames, ignore_index=True)


def to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """DataFrame -> Arrow table with exactly ``schema`` (SCORES, SUMMARY or COMPARISONS)."""
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False).replace_schema_metadata(None)


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean and percentile bootstrap CI of the non-NaN values.

    Args:
        values: (n,) float.

    Returns: (mean, ci_low, ci_high, n); NaNs when n == 0, a zero-width CI when n == 1.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n), dtype=np.int64 if n > 2**31 - 1 else np.int32)  # (n_boot, n)
    means = v[idx].mean(axis=1)  # (n_boot,)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(v.mean()), float(lo), float(hi), int(n)


def crossed_bootstrap_ci(pos: np.ndarray, pos_donor: np.ndarray, n_pos: int,
                         neg: np.ndarray, neg_donor: np.ndarray, n_neg: int, *,
                         n_boot: int = 1000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float, float, int]:
    """Mean paired difference of a crossed design and its percentile CI by the pigeonhole
    bootstrap (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat.), which resamples the
    recipients **and** both donor pools: the donors are a sample too, and a bootstrap over
    recipients alone treats them as fixed (too narrow a CI once every recipient gets several
    donors: ``docs/benchmarks.md``, "Several donors per recipient").

    Args:
        pos: (R, K) outcomes of recipient r with its k-th positive donor (e.g. 1 when f calls
            the version positive).
        pos_donor: (R, K) int, that donor's index in a pool of ``n_pos``.
        neg, neg_donor, n_neg: the same with the negative donors.

    Returns: (mean, ci_low, ci_high, n): the mean over recipients of
    ``mean_k pos[r, k] - mean_k neg[r, k]``, each replicate the same difference of weighted
    means with multinomial weights on recipients and on each pool's donors; n = R. NaNs when
    R == 0.
    """
    a, b = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    R = a.shape[0]
    if R == 0 or a.size == 0 or b.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)

    def counts(n: int) -> np.ndarray:       # (n_boot, n): times each unit is drawn
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)

    wr, wp, wn = counts(R), counts(int(n_pos)), counts(int(n_neg))

    def wmean(v: np.ndarray, w_d: np.ndarray) -> np.ndarray:      # w_d (B, R, K)
        w = wr[:, :, None] * w_d
        tot = w.sum((1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, (w * v[None]).sum((1, 2)) / tot, np.nan)

    reps = wmean(a, wp[:, np.asarray(pos_donor)]) - wmean(b, wn[:, np.asarray(neg_donor)])
    reps = reps[~np.isnan(reps)]
    m = float(a.mean(1).mean() - b.mean(1).mean())
    if reps.size == 0:
        return m, float("nan"), float("nan"), int(R)
    q = (1 - level) / 2
    lo, hi = np.quantile(reps, [q, 1 - q])
    return m, float(lo), float(hi), int(R)


def summarise(scores: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean and bootstrap CI per (method, metric) over images.

    Args:
        scores: long form (``SCORES`` columns).

    Returns: DataFrame with the ``SUMMARY`` columns, sorted by method, metric.
    """
    rows = []
    for (method, metric), g in scores.groupby(["method", "metric"], sort=True):
        v = g.sort_values("image_id", kind="stable")["value"].to_numpy()  # row order must not matter
        mean, lo, hi, n = bootstrap_ci(v, n_boot=n_boot, level=level, seed=seed)
        rows.append((method, metric, mean, lo, hi, n))
    return pd.DataFrame(rows, columns=SUMMARY.names).astype({"n": "int64"})


def _wide(scores: pd.DataFrame) -> pd.DataFrame:
    """(image_id) x (method, metric) table of values; duplicates are an error."""
    if scores.duplicated(["image_id", "method", "metric"]).any():
        raise ValueError("scores hold more than one value for an (image_id, method, metric)")
    return scores.pivot(index="image_id", columns=["method", "metric"], values="value")


def shuffle_gap(scores: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Own minus shuffled per method and localisation metric, paired bootstrap CI.

    Returns: ``COMPARISONS`` columns, method_a == method_b, metric ``<metric>-shuffled_gap``.
    """
    rows = []
    if len(scores):
        wide = _wide(scores)
        cols = set(wide.columns)
        for method, metric in sorted(cols):
            if metric.endswith(SHUFFLED_SUFFIX) or (method, metric + SHUFFLED_SUFFIX) not in cols:
                continue
            d = (wide[(method, metric)] - wide[(method, metric + SHUFFLED_SUFFIX)]).to_numpy()
            mean, lo, hi, n = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
            rows.append((method, method, metric + GAP_SUFFIX, mean, lo, hi, n))
    return pd.DataFrame(rows, columns=COMPARISONS.names).astype({"n": "int64"})


def compare(
    scores: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0, shuffle_gaps: bool = True
) -> pd.DataFrame:
    """Paired differences between every pair of methods for every metric (plus, by default,
    the own - shuffled gap rows of ``shuffle_gap``).

    Returns: ``COMPARISONS`` columns; method_a < method_b alphabetically, mean_diff = a - b
    over the images where both are defined (n of them; NaN mean and CI when n == 0).
    """
    rows = []
    if len(scores):
        wide = _wide(scores)
        methods = sorted(set(scores["method"]))
        metrics = sorted(set(scores["metric"]))
        cols = set(wide.columns)
        for metric in metrics:
            for i, a in enumerate(methods):
                for b in methods[i + 1 :]:
                    if (a, metric) not in cols or (b, metric) not in cols:
                        continue
                    d = (wide[(a, metric)] - wide[(b, metric)]).to_numpy()
                    mean, lo, hi, n = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
                    rows.append((a, b, metric, mean, lo, hi, n))
    out = pd.DataFrame(rows, columns=COMPARISONS.names).astype({"n": "int64"})
    if shuffle_gaps:
        out = pd.concat([out, shuffle_gap(scores, n_boot=n_boot, level=level, seed=seed)], ignore_index=True)
    return out.astype({"n": "int64"})
