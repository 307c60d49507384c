"""Display names, number formatting and the seeded bootstrap shared by the report modules."""

from __future__ import annotations

import math

import numpy as np

METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "ig": "IG",
    "smoothgrad": "SmoothGrad",
    "occlusion": "occlusion",
    "medxgan": "medXGAN difference map",
    "latent_ig": "latent IG (medXGAN + IG)",
    "counterfactual_ig": "counterfactual IG (medXGAN baseline)",
    "random": "random map",
    "box_prior": "average-box prior",
}
METRIC_LABELS = {
    "pointing_game": "pointing game",
    "iou_otsu": "IoU (Otsu)",
    "relevance_mass": "relevance mass",
    "relevance_rank": "relevance rank",
    "auroc": "pixel AUROC",
    "auprc": "pixel AUPRC",
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
    "noise_stability": "noise stability",
    "recon_mse": "reconstruction MSE",
    "counterfactual_flip": "counterfactual flip rate",
    "counterfactual_similarity": "counterfactual similarity",
}
LOCALISATION_METRICS = ("pointing_game", "iou_otsu", "relevance_mass", "relevance_rank", "auroc", "auprc")
OTHER_METRICS = (
    "deletion_auc",
    "insertion_auc",
    "noise_stability",
    "recon_mse",
    "counterfactual_flip",
    "counterfactual_similarity",
)
METHOD_ORDER = ("gradcam", "ig", "smoothgrad", "occlusion", "medxgan", "latent_ig",
                "counterfactual_ig", "random", "box_prior")
FLOORS = ("random", "box_prior")
SHUFFLED_SUFFIX = "_shuffled"
GAP_SUFFIX = "-shuffled_gap"


def method_label(m: str) -> str:
    """Human name of a method (unknown names are returned as given; escape before HTML)."""
    return METHOD_LABELS.get(m, m)


def metric_label(k: str) -> str:
    """Human name of a metric (unknown names are returned as given; escape before HTML)."""
    if k.endswith(SHUFFLED_SUFFIX) and k[: -len(SHUFFLED_SUFFIX)] in METRIC_LABELS:
        return METRIC_LABELS[k[: -len(SHUFFLED_SUFFIX)]] + " (shuffled boxes)"
    return METRIC_LABELS.get(k, k)


def order_methods(methods) -> list[str]:
    """Known methods in ``METHOD_ORDER`` with the floors last, then unknown ones sorted."""
    ms = set(methods)
    known = [m for m in METHOD_ORDER if m in ms]
    return known + sorted(ms - set(known))


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
