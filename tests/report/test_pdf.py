"""The PDF report: the same answers, criteria, tables and gallery as the HTML page, pure Python,
self-contained."""

from __future__ import annotations

import io
import re

import pytest

pypdf = pytest.importorskip("pypdf")

from medxgan.report import ReportInputs, render_pdf  # noqa: E402
from medxgan.report.pdf import latin1  # noqa: E402
from tests.report._fixtures import EVIL, sample_inputs  # noqa: E402


def _text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join((p.extract_text() or "").split()) for p in reader.pages)


@pytest.fixture(scope="module")
def pdfs() -> dict[str, bytes]:
    return {k: render_pdf(sample_inputs(k, evidence=True)) for k in ("lesion", "shortcut")}


def test_pdf_holds_the_answers_criteria_and_tables(pdfs):
    inp = sample_inputs("lesion", evidence=True)
    text = _text(pdfs["lesion"])
    assert pdfs["lesion"].startswith(b"%PDF-")
    assert "RELIES ON THE FINDINGS" in text
    for q in ("Does the classifier rely on the annotated findings? YES",
              "Does something outside the findings drive it (a shortcut)? NO",
              "Which explanations can be trusted for this classifier?"):
        assert q in text, q
    assert "Acceptance criteria" in text and "3 of 3 criteria pass" in text
    for r in inp.criteria:
        assert r.name in text and f"{r.on} = {r.value:.3f}" in text
    # a table value: Grad-CAM's relevance mass with its CI, as the summary holds it
    row = inp.summary[(inp.summary.method == "gradcam") & (inp.summary.metric == "relevance_mass")].iloc[0]
    assert f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in text
    assert "Every rule, with its numbers" in text and "Gallery: best and worst cases" in text


def test_shortcut_pdf_names_the_region_and_fails_the_criteria(pdfs):
    text = _text(pdfs["shortcut"])
    assert "SHORTCUT SUSPECTED at (56,0)-(64,8)" in text  # the en dash set as '-' in the core font
    assert "0 of 3 criteria pass, 3 fail" in text and text.count("FAIL") >= 3
    assert "Shortcut search (outside the findings: location-free, located, image-wide)" in text


def test_pdf_embeds_the_gallery_images_and_nothing_external(pdfs):
    reader = pypdf.PdfReader(io.BytesIO(pdfs["lesion"]))
    placed = sum(len(re.findall(rb"/I\d+ Do", p.get_contents().get_data())) for p in reader.pages)
    inp = sample_inputs("lesion", evidence=True)
    assert placed == sum(1 + len(it["overlays"]) for it in inp.gallery)  # image with boxes + each overlay
    assert sum(len(p.images) for p in reader.pages) > 0  # embedded (identical PNGs are stored once)
    raw = pdfs["lesion"]
    for bad in (b"/URI", b"/Launch", b"/JavaScript", b"/JS ", b"/EmbeddedFile", b"http://", b"https://"):
        assert bad not in raw, bad


def test_pdf_is_deterministic_and_renders_partial_inputs():
    a = render_pdf(sample_inputs("shortcut", evidence=True))
    b = render_pdf(sample_inputs("shortcut", evidence=True))
    assert a == b
    empty = render_pdf(ReportInputs())
    t = _text(empty)
    assert "No verdict" in t and "No acceptance criteria were pre-specified" in t


def test_pdf_sets_user_strings_as_text():
    t = _text(render_pdf(sample_inputs("lesion", evil=True)))
    assert EVIL in t  # shown as text (no markup in a PDF), with the audit name
    assert latin1("(56,0)–(64,8) ≥ α") == "(56,0)-(64,8) >= alpha"
    assert latin1("日本") == "??"
    for secret in ("SUPERSECRET", "hunter2"):
        assert secret not in t
    assert re.search(r"cohort_hash\s+cohortA", t)
