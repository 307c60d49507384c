"""The evidence report as a PDF: ``render_pdf(ReportInputs) -> bytes``.

The same first screen as ``index.html`` (headline, the three answers, the acceptance criteria,
the overview figure), then the evidence tables (the numbers behind the answers, the shortcut
search, metrics per method with CIs, own - shuffled gaps, cohort and classifier), the verdict's
sentences, and the gallery images (each image with its boxes and every method's overlay, from
the PNG bytes and maps of the gallery items), and the key provenance hashes.

Pure Python (fpdf2: no browser, no system packages). The PDF embeds everything it shows (PNG
images; the overview figure as vector graphics) and references nothing outside itself; text is
set in the PDF core font Helvetica, so characters outside Latin-1 are written as their nearest
ASCII (``–`` as ``-``, ``≥`` as ``>=``, ``α`` as ``alpha``), others as ``?``. The creation date
is the run's time (``ReportInputs.time``), or 2000-01-01 UTC without one, so the same inputs give
the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from fpdf import FPDF
from fpdf.fonts import FontFace

from medxgan.catalogue import GAP_SUFFIX, INTERVENTION, LOCALISATION_METRICS, method_label, metric_label, order_methods
from medxgan.report._cases import _box_coords
from medxgan.report._sanitise import sanitise
from medxgan.report._summary import CRITERIA_HEAD, answer_outcome_text, criterion_row, shortcut_rows
from medxgan.report._tables import OTHER_METRICS
from medxgan.report._text import fmt, fmt_ci
from medxgan.report.answers import ci_text
from medxgan.report.figures import decode_png, image_with_boxes_png, overlay_png, summary_svg
from medxgan.report.html import ReportInputs, verdict_of

_ASCII = {
    "–": "-", "—": "-", "−": "-", "≥": ">=", "≤": "<=", "≠": "!=", "α": "alpha", "·": "-", "…": "...",
    "‘": "'", "’": "'", "“": '"', "”": '"', "×": "x", "→": "->", "←": "<-", "≈": "~", "•": "-", "\u00a0": " ",
}
_GOOD, _BAD, _NONE = (234, 247, 238), (253, 236, 236), (245, 245, 245)


def latin1(text: Any) -> str:
    """Text the core fonts can set: known symbols as ASCII, other non-Latin-1 characters as '?'."""
    s = "".join(_ASCII.get(ch, ch) for ch in str(text))
    return s.encode("latin-1", "replace").decode("latin-1")


class _Doc(FPDF):
    def __init__(self, title: str):
        super().__init__(orientation="P", unit="mm", format="A4")
        self._title = title
        self.set_auto_page_break(True, margin=14)
        self.set_margins(12, 12, 12)
        self.alias_nb_pages()

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("Helvetica", size=7)
        self.set_text_color(110)
        self.cell(0, 5, latin1(f"{self._title} - page {self.page_no()}/{{nb}}"), align="C")
        self.set_text_color(0)

    # --- helpers -------------------------------------------------------------------------
    def h1(self, text: str) -> None:
        self.set_font("Helvetica", "B", 15)
        self.multi_cell(0, 7, latin1(text), new_x="LMARGIN", new_y="NEXT")

    def h2(self, text: str) -> None:
        if self.get_y() > self.h - 40:
            self.add_page()
        self.ln(2)
        self.set_font("Helvetica", "B", 11.5)
        self.multi_cell(0, 6, latin1(text), new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(180)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.5)

    def h3(self, text: str) -> None:
        self.set_font("Helvetica", "B", 9)
        self.multi_cell(0, 4.6, latin1(text), new_x="LMARGIN", new_y="NEXT")

    def para(self, text: str, size: float = 8.5, style: str = "", fill: tuple[int, int, int] | None = None) -> None:
        self.set_font("Helvetica", style, size)
        if fill is not None:
            self.set_fill_color(*fill)
        self.multi_cell(0, size * 0.5, latin1(text), new_x="LMARGIN", new_y="NEXT", fill=fill is not None,
                        padding=1.2 if fill is not None else 0)
        self.set_fill_color(255)

    def grid(self, head: Sequence[str], rows: Sequence[Sequence[Any]], widths: Sequence[float] | None = None,
             size: float = 7) -> None:
        if not rows:
            return
        self.set_font("Helvetica", size=size)
        self.set_draw_color(200)
        with self.table(col_widths=widths, text_align="LEFT", line_height=size * 0.5, padding=0.8,
                        headings_style=FontFace(emphasis="BOLD", fill_color=(242, 242, 242)), width=self.epw) as t:
            for row in [head, *rows]:
                r = t.row()
                for c in row:
                    r.cell(latin1(c))
        self.ln(1.5)


def _fill(good: bool | None) -> tuple[int, int, int]:
    return {True: _GOOD, False: _BAD}.get(good, _NONE)  # type: ignore[arg-type]


def _answers(doc: _Doc, inp: ReportInputs) -> None:
    v = verdict_of(inp)
    doc.h2("Verdict")
    if v is None:
        doc.para("No verdict: no summary table.", 10, "B", _NONE)
        return
    doc.para(v.headline, 10, "B", _fill(v.good))
    doc.ln(1.5)
    good_when = {"relies_on_findings": "yes", "shortcut_suspected": "no", "trustworthy_explanations": "yes"}
    for a in v.answers:
        good = None if a.outcome == "undecided" else a.outcome == good_when[a.key]
        doc.h3(f"{a.question}  {answer_outcome_text(a)}")
        doc.para(a.sentence, 8.2, "", _fill(good))
        doc.ln(1)


def _criteria(doc: _Doc, inp: ReportInputs) -> None:
    doc.h2("Acceptance criteria")
    res = inp.criteria
    if res is None:
        doc.para("No acceptance criteria were pre-specified for this audit.")
        return
    if not res:
        doc.para("The audit's configuration lists no acceptance criteria.")
        return
    n_fail = sum(r.outcome == "FAIL" for r in res)
    n_und = sum(r.outcome == "UNDECIDED" for r in res)
    doc.para(f"{len(res) - n_fail - n_und} of {len(res)} criteria pass" + (f", {n_fail} fail" if n_fail else "")
             + (f", {n_und} undecided" if n_und else "") + ".")
    doc.grid(CRITERIA_HEAD, [criterion_row(r) for r in res], widths=(34, 34, 20, 34, 40, 16))


def _figure(doc: _Doc, inp: ReportInputs) -> None:
    if inp.summary is None or inp.summary.empty:
        return
    svg = summary_svg(inp.summary).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    try:
        if doc.get_y() > doc.h - 80:
            doc.add_page()
        doc.h2("At a glance")
        doc.set_fill_color(0)
        doc.set_text_color(0)
        doc.image(io.BytesIO(svg.encode("utf-8")), w=doc.epw)
    except Exception as exc:  # noqa: BLE001 - a figure the SVG renderer refuses must not lose the report
        doc.para(f"(overview figure not rendered: {type(exc).__name__})")
    doc.set_fill_color(255)


def _method_tables(doc: _Doc, inp: ReportInputs) -> None:
    s = inp.summary
    if s is None or s.empty:
        return
    s = s[s["method"].astype(str) != INTERVENTION]
    idx = {(str(r.method), str(r.metric)): r for r in s.itertuples(index=False)}
    present = {k for _, k in idx}
    methods = order_methods({m for m, _ in idx})
    for title, mets in (("Localisation (against each image's own boxes), mean [95 % CI]",
                         [k for k in LOCALISATION_METRICS if k in present]),
                        ("Faithfulness, robustness and medXGAN, mean [95 % CI]", [k for k in OTHER_METRICS if k in present])):
        for part in (mets[:4], mets[4:]):
            if not part:
                continue
            rows = [[method_label(m)] + [fmt_ci(r.mean, r.ci_low, r.ci_high) if (r := idx.get((m, k))) is not None else "-"
                                         for k in part] for m in methods if any((m, k) in idx for k in part)]
            doc.h3(title)
            doc.grid(["method", *(metric_label(k) for k in part)], rows, widths=(46, *([(doc.epw - 46) / len(part)] * len(part))))
    c = inp.comparisons
    if c is not None and len(c):
        g = c[(c["method_a"] == c["method_b"]) & c["metric"].astype(str).str.endswith(GAP_SUFFIX) & (c["method_a"] != INTERVENTION)]
        g = g.assign(base=g["metric"].astype(str).str[: -len(GAP_SUFFIX)])
        mets = [k for k in LOCALISATION_METRICS if k in set(g["base"])][:4]
        if mets:
            gi = {(str(r.method_a), str(r.base)): r for r in g.itertuples(index=False)}
            rows = [[method_label(m)] + [fmt_ci(r.mean_diff, r.ci_low, r.ci_high, signed=True)
                                         if (r := gi.get((m, k))) is not None else "-" for k in mets]
                    for m in order_methods({m for m, _ in gi})]
            doc.h3("Own boxes minus another image's boxes (image specificity), paired 95 % CI")
            doc.grid(["method", *(metric_label(k) for k in mets)], rows, widths=(46, *([(doc.epw - 46) / len(mets)] * len(mets))))


def _evidence(doc: _Doc, inp: ReportInputs) -> None:
    v = verdict_of(inp)
    doc.h2("Evidence behind the verdict")
    if v is not None:
        doc.para("Flags: " + (", ".join(v.flags) or "-"), 7.5)
        for a in v.answers:
            if a.numbers:
                doc.h3(a.question)
                doc.grid(["number", "mean [95 % CI]", "n"],
                         [[x.label, ci_text(x.mean, x.ci_low, x.ci_high, 3), "-" if x.n is None else x.n] for x in a.numbers],
                         widths=(100, 60, doc.epw - 160))
    if inp.shortcut is not None:
        doc.h3("Shortcut search (outside the findings: location-free, located, image-wide)")
        doc.grid(["shortcut search", "value"], shortcut_rows(inp.shortcut), widths=(90, doc.epw - 90))
    _method_tables(doc, inp)
    if v is not None and v.findings:
        doc.h3("Every rule, with its numbers")
        for f in v.findings:
            doc.para("- " + f, 7.5)


def _run_facts(doc: _Doc, inp: ReportInputs) -> None:
    m = sanitise(dict(inp.manifest or {}))
    counts = dict(m.get("counts", {}) or {})
    perf = sanitise(dict(inp.classifier or {}))
    rows = [(k, counts[k]) for k in ("images", "positives", "negatives", "boxes", "quarantined") if k in counts]
    rows += [(k, fmt(float(perf[k])) if isinstance(perf[k], float) else perf[k])
             for k in ("auroc", "accuracy", "threshold", "n") if perf.get(k) is not None]
    p = sanitise(dict(inp.provenance or {}))
    rows += [(k, p[k]) for k in ("cohort_hash", "classifier_hash", "generator_hash", "code_version") if p.get(k) is not None]
    if rows:
        doc.h2("Cohort, classifier and provenance")
        doc.grid(["item", "value"], [(k, str(v)) for k, v in rows], widths=(60, doc.epw - 60))


def _gallery(doc: _Doc, items: Sequence[Mapping[str, Any]]) -> None:
    if not items:
        return
    doc.add_page()
    doc.h2("Gallery: best and worst cases")
    doc.para("Each case: the image with its annotated boxes, then each method's map over it (bright = relevant).", 7.5)
    size = 30.0  # mm per image
    for it in items:
        iid = str(it.get("image_id", "?"))
        boxes = [_box_coords(b)[0] for b in it.get("boxes") or ()]
        try:
            img = decode_png(it["image_png"])
        except Exception as exc:  # noqa: BLE001 - a broken image must not break the report
            doc.para(f"{iid}: image not readable ({type(exc).__name__})", 7.5)
            continue
        figs = [("image and boxes", image_with_boxes_png(img, boxes))]
        overlays = dict(it.get("overlays") or {})
        for mth in order_methods(overlays):
            try:
                figs.append((method_label(mth), overlay_png(img, np.asarray(overlays[mth]), boxes)))
            except Exception:  # noqa: BLE001
                continue
        per_row = max(1, int(doc.epw // (size + 3)))
        n_rows = -(-len(figs) // per_row)
        if doc.get_y() + 8 + n_rows * (size + 7) > doc.h - doc.b_margin:
            doc.add_page()
        doc.h3(f"{iid} - label {it.get('label', '-')}" + (f" - {it['note']}" if it.get("note") else ""))
        for r0 in range(0, len(figs), per_row):
            y = doc.get_y()
            for j, (cap, png) in enumerate(figs[r0:r0 + per_row]):
                x = doc.l_margin + j * (size + 3)
                doc.image(io.BytesIO(png), x=x, y=y, w=size, h=size)
                doc.set_xy(x, y + size + 0.5)
                doc.set_font("Helvetica", size=6)
                doc.multi_cell(size, 2.8, latin1(cap), align="C")
            doc.set_xy(doc.l_margin, y + size + 7)
        doc.ln(1)


def render_pdf(inputs: ReportInputs) -> bytes:
    """Render the evidence report of one audit run as a PDF (module docstring).

    Args:
        inputs: a ``ReportInputs`` (the same object ``render_report`` takes; ``verdict``,
            ``shortcut`` and ``criteria`` are used as given, the verdict computed when None).

    Returns: the PDF's bytes.
    """
    inp = inputs
    title = f"Explanation audit: {inp.audit}"
    doc = _Doc(latin1(f"{inp.audit} {inp.run_id}".strip()))
    doc.set_title(latin1(title))
    doc.set_creator("medXGAN Audit")
    when = pd.Timestamp(inp.time).to_pydatetime() if inp.time is not None else datetime(2000, 1, 1, tzinfo=timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    doc.set_creation_date(when)
    doc.add_page()
    doc.h1(title)
    t = "-" if inp.time is None else pd.Timestamp(inp.time).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    prev = f" - previous run {inp.previous_run_id}" if inp.previous_run_id else ""
    doc.para(f"run {inp.run_id or '-'} - {t}{prev}", 8)
    _answers(doc, inp)
    _criteria(doc, inp)
    _figure(doc, inp)
    _evidence(doc, inp)
    _run_facts(doc, inp)
    _gallery(doc, inp.gallery)
    return bytes(doc.output())


__all__ = ["latin1", "render_pdf"]
