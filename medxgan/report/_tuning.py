"""The report's "Tuned explanation options" section: the sweep of ``<run>/tuning.json``.

``tuning.json`` (written by the explain flow, ``flows/explain.py::tune_options``) maps each
tuned method to its sweep on held-out boxes: ``split``, ``image_ids``, ``metric``,
``tiebreak``, ``candidates`` (rows ``{options, <metric>, <tiebreak>, n}``) and ``choice``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from medxgan.catalogue import metric_label, order_methods
from medxgan.report._html import NA_CELL, esc, section, table
from medxgan.report._tables import method_cell


def _options_text(opts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {json.dumps(v)}" for k, v in sorted(opts.items())) or "defaults"


def _num_cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA_CELL
    return f'<td class="num">{esc(f"{float(v):.3f}")}</td>'


def _method_table(m: str, entry: Mapping[str, Any]) -> str:
    metric = entry.get("metric", "pointing_game")
    tiebreak = entry.get("tiebreak", "relevance_mass")
    keys = list(dict.fromkeys([metric, tiebreak]))
    choice = entry.get("choice") or {}
    rows = []
    for r in entry.get("candidates") or []:
        opts = r.get("options") or {}
        chosen = opts == choice
        mark = ' <strong>(chosen)</strong>' if chosen else ""
        rows.append(f"<tr><th><code>{esc(_options_text(opts))}</code>{mark}</th>"
                    f"{''.join(_num_cell(r.get(k)) for k in keys)}"
                    f'<td class="num">{esc(r.get("n", ""))}</td></tr>')
    head = ["<th>options</th>", *(f"<th>{esc(metric_label(k))}</th>" for k in keys), "<th>n</th>"]
    n = len(entry.get("image_ids") or [])
    intro = (f"<p>{method_cell(m)}: chosen <code>{esc(_options_text(choice))}</code> by "
             f"{esc(metric_label(metric))} (ties: {esc(metric_label(tiebreak))}) on {esc(n)} "
             f"positives with boxes of split <code>{esc(entry.get('split', '?'))}</code>.</p>")
    return intro + table(rows, head)


def tuning_section(tuning: Mapping[str, Any] | None) -> str:
    """The sweep table and choice of every tuned method; ``""`` when nothing was tuned."""
    if not tuning:
        return ""
    body = ("<p>These options were chosen on held-out images (another split than the one "
            "explained and scored), from a small declared set; every score in this report uses "
            "the chosen options.</p>")
    body += "".join(_method_table(m, tuning[m]) for m in order_methods(list(tuning)))
    return section("tuning", "Tuned explanation options", body)


__all__ = ["tuning_section"]
