"""RSNA adapter end to end on real label rows (tests/data/rsna) with synthesized DICOMs."""

import csv
import logging
import os
import shutil

import numpy as np
import pytest

from medxgan.ingest import rsna
from medxgan.ingest.process import process_records

from .helpers import (PATIENT_ID, PATIENT_NAME, all_output_text, assert_bright_inside, phantom,
                      roundtrip, write_dicom)


def _real_rows(data_dir):
    with open(os.path.join(data_dir, "rsna", rsna.LABELS_CSV), newline="") as fh:
        return list(csv.DictReader(fh))


def _boxes_by_patient(rows):
    out = {}
    for r in rows:
        b = out.setdefault(r["patientId"], [])
        if r["Target"] == "1":
            x, y, w, h = (float(r[c]) for c in ("x", "y", "width", "height"))
            b.append((x, y, x + w, y + h))
    return out


@pytest.fixture(scope="module")
def real_root(tmp_path_factory, request):
    data_dir = os.path.join(os.path.dirname(__file__), "..", "data")
    root = tmp_path_factory.mktemp("rsna")
    shutil.copy(os.path.join(data_dir, "rsna", rsna.LABELS_CSV), root)
    boxes = _boxes_by_patient(_real_rows(data_dir))
    for i, (pid, bx) in enumerate(boxes.items()):   # RSNA images: 1024 x 1024 MONOCHROME2 8-bit
        write_dicom(str(root / rsna.IMAGES_DIR / f"{pid}.dcm"), phantom(1024, 1024, bx, seed=i))
    return str(root), boxes


def test_real_rows_end_to_end(real_root, tmp_path):
    root, boxes = real_root
    records, q = rsna.list_records(root)
    assert q == [] and len(records) == len(boxes) == 20
    images, q2 = process_records(records, input_root=rsna.input_root(root), size=128)
    assert q2 == [] and len(images) == 20
    cohort = roundtrip(tmp_path, images, q + q2, "rsna")
    m = cohort.manifest["counts"]
    n_pos = sum(1 for b in boxes.values() if b)
    assert (m["positives"], m["negatives"], m["quarantined"]) == (n_pos, 20 - n_pos, 0)
    assert m["boxes"] == sum(len(b) for b in boxes.values())
    seen = 0
    for batch in cohort.iter_batches(8):
        assert batch.images.shape[1:] == (1, 128, 128)
        for iid, img, lab, bx in zip(batch.image_ids, batch.images, batch.labels, batch.boxes):
            want = np.asarray(boxes[iid], np.float64).reshape(-1, 4) / 8.0   # 1024 -> 128
            np.testing.assert_allclose(np.sort(bx, 0), np.sort(want, 0), atol=1e-3)
            assert int(lab) == int(bool(boxes[iid]))
            if len(bx):
                assert_bright_inside(img[0].numpy(), bx)
            seen += 1
    assert seen == 20


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        fh.write("patientId,x,y,width,height,Target\n")
        for r in rows:
            fh.write(",".join(str(c) for c in r) + "\n")


# patientId -> (rows [(x, y, w, h, Target)], how to write the file, expected reason or None)
CASES = {
    "neg-ok": ([("", "", "", "", 0)], "ok", None),
    "pos-ok": ([(20, 30, 40, 50, 1), (150, 40, 60, 80, 1)], "ok", None),
    "partly-outside": ([(200, 10, 100, 30, 1)], "ok", None),
    "mono1-16bit": ([(20, 20, 50, 50, 1)], "mono1", None),
    "bad-number": ([(20, "abc", 10, 10, 1)], "ok", "bad number 'abc'"),
    "bad-target": ([("", "", "", "", 2)], "ok", "not in {0, 1, -1}"),
    "conflict": ([("", "", "", "", 0), (5, 5, 10, 10, 1)], "ok", "conflicting Target"),
    "partial-box": ([(5, "", 10, 10, 1)], "ok", "partly empty box"),
    "missing-file": ([(5, 5, 10, 10, 1)], "none", "missing file"),
    "truncated": ([(5, 5, 10, 10, 1)], "truncated", "truncated"),
    "empty-file": ([("", "", "", "", 0)], "empty", "empty file"),
    "nan-box": ([("nan", 5, 10, 10, 1)], "ok", "NaN"),
    "box-on-negative": ([(5, 5, 10, 10, 0)], "ok", "labelled negative"),
    "fully-outside": ([(300, 5, 10, 10, 1)], "ok", "fully outside"),
    "zero-width": ([(30, 5, 0, 10, 1)], "ok", "degenerate"),
    "negative-height": ([(30, 5, 10, -4, 1)], "ok", "degenerate"),
    "multi-frame": ([("", "", "", "", 0)], "frames", "multi-frame"),
    "no-pixels": ([("", "", "", "", 0)], "nopixels", "without pixel data"),
    "..": ([("", "", "", "", 0)], "none", "plain file name"),
}


def _bad_root(tmp_path):
    root = tmp_path / "in"
    rows = [(pid, *r) for pid, (rs, _, _) in CASES.items() for r in rs]
    rows.append(("", "", "", "", "", 0))                       # a row without a patientId
    os.makedirs(root / rsna.IMAGES_DIR)
    _write_csv(root / rsna.LABELS_CSV, rows)
    for i, (pid, (rs, how, _)) in enumerate(CASES.items()):
        p = str(root / rsna.IMAGES_DIR / f"{pid}.dcm")
        bx = [(x, y, x + w, y + h) for x, y, w, h, t in rs if t == 1 and x != "" and
              isinstance(y, int) and isinstance(x, int) and w > 0 and h > 0]
        img = phantom(256, 256, bx, seed=i)
        if how == "ok":
            write_dicom(p, img)
        elif how == "mono1":
            raw = (4095 - phantom(256, 256, bx, seed=i, dtype=np.uint16) // 16).astype(np.uint16)
            write_dicom(p, raw, photometric="MONOCHROME1", bits=12, slope=0.5, intercept=-10)
        elif how == "truncated":
            data = open(write_dicom(p, img), "rb").read()
            open(p, "wb").write(data[:-5000])
        elif how == "empty":
            open(p, "wb").close()
        elif how == "frames":
            write_dicom(p, np.stack([img, img]), frames=2)
        elif how == "nopixels":
            write_dicom(p, img, pixel_data=False)
    return str(root)


def test_every_quarantine_reason_and_accounting(tmp_path):
    root = _bad_root(tmp_path)
    records, q = rsna.list_records(root)
    images, q2 = process_records(records, input_root=root, size=64)
    rows = q + q2
    # accounting: every input record (patient, or id-less row) in exactly one place
    refs = [im.source_ref for im in images] + [r["source_ref"] for r in rows]
    assert len(refs) == len(set(refs)) == len(CASES) + 1
    by_ref = {r["source_ref"]: r["reason"] for r in rows}
    for pid, (_, _, reason) in CASES.items():
        ref = f"{rsna.IMAGES_DIR}/{pid}.dcm" if pid != ".." else None
        if reason is None:
            assert ref not in by_ref, (pid, by_ref.get(ref))
        elif ref is not None:
            assert reason in by_ref[ref], (pid, by_ref[ref])
    assert any(r["reason"] == "patientId is not a plain file name" for r in rows)
    assert any(r["reason"] == "empty patientId" and r["source_ref"].startswith(
        rsna.LABELS_CSV + ":line ") for r in rows)
    assert all("\n" not in r["reason"] for r in rows)
    got = {im.image_id: im for im in images}
    assert sorted(got) == sorted(p for p, c in CASES.items() if c[2] is None)
    # partly outside: clipped to the image edge (256 -> 64: x1 = 256 / 4)
    np.testing.assert_allclose([[b.x0, b.y0, b.x1, b.y1] for b in got["partly-outside"].boxes],
                               [[50, 2.5, 64, 10]])
    assert got["mono1-16bit"].pixels.dtype == np.uint16          # >8-bit source kept 16-bit
    assert got["neg-ok"].pixels.dtype == np.uint8
    # MONOCHROME1: the box was written with LOW raw values (white in MONOCHROME1), so after
    # the inversion it must be bright in the cohort
    m1 = got["mono1-16bit"]
    assert_bright_inside(m1.pixels, np.array([[b.x0, b.y0, b.x1, b.y1] for b in m1.boxes]))
    cohort = roundtrip(tmp_path, images, rows, "rsna")
    assert cohort.manifest["counts"]["quarantined"] == len(rows)
    assert cohort.quarantine_table().num_rows + len(cohort.index()) == len(CASES) + 1
    text = all_output_text(tmp_path / "cohort")
    assert PATIENT_NAME not in text and PATIENT_ID not in text and "Zebulon" not in text
    assert "bad number 'abc'" in text                      # the scan does read the tables


def test_pseudonymised_ids_and_no_identifiers_in_outputs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    root = _bad_root(tmp_path)
    records, q = rsna.list_records(root, pseudonymise_key=b"secret-key")
    images, q2 = process_records(records, input_root=root, size=32)
    assert all(len(im.image_id) == 24 and int(im.image_id, 16) >= 0 for im in images)
    assert all(":line " in im.source_ref for im in images)
    again, _ = rsna.list_records(root, pseudonymise_key=b"secret-key")
    assert [r.image_id for r in again] == [r.image_id for r in records]  # deterministic
    other, _ = rsna.list_records(root, pseudonymise_key=b"another-key")
    assert not {r.image_id for r in other} & {r.image_id for r in records}
    roundtrip(tmp_path, images, q + q2, "rsna")
    text = all_output_text(tmp_path / "cohort") + caplog.text
    for secret in (PATIENT_NAME, PATIENT_ID, "Zebulon", "19230417", "pos-ok", "mono1-16bit"):
        assert secret not in text


def test_missing_column_is_one_clear_error(tmp_path):
    (tmp_path / rsna.LABELS_CSV).write_text("patientId,x,y,width,height\nabc,,,,\n")
    with pytest.raises(ValueError, match="missing column.*'Target'"):
        rsna.list_records(str(tmp_path))
    with pytest.raises(ValueError, match="not found"):
        rsna.list_records(str(tmp_path / "nowhere"))
