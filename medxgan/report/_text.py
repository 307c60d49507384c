"""Number formatting and the seeded bootstrap shared by the report modules.

Names, labels, order, floors and directions of methods and metrics are not here: they come
from ``medxgan.catalogue`` (torch-free, like this module).
"""

from __future__ import annotations

import math

import numpy as np


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant decimals; '—' for None/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def fmt_ci(mean: float | None, lo: float | None, hi: float | None, digits: int = 3, signed: bool = False) -> str:
    """``mean [lo, hi]``; signed adds an explicit '+' to a positive mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    m = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return m
    return f"{m} [{lo:.{digits}f}, {hi:.{digits}f}]"


def bootstrap_mean(values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean and percentile bootstrap CI of the non-NaN values (seeded).

    Returns: (mean, ci_low, ci_high, n); NaNs when n == 0.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n)
    means = v[idx].mean(axis=1)  # (n_boot,)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(v.mean()), float(lo), float(hi), n
