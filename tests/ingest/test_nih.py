"""NIH ChestX-ray14 adapter end to end on real Data_Entry / BBox_List rows (tests/data/nih)
with synthesized 1024 x 1024 PNGs."""

import csv
import os
import shutil

import numpy as np
import pytest

from medxgan.ingest import nih
from medxgan.ingest.process import process_records

from .helpers import assert_bright_inside, phantom, roundtrip, write_png

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "nih")
ENTRY = "Data_Entry_2017_v2020.csv"


def _entries():
    with open(os.path.join(DATA, ENTRY), newline="") as fh:
        return [(r["Image Index"], r["Finding Labels"].split("|")) for r in csv.DictReader(fh)]


def _bboxes(finding):
    """Image Index -> boxes of ``finding`` parsed with plain csv (positions, not names)."""
    out = {}
    with open(os.path.join(DATA, nih.BBOX_CSV), newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["Image Index", "Finding Label", "Bbox [x"] and rows[0][-1] == ""
    for r in rows[1:]:
        if r[1] == finding:
            x, y, w, h = map(float, r[2:6])
            out.setdefault(r[0], []).append((x, y, x + w, y + h))
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nih")
    for f in (ENTRY, nih.BBOX_CSV):
        shutil.copy(os.path.join(DATA, f), root)
    boxes = {}
    for f in ("Pneumonia", "Infiltrate"):
        for k, v in _bboxes(f).items():
            boxes.setdefault(k, []).extend(v)
    for i, (idx, _) in enumerate(_entries()):
        sub = "images" if i % 2 else "images_001/images"        # both layouts of the release
        img = phantom(1024, 1024, boxes.get(idx, []), seed=i)
        if i % 5 == 0:                                            # some NIH PNGs are RGBA
            img = np.dstack([img, img, img, np.full_like(img, 255)])
        write_png(str(root / sub / idx), img)
    return str(root)


@pytest.mark.parametrize("finding,box_name,min_boxed", [("pneumonia", "Pneumonia", 5),
                                                        ("Infiltration", "Infiltrate", 1)])
def test_real_rows_end_to_end(root, tmp_path, finding, box_name, min_boxed):
    entries = _entries()
    aliases = {finding.lower(), box_name.lower()}
    pos = {i for i, labs in entries if aliases & {x.lower() for x in labs}}
    neg = {i for i, labs in entries if labs == ["No Finding"]}
    boxes = _bboxes(box_name)
    records, q = nih.list_records(root, finding=finding)
    assert q == []
    assert {r.image_id for r in records} == pos | neg and len(pos) > 5 and len(neg) == 8
    images, q2 = process_records(records, input_root=nih.input_root(root), size=64)
    # only a box on a selected negative can be quarantined ("box on ... negative")
    got_q = {r["source_ref"].split("/")[-1]: r["reason"] for r in q2}
    assert set(got_q) == {i for i in boxes if i in neg}
    assert all("labelled negative" in v for v in got_q.values())
    cohort = roundtrip(tmp_path, images, q + q2, "nih")
    c = cohort.manifest["counts"]
    assert c["positives"] == len(pos) and c["negatives"] == len(neg) - len(got_q)
    n_checked = 0
    for batch in cohort.iter_batches(16):
        for iid, img, bx in zip(batch.image_ids, batch.images, batch.boxes):
            want = np.asarray(boxes.get(iid, []), np.float64).reshape(-1, 4) / 16.0  # 1024->64
            np.testing.assert_allclose(np.sort(bx, 0), np.sort(want, 0), atol=1e-3)
            if len(bx):
                assert_bright_inside(img[0].numpy(), bx)
                n_checked += 1
    assert n_checked == len([i for i in boxes if i in pos])
    assert n_checked >= min_boxed


def test_negatives_all(root):
    records, _ = nih.list_records(root, finding="Pneumonia", negatives="all")
    assert len(records) == len(_entries())
    assert sum(r.label for r in records) == sum(
        1 for _, labs in _entries() if "Pneumonia" in labs)


def test_bad_rows_quarantined_and_accounted(root, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    entries = _entries()
    first_pos = next(i for i, labs in entries if "Pneumonia" in labs and i in _bboxes("Pneumonia"))
    nf = [i for i, labs in entries if labs == ["No Finding"]]
    with open(bad / nih.BBOX_CSV, "a") as fh:
        fh.write("99999999_000.png,Pneumonia,10,10,20,20\n")       # image not in Data_Entry
        fh.write(f"{first_pos},Pneumonia,10,oops,20,20\n")          # bad number
        fh.write("00000000_407.png,Pneumonia,10,10,20,20\n")       # box on an unselected image
    with open(bad / "Data_Entry_2017_x.csv", "w") as fh:  # second entry file, read after v2020
        fh.write("Image Index,Finding Labels,Follow-up #\n")
        fh.write(f"{nf[0]},No Finding,0\n")                         # duplicate image id
        fh.write("00000000_404.png,No Finding,0\n")                 # file missing
        fh.write("00000000_405.png,Pneumonia,0\n")                  # coloured PNG
        fh.write("00000000_406.png,,0\n")                           # no labels
        fh.write("00000000_407.png,Hernia,0\n")                     # not selected
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[:8, :8] = 9
    write_png(str(bad / "images" / "00000000_405.png"), rgb)
    records, q = nih.list_records(str(bad), finding="Pneumonia")
    images, q2 = process_records(records, input_root=str(bad), size=32)
    reasons = {r["source_ref"]: r["reason"] for r in q + q2}
    assert reasons[f"{nih.BBOX_CSV}:line 28"] == "box for an image not in Data_Entry"
    assert "bad number 'oops'" in next(v for k, v in reasons.items() if first_pos in k)
    assert reasons["Data_Entry_2017_x.csv:line 2"] == \
        f"duplicate image_id (first used by {_ref(str(bad), nf[0])})"
    assert reasons["images/00000000_404.png"] == "missing file"
    assert "RGB image where greyscale" in reasons["images/00000000_405.png"]
    assert reasons["Data_Entry_2017_x.csv:line 5"] == "empty Finding Labels"
    assert not any("407" in k or "line 30" in k for k in reasons)  # unselected: not an input
    assert "00000000_407.png" not in {r.image_id for r in records}
    # accounting over the selected Data_Entry rows plus the orphan box row
    n_pos = sum(1 for _, labs in entries if "Pneumonia" in labs) + 1
    n_in = n_pos + len(nf) + 1 + 1 + 1 + 1   # + dup, missing, no labels, orphan box
    refs = [im.source_ref for im in images] + [r["source_ref"] for r in q + q2]
    assert len(refs) == len(set(refs)) == n_in


def _ref(root, idx):
    return next(f"{d}/{idx}" for d in ("images", "images_001/images")
                if os.path.exists(os.path.join(root, d, idx)))


def test_missing_columns_and_files(tmp_path):
    with pytest.raises(ValueError, match="no Data_Entry"):
        nih.list_records(str(tmp_path), finding="Pneumonia")
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Labels\na.png,x\n")
    with pytest.raises(ValueError, match="missing column.*'Finding Labels'"):
        nih.list_records(str(tmp_path), finding="Pneumonia")
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels\na.png,x\n")
    (tmp_path / nih.BBOX_CSV).write_text("Image Index,Finding Label,Bbox [x,y,w\n")
    with pytest.raises(ValueError, match=r"missing column.*'h\]'"):
        nih.list_records(str(tmp_path), finding="Pneumonia")


def test_2017_header_with_trailing_empty_column(tmp_path):
    # the 2017 release ends header and rows with a comma (an empty unnamed column)
    (tmp_path / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
        "00000001_000.png,Cardiomegaly|Pneumonia,0,1,058Y,M,PA,2682,2749,0.143,0.143,\n"
        "00000002_000.png,No Finding,0,2,081Y,M,PA,2500,2048,0.171,0.171,\n"
        "00000003_000.png,Hernia,0,3,081Y,F,PA,2582,2991,0.143,0.143,\n")
    records, q = nih.list_records(str(tmp_path), finding="PNEUMONIA")
    assert q == [] and [(r.image_id, r.label) for r in records] == [
        ("00000001_000.png", 1), ("00000002_000.png", 0)]
    assert records[0].path == "images/00000001_000.png" and records[0].boxes == []
