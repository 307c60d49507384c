"""The evidence report: self-contained, well-formed, escaped, complete, no secrets."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from PIL import Image

from medxgan.report import ReportInputs, audit_verdict, render_report
from tests.report._fixtures import EVIL, sample_inputs, tables

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# inline SVG children that are written self-closed or never nested
_SVG_LEAVES = {"rect", "line", "circle", "polyline", "polygon", "path"}


class _Checker(HTMLParser):
    """Tag balance, every src/href, and the text of the page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.srcs: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
                self.srcs.append(v or "")
            if k.startswith("on"):
                self.errors.append(f"event handler {k}")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href"):
                self.srcs.append(v or "")

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _check(page: str) -> _Checker:
    c = _Checker()
    c.feed(page)
    c.close()
    return c


@pytest.fixture(scope="module")
def evil_page() -> str:
    return render_report(sample_inputs("lesion", evil=True))


@pytest.fixture(scope="module")
def page() -> str:
    return render_report(sample_inputs("lesion"))


def test_report_is_self_contained(page):
    for bad in ("http://", "https://", 'src="//', "<script", "<iframe", "<link", "url(", "@import"):
        assert bad not in page.lower(), bad
    c = _check(page)
    assert c.srcs and all(s.startswith("data:image/png;base64,") for s in c.srcs)
    for s in c.srcs:  # every embedded figure is a PNG PIL can open
        Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).verify()
    assert "Content-Security-Policy" in page


def test_report_is_well_formed(page, evil_page):
    for p in (page, evil_page):
        c = _check(p)
        assert c.errors == []
        assert c.stack == []  # every element closed
        assert c.tags[0] == "html" and "svg" in c.tags and "img" in c.tags
        assert "script" not in c.tags


def test_user_strings_are_escaped(evil_page):
    assert EVIL not in evil_page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in evil_page
    c = _check(evil_page)
    assert "script" not in c.tags
    text = "".join(c.text)
    # the audit name, image id, finding name, quarantine reason and config value all show as text
    assert text.count(EVIL) >= 5


def test_every_method_in_summary_is_named(page):
    inp = sample_inputs("lesion")
    for m in inp.summary["method"].unique():
        assert f"<code>{m}</code>" in page
    for sec in ("verdict", "cohort", "classifier", "metrics", "gaps", "comparisons", "gallery", "strips", "history", "limits", "provenance"):
        assert f'<section id="{sec}">' in page


def test_no_credentials_in_the_report(page):
    for secret in ("SUPERSECRET", "SUPERSECRET2", "TOK", "hunter2", "secret_access_key", "session_token"):
        assert secret not in page, secret
    assert "127.0.0.1" in page  # the non-secret part of the endpoint stays
    assert "torch" in page and "2.14.1" in page


def test_verdict_sections_tell_lesion_from_shortcut():
    les = render_report(sample_inputs("lesion"))
    sc = render_report(sample_inputs("shortcut"))
    assert "LOCALISES: the classifier looks at the annotated findings" in les
    assert 'class="verdict v-good"' in les and 'class="verdict v-bad"' not in les
    assert "DOES NOT LOCALISE" in sc and 'class="verdict v-bad"' in sc
    assert "universal_counterfactual" in sc and "not evidence of localisation" in sc
    assert "universal_counterfactual" not in les


def test_regression_is_flagged_in_the_history(page):
    assert "REGRESSION" in page  # run-3 lowered Grad-CAM pointing by 0.5
    inp = sample_inputs("lesion")
    assert bool(inp.regressions.set_index(["method", "metric"]).loc[("gradcam", "pointing_game"), "regression"])
    assert page.count("<title>regression</title>") == 1  # one ring: Grad-CAM on the pointing-game trend only
    quiet = render_report(ReportInputs(**{**inp.__dict__, "regressions": inp.regressions.assign(regression=False)}))
    assert "REGRESSION" not in quiet and "No regression against the previous run" in quiet


def test_history_of_other_audits_is_ignored():
    inp = sample_inputs("lesion")
    other = inp.history.assign(audit="someone-else", run_id=lambda d: "zz-" + d["run_id"])
    p = render_report(ReportInputs(**{**inp.__dict__, "history": pd.concat([inp.history, other])}))
    assert "zz-run" not in p


def test_partial_and_empty_inputs_render():
    p = render_report(ReportInputs())
    c = _check(p)
    assert c.errors == [] and c.stack == []
    assert "No verdict" in p
    _, summary, _ = tables("shortcut")
    p2 = render_report(ReportInputs(audit="a", run_id="r", summary=summary))
    assert _check(p2).errors == []
    assert "NO VERDICT" in p2 or "DOES NOT LOCALISE" in p2


def test_given_verdict_is_used_verbatim():
    _, summary, comparisons = tables("lesion")
    v = audit_verdict(summary, comparisons)
    v.headline = "custom headline"
    p = render_report(ReportInputs(summary=summary, comparisons=comparisons, verdict=v))
    assert "custom headline" in p


def test_paired_comparisons_are_signed_method_minus_reference():
    _, summary, comparisons = tables("lesion")
    p = render_report(ReportInputs(summary=summary, comparisons=comparisons))
    sec = p[p.index('<section id="comparisons">') : p.index('<section id="gallery">')]
    # box_prior - gradcam is stored; the report shows gradcam - box_prior, positive and green
    r = comparisons[(comparisons.method_a == "box_prior") & (comparisons.method_b == "gradcam") & (comparisons.metric == "pointing_game")].iloc[0]
    assert r.mean_diff < 0
    assert f'class="num pos"' in sec and f"{-r.mean_diff:+.3f}" in sec
    assert re.search(r"<th>Grad-CAM <code>gradcam</code>", sec)


def test_sanitise_drops_credential_keys_everywhere():
    from medxgan.report import sanitise

    cfg = {
        "MEDXGAN_S3_KEY": "AKIA1", "MEDXGAN_S3_SECRET": "S1", "aws_access_key_id": "AKIA2",
        "nested": [{"password": "P1", "url": "s3://u:P2@host/b", "ok": 1}],
        "Authorization": "Bearer X", "keys_seen": 3, "store": "s3://bucket/prefix",
    }
    out = sanitise(cfg)
    text = repr(out)
    for s in ("AKIA1", "S1", "AKIA2", "P1", "P2", "Bearer"):
        assert s not in text, s
    assert out["keys_seen"] == 3 and out["store"] == "s3://bucket/prefix"
    assert out["nested"][0] == {"url": "s3://***@host/b", "ok": 1}
    page = render_report(ReportInputs(provenance=cfg, manifest={"counts": {"images": 1}, "token": "T9"}, classifier={"auroc": 0.9, "api_key": "K9"}))
    for s in ("AKIA1", "S1", "AKIA2", "P1", "P2", "Bearer", "T9", "K9"):
        assert s not in page, s


def test_stylesheet_and_limits_come_from_package_data(page):
    from importlib import resources

    assets = resources.files("medxgan.report").joinpath("assets")
    css = assets.joinpath("report.css").read_text(encoding="utf-8")
    limits = assets.joinpath("limits.html").read_text(encoding="utf-8")
    assert css.strip() and f"<style>\n{css}</style>" in page
    sec = page[page.index('<section id="limits">') : page.index('<section id="provenance">')]
    assert limits.strip() in sec and "Floors." in sec


def test_one_escaper_for_html_and_svg():
    from medxgan.report import _html, figures

    assert _html.esc('<a href="x">&\'://') == "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;&#58;//"
    assert figures.esc is _html.esc
    svg = figures.bar_svg(pd.DataFrame({"method": ["gradcam"], "mean": [0.5], "ci_low": [0.4], "ci_high": [0.6]}),
                          title="<b>see http://x</b>")
    assert "&lt;b&gt;see http&#58;//x&lt;/b&gt;" in svg and "<b>" not in svg


def test_one_method_table_builder_for_every_method_by_metric_table(page):
    from medxgan.report._tables import method_table

    t = method_table(["gradcam", "random"], [("<th>k</th>", "k")], lambda m, k: f"<td>{m}-{k}</td>")
    assert t == (
        "<table><thead><tr><th>method</th><th>k</th></tr></thead><tbody>"
        "<tr><th>Grad-CAM <code>gradcam</code></th><td>gradcam-k</td></tr>"
        '<tr><th>random map <code>random</code> <span class="floor">floor</span></th><td>random-k</td></tr>'
        "</tbody></table>"
    )
    for sec in ("metrics", "gaps", "comparisons"):  # each table of these sections starts with the method column
        body = page[page.index(f'<section id="{sec}">') :]
        body = body[: body.index("</section>")]
        assert body.count("<table>") == body.count("<thead><tr><th>method</th>") > 0


def test_report_modules_stay_small():
    from pathlib import Path

    import medxgan.report

    for p in Path(medxgan.report.__file__).parent.glob("*.py"):
        assert len(p.read_text(encoding="utf-8").splitlines()) <= 450, p.name


# --- issue #15: a report that answers first -------------------------------------------------


@pytest.fixture(scope="module")
def answer_pages() -> dict[str, str]:
    return {k: render_report(sample_inputs(k, evidence=True)) for k in ("lesion", "shortcut")}


def test_first_screen_is_answers_criteria_and_one_figure(answer_pages):
    p = answer_pages["lesion"]
    first = p[p.index('<div class="first-screen">') : p.index('<section id="evidence">')]
    # in reading order: headline, three answers, criteria, the overview figure; nothing else
    order = [first.index(s) for s in ('class="headline"', 'id="answer-relies_on_findings"', 'id="answer-shortcut_suspected"',
                                       'id="answer-trustworthy_explanations"', '<section id="criteria">', '<section id="overview">')]
    assert order == sorted(order)
    assert first.count("<svg") == 1 and first.count("<section") == 3 and "<img" not in first
    assert "RELIES ON THE FINDINGS: infilling the annotated boxes lowers p by" in first
    for q in ("Does the classifier rely on the annotated findings?", "Does something outside the findings drive it",
              "Which explanations can be trusted for this classifier?"):
        assert q in first
    assert first.count('class="crit pass"') == 3 and "3 of 3 criteria pass" in first
    assert "ci_low = " in first  # the deciding number
    # everything else follows as evidence, the long sentences below the first screen
    rest = p[p.index('<section id="evidence">') :]
    assert "Every rule, with its numbers" in rest and "Grad-CAM pointing game" in rest
    assert p.index('<section id="evidence">') < p.index('<section id="cohort">') < p.index('<section id="metrics">')


def test_shortcut_page_is_red_and_names_the_region(answer_pages):
    p = answer_pages["shortcut"]
    assert 'class="verdict v-bad"' in p and "SHORTCUT SUSPECTED at (56,0)–(64,8)" in p
    assert 'class="answer a-bad" id="answer-shortcut_suspected"' in p
    assert p.count('class="crit fail"') == 3 and "0 of 3 criteria pass, 3 fail" in p
    sec = p[p.index('<section id="evidence">') :]
    assert "Shortcut search (outside the findings: location-free, located, image-wide)" in sec
    assert "inpaint; 2 px" in sec and "cluster: small bright object" in sec


def test_overview_figure_marks_floors_and_intervention(answer_pages):
    p = answer_pages["lesion"]
    svg = p[p.index('<section id="overview">') :]
    svg = svg[: svg.index("</svg>")]
    assert svg.count('class="floor-mark"') == 2  # one per panel: pointing game, relevance mass
    assert "own boxes infilled" in svg and "another image&#x27;s boxes infilled" in svg


def test_answer_pages_are_well_formed_and_load_nothing(answer_pages):
    for p in answer_pages.values():
        c = _check(p)
        assert c.errors == [] and c.stack == []
        low = p.lower()
        for bad in ("http://", "https://", 'src="//', "<script", "<link", "url(", "@import"):
            assert bad not in low, bad
        assert all(s.startswith("data:image/png;base64,") for s in c.srcs)
        assert not re.search(r'(src|href)\s*=\s*"(?!data:)', p)


def test_intervention_rows_stay_out_of_the_method_tables(answer_pages):
    p = answer_pages["lesion"]
    for sec in ("metrics", "gaps", "comparisons"):
        body = p[p.index(f'<section id="{sec}">') :]
        body = body[: body.index("</section>")]
        assert "intervention" not in body, sec
    assert "ablation drop" in p[p.index('<section id="evidence">') :]


def test_report_without_criteria_or_evidence_says_so():
    p = render_report(sample_inputs("lesion"))
    assert "No acceptance criteria were pre-specified" in p
    assert "this run has no intervention evidence" in p
    assert "LOCALISES" in p  # the old headline when neither intervention nor shortcut evidence exists


def test_strips_show_the_true_twin_when_there_is_one(page):
    strips = page[page.index('<section id="strips">'):]
    strips = strips[:strips.index("</section>")]
    assert "true healthy twin" in strips and strips.count("<img") == 2   # strip + twin
    from medxgan.report._cases import strips_section
    without = strips_section([{"image_id": "a", "strip_png": b"\x89PNG", "frame_probs": [0.1]}])
    assert without.count("<img") == 1 and "<figcaption>" not in without


def test_generator_health_is_shown_when_the_run_has_a_generator(page):
    import dataclasses

    assert 'id="generator"' not in page                     # no GAN stage: no section
    inp = sample_inputs("lesion")
    prov = {**(inp.provenance or {}), "config": {"gan": {"model": {"family": "inpaint"}}},
            "stages": {"gan": {"best": {"step": 600, "health": {
                "change_similarity": 0.0612, "universal_flip": 0.04, "fidelity": 0.87,
                "other_number": 5.0}}}}}
    out = render_report(dataclasses.replace(inp, provenance=prov))
    sec = out[out.index('<section id="generator">'):]
    sec = sec[:sec.index("</section>")]
    assert "<code>inpaint</code>" in sec and "step 600" in sec
    assert "change_similarity" in sec and "0.061" in sec and "universal_flip" in sec
    assert "other_number" not in sec and "counterfactual_ncc" not in sec   # only what it has
    HTMLParser().feed(out)
