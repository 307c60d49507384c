"""The report's first screen (the three answers, the acceptance criteria, the overview figure)
and the evidence section that follows it (flags, intervention and shortcut numbers, the long
sentences of the verdict). Shared texts for the PDF (``pdf.py``) are here too, so both read the
same words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from medxgan.report._html import esc, section, table
from medxgan.report._text import fmt
from medxgan.report.answers import Answer, box_text, ci_text
from medxgan.report.criteria import CriterionResult
from medxgan.report.figures import summary_svg
from medxgan.report.verdict import VERDICT_METRICS, Verdict

OUTCOME_TEXT = {"yes": "YES", "no": "NO", "undecided": "UNDECIDED"}
# the colour of an answer's outcome: a shortcut "yes" is bad news, a reliance "yes" good news
_GOOD_WHEN = {"relies_on_findings": "yes", "shortcut_suspected": "no", "trustworthy_explanations": "yes"}


def answer_outcome_text(a: Answer) -> str:
    """``YES`` / ``NO`` / ``UNDECIDED`` (trustworthy explanations: the number of methods)."""
    if a.key == "trustworthy_explanations" and a.outcome == "yes":
        return f"{len(a.methods)} METHOD{'S' if len(a.methods) != 1 else ''}"
    if a.key == "trustworthy_explanations" and a.outcome == "no":
        return "NONE"
    return OUTCOME_TEXT.get(a.outcome, a.outcome.upper())


def verdict_class(v: Verdict | None) -> str:
    """``v-good`` / ``v-bad`` / ``v-none`` for the headline box."""
    if v is None:
        return "v-none"
    return {True: "v-good", False: "v-bad"}.get(v.good, "v-none")


def _answer_card(a: Answer) -> str:
    if a.outcome == "undecided":
        cls = "a-none"
    else:
        cls = "a-good" if a.outcome == _GOOD_WHEN.get(a.key, "yes") else "a-bad"
    return (f'<div class="answer {cls}" id="answer-{esc(a.key)}"><h3>{esc(a.question)}</h3>'
            f'<p class="outcome">{esc(answer_outcome_text(a))}</p><p>{esc(a.sentence)}</p></div>')


def verdict_section(v: Verdict | None) -> str:
    """The headline and the three answers."""
    if v is None:
        return section("verdict", "Verdict", '<div class="verdict v-none"><p class="headline">No verdict: no summary table.</p></div>')
    head = f'<div class="verdict {verdict_class(v)}"><p class="headline">{esc(v.headline)}</p></div>'
    cards = "".join(_answer_card(a) for a in v.answers)
    return section("verdict", "Verdict", head + f'<div class="answers">{cards}</div>')


CRITERIA_HEAD = ("criterion", "evidence", "rule", "mean [95 % CI]", "deciding number", "result")


def criterion_row(r: CriterionResult) -> tuple[str, str, str, str, str, str]:
    """The plain-text cells of one criterion (HTML and PDF)."""
    rule = f"{r.on} {r.comparison} {r.threshold:g}"
    ev = "—" if r.mean is None else ci_text(r.mean, r.ci_low, r.ci_high, 3) + (f" (n={r.n})" if r.n else "")
    dec = r.reason if r.outcome == "UNDECIDED" else f"{r.on} = {fmt(r.value)}"
    return r.name, r.what, rule, ev, dec, r.outcome


def criteria_section(results: Sequence[CriterionResult] | None) -> str:
    """PASS / FAIL / UNDECIDED per pre-specified criterion with its deciding number."""
    title = "Acceptance criteria"
    if results is None:
        return section("criteria", title, "<p>No acceptance criteria were pre-specified for this audit.</p>")
    if not results:
        return section("criteria", title, "<p>The audit's configuration lists no acceptance criteria.</p>")
    rows = []
    for r in results:
        cells = criterion_row(r)
        cls = {"PASS": "pass", "FAIL": "fail"}.get(r.outcome, "undecided")
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells[:3])
                    + f'<td class="num">{esc(cells[3])}</td><td>{esc(cells[4])}</td>'
                    + f'<td class="crit {cls}">{esc(cells[5])}</td></tr>')
    n_fail = sum(r.outcome == "FAIL" for r in results)
    n_und = sum(r.outcome == "UNDECIDED" for r in results)
    lead = (f"<p>{len(results) - n_fail - n_und} of {len(results)} criteria pass"
            + (f", {n_fail} fail" if n_fail else "") + (f", {n_und} undecided" if n_und else "") + ".</p>")
    return section("criteria", title, lead + table(rows, [f"<th>{esc(h)}</th>" for h in CRITERIA_HEAD]))


def overview_section(summary: pd.DataFrame | None, metrics: Sequence[str] = VERDICT_METRICS) -> str:
    """The one overview figure (``figures.summary_svg``)."""
    return section("overview", "At a glance", f'<div class="charts">{summary_svg(summary, metrics)}</div>')


def shortcut_rows(shortcut: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of ``shortcut.json`` (HTML and PDF): the three kinds of shortcut
    evidence, the clusters of the located search and whether each map marks the regions."""
    if "residual" not in shortcut:
        return [("shortcut.json", "from an earlier version (single-patch search): score the run again")]

    def pct(d: Mapping[str, Any], a: str, lo: str | None = None, hi: str | None = None) -> str:
        v = d.get(a)
        return "—" if v is None else ci_text(float(v), d.get(lo) if lo else None, d.get(hi) if hi else None, 3, percent=True)

    def eff(d: Mapping[str, Any], a: str, lo: str, hi: str) -> str:
        v = d.get(a)
        return "—" if v is None else ci_text(float(v), d.get(lo), d.get(hi), 3)

    r, lo = shortcut.get("residual") or {}, shortcut.get("located") or {}
    rows = [
        ("infill of the findings; boxes grown by", f"{shortcut.get('method')}; {shortcut.get('dilate')} px"),
        ("1. still positive without the findings: positives / negatives (same in-filling)",
         f"{pct(r, 'rate', 'ci_low', 'ci_high')} (n={r.get('n')}) / "
         f"{pct(r, 'control_rate', 'control_ci_low', 'control_ci_high')} (n={r.get('control_n')})"),
        ("   difference (location-free effect)", eff(r, "effect", "effect_ci_low", "effect_ci_high")),
        ("   f's AUROC, finding-free positives vs negatives", "—" if r.get("auroc") is None else f"{float(r['auroc']):.3f}"),
        ("2. located search: positives searched / with a region outside the findings",
         f"{lo.get('searched')} / {lo.get('found')}"),
        ("   main region (x0,y0)–(x1,y1)", box_text(lo.get("box"))),
        ("   drop of p when the found region is in-filled", eff(lo, "drop", "drop_ci_low", "drop_ci_high")
         + f" (n={lo.get('drop_n')})"),
        ("   transplant: region from a positive / from another negative",
         f"{pct(lo, 'transplant_rate', 'transplant_ci_low', 'transplant_ci_high')} / "
         f"{pct(lo, 'control_rate', 'control_ci_low', 'control_ci_high')} (n={lo.get('n')})"),
        ("   difference (located effect)", eff(lo, "effect", "effect_ci_low", "effect_ci_high")),
    ]
    for c in (lo.get("clusters") or [])[:4]:
        share = c.get("share")
        rows.append((f"   cluster: {c.get('appearance')}",
                     f"{c.get('place_text')}; {c.get('n_images')} images"
                     + ("" if share is None else f" ({100 * float(share):.0f} % of the positives)")))
    for w in shortcut.get("image_wide") or []:
        rows.append((f"3. image-wide, {w.get('name')}: positive donor / negative donor",
                     f"{pct(w, 'rate')} / {pct(w, 'control_rate')}; difference "
                     f"{eff(w, 'effect', 'ci_low', 'ci_high')} (n={w.get('n')})"))
    for m, mk in (shortcut.get("maps") or {}).items():
        rows.append((f"map on the found regions: {m}",
                     f"relevance mass {eff(mk, 'mass', 'ci_low', 'ci_high')} (regions: "
                     f"{100 * float(mk.get('area') or 0):.1f} % of the image); "
                     + ("marks the shortcut" if mk.get("marks") else "does not mark it")))
    return rows


def evidence_section(v: Verdict | None, shortcut: Mapping[str, Any] | None) -> str:
    """The evidence behind the answers: flags, deciding numbers, shortcut details, sentences."""
    title = "Evidence behind the verdict"
    if v is None:
        return section("evidence", title, "<p>No verdict.</p>")
    parts = ["<div>" + "".join(f'<span class="flag">{esc(f)}</span>' for f in v.flags) + "</div>"]
    for a in v.answers:
        if a.numbers:
            rows = [f'<tr><th>{esc(x.label)}</th><td class="num">{esc(ci_text(x.mean, x.ci_low, x.ci_high, 3))}</td>'
                    f'<td class="num">{esc("—" if x.n is None else x.n)}</td></tr>' for x in a.numbers]
            parts.append(f"<h3>{esc(a.question)}</h3>"
                         + table(rows, ["<th>number</th>", "<th>mean [95 % CI]</th>", "<th>n</th>"]))
    if shortcut is not None:
        rows = [f"<tr><th>{esc(k)}</th><td>{esc(val)}</td></tr>" for k, val in shortcut_rows(shortcut)]
        parts.append("<h3>Shortcut search (outside the findings: location-free, located, image-wide)</h3>"
                     + table(rows, cls="kv"))
    if v.findings:
        parts.append("<h3>Every rule, with its numbers</h3><ul>" + "".join(f"<li>{esc(s)}</li>" for s in v.findings) + "</ul>")
    return section("evidence", title, "".join(parts))


__all__ = ["CRITERIA_HEAD", "OUTCOME_TEXT", "answer_outcome_text", "criteria_section", "criterion_row", "evidence_section",
           "overview_section", "shortcut_rows", "verdict_class", "verdict_section"]
