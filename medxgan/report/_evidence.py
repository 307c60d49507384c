"""Lookups into one audit's tables with the verdict's conventions, and rule 1 of the verdict
(does one method's map localise?), shared by ``verdict``, ``answers`` and ``criteria``.

``Evidence(summary, comparisons, scores, seed)``: ``stat(method, metric)`` reads a summary row,
``gap(method, metric)`` the ``<metric>-shuffled_gap`` comparison row (bootstrapped from the
long-form scores when the row is missing), ``judge(method, metrics, floors)`` applies rule 1 of
``medxgan.report.verdict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from medxgan.catalogue import GAP_SUFFIX, SHUFFLED_SUFFIX, method_label, metric_label
from medxgan.report._text import bootstrap_mean, fmt_ci

Stat = tuple[float, float, float, int]  # mean, ci_low, ci_high, n
_Stat = Stat


class Evidence:
    """Lookups into summary / comparisons / scores with the verdict's conventions."""

    def __init__(self, summary: pd.DataFrame, comparisons: pd.DataFrame | None, scores: pd.DataFrame | None, seed: int):
        self.summary = summary if summary is not None else pd.DataFrame(columns=["method", "metric", "mean", "ci_low", "ci_high", "n"])
        self.comparisons = comparisons
        self.scores = scores
        self.seed = seed
        self.methods = set(self.summary["method"]) if len(self.summary) else set()

    def stat(self, method: str, metric: str) -> _Stat | None:
        s = self.summary
        r = s[(s["method"] == method) & (s["metric"] == metric)]
        if r.empty or pd.isna(r["mean"].iloc[0]):
            return None
        r = r.iloc[0]
        return float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]), int(r["n"]) if not pd.isna(r["n"]) else 0

    def gap(self, method: str, metric: str) -> _Stat | None:
        c = self.comparisons
        if c is not None and len(c):
            r = c[(c["method_a"] == method) & (c["method_b"] == method) & (c["metric"] == metric + GAP_SUFFIX)]
            if not r.empty and not pd.isna(r["mean_diff"].iloc[0]):
                r = r.iloc[0]
                return float(r["mean_diff"]), float(r["ci_low"]), float(r["ci_high"]), int(r["n"])
        if self.scores is not None and len(self.scores):
            sc = self.scores[self.scores["method"] == method]
            own = sc[sc["metric"] == metric].set_index("image_id")["value"]
            shuf = sc[sc["metric"] == metric + SHUFFLED_SUFFIX].set_index("image_id")["value"]
            both = pd.concat([own.rename("own"), shuf.rename("shuf")], axis=1, join="inner").dropna()
            if len(both):
                return bootstrap_mean((both["own"] - both["shuf"]).to_numpy(), seed=self.seed)
        return None


def beats(m: _Stat | None, f: _Stat | None) -> bool | None:
    """Non-overlapping CIs with m above f; None when either is missing."""
    if m is None or f is None:
        return None
    return m[1] > f[2]


def judge(ev: Evidence, method: str, metrics: Sequence[str], floors: Sequence[str]) -> tuple[bool | None, list[str]]:
    """Rule 1 for one method: (localises?, one evidence sentence per metric)."""
    sentences, ok = [], []
    present_floors = [f for f in floors if f in ev.methods]
    for k in metrics:
        s = ev.stat(method, k)
        if s is None:
            ok.append(None)
            continue
        parts = []
        above_floor = []
        for f in present_floors:
            fs = ev.stat(f, k)
            above_floor.append(beats(s, fs))
            if fs is not None:
                parts.append(f"{method_label(f)} {fmt_ci(*fs[:3])}")
        g = ev.gap(method, k)
        gap_ok = None if g is None else g[1] > 0
        above = None if not above_floor or any(b is None for b in above_floor) else all(above_floor)
        if above is None or gap_ok is None:
            ok.append(None if above is not False and gap_ok is not False else False)
        else:
            ok.append(above and gap_ok)
        floor_txt = " vs " + " and ".join(parts) if parts else " (no floor to compare with)"
        verdict_txt = (
            "above every floor" if above else ("not above every floor" if above is False else "floors not comparable")
        )
        below = [f for f in present_floors if (fs := ev.stat(f, k)) is not None and s[0] < fs[0]]
        if below:
            verdict_txt += ", its mean below the " + " and ".join(method_label(f) for f in below)
        gap_txt = (
            "no shuffled-box control"
            if g is None
            else f"own - shuffled {fmt_ci(*g[:3], signed=True)} ("
            + ("image-specific" if gap_ok else "not distinguishable from another image's boxes")
            + ")"
        )
        sentences.append(
            f"{method_label(method)} {metric_label(k)} {fmt_ci(*s[:3])} (n={s[3]}){floor_txt}: {verdict_txt}; {gap_txt}."
        )
    if any(o is False for o in ok):
        return False, sentences
    if not ok or any(o is None for o in ok):
        return None, sentences
    return True, sentences


__all__ = ["Evidence", "Stat", "beats", "judge"]
