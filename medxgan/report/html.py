"""The evidence report: one self-contained HTML page per audit run.

``render_report(ReportInputs) -> str``. The page has inline CSS, PNG figures as ``data:``
URIs, inline SVG charts, **no scripts and no external references** (a Content-Security-
Policy meta tag forbids loading anything else). Every user-provided string (audit name,
run id, image ids, finding names, notes, config keys and values) is HTML-escaped by
``medxgan.report._html.esc``; ``://`` in text is written as ``&#58;//`` so that config URLs
show as text and the page holds no URL a browser or scanner could take for a resource.
Provenance, manifest and classifier dicts are rendered without any key that names a
credential and with the user:password part of URLs masked (``sanitise``).

The page answers first: one screen with the verdict (a headline about the classifier and three
answers: relies on the findings? shortcut suspected? which explanations to trust?), the
pre-specified acceptance criteria (PASS / FAIL with the deciding number) and one overview
figure; everything else follows as evidence: the numbers and sentences behind each answer,
cohort, classifier performance, per-method metrics with CIs,
own-vs-shuffled gaps, paired comparisons (each method vs the floors and vs Grad-CAM),
gallery (image with boxes + each method's overlay), medXGAN interpolation strips with f's
probability per frame, history trends with regressions, what the explanations can and
cannot show, provenance. Every section renders from whatever inputs are present: a
partial audit still gives a page.

Layout of the package: this module assembles the page and renders the run-level sections;
``_summary`` the first screen and the evidence section, ``_tables`` the method x metric
tables, ``_cases`` the gallery and strips, ``_html`` the
escaper and element helpers, ``_sanitise`` the credential scrubbing; the stylesheet and the
"what these explanations can and cannot show" prose are package data
(``medxgan/report/assets/report.css`` and ``limits.html``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from medxgan.catalogue import LOCALISATION_METRICS, metric_label
from medxgan.report._cases import gallery_section, strips_section
from medxgan.report._html import asset, esc, page, section, table
from medxgan.report._summary import criteria_section, evidence_section, overview_section, verdict_section
from medxgan.report._sanitise import SECRET_MARKERS, sanitise
from medxgan.report._tuning import tuning_section
from medxgan.report._tables import comparisons_section, gaps_section, method_cell, metrics_section, signed_cell
from medxgan.report._text import fmt
from medxgan.report.figures import trend_svg
from medxgan.report.criteria import CriterionResult
from medxgan.report.verdict import VERDICT_METRICS, Verdict, audit_verdict

HEADLINE_METRICS = ("pointing_game", "relevance_mass", "deletion_auc", "counterfactual_similarity")


@dataclass
class ReportInputs:
    """Everything the report shows; all but the names are optional.

    Attributes:
        audit: audit name.
        run_id: this run's id.
        time: the run's time (UTC).
        summary: ``method, metric, mean, ci_low, ci_high, n``.
        comparisons: ``method_a, method_b, metric, mean_diff, ci_low, ci_high, n``
            (method_a < method_b; gap rows with method_a == method_b).
        scores: long-form per-image scores (only used by the verdict's fallbacks).
        verdict: computed from summary/comparisons/scores/shortcut when None.
        shortcut: the shortcut finder's ``shortcut.json`` (``ShortcutFinding.summary()``);
            None when the run has none.
        criteria: the acceptance criteria judged on this run
            (``medxgan.report.criteria.evaluate_criteria``); None when the audit has none.
        manifest: cohort manifest (``counts``: images, positives, negatives, boxes,
            quarantined, by_split; ``source``; ``content_hash``).
        quarantine: [(reason, count)].
        classifier: ``auroc, accuracy, threshold, n`` and ``tp, fp, tn, fn`` (flat or under
            ``confusion``).
        provenance: nested dict (hashes, code version, library versions, seeds, config).
        gallery: [{image_id, label, image_png (bytes), boxes [(x0, y0, x1, y1)],
            overlays {method: (H, W) array}, note, findings (optional list of names)}].
        strips: [{image_id, strip_png (bytes), frame_probs [float]}].
        history: audit history (``HISTORY_SCHEMA``); rows of other audits are ignored.
        regressions: ``detect_regressions`` output against the previous run.
        previous_run_id: the run the regressions compare against.
        headline_metrics: metrics with a bar chart and a history trend.
    """

    audit: str = "audit"
    run_id: str = ""
    time: datetime | str | pd.Timestamp | None = None
    summary: pd.DataFrame | None = None
    comparisons: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None
    verdict: Verdict | None = None
    shortcut: Mapping[str, Any] | None = None
    criteria: Sequence[CriterionResult] | None = None
    tuning: Mapping[str, Any] | None = None
    manifest: Mapping[str, Any] | None = None
    quarantine: Sequence[tuple[str, int]] | None = None
    classifier: Mapping[str, Any] | None = None
    provenance: Mapping[str, Any] | None = None
    gallery: Sequence[Mapping[str, Any]] = field(default_factory=list)
    strips: Sequence[Mapping[str, Any]] = field(default_factory=list)
    history: pd.DataFrame | None = None
    regressions: pd.DataFrame | None = None
    previous_run_id: str | None = None
    headline_metrics: Sequence[str] = HEADLINE_METRICS


# --- run-level sections ---------------------------------------------------------------------


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.extend(_flatten(v, key))
        else:
            out.append((key, v))
    return out


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return fmt(v, 4)
    if isinstance(v, (list, tuple, dict)):
        try:
            return json.dumps(v, default=str)
        except (TypeError, ValueError):
            return str(v)
    return str(v)


def _kv_table(d: Mapping[str, Any], cls: str = "kv") -> str:
    rows = [f"<tr><th>{esc(k)}</th><td>{esc(_value_text(v))}</td></tr>" for k, v in _flatten(sanitise(d))]
    return table(rows, cls=cls) if rows else "<p>—</p>"


def _header(inp: ReportInputs) -> str:
    t = "—" if inp.time is None else pd.Timestamp(inp.time).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    prev = f" · previous run <code>{esc(inp.previous_run_id)}</code>" if inp.previous_run_id else ""
    return (
        f"<header><h1>Explanation audit: {esc(inp.audit)}</h1>"
        f'<p class="meta">run <code>{esc(inp.run_id or "—")}</code> · {esc(t)}{prev}</p></header>'
    )


def _num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        f = float(x)
    except (TypeError, ValueError):
        return esc(x)
    return "—" if math.isnan(f) else (str(int(f)) if f.is_integer() else fmt(f))


def _cohort_section(manifest: Mapping[str, Any] | None, quarantine: Sequence[tuple[str, int]] | None) -> str:
    if not manifest and not quarantine:
        return section("cohort", "Cohort", "<p>No cohort manifest was given.</p>")
    m = sanitise(dict(manifest or {}))
    c = dict(m.get("counts", {}))
    parts = []
    if c:
        pos, neg = c.get("positives"), c.get("negatives")
        prev = "—"
        try:
            if pos is not None and neg is not None and float(pos) + float(neg) > 0:
                prev = f"{100 * float(pos) / (float(pos) + float(neg)):.1f} %"
        except (TypeError, ValueError):
            pass
        rows = [
            ("images", c.get("images")),
            ("positives", pos),
            ("negatives", neg),
            ("boxes", c.get("boxes")),
            ("quarantined records", c.get("quarantined")),
        ]
        body = "".join(f"<tr><th>{esc(k)}</th><td class=\"num\">{_num(v)}</td></tr>" for k, v in rows if v is not None)
        body += f'<tr><th>prevalence (positives / labelled)</th><td class="num">{esc(prev)}</td></tr>'
        parts.append(table([body]))
        by_split = c.get("by_split")
        if isinstance(by_split, Mapping) and by_split:
            parts.append("<h3>By split</h3>" + _kv_table(by_split))
    extra = {k: v for k, v in m.items() if k != "counts"}
    if extra:
        parts.append("<h3>Source</h3>" + _kv_table(extra))
    if quarantine:
        rows = [f'<tr><td>{esc(r)}</td><td class="num">{_num(n)}</td></tr>' for r, n in quarantine]
        parts.append("<h3>Quarantine reasons</h3>" + table(rows, ["<th>reason</th>", "<th>records</th>"]))
    else:
        parts.append("<p>No input record was quarantined.</p>")
    return section("cohort", "Cohort", "".join(parts))


def _classifier_section(perf: Mapping[str, Any] | None) -> str:
    if not perf:
        return section("classifier", "Classifier performance", "<p>No classifier performance was given.</p>")
    p = sanitise(dict(perf))
    cm = dict(p.get("confusion", {}) or {})
    for k in ("tp", "fp", "tn", "fn"):
        if k in p and k not in cm:
            cm[k] = p[k]
    head = [("AUROC", p.get("auroc")), ("accuracy", p.get("accuracy")), ("decision threshold", p.get("threshold")), ("images", p.get("n"))]
    body = "".join(f'<tr><th>{esc(k)}</th><td class="num">{_num(v)}</td></tr>' for k, v in head if v is not None)
    out = table([body]) if body else ""
    if all(k in cm for k in ("tp", "fp", "tn", "fn")):
        tp, fp, tn, fn = (float(cm[k]) for k in ("tp", "fp", "tn", "fn"))
        sens = fmt(tp / (tp + fn)) if tp + fn else "—"
        spec = fmt(tn / (tn + fp)) if tn + fp else "—"
        out += (
            "<h3>Confusion at the threshold</h3><table><thead><tr><th></th><th>predicted positive</th><th>predicted negative</th></tr></thead>"
            f'<tbody><tr><th>positive</th><td class="num">{_num(cm["tp"])} (TP)</td><td class="num">{_num(cm["fn"])} (FN)</td></tr>'
            f'<tr><th>negative</th><td class="num">{_num(cm["fp"])} (FP)</td><td class="num">{_num(cm["tn"])} (TN)</td></tr></tbody></table>'
            f"<p>sensitivity {sens}, specificity {spec}</p>"
        )
    rest = {k: v for k, v in p.items() if k not in {"auroc", "accuracy", "threshold", "n", "confusion", "tp", "fp", "tn", "fn"}}
    if rest:
        out += _kv_table(rest)
    return section("classifier", "Classifier performance", out or "<p>—</p>")


#: the generator health numbers the report shows first, with what each says (docs/design.md,
#: "The medXGAN method": health checks of the generator families)
GENERATOR_HEALTH = (
    ("change_similarity", "mean pairwise cosine of the changes: low for image-specific changes"),
    ("change_similarity_boxes", "the same of the box masks (the reference)"),
    ("universal_flip", "real negatives f calls positive after adding the mean change: high for a universal pattern"),
    ("flip_rate", "counterfactuals f calls negative"),
    ("oracle_flip", "counterfactuals a second classifier also calls negative"),
    ("fidelity", "share of the change inside the own boxes"),
    ("fidelity_shuffled", "the same in another image's boxes (control)"),
    ("counterfactual_ncc", "NCC with the true change (phantoms)"),
    ("mask_dice", "Dice of the changed pixels with the true lesion's (phantoms)"),
    ("healthy_control", "in-fillings of random lesion-sized holes in negatives f calls positive: "
                        "near 0 for an in-filler that invents no findings"),
)


def _generator_section(p: Mapping[str, Any] | None) -> str:
    """The kept generator checkpoint's health on held-out validation images (``best.json``)."""
    gan = ((p or {}).get("stages") or {}).get("gan") or {}
    health = (gan.get("best") or {}).get("health") or {}
    if not health:
        return ""
    rows = [f'<tr><th>{esc(k)}</th><td class="num">{_num(health[k])}</td><td>{esc(what)}</td></tr>'
            for k, what in GENERATOR_HEALTH if k in health]
    family = ((p or {}).get("config") or {}).get("gan", {}).get("model", {}).get("family", "")
    intro = (f"<p>Generator family <code>{esc(family)}</code>, checkpoint step "
             f"{esc(gan['best'].get('step', '—'))}, on held-out validation positives (never the "
             "explained images). A universal pattern (high change similarity and universal flip) "
             "shows what f reacts to everywhere, not the lesion of an image.</p>")
    return section("generator", "Generator health", intro + table(rows))


def _history_section(inp: ReportInputs) -> str:
    title = "History"
    h = inp.history
    reg = inp.regressions
    parts = []
    if h is not None and len(h):
        h = h[h["audit"].astype(str) == str(inp.audit)]
    bad_pairs: set[tuple[str, str]] = set()  # (method, metric) that regressed
    if reg is not None and len(reg):
        bad = reg[reg["regression"].astype(bool)]
        bad_pairs = {(str(r.method), str(r.metric)) for r in bad.itertuples(index=False)}
        if bad.empty:
            parts.append(f"<p>No regression against the previous run{_prev(inp)}.</p>")
        else:
            rows = [
                f'<tr class="regression"><th>{method_cell(r.method)}</th><td>{esc(metric_label(r.metric))}</td>'
                f'<td class="num">{fmt(r.prev_mean)}</td><td class="num">{fmt(r.cur_mean)}</td>{signed_cell(r.diff, r.ci_low, r.ci_high)}</tr>'
                for r in bad.itertuples(index=False)
            ]
            head = [f"<th>{h}</th>" for h in ("method", "metric", "previous", "current", "change [95 % CI]")]
            parts.append(
                f'<p class="regression">REGRESSION: {len(bad)} metric(s) got worse than in the previous run{_prev(inp)} '
                "with a paired-bootstrap CI that excludes zero.</p>" + table(rows, head)
            )
    elif reg is not None:
        parts.append("<p>No images in common with the previous run: no regression test.</p>")
    if h is None or len(h) == 0:
        parts.append("<p>No earlier runs of this audit.</p>")
        return section("history", title, "".join(parts))
    charts = []
    extra = sorted({k for _, k in bad_pairs} - set(inp.headline_metrics))  # a regressed metric always gets its trend
    for k in list(inp.headline_metrics) + extra:
        hk = h[h["metric"] == k]
        if len(hk):
            flagged = {(str(inp.run_id), m) for m, kk in bad_pairs if kk == k}
            charts.append(trend_svg(hk, title=f"{metric_label(k)} over runs", flagged=flagged))
    parts.append('<div class="charts">' + "".join(charts) + "</div>" if charts else "<p>No headline metric in the history.</p>")
    runs = h.drop_duplicates("run_id").sort_values("time").tail(12)
    rows = [
        f"<tr><td><code>{esc(r.run_id)}</code></td><td>{esc(pd.Timestamp(r.time).strftime('%Y-%m-%d %H:%M'))}</td>"
        f"<td><code>{esc(str(r.classifier_hash)[:12])}</code></td><td><code>{esc(str(r.cohort_hash)[:12])}</code></td></tr>"
        for r in runs.itertuples(index=False)
    ]
    head = [f"<th>{h}</th>" for h in ("run", "time (UTC)", "classifier", "cohort")]
    parts.append("<h3>Runs</h3>" + table(rows, head))
    return section("history", title, "".join(parts))


def _prev(inp: ReportInputs) -> str:
    return f" (<code>{esc(inp.previous_run_id)}</code>)" if inp.previous_run_id else ""


def _provenance_section(p: Mapping[str, Any] | None) -> str:
    if not p:
        return section("provenance", "Provenance", "<p>No provenance was given.</p>")
    return section("provenance", "Provenance", _kv_table(p))


def verdict_of(inp: ReportInputs) -> Verdict | None:
    """The given verdict, else the one computed from the inputs' tables (None without a summary)."""
    if inp.verdict is not None:
        return inp.verdict
    if inp.summary is not None and len(inp.summary):
        return audit_verdict(inp.summary, inp.comparisons, inp.scores, inp.shortcut)
    return None


def render_report(inputs: ReportInputs) -> str:
    """Render the evidence report of one audit run.

    Args:
        inputs: a ``ReportInputs``; missing parts render as a short note.

    Returns: the whole HTML page (UTF-8 text, self-contained).
    """
    inp = inputs
    v = verdict_of(inp)
    loc_metrics = [k for k in inp.headline_metrics if k in LOCALISATION_METRICS] or list(VERDICT_METRICS)
    body = "".join(
        [
            _header(inp),
            '<div class="first-screen">',
            verdict_section(v),
            criteria_section(inp.criteria),
            overview_section(inp.summary),
            "</div>",
            evidence_section(v, inp.shortcut),
            _cohort_section(inp.manifest, inp.quarantine),
            _classifier_section(inp.classifier),
            _generator_section(inp.provenance),
            metrics_section(inp.summary, inp.headline_metrics),
            tuning_section(inp.tuning),
            gaps_section(inp.comparisons),
            comparisons_section(inp.comparisons, loc_metrics),
            gallery_section(inp.gallery),
            strips_section(inp.strips),
            _history_section(inp),
            section("limits", "What these explanations can and cannot show", "\n" + asset("limits.html")),
            _provenance_section(inp.provenance),
        ]
    )
    return page(f"Audit {inp.audit} · {inp.run_id}", body)


__all__ = ["HEADLINE_METRICS", "SECRET_MARKERS", "ReportInputs", "render_report", "sanitise", "verdict_of"]
