"""The tables and the index page of a multi-finding audit (``explain.findings`` with two or more
findings; docs/design.md, "Multi-finding audits").

Each finding is audited as a run of its own (its report, verdict, criteria, history); the
multi-finding run stacks their ``summary.parquet`` and ``comparisons.parquet`` with a leading
``finding`` column (:func:`stack_by_finding`) and renders one page with one verdict per finding
(:func:`render_findings_report`), linking to each finding's full report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from medxgan.report._html import asset, esc, page, section, table
from medxgan.report._text import fmt

__all__ = ["stack_by_finding", "render_findings_report"]


def stack_by_finding(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One table of per-finding tables of the same columns, ``finding`` (str) first, findings in
    the given order, each table's rows in their own order."""
    frames = [t.assign(finding=str(f))[["finding", *t.columns]] for f, t in tables.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"finding": []})


def _answers(answers: Mapping[str, Any] | None) -> str:
    cards = []
    for a in ((answers or {}).get("answers") or {}).values():
        cards.append(f'<div class="answer a-none"><h3>{esc(a.get("question", ""))}</h3>'
                     f'<p class="outcome">{esc(str(a.get("outcome", "")).upper())}</p>'
                     f'<p>{esc(a.get("sentence", ""))}</p></div>')
    return f'<div class="answers">{"".join(cards)}</div>' if cards else ""


def _metrics(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>No headline metrics.</p>"
    head = [f"<th>{esc(h)}</th>" for h in ("evidence", "metric", "mean", "95 % CI", "n")]
    body = [f"<tr><td>{esc(r.get('evidence'))}</td><td>{esc(r.get('metric'))}</td>"
            f'<td class="num">{esc(fmt(r.get("mean")))}</td>'
            f'<td class="num">[{esc(fmt(r.get("ci_low")))}, {esc(fmt(r.get("ci_high")))}]</td>'
            f'<td class="num">{esc(r.get("n") if r.get("n") is not None else "—")}</td></tr>'
            for r in rows]
    return table(body, head)


def _criteria(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    head = [f"<th>{esc(h)}</th>" for h in ("criterion", "outcome", "deciding number")]
    return table([f"<tr><td>{esc(c.get('name'))}</td><td>{esc(c.get('outcome'))}</td>"
                  f"<td>{esc(c.get('reason'))}</td></tr>" for c in rows], head)


def render_findings_report(audit: str, run_id: str, findings: Sequence[Mapping[str, Any]]) -> str:
    """The index page of a multi-finding audit.

    Args:
        audit: the audit's name.
        run_id: the multi-finding run's id.
        findings: per finding, in order: ``finding``, ``run_id`` (the finding's own run,
            a sibling folder under ``runs/``), ``verdict`` (headline), ``answers``
            (``Verdict.to_dict()``), ``criteria`` (``CriterionResult.to_dict()`` rows),
            ``headline_metrics`` rows, ``cohort`` counts (positives, negatives, unknown, boxes).

    Returns: the whole HTML page (UTF-8 text, self-contained; links are relative).
    """
    parts = [f'<header><h1>Audit {esc(audit)}: {len(findings)} findings</h1>'
             f'<p class="meta">Run {esc(run_id)}. Each finding was audited on its own: the '
             "classifier's output of that name, explained and scored against the cohort's boxes "
             "of that finding only. Images positive for another finding only are left out of "
             "that finding's audit (label unknown there).</p></header>"]
    for i, f in enumerate(findings):
        c = f.get("cohort") or {}
        counts = (f"{c.get('positives', '—')} positives ({c.get('images_with_boxes', '—')} with "
                  f"boxes of this finding), {c.get('negatives', '—')} negatives, "
                  f"{c.get('unknown', '—')} unknown for this finding")
        link = f"../../{f['run_id']}/report/index.html"
        body = (f'<div class="verdict v-none"><p class="headline">{esc(f.get("verdict", ""))}</p></div>'
                + _answers(f.get("answers")) + _criteria(f.get("criteria") or [])
                + f"<p>Cohort view: {esc(counts)}. Full report: "
                  f'<a href="{esc(link)}">{esc(f["run_id"])}</a>.</p>'
                + _metrics(f.get("headline_metrics") or []))
        parts.append(section(f"finding-{i}", f"Finding: {f['finding']}", body))
    parts.append(section("limits", "What these explanations can and cannot show",
                         "\n" + asset("limits.html")))
    return page(f"Audit {audit} · {run_id}", "".join(parts))
