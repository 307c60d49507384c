"""Bad-input catalogue through the real entry points (table-driven).

Record-level cases go through one folder-CSV ingest flow (PNG and DICOM files side by side,
``max_pixels`` configured low): each ends as a quarantine row naming the record (its
``source_ref``) with a one-line reason, or, where the input is legal, in the cohort; the run
goes on and ``images + quarantined == input records``. Table-, config-, classifier- and
store-level cases go through the ``medxgan`` CLI: one line ``medxgan: error: ...``, exit 1, no
manifest. docs/deployment.md's Reliability section maps every case of issue 8 to its test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from torch import nn

from flows.cli import main as cli_main
from flows.ingest import ingest_flow
from medxgan.cohort.reader import Cohort
from medxgan.storage import Store
from tests.ingest.helpers import phantom, write_dicom, write_png

SIZE, SRC = 32, 48                 # stored side, source side (scale 32 / 48)
MAX_PIXELS = 60 * 60               # configured limit: a 70 x 70 image is "huge"
BOX = (10, 12, 26, 28)


def _png(root: Path, name: str, **kw) -> str:
    write_png(str(root / "img" / name), phantom(SRC, SRC, [BOX], **kw))
    return f"img/{name}"


def _dcm(root: Path, name: str, arr=None, **kw) -> str:
    write_dicom(str(root / "img" / name), phantom(SRC, SRC, [BOX]) if arr is None else arr, **kw)
    return f"img/{name}"


def _raw(root: Path, name: str, data: bytes) -> str:
    (root / "img" / name).write_bytes(data)
    return f"img/{name}"


def _truncated(root: Path, name: str, writer: Callable[[Path, str], str], keep: float) -> str:
    rel = writer(root, name)
    p = root / rel
    data = p.read_bytes()
    p.write_bytes(data[:int(len(data) * keep)])
    return rel


def _rgb_dicom(root: Path, name: str) -> str:
    rel = _dcm(root, name)
    ds = pydicom.dcmread(root / rel)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.repeat(phantom(SRC, SRC)[..., None], 3, 2).tobytes()
    ds.save_as(root / rel)
    return rel


def _rgb_png(root: Path, name: str) -> str:
    rgb = np.stack([phantom(SRC, SRC, seed=s) for s in (1, 2, 3)], -1)
    write_png(str(root / "img" / name), rgb)
    return f"img/{name}"


# case: (writer(root) -> path, label, box cells "x0,y0,x1,y1", expected)
# expected: a regex of the quarantine reason, or "image" (the record is legal and kept)
B = ",".join(map(str, BOX))
CASES: dict[str, tuple[Callable[[Path], str], str, str, str]] = {
    "corrupt_dicom": (lambda r: _raw(r, "corrupt.dcm", b"\0" * 128 + b"DICM" + b"\x07\x13" * 40),
                      "1", B, r"DICOM"),
    "truncated_dicom": (lambda r: _truncated(r, "trunc.dcm", lambda r2, n: _dcm(
        r2, n, phantom(SRC, SRC, [BOX], dtype=np.uint16)), 0.5), "1", B, r"truncated|corrupt"),
    "corrupt_png": (lambda r: _raw(r, "corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x13" * 300),
                    "1", B, r"corrupt"),
    "truncated_png": (lambda r: _truncated(r, "trunc.png", _png, 0.4), "1", B, r"corrupt"),
    "missing_file": (lambda r: "img/not-there.png", "1", B, r"missing file"),
    "empty_file": (lambda r: _raw(r, "empty.png", b""), "1", B, r"empty file"),
    "dicom_without_pixels": (lambda r: _dcm(r, "nopix.dcm", pixel_data=False), "1", B,
                             r"DICOM without pixel data"),
    "rgb_png": (lambda r: _rgb_png(r, "rgb.png"), "0", "", r"RGB image where greyscale"),
    "rgb_dicom": (lambda r: _rgb_dicom(r, "rgb.dcm"), "0", "", r"RGB image where greyscale"),
    "multiframe_dicom": (lambda r: _dcm(r, "multi.dcm", np.stack([phantom(SRC, SRC)] * 2),
                                        frames=2), "0", "", r"multi-frame DICOM"),
    "dicom_16bit_monochrome1": (lambda r: _dcm(
        r, "mono1.dcm", phantom(SRC, SRC, [BOX], dtype=np.uint16), photometric="MONOCHROME1"),
        "1", B, "image"),
    "huge_image": (lambda r: _png(r, "huge.png") and write_png(
        str(r / "img" / "huge.png"), phantom(70, 70)) and "img/huge.png", "0", "", r"too large"),
    "box_nan": (lambda r: _png(r, "nan.png"), "1", "nan,12,26,28", r"NaN"),
    "box_negative_size": (lambda r: _png(r, "neg.png"), "1", "26,12,10,28", r"degenerate"),
    "box_fully_outside": (lambda r: _png(r, "out.png"), "1", "60,60,80,80", r"fully outside"),
    "box_partly_outside": (lambda r: _png(r, "part.png"), "1", "40,12,60,28", "image"),
    "box_wrong_type": (lambda r: _png(r, "badnum.png"), "1", "abc,12,26,28", r"bad number"),
    "box_on_negative": (lambda r: _png(r, "boxneg.png"), "0", B, r"labelled negative"),
    "label_outside_0_1": (lambda r: _png(r, "label2.png"), "2", B, r"not in \{0, 1, -1\}"),
    "label_wrong_type": (lambda r: _png(r, "labelx.png"), "yes", B, r"bad label value"),
    "path_parent_escape": (lambda r: "../outside.png", "0", "", r"escapes the input root"),
    "path_absolute": (lambda r: "/etc/passwd", "0", "", r"escapes the input root"),
}
GOOD = 6  # plus legal records: a cohort to go on with


@pytest.fixture(scope="module")
def catalogue(prefect_harness, tmp_path_factory):
    """One ingest of every record-level case: (manifest, cohort, {case: path}, n records)."""
    root = tmp_path_factory.mktemp("bad") / "in"
    (root / "img").mkdir(parents=True)
    rows, paths = ["image_id,path,label,x0,y0,x1,y1,finding"], {}
    for i in range(GOOD):
        pos = i % 2
        rel = _png(root, f"good{i}.png", seed=i) if pos else (
            write_png(str(root / "img" / f"good{i}.png"), phantom(SRC, SRC, seed=i))
            and f"img/good{i}.png")
        rows.append(f"good{i},{rel},{pos},{B if pos else ',,,'},lesion")
    for case, (writer, label, box, _) in CASES.items():
        paths[case] = writer(root)
        rows.append(f"{case},{paths[case]},{label},{box or ',,,'},lesion")
    # a duplicate image id (another file under an id already used)
    paths["duplicate_image_id"] = _png(root, "dup.png")
    rows.append(f"good1,{paths['duplicate_image_id']},1,{B},lesion")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    out = str(tmp_path_factory.mktemp("cohort") / "c")
    m = ingest_flow(source="folder", input=str(root / "labels.csv"), out=out, size=SIZE,
                    chunk_size=8, max_pixels=MAX_PIXELS)
    return m, Cohort(out), paths, len(rows) - 1, root


def _line_of(root: Path, case: str) -> str:
    lines = (root / "labels.csv").read_text().splitlines()
    return f"labels.csv:line {next(i + 1 for i, ln in enumerate(lines) if ln.startswith(case + ','))}"


@pytest.mark.parametrize("case", [*CASES, "duplicate_image_id"])
def test_record_level_case(catalogue, case):
    m, cohort, paths, _, root = catalogue
    expected = CASES[case][3] if case in CASES else r"duplicate image_id \(first used by"
    q = {r["source_ref"]: r["reason"] for r in cohort.quarantine_table().to_pylist()}
    ids = set(cohort.index()["image_id"].to_pylist())
    ref = paths[case] if not case.startswith("path_") else _line_of(root, case)
    if expected == "image":
        assert case in ids and ref not in q
        return
    assert ref in q, f"{case}: no quarantine row for {ref}; rows: {q}"
    assert re.search(expected, q[ref]), q[ref]
    assert "\n" not in q[ref]
    assert case not in ids


def test_run_goes_on_and_every_record_is_accounted_for(catalogue):
    m, cohort, paths, n_records, _ = catalogue
    c = m["counts"]
    assert m["input_records"] == n_records
    assert c["images"] + c["quarantined"] == n_records
    assert len(cohort.index()) + len(cohort.quarantine_table()) == n_records
    assert c["images"] == GOOD + 2  # the good ones, MONOCHROME1 16-bit, the clipped box
    assert Store(cohort.url).read_manifest() is not None


def test_16bit_monochrome1_is_inverted_and_partly_outside_box_clipped(catalogue):
    _, cohort, *_ = catalogue
    b = cohort.load(["dicom_16bit_monochrome1", "box_partly_outside"])
    img, boxes = b.images[0, 0].numpy(), b.boxes[0]
    x0, y0, x1, y1 = (int(round(v)) for v in boxes[0])
    inside = img[y0 + 1:y1 - 1, x0 + 1:x1 - 1].mean()
    assert inside < img.mean() - 0.2  # the bright box of the raw pixels is dark (MONOCHROME1)
    clipped = b.boxes[1][0]
    assert clipped[2] == pytest.approx(SIZE, abs=1e-3)  # x1 = 60 clipped to 48 -> 32 stored


# ------------------------------------------------------------------ CLI: one line, exit 1
class _FlatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(SIZE * SIZE, 1)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _cli(capsys, *argv: str) -> str:
    rc = cli_main(list(argv))
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert err.startswith("medxgan: error:") and "\n" not in err  # one line, no traceback
    return err


def _audit_yaml(tmp_path: Path, body: str) -> str:
    p = tmp_path / "audit.yaml"
    p.write_text(body)
    return str(p)


def test_csv_missing_columns(prefect_harness, tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("image_id,path\na,img/a.png\n")
    out = tmp_path / "cohort"
    err = _cli(capsys, "ingest", "--source", "folder", "--input", str(tmp_path / "labels.csv"),
               "--out", str(out))
    assert "missing column" in err and "label" in err
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("body,needle", [
    ("colour: blue\n", "colour"),                                   # unknown key
    ("seed: not-a-number\n", "seed"),                               # wrong type
    ("cohort: {source: phantom-cxr, n: 8, size: 32, shape: round}\n", "shape"),  # nested key
])
def test_config_unknown_keys_and_wrong_types(prefect_harness, tmp_path, capsys, body, needle):
    base = "name: bad\nstore: {s}\nclassifier: {{train: {{epochs: 1}}}}\n".format(
        s=tmp_path / "store")
    if not body.startswith("cohort"):
        base += "cohort: {source: phantom-cxr, n: 8, size: 32}\n"
    err = _cli(capsys, "audit", "--config", _audit_yaml(tmp_path, base + body))
    assert needle in err
    assert not (tmp_path / "store").exists()  # refused before any work


def test_classifier_input_shape_mismatch(catalogue, prefect_harness, tmp_path, capsys):
    _, cohort, *_ = catalogue
    ts = str(tmp_path / "flat.ts")
    torch.jit.script(_FlatNet()).save(ts)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"kind: torchscript\npath: {ts}\ninput_size: 64\n")  # the model takes 32
    store = tmp_path / "store"
    err = _cli(capsys, "audit", "--config", _audit_yaml(tmp_path, (
        f"name: mismatch\nstore: {store}\ncohort: {{source: existing, url: {cohort.url}}}\n"
        f"classifier: {{spec: {spec}}}\nexplain: {{methods: [gradcam]}}\n")))
    assert "input" in err and ts in err
    assert Store(str(store)).list("", suffix="manifest.json") == []


def test_wrong_s3_credentials(prefect_harness, s3_server, s3_store_url, monkeypatch, tmp_path,
                              capsys):
    monkeypatch.setenv("MEDXGAN_S3_SECRET", "wrong-secret-31337")
    err = _cli(capsys, "audit", "--config", _audit_yaml(tmp_path, (
        f"name: creds\nstore: {s3_store_url}\ncohort: {{source: phantom-cxr, n: 8, size: 32}}\n"
        "classifier: {train: {epochs: 1}}\n")))
    assert s3_store_url in err and "wrong-secret-31337" not in err
    assert s3_server.secret not in err
    monkeypatch.setenv("MEDXGAN_S3_SECRET", s3_server.secret)
    assert Store(s3_store_url).list("") == []
