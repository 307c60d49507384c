"""The evidence report: one self-contained HTML page per audit run.

``render_report(ReportInputs) -> str``. The page has inline CSS, PNG figures as ``data:``
URIs, inline SVG charts, **no scripts and no external references** (a Content-Security-
Policy meta tag forbids loading anything else). Every user-provided string (audit name,
run id, image ids, finding names, notes, config keys and values) is HTML-escaped; ``://``
in text is written as ``&#58;//`` so that config URLs show as text and the page holds no
URL a browser or scanner could take for a resource. Provenance, manifest and classifier
dicts are rendered without any key that names a credential (``secret``, ``password``,
``token``, ``key_id``, ``credential``, ``*_key``, ...; ``sanitise``) and with the
user:password part of URLs masked.

Sections: header, verdict, cohort, classifier performance, per-method metrics with CIs,
own-vs-shuffled gaps, paired comparisons (each method vs the floors and vs Grad-CAM),
gallery (image with boxes + each method's overlay), medXGAN interpolation strips with f's
probability per frame, history trends with regressions, what the explanations can and
cannot show, provenance. Every section renders from whatever inputs are present: a
partial audit still gives a page.
"""

from __future__ import annotations

import base64
import html as _html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from medxgan.report._text import (
    FLOORS,
    GAP_SUFFIX,
    LOCALISATION_METRICS,
    OTHER_METRICS,
    SHUFFLED_SUFFIX,
    fmt,
    fmt_ci,
    method_label,
    metric_label,
    order_methods,
)
from medxgan.report.figures import bar_svg, decode_png, image_with_boxes_png, overlay_png, trend_svg
from medxgan.report.verdict import Verdict, audit_verdict

HEADLINE_METRICS = ("pointing_game", "relevance_mass", "deletion_auc", "counterfactual_similarity")
SECRET_MARKERS = (
    "secret", "password", "passwd", "passphrase", "token", "key_id", "credential", "access_key", "private_key",
    "api_key", "authorization", "cookie",
)
_URL_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.\-]*://)[^/@\s]+@")


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
        verdict: computed from summary/comparisons/scores when None.
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


# --- escaping and sanitising -------------------------------------------------------------


def _e(x: Any) -> str:
    """HTML-escape any value as text; '://' becomes '&#58;//' (no live-looking URLs)."""
    return _html.escape(str(x), quote=True).replace("://", "&#58;//")


def _is_secret(key: Any) -> bool:
    """A key that names a credential: contains a ``SECRET_MARKERS`` word, or is ``key`` /
    ends in ``_key`` / ``-key`` (e.g. ``MEDXGAN_S3_KEY``, an access key id)."""
    k = str(key).lower()
    return any(m in k for m in SECRET_MARKERS) or k == "key" or k.endswith(("_key", "-key"))


def sanitise(obj: Any) -> Any:
    """Copy of a nested dict/list without credential keys and with URL passwords masked."""
    if isinstance(obj, Mapping):
        return {k: sanitise(v) for k, v in obj.items() if not _is_secret(k)}
    if isinstance(obj, (list, tuple)):
        return [sanitise(v) for v in obj]
    if isinstance(obj, str):
        return _URL_USERINFO.sub(r"\1***@", obj)
    return obj


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
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_value_text(v))}</td></tr>" for k, v in _flatten(sanitise(d)))
    return f'<table class="{cls}"><tbody>{rows}</tbody></table>' if rows else "<p>—</p>"


def _png_img(data: bytes, alt: str, cls: str = "") -> str:
    b64 = base64.b64encode(data).decode("ascii")
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _method_cell(m: str) -> str:
    lab = method_label(m)
    name = f"{_e(lab)} <code>{_e(m)}</code>" if lab != m else f"<code>{_e(m)}</code>"
    return name + (' <span class="floor">floor</span>' if m in FLOORS else "")


def _section(id_: str, title: str, body: str) -> str:
    return f'<section id="{id_}"><h2>{_e(title)}</h2>{body}</section>'


# --- sections ------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1b1b1b;background:#fff}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
header{border-bottom:2px solid #333;margin-bottom:12px}
h1{font-size:1.6em;margin:8px 0 4px} h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:28px}
h3{font-size:1em;margin:14px 0 6px}
.meta{color:#555;font-size:.9em;margin:0 0 8px}
table{border-collapse:collapse;font-size:.85em;margin:6px 0 10px}
th,td{border:1px solid #d4d4d4;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv td{word-break:break-all;max-width:760px}
code{font-size:.85em;color:#555}
.floor{font-size:.7em;background:#e4e4e4;border-radius:3px;padding:0 4px;color:#444}
.verdict{border-radius:6px;padding:12px 16px;margin:8px 0;border:2px solid}
.verdict p.headline{font-size:1.25em;font-weight:bold;margin:2px 0 8px}
.v-good{background:#eaf7ee;border-color:#2a9d4b} .v-bad{background:#fdecec;border-color:#c0392b}
.v-none{background:#f5f5f5;border-color:#888}
.flag{display:inline-block;font-family:monospace;font-size:.8em;background:#fff;border:1px solid #999;border-radius:3px;padding:0 5px;margin:0 4px 4px 0}
.pos{background:#e3f4e8} .neg{background:#fbe3e3}
.gallery{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0 6px 8px 0;display:inline-block;vertical-align:top;text-align:center}
figcaption{font-size:.75em;color:#333;max-width:180px;word-break:break-all}
.case{border:1px solid #ddd;border-radius:4px;padding:6px;margin:8px 0}
.case h3{margin:0 0 4px;font-size:.95em}
img{image-rendering:pixelated}
img.strip{max-width:100%;height:auto}
.regression{color:#b00;font-weight:bold}
.charts svg{margin:4px 12px 8px 0;vertical-align:top}
.notes li{margin-bottom:5px}
"""


def _header(inp: ReportInputs) -> str:
    t = "—" if inp.time is None else pd.Timestamp(inp.time).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    prev = f" · previous run <code>{_e(inp.previous_run_id)}</code>" if inp.previous_run_id else ""
    return (
        f"<header><h1>Explanation audit: {_e(inp.audit)}</h1>"
        f'<p class="meta">run <code>{_e(inp.run_id or "—")}</code> · {_e(t)}{prev}</p></header>'
    )


def _verdict_section(v: Verdict | None) -> str:
    if v is None:
        return _section("verdict", "Verdict", '<div class="verdict v-none"><p class="headline">No verdict: no summary table.</p></div>')
    cls = {True: "v-good", False: "v-bad"}.get(v.localises, "v-none")
    flags = "".join(f'<span class="flag">{_e(f)}</span>' for f in v.flags)
    items = "".join(f"<li>{_e(s)}</li>" for s in v.findings)
    body = (
        f'<div class="verdict {cls}"><p class="headline">{_e(v.headline)}</p>'
        f"<div>{flags}</div>" + (f"<ul>{items}</ul>" if items else "") + "</div>"
    )
    return _section("verdict", "Verdict", body)


def _num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        f = float(x)
    except (TypeError, ValueError):
        return _e(x)
    return "—" if math.isnan(f) else (str(int(f)) if f.is_integer() else fmt(f))


def _cohort_section(manifest: Mapping[str, Any] | None, quarantine: Sequence[tuple[str, int]] | None) -> str:
    if not manifest and not quarantine:
        return _section("cohort", "Cohort", "<p>No cohort manifest was given.</p>")
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
        body = "".join(f"<tr><th>{_e(k)}</th><td class=\"num\">{_num(v)}</td></tr>" for k, v in rows if v is not None)
        body += f'<tr><th>prevalence (positives / labelled)</th><td class="num">{_e(prev)}</td></tr>'
        parts.append(f"<table><tbody>{body}</tbody></table>")
        by_split = c.get("by_split")
        if isinstance(by_split, Mapping) and by_split:
            parts.append("<h3>By split</h3>" + _kv_table(by_split))
    extra = {k: v for k, v in m.items() if k != "counts"}
    if extra:
        parts.append("<h3>Source</h3>" + _kv_table(extra))
    if quarantine:
        rows = "".join(f'<tr><td>{_e(r)}</td><td class="num">{_num(n)}</td></tr>' for r, n in quarantine)
        parts.append(f"<h3>Quarantine reasons</h3><table><thead><tr><th>reason</th><th>records</th></tr></thead><tbody>{rows}</tbody></table>")
    else:
        parts.append("<p>No input record was quarantined.</p>")
    return _section("cohort", "Cohort", "".join(parts))


def _classifier_section(perf: Mapping[str, Any] | None) -> str:
    if not perf:
        return _section("classifier", "Classifier performance", "<p>No classifier performance was given.</p>")
    p = sanitise(dict(perf))
    cm = dict(p.get("confusion", {}) or {})
    for k in ("tp", "fp", "tn", "fn"):
        if k in p and k not in cm:
            cm[k] = p[k]
    head = [("AUROC", p.get("auroc")), ("accuracy", p.get("accuracy")), ("decision threshold", p.get("threshold")), ("images", p.get("n"))]
    body = "".join(f'<tr><th>{_e(k)}</th><td class="num">{_num(v)}</td></tr>' for k, v in head if v is not None)
    out = f"<table><tbody>{body}</tbody></table>" if body else ""
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
    return _section("classifier", "Classifier performance", out or "<p>—</p>")


def _metric_table(summary: pd.DataFrame, methods: list[str], metrics: list[str]) -> str:
    idx = {(r.method, r.metric): r for r in summary.itertuples(index=False)}
    head = "".join(f"<th>{_e(metric_label(k))}<br><code>{_e(k)}</code></th>" for k in metrics)
    rows = []
    for m in methods:
        cells = []
        for k in metrics:
            r = idx.get((m, k))
            if r is None:
                cells.append('<td class="num">—</td>')
            else:
                cells.append(f'<td class="num" title="n = {_e(r.n)}">{_e(fmt_ci(r.mean, r.ci_low, r.ci_high))}</td>')
        rows.append(f"<tr><th>{_method_cell(m)}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _metrics_section(summary: pd.DataFrame | None, headline: Sequence[str]) -> str:
    if summary is None or summary.empty:
        return _section("metrics", "Metrics per method", "<p>No summary table was given.</p>")
    methods = order_methods(summary["method"].astype(str).unique())
    present = set(summary["metric"].astype(str))
    own = [k for k in present if not k.endswith(SHUFFLED_SUFFIX)]
    loc = [k for k in LOCALISATION_METRICS if k in present]
    other = [k for k in OTHER_METRICS if k in present] + sorted(set(own) - set(LOCALISATION_METRICS) - set(OTHER_METRICS))
    shuffled = sorted(k for k in present if k.endswith(SHUFFLED_SUFFIX))
    out = ["<p>Mean over images with its 95 % bootstrap CI; hover a cell for n.</p>"]
    if loc:
        out.append("<h3>Localisation (against each image's own boxes)</h3>" + _metric_table(summary, methods, loc))
    if other:
        ms = [m for m in methods if summary[(summary["method"] == m) & summary["metric"].isin(other)].shape[0]]
        out.append("<h3>Faithfulness, robustness and medXGAN</h3>" + _metric_table(summary, ms, other))
    if shuffled:
        ms = [m for m in methods if summary[(summary["method"] == m) & summary["metric"].isin(shuffled)].shape[0]]
        out.append("<h3>Shuffled-box control (scored against another positive's boxes)</h3>" + _metric_table(summary, ms, shuffled))
    charts = []
    for k in headline:
        s = summary[summary["metric"] == k]
        if not s.empty:
            s = s.set_index("method").loc[[m for m in methods if m in set(s["method"])]].reset_index()
            charts.append(bar_svg(s[["method", "mean", "ci_low", "ci_high"]], title=f"{metric_label(k)} (mean, 95 % CI)"))
    if charts:
        out.append('<div class="charts">' + "".join(charts) + "</div>")
    return _section("metrics", "Metrics per method", "".join(out))


def _signed_cell(mean: float, lo: float, hi: float, n: int | None = None) -> str:
    cls = "pos" if lo > 0 else ("neg" if hi < 0 else "")
    t = f' title="n = {_e(n)}"' if n is not None else ""
    return f'<td class="num {cls}"{t}>{_e(fmt_ci(mean, lo, hi, signed=True))}</td>'


def _gaps_section(comparisons: pd.DataFrame | None) -> str:
    title = "Own boxes vs shuffled boxes (image specificity)"
    expl = (
        "<p>Each map scored against its own image's boxes minus the same map scored against another positive "
        "image's boxes (paired over images, 95 % bootstrap CI). A map that marks <em>this</em> image's finding has a "
        "gap above zero (green); a map that marks where findings usually are has a gap near zero.</p>"
    )
    if comparisons is None or comparisons.empty:
        return _section("gaps", title, expl + "<p>No comparisons table was given.</p>")
    g = comparisons[(comparisons["method_a"] == comparisons["method_b"]) & comparisons["metric"].astype(str).str.endswith(GAP_SUFFIX)]
    if g.empty:
        return _section("gaps", title, expl + "<p>No shuffled-box control was scored.</p>")
    g = g.assign(base=g["metric"].str[: -len(GAP_SUFFIX)])
    metrics = [k for k in LOCALISATION_METRICS if k in set(g["base"])] + sorted(set(g["base"]) - set(LOCALISATION_METRICS))
    methods = order_methods(g["method_a"].astype(str).unique())
    idx = {(r.method_a, r.base): r for r in g.itertuples(index=False)}
    head = "".join(f"<th>{_e(metric_label(k))}</th>" for k in metrics)
    rows = []
    for m in methods:
        cells = []
        for k in metrics:
            r = idx.get((m, k))
            cells.append('<td class="num">—</td>' if r is None or pd.isna(r.mean_diff) else _signed_cell(r.mean_diff, r.ci_low, r.ci_high, r.n))
        rows.append(f"<tr><th>{_method_cell(m)}</th>{''.join(cells)}</tr>")
    return _section("gaps", title, expl + f"<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _paired(comparisons: pd.DataFrame, a: str, b: str, metric: str) -> tuple[float, float, float, int] | None:
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


def _comparisons_section(comparisons: pd.DataFrame | None, metrics: Sequence[str]) -> str:
    title = "Paired comparisons"
    if comparisons is None or comparisons.empty:
        return _section("comparisons", title, "<p>No comparisons table was given.</p>")
    pairs = comparisons[comparisons["method_a"] != comparisons["method_b"]]
    methods = order_methods(set(pairs["method_a"].astype(str)) | set(pairs["method_b"].astype(str)))
    refs = [r for r in ("random", "box_prior", "gradcam") if r in methods]
    mets = [k for k in metrics if k in set(pairs["metric"])]
    if not refs or not mets:
        return _section("comparisons", title, "<p>No comparison against the floors or Grad-CAM.</p>")
    head = "".join(f"<th>{_e(metric_label(k))}<br>vs {_e(method_label(r))}</th>" for k in mets for r in refs)
    rows = []
    for m in methods:
        if m in FLOORS:
            continue
        cells = []
        for k in mets:
            for r in refs:
                d = None if r == m else _paired(pairs, m, r, k)
                cells.append('<td class="num">—</td>' if d is None or math.isnan(d[0]) else _signed_cell(*d))
        rows.append(f"<tr><th>{_method_cell(m)}</th>{''.join(cells)}</tr>")
    expl = (
        "<p>Mean per-image difference (method minus reference) over the images both scored, paired bootstrap 95 % CI. "
        "Green: the method is higher with a CI that excludes zero; red: lower.</p>"
    )
    return _section("comparisons", title, expl + f"<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _box_coords(b: Any) -> tuple[tuple[float, float, float, float], str | None]:
    if isinstance(b, Mapping):
        return (float(b["x0"]), float(b["y0"]), float(b["x1"]), float(b["y1"])), b.get("finding")
    t = tuple(b)
    return (float(t[0]), float(t[1]), float(t[2]), float(t[3])), (str(t[4]) if len(t) > 4 else None)


def _gallery_case(item: Mapping[str, Any]) -> str:
    iid = str(item.get("image_id", "?"))
    boxes, names = [], []
    for b in item.get("boxes") or ():
        xy, name = _box_coords(b)
        boxes.append(xy)
        if name:
            names.append(name)
    names += [str(f) for f in item.get("findings") or ()]
    title = f"<code>{_e(iid)}</code> · label {_e(item.get('label', '—'))}"
    if item.get("note"):
        title += f" · {_e(item['note'])}"
    if names:
        title += " · findings: " + ", ".join(_e(n) for n in dict.fromkeys(names))
    figs = []
    try:
        img = decode_png(item["image_png"])
    except Exception as exc:  # noqa: BLE001 - a broken image must not break the report
        return f'<div class="case"><h3>{title}</h3><p>image not readable ({_e(type(exc).__name__)})</p></div>'
    figs.append(f"<figure>{_png_img(image_with_boxes_png(img, boxes), f'{iid} with boxes')}<figcaption>image and boxes</figcaption></figure>")
    overlays = dict(item.get("overlays") or {})
    for m in order_methods(overlays):
        try:
            png = overlay_png(img, np.asarray(overlays[m]), boxes)
        except Exception as exc:  # noqa: BLE001
            figs.append(f"<figure><p>{_e(m)}: no overlay ({_e(type(exc).__name__)})</p></figure>")
            continue
        figs.append(f"<figure>{_png_img(png, f'{iid} {m}')}<figcaption>{_e(method_label(m))}</figcaption></figure>")
    return f'<div class="case"><h3>{title}</h3><div class="gallery">{"".join(figs)}</div></div>'


def _gallery_section(items: Sequence[Mapping[str, Any]]) -> str:
    title = "Gallery: best and worst cases"
    if not items:
        return _section("gallery", title, "<p>No gallery images were given.</p>")
    expl = "<p>Each case: the image with its annotated boxes (cyan), then each method's map over it (bright = relevant).</p>"
    return _section("gallery", title, expl + "".join(_gallery_case(it) for it in items))


def _strips_section(strips: Sequence[Mapping[str, Any]]) -> str:
    title = "medXGAN interpolation"
    if not strips:
        return _section("strips", title, "<p>No interpolation strips were given.</p>")
    expl = (
        "<p>Frames G(z_a, &alpha;&middot;z_p) from the negative counterpart (&alpha; = 0, left) to the "
        "reconstruction of the image (&alpha; = 1, right), with the classifier's probability of the positive class "
        "for each frame.</p>"
    )
    parts = [expl]
    for s in strips:
        iid = str(s.get("image_id", "?"))
        probs = [float(p) for p in s.get("frame_probs") or ()]
        img = _png_img(s["strip_png"], f"{iid} interpolation", "strip") if s.get("strip_png") else "<p>no strip image</p>"
        tab = ""
        if probs:
            alphas = np.linspace(0, 1, len(probs)) if len(probs) > 1 else np.array([1.0])
            tab = (
                "<table><tbody><tr><th>&alpha;</th>"
                + "".join(f'<td class="num">{a:.2f}</td>' for a in alphas)
                + "</tr><tr><th>p(positive)</th>"
                + "".join(f'<td class="num">{fmt(p)}</td>' for p in probs)
                + "</tr></tbody></table>"
            )
        parts.append(f'<div class="case"><h3><code>{_e(iid)}</code></h3>{img}{tab}</div>')
    return _section("strips", title, "".join(parts))


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
            rows = "".join(
                f'<tr class="regression"><th>{_method_cell(r.method)}</th><td>{_e(metric_label(r.metric))}</td>'
                f'<td class="num">{fmt(r.prev_mean)}</td><td class="num">{fmt(r.cur_mean)}</td>{_signed_cell(r.diff, r.ci_low, r.ci_high)}</tr>'
                for r in bad.itertuples(index=False)
            )
            parts.append(
                f'<p class="regression">REGRESSION: {len(bad)} metric(s) got worse than in the previous run{_prev(inp)} '
                "with a paired-bootstrap CI that excludes zero.</p>"
                "<table><thead><tr><th>method</th><th>metric</th><th>previous</th><th>current</th><th>change [95 % CI]</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>"
            )
    elif reg is not None:
        parts.append("<p>No images in common with the previous run: no regression test.</p>")
    if h is None or len(h) == 0:
        parts.append("<p>No earlier runs of this audit.</p>")
        return _section("history", title, "".join(parts))
    charts = []
    extra = sorted({k for _, k in bad_pairs} - set(inp.headline_metrics))  # a regressed metric always gets its trend
    for k in list(inp.headline_metrics) + extra:
        hk = h[h["metric"] == k]
        if len(hk):
            flagged = {(str(inp.run_id), m) for m, kk in bad_pairs if kk == k}
            charts.append(trend_svg(hk, title=f"{metric_label(k)} over runs", flagged=flagged))
    parts.append('<div class="charts">' + "".join(charts) + "</div>" if charts else "<p>No headline metric in the history.</p>")
    runs = h.drop_duplicates("run_id").sort_values("time").tail(12)
    rows = "".join(
        f"<tr><td><code>{_e(r.run_id)}</code></td><td>{_e(pd.Timestamp(r.time).strftime('%Y-%m-%d %H:%M'))}</td>"
        f"<td><code>{_e(str(r.classifier_hash)[:12])}</code></td><td><code>{_e(str(r.cohort_hash)[:12])}</code></td></tr>"
        for r in runs.itertuples(index=False)
    )
    parts.append(
        "<h3>Runs</h3><table><thead><tr><th>run</th><th>time (UTC)</th><th>classifier</th><th>cohort</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    return _section("history", title, "".join(parts))


def _prev(inp: ReportInputs) -> str:
    return f" (<code>{_e(inp.previous_run_id)}</code>)" if inp.previous_run_id else ""


_LIMITS = """
<ul class="notes">
<li><b>An explanation map shows what moves the classifier, not what is wrong with the patient.</b> A map on
the lesion says the classifier used that region; it does not prove the classifier understood the pathology.</li>
<li><b>medXGAN difference maps</b> show what the generator changes to move the classifier from negative to
positive: they are evidence about the classifier only as far as the generator can draw real findings. They are
not proof of pathology. When the change is one pattern for every image (high counterfactual similarity), it is a
pattern that moves the classifier everywhere, not the image's finding.</li>
<li><b>Counterfactual IG</b> integrates the classifier's gradient from the image's generated negative twin to
the real image. Its localisation comes from that baseline and from the inversion residual (what the generator
could not draw): a good score says where the classifier's evidence lies relative to an anatomy-matched
negative, not that the generator learned the pathology.</li>
<li><b>Floors.</b> The random map and the average-box prior map are explanations that know nothing about the
image. A map is only evidence of localisation if it beats both, with 95 % CIs that do not overlap.</li>
<li><b>Shuffled-box control.</b> Each map is also scored against another positive image's boxes. A map that
scores as well there marks where findings usually are (a prior), not where this image's finding is.</li>
<li><b>Boxes are annotations.</b> Findings outside the boxes, or boxes drawn loosely, lower every localisation
score; a classifier may also use real but unannotated signs of disease.</li>
<li><b>CIs are over images</b> of this cohort (bootstrap); they do not cover other hospitals, scanners or
populations, nor other classifier versions.</li>
<li><b>Faithfulness scores</b> (deletion and insertion) measure how the classifier reacts to removing pixels,
which creates images it never saw in training; read them as supporting, not decisive, evidence.</li>
</ul>
"""


def _provenance_section(p: Mapping[str, Any] | None) -> str:
    if not p:
        return _section("provenance", "Provenance", "<p>No provenance was given.</p>")
    return _section("provenance", "Provenance", _kv_table(p))


def render_report(inputs: ReportInputs) -> str:
    """Render the evidence report of one audit run.

    Args:
        inputs: a ``ReportInputs``; missing parts render as a short note.

    Returns: the whole HTML page (UTF-8 text, self-contained).
    """
    inp = inputs
    v = inp.verdict
    if v is None and inp.summary is not None and len(inp.summary):
        v = audit_verdict(inp.summary, inp.comparisons, inp.scores)
    loc_metrics = [k for k in inp.headline_metrics if k in LOCALISATION_METRICS] or ["pointing_game", "relevance_mass"]
    body = "".join(
        [
            _header(inp),
            _verdict_section(v),
            _cohort_section(inp.manifest, inp.quarantine),
            _classifier_section(inp.classifier),
            _metrics_section(inp.summary, inp.headline_metrics),
            _gaps_section(inp.comparisons),
            _comparisons_section(inp.comparisons, loc_metrics),
            _gallery_section(inp.gallery),
            _strips_section(inp.strips),
            _history_section(inp),
            _section("limits", "What these explanations can and cannot show", _LIMITS),
            _provenance_section(inp.provenance),
        ]
    )
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Audit {_e(inp.audit)} · {_e(inp.run_id)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


__all__ = ["HEADLINE_METRICS", "ReportInputs", "render_report", "sanitise"]
