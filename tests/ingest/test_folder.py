"""Folder adapter (CSV and COCO JSON) end to end, with every quarantine reason."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from medxgan.ingest import folder
from medxgan.ingest.process import process_records

from .helpers import assert_bright_inside, phantom, roundtrip, write_dicom, write_png

HEADER = "image_id,path,label,x0,y0,x1,y1,finding\n"


def _make(tmp_path):
    root = tmp_path / "in"
    (root / "img").mkdir(parents=True)
    write_png(str(root / "img" / "wide.png"), phantom(32, 48, [(30, 4, 44, 20)], seed=1))
    Image.fromarray(phantom(40, 40, seed=2)).save(root / "img" / "neg.jpg", quality=95)
    write_dicom(str(root / "img" / "pos.dcm"),
                phantom(64, 48, [(5, 10, 20, 30), (30, 40, 45, 60)], seed=3, dtype=np.uint16))
    for name in ("clip", "nan", "degenerate", "onneg", "dup1", "dup2", "unknown", "conflict"):
        write_png(str(root / "img" / f"{name}.png"), phantom(32, 32, seed=4))
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 99
    rgb[0, 0] = 5
    write_png(str(root / "img" / "rgb.png"), rgb)
    data = open(write_png(str(root / "img" / "trunc.png"), phantom(64, 64, seed=5)), "rb").read()
    open(root / "img" / "trunc.png", "wb").write(data[:200])
    write_png(str(tmp_path / "outside.png"), phantom(32, 32, seed=6))     # exists, outside root
    os.symlink(tmp_path / "outside.png", root / "img" / "link.png")
    rows = [
        ("wide", "img/wide.png", 1, 30, 4, 44, 20, "mass"),
        ("neg", "img/neg.jpg", 0, "", "", "", "", ""),
        ("pos", "img/pos.dcm", 1, 5, 10, 20, 30, "opacity"),
        ("pos", "img/pos.dcm", 1, 30, 40, 45, 60, "opacity"),
        ("unknown", "img/unknown.png", -1, "", "", "", "", ""),
        ("clip", "img/clip.png", 1, -5, 20, 10, 40, ""),
        ("escape", "../outside.png", 1, "", "", "", "", ""),
        ("absolute", str(tmp_path / "outside.png"), 1, "", "", "", "", ""),
        ("symlink", "img/link.png", 0, "", "", "", "", ""),
        ("label2", "img/neg.jpg", 2, "", "", "", "", ""),
        ("labelyes", "img/neg.jpg", "yes", "", "", "", "", ""),
        ("dup1", "img/dup1.png", 0, "", "", "", "", ""),
        ("dup1", "img/dup2.png", 0, "", "", "", "", ""),
        ("missing", "img/missing.png", 0, "", "", "", "", ""),
        ("nan", "img/nan.png", 1, "nan", 1, 5, 5, ""),
        ("badnum", "img/nan.png", 1, "1e", 1, 5, 5, ""),
        ("degenerate", "img/degenerate.png", 1, 5, 5, 5, 9, ""),
        ("onneg", "img/onneg.png", 0, 1, 1, 5, 5, ""),
        ("rgb", "img/rgb.png", 0, "", "", "", "", ""),
        ("trunc", "img/trunc.png", 0, "", "", "", "", ""),
        ("", "img/neg.jpg", 0, "", "", "", "", ""),
        ("conflict", "img/conflict.png", 0, "", "", "", "", ""),
        ("conflict", "img/conflict.png", 1, 1, 1, 5, 5, ""),
    ]
    with open(root / "labels.csv", "w") as fh:
        fh.write(HEADER + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return str(root / "labels.csv")


EXPECTED = {  # record (source_ref) -> reason substring; None: ingested
    "img/wide.png": None, "img/neg.jpg": None, "img/pos.dcm": None, "img/unknown.png": None,
    "img/clip.png": None, "labels.csv:line 8": "'..'", "labels.csv:line 9": "absolute path",
    "img/link.png": "symbolic link", "labels.csv:line 11": "not in {0, 1, -1}",
    "labels.csv:line 12": "bad label value 'yes'", "img/dup1.png": None,
    "img/dup2.png": "duplicate image_id (first used by img/dup1.png)",
    "img/missing.png": "missing file", "img/nan.png": "NaN", "labels.csv:line 17": "bad number",
    "img/degenerate.png": "degenerate", "img/onneg.png": "labelled negative",
    "img/rgb.png": "RGB image where greyscale is expected", "img/trunc.png": "corrupt",
    "labels.csv:line 22": "empty image_id", "img/conflict.png": "conflicting labels",
}


def test_csv_every_reason_and_accounting(tmp_path):
    csv_path = _make(tmp_path)
    records, q = folder.list_records(csv_path)
    images, q2 = process_records(records, input_root=folder.input_root(csv_path), size=32)
    got = {im.source_ref: None for im in images}
    for r in q + q2:
        assert r["source_ref"] not in got, r
        got[r["source_ref"]] = r["reason"]
    assert len(got) == len(images) + len(q) + len(q2)           # each record exactly once
    assert set(got) == set(EXPECTED)
    for ref, reason in EXPECTED.items():
        if reason is None:
            assert got[ref] is None, (ref, got[ref])
        else:
            assert got[ref] is not None and reason in got[ref], (ref, got[ref])
    cohort = roundtrip(tmp_path, images, q + q2, "folder")
    c = cohort.manifest["counts"]
    assert (c["positives"], c["negatives"], c["unknown"], c["boxes"]) == (3, 2, 1, 4)
    by_id = {}
    for b in cohort.iter_batches(4):
        by_id.update({i: (img[0].numpy(), bx) for i, img, bx in zip(b.image_ids, b.images,
                                                                     b.boxes)})
    # 32 x 48 (H x W) -> pad 8 rows on top, side 48 -> 32: scale 2/3
    np.testing.assert_allclose(by_id["wide"][1], [[20, 8, 44 * 2 / 3, 28 * 2 / 3]], atol=1e-4)
    assert_bright_inside(*by_id["wide"])
    # 64 x 48 DICOM -> pad 8 columns left, side 64 -> 32: scale 1/2
    np.testing.assert_allclose(np.sort(by_id["pos"][1], 0),
                               [[6.5, 5, 14, 15], [19, 20, 26.5, 30]], atol=1e-4)
    assert_bright_inside(*by_id["pos"])
    np.testing.assert_allclose(by_id["clip"][1], [[0, 20, 10, 32]])   # clipped, kept
    findings = sorted(cohort.boxes_table().column("finding").to_pylist())
    assert findings == ["", "mass", "opacity", "opacity"]


def test_csv_missing_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("image_id,label\nx,1\n")
    with pytest.raises(ValueError, match="a.csv: missing column.*'path'"):
        folder.list_records(str(p))
    p.write_text("image_id,path,label,x0,y0\nx,a.png,1,1,2\n")
    with pytest.raises(ValueError, match="box columns"):
        folder.list_records(str(p))


def test_coco(tmp_path):
    for n in ("a", "b", "c", "d"):
        write_png(str(tmp_path / f"{n}.png"), phantom(40, 40, [(4, 4, 20, 20)], seed=0))
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 40},
                   {"id": 3, "file_name": "c.png", "width": 40, "height": 40},
                   {"id": 4, "file_name": "../../etc/passwd"},
                   {"id": 5, "file_name": "d.png"},
                   {"id": 1, "file_name": "a.png"},
                   {"id": 6, "file_name": "c.png", "label": 7}],
        "annotations": [{"image_id": 1, "bbox": [4, 4, 16, 16], "category_id": 10},
                        {"image_id": 2, "bbox": [4, 4, 16, 16], "category_id": 11},
                        {"image_id": 99, "bbox": [1, 1, 2, 2], "category_id": 10},
                        {"image_id": 5, "bbox": [1, 1, 2], "category_id": 10}],
        "categories": [{"id": 10, "name": "Lesion"}, {"id": 11, "name": "device"}],
    }
    p = tmp_path / "coco.json"
    p.write_text(json.dumps(doc))
    records, q = folder.list_records(str(p), category="lesion")
    reasons = {r["source_ref"]: r["reason"] for r in q}
    assert reasons == {
        "coco.json:annotations[2]": "annotation for an unknown image id",
        "coco.json:images[3]": "path escapes the input root ('..')",
        "d.png": "annotations[3]: bbox is not [x, y, w, h]",
        "coco.json:images[5]": "duplicate image_id (first used by a.png)",
        "coco.json:images[6]": "label '7' not in {0, 1, -1}",  # c.png named twice
    }
    assert {r.image_id: r.label for r in records} == {"1": 1, "2": 0, "3": 0}
    images, q2 = process_records(records, input_root=folder.input_root(str(p)), size=20)
    assert q2 == [] and len(images) == 3
    a = next(im for im in images if im.image_id == "1")
    assert [(b.x0, b.y0, b.x1, b.y1, b.finding) for b in a.boxes] == [(2, 2, 10, 10, "Lesion")]
    any_cat, _ = folder.list_records(str(p))
    assert {r.image_id: r.label for r in any_cat} == {"1": 1, "2": 1, "3": 0}
    with pytest.raises(ValueError, match="no category named 'tumour'"):
        folder.list_records(str(p), category="tumour")
