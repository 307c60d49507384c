"""The evidence report: verdict, figures, audit history and the self-contained HTML page.

Plain Python/NumPy/pandas/PIL (no Prefect, no matplotlib, no torch); one concept per module:

- ``verdict``: ``audit_verdict(summary, comparisons, scores=None, shortcut=None) -> Verdict``:
  three answers about the classifier (does it rely on the annotated findings? is a shortcut
  suspected? which explanations can be trusted?, rules in ``answers``; lookups and rule 1 in
  ``_evidence``) and the explanation-method rules.
- ``criteria``: ``evaluate_criteria(criteria, summary, shortcut, comparisons) ->
  list[CriterionResult]``: the audit's pre-specified acceptance criteria, PASS / FAIL /
  UNDECIDED with the deciding number.
- ``figures``: ``overlay_png``, ``image_with_boxes_png``, ``decode_png``, ``trend_svg``,
  ``bar_svg`` (PNG bytes or inline SVG strings; PIL only).
- ``history``: ``HISTORY_SCHEMA``, ``history_rows``, ``append_history``,
  ``history_table`` (Arrow), ``previous_run_id``, ``detect_regressions`` (paired bootstrap
  against the previous run).
- ``gallery``: ``select_gallery`` (best and worst images of one method and metric).
- ``html``: ``ReportInputs``, ``render_report`` (one self-contained HTML page: inline CSS,
  PNGs as ``data:`` URIs, inline SVG, no scripts, every user string escaped), built from
  ``_tables`` (the one method x metric table builder and its sections), ``_cases`` (gallery
  and interpolation strips), ``_html`` (the one escaper ``esc``, shared with ``figures``, and
  tiny element helpers), ``_summary`` (the first screen: answers, criteria, overview figure;
  and the evidence section), ``_sanitise`` (credential scrubbing) and the package data
  ``assets/report.css`` and ``assets/limits.html``.
- ``pdf``: ``render_pdf(ReportInputs) -> bytes``: the same report as a PDF (fpdf2; imported
  on first use).

Names, labels, order, floors, metric directions, suffixes and verdict roles come from
``medxgan.catalogue``; no module here keeps its own list.
"""

from medxgan.report.answers import Answer, Number
from medxgan.report.criteria import CriterionResult, evaluate_criteria
from medxgan.report.gallery import select_gallery
from medxgan.report.history import (
    HIGHER_IS_BETTER,
    HISTORY_SCHEMA,
    append_history,
    detect_regressions,
    history_rows,
    history_table,
    previous_run_id,
)
from medxgan.report.html import ReportInputs, render_report, sanitise
from medxgan.report.verdict import Verdict, audit_verdict

__all__ = [
    "Answer",
    "CriterionResult",
    "HIGHER_IS_BETTER",
    "HISTORY_SCHEMA",
    "Number",
    "ReportInputs",
    "Verdict",
    "append_history",
    "audit_verdict",
    "detect_regressions",
    "evaluate_criteria",
    "history_rows",
    "history_table",
    "previous_run_id",
    "render_pdf",
    "render_report",
    "sanitise",
    "select_gallery",
]


def __getattr__(name: str):
    """``render_pdf`` is imported on first use (fpdf2 is only needed to write the PDF)."""
    if name == "render_pdf":
        from medxgan.report.pdf import render_pdf

        return render_pdf
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
