"""The method x metric tables of the report: metrics per method, own-vs-shuffled gaps and
paired comparisons, all built by :func:`method_table` (one row per method, one column per
metric or (metric, reference) pair). Names, labels, order and floors come from
``medxgan.catalogue``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from medxgan.catalogue import (
    FLOORS,
    GAP_SUFFIX,
    GRADIENT_BASELINES,
    INTERVENTION,
    INTERVENTION_METRICS,
    LOCALISATION_METRICS,
    METRICS,
    SHUFFLED_SUFFIX,
    method_label,
    metric_label,
    order_methods,
)
from medxgan.report._html import NA_CELL, esc, section, table
from medxgan.report._text import fmt_ci
from medxgan.report.figures import bar_svg

# Metrics outside the localisation table, in catalogue order (unknown ones follow, sorted); the
# intervention evidence (method INTERVENTION) is not an explanation: the evidence section shows it.
OTHER_METRICS = tuple(k for k in METRICS if k not in LOCALISATION_METRICS and k not in INTERVENTION_METRICS)
# References of the paired-comparisons table: every floor, then the first gradient baseline.
COMPARISON_REFERENCES = (*FLOORS, *GRADIENT_BASELINES[:1])


def method_cell(m: str) -> str:
    """A method's label and name (``<code>``), tagged "floor" for the catalogue's floors."""
    lab = method_label(m)
    name = f"{esc(lab)} <code>{esc(m)}</code>" if lab != m else f"<code>{esc(m)}</code>"
    return name + (' <span class="floor">floor</span>' if m in FLOORS else "")


def signed_cell(mean: float, lo: float, hi: float, n: int | None = None) -> str:
    """A signed ``mean [lo, hi]`` cell, green when the CI is above zero, red when below."""
    cls = "pos" if lo > 0 else ("neg" if hi < 0 else "")
    t = f' title="n = {esc(n)}"' if n is not None else ""
    return f'<td class="num {cls}"{t}>{esc(fmt_ci(mean, lo, hi, signed=True))}</td>'


def method_table(methods: Sequence[str], columns: Sequence[tuple[str, Any]], cell: Callable[[str, Any], str]) -> str:
    """The one method x metric table builder.

    Args:
        methods: row order.
        columns: ``(header_html, key)`` per column; ``header_html`` is the ready ``<th>``.
        cell: ``cell(method, key) -> '<td ...>'`` (ready HTML).
    """
    rows = [f"<tr><th>{method_cell(m)}</th>{''.join(cell(m, k) for _, k in columns)}</tr>" for m in methods]
    return table(rows, ["<th>method</th>", *(h for h, _ in columns)])


def _summary_table(summary: pd.DataFrame, methods: list[str], metrics: list[str]) -> str:
    idx = {(r.method, r.metric): r for r in summary.itertuples(index=False)}

    def cell(m: str, k: str) -> str:
        r = idx.get((m, k))
        if r is None:
            return NA_CELL
        return f'<td class="num" title="n = {esc(r.n)}">{esc(fmt_ci(r.mean, r.ci_low, r.ci_high))}</td>'

    cols = [(f"<th>{esc(metric_label(k))}<br><code>{esc(k)}</code></th>", k) for k in metrics]
    return method_table(methods, cols, cell)


def metrics_section(summary: pd.DataFrame | None, headline: Sequence[str]) -> str:
    """Per-method metric tables (localisation, other, shuffled control) and headline bar charts
    (explanation methods only: the intervention rows are shown with the verdict's evidence)."""
    if summary is not None:
        summary = summary[summary["method"].astype(str) != INTERVENTION]
    if summary is None or summary.empty:
        return section("metrics", "Metrics per method", "<p>No summary table was given.</p>")
    methods = order_methods(summary["method"].astype(str).unique())
    present = set(summary["metric"].astype(str))
    own = [k for k in present if not k.endswith(SHUFFLED_SUFFIX)]
    loc = [k for k in LOCALISATION_METRICS if k in present]
    other = [k for k in OTHER_METRICS if k in present] + sorted(set(own) - set(LOCALISATION_METRICS) - set(OTHER_METRICS))
    shuffled = sorted(k for k in present if k.endswith(SHUFFLED_SUFFIX))

    def having(metrics: list[str]) -> list[str]:
        return [m for m in methods if summary[(summary["method"] == m) & summary["metric"].isin(metrics)].shape[0]]

    out = ["<p>Mean over images with its 95 % bootstrap CI; hover a cell for n.</p>"]
    if loc:
        out.append("<h3>Localisation (against each image's own boxes)</h3>" + _summary_table(summary, methods, loc))
    if other:
        out.append("<h3>Faithfulness, robustness and medXGAN</h3>" + _summary_table(summary, having(other), other))
    if shuffled:
        out.append(
            "<h3>Shuffled-box control (scored against another positive's boxes)</h3>"
            + _summary_table(summary, having(shuffled), shuffled)
        )
    charts = []
    for k in headline:
        s = summary[summary["metric"] == k]
        if not s.empty:
            s = s.set_index("method").loc[[m for m in methods if m in set(s["method"])]].reset_index()
            charts.append(bar_svg(s[["method", "mean", "ci_low", "ci_high"]], title=f"{metric_label(k)} (mean, 95 % CI)"))
    if charts:
        out.append('<div class="charts">' + "".join(charts) + "</div>")
    return section("metrics", "Metrics per method", "".join(out))


_GAPS_INTRO = (
    "<p>Each map scored against its own image's boxes minus the same map scored against another positive "
    "image's boxes (paired over images, 95 % bootstrap CI). A map that marks <em>this</em> image's finding has a "
    "gap above zero (green); a map that marks where findings usually are has a gap near zero.</p>"
)


def gaps_section(comparisons: pd.DataFrame | None) -> str:
    """Own-boxes minus shuffled-boxes gap per method and metric (``<metric>-shuffled_gap`` rows)."""
    title = "Own boxes vs shuffled boxes (image specificity)"
    if comparisons is None or comparisons.empty:
        return section("gaps", title, _GAPS_INTRO + "<p>No comparisons table was given.</p>")
    c = comparisons
    g = c[(c["method_a"] == c["method_b"]) & c["metric"].astype(str).str.endswith(GAP_SUFFIX) & (c["method_a"] != INTERVENTION)]
    if g.empty:
        return section("gaps", title, _GAPS_INTRO + "<p>No shuffled-box control was scored.</p>")
    g = g.assign(base=g["metric"].str[: -len(GAP_SUFFIX)])
    bases = set(g["base"])
    metrics = [k for k in LOCALISATION_METRICS if k in bases] + sorted(bases - set(LOCALISATION_METRICS))
    idx = {(r.method_a, r.base): r for r in g.itertuples(index=False)}

    def cell(m: str, k: str) -> str:
        r = idx.get((m, k))
        return NA_CELL if r is None or pd.isna(r.mean_diff) else signed_cell(r.mean_diff, r.ci_low, r.ci_high, r.n)

    cols = [(f"<th>{esc(metric_label(k))}</th>", k) for k in metrics]
    return section("gaps", title, _GAPS_INTRO + method_table(order_methods(g["method_a"].astype(str).unique()), cols, cell))


def paired(comparisons: pd.DataFrame, a: str, b: str, metric: str) -> tuple[float, float, float, int] | None:
    """a - b from a table that stores each pair once (either order)."""
    c = comparisons
    r = c[(c["method_a"] == a) & (c["method_b"] == b) & (c["metric"] == metric)]
    if not r.empty:
        r = r.iloc[0]
        return float(r["mean_diff"]), float(r["ci_low"]), float(r["ci_high"]), int(r["n"])
    r = c[(c["method_a"] == b) & (c["method_b"] == a) & (c["metric"] == metric)]
    if not r.empty:
        r = r.iloc[0]
        return -float(r["mean_diff"]), -float(r["ci_high"]), -float(r["ci_low"]), int(r["n"])
    return None


_COMPARISONS_INTRO = (
    "<p>Mean per-image difference (method minus reference) over the images both scored, paired bootstrap 95 % CI. "
    "Green: the method is higher with a CI that excludes zero; red: lower.</p>"
)


def comparisons_section(comparisons: pd.DataFrame | None, metrics: Sequence[str]) -> str:
    """Each non-floor method minus each reference (floors, Grad-CAM) on ``metrics``."""
    title = "Paired comparisons"
    if comparisons is None or comparisons.empty:
        return section("comparisons", title, "<p>No comparisons table was given.</p>")
    c = comparisons
    pairs = c[(c["method_a"] != c["method_b"]) & (c["method_a"] != INTERVENTION) & (c["method_b"] != INTERVENTION)]
    methods = order_methods(set(pairs["method_a"].astype(str)) | set(pairs["method_b"].astype(str)))
    refs = [r for r in COMPARISON_REFERENCES if r in methods]
    mets = [k for k in metrics if k in set(pairs["metric"])]
    if not refs or not mets:
        return section("comparisons", title, "<p>No comparison against the floors or Grad-CAM.</p>")

    def cell(m: str, kr: tuple[str, str]) -> str:
        k, r = kr
        d = None if r == m else paired(pairs, m, r, k)
        return NA_CELL if d is None or math.isnan(d[0]) else signed_cell(*d)

    cols = [(f"<th>{esc(metric_label(k))}<br>vs {esc(method_label(r))}</th>", (k, r)) for k in mets for r in refs]
    rows = [m for m in methods if m not in FLOORS]
    return section("comparisons", title, _COMPARISONS_INTRO + method_table(rows, cols, cell))


__all__ = [
    "COMPARISON_REFERENCES",
    "OTHER_METRICS",
    "comparisons_section",
    "gaps_section",
    "method_cell",
    "method_table",
    "metrics_section",
    "paired",
    "signed_cell",
]
