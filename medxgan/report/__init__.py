"""The evidence report: verdict, figures, audit history and the self-contained HTML page.

Plain Python/NumPy/pandas/PIL (no Prefect, no matplotlib, no torch); one concept per module:

- ``verdict``: ``audit_verdict(summary, comparisons, scores=None) -> Verdict``: does the
  classifier look at the annotated findings, and are medXGAN's maps evidence of it?
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
  tiny element helpers), ``_sanitise`` (credential scrubbing) and the package data
  ``assets/report.css`` and ``assets/limits.html``.

Names, labels, order, floors, metric directions, suffixes and verdict roles come from
``medxgan.catalogue``; no module here keeps its own list.
"""

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
    "HIGHER_IS_BETTER",
    "HISTORY_SCHEMA",
    "ReportInputs",
    "Verdict",
    "append_history",
    "audit_verdict",
    "detect_regressions",
    "history_rows",
    "history_table",
    "previous_run_id",
    "render_report",
    "sanitise",
    "select_gallery",
]
