"""process_records on hand-made records: never raises, one outcome per record, bit depth."""

import numpy as np
import pytest

from medxgan.ingest.process import dedupe, process_records
from medxgan.ingest.records import RawBox, SourceRecord, pseudonymise_id, safe_relpath

from .helpers import phantom, write_dicom, write_png


def _rec(ref, iid, label, path, boxes=()):
    return SourceRecord(ref, iid, label, path, list(boxes))


def test_dedupe_first_wins():
    recs = [_rec("a", "1", 0, "a"), _rec("b", "2", 0, "b"), _rec("c", "1", 1, "c")]
    uniq, rows = dedupe(recs)
    assert [r.source_ref for r in uniq] == ["a", "b"]
    assert rows == [{"source_ref": "c", "reason": "duplicate image_id (first used by a)"}]


def test_never_raises_and_accounts_for_every_record(tmp_path):
    write_png(str(tmp_path / "ok.png"), phantom(40, 40, [(8, 8, 24, 24)]))
    write_png(str(tmp_path / "big.png"), phantom(80, 80))
    write_dicom(str(tmp_path / "d12.dcm"), phantom(40, 40, dtype=np.uint16) // 16, bits=12)
    recs = [
        _rec("ok", "ok", 1, "ok.png", [RawBox(8, 8, 24, 24, "x")]),
        _rec("d12", "d12", 0, "d12.dcm"),
        _rec("nopath", "n", 0, None),
        _rec("abs", "abs", 0, "/etc/hostname"),
        _rec("up", "up", 0, "a/../../x.png"),
        _rec("label", "l", 3, "ok.png"),
        _rec("labelstr", "ls", "pos", "ok.png"),
        _rec("weirdbox", "w", 1, "ok.png", [RawBox("a", 1, 2, 3)]),
        _rec("big", "big", 0, "big.png"),
        _rec("dup", "ok", 0, "ok.png"),
    ]
    images, rows = process_records(recs, input_root=str(tmp_path), size=16, max_pixels=2000)
    assert [im.source_ref for im in images] == ["ok", "d12"]
    reasons = {r["source_ref"]: r["reason"] for r in rows}
    assert len(images) + len(rows) == len(recs) == len(set(reasons) | {"ok", "d12"})
    assert reasons["nopath"] == "no image file for this record"
    assert "absolute" in reasons["abs"] and "'..'" in reasons["up"]
    assert "not in {0, 1, -1}" in reasons["label"] and "not in" in reasons["labelstr"]
    assert reasons["weirdbox"] == "unexpected error (ValueError)"
    assert "too large" in reasons["big"]
    assert reasons["dup"].startswith("duplicate image_id")
    ok, d12 = images
    assert ok.pixels.shape == (16, 16) and ok.pixels.dtype == np.uint8
    assert d12.pixels.dtype == np.uint16                          # 12-bit source -> 16-bit PNG
    assert [(b.x0, b.y0, b.x1, b.y1) for b in ok.boxes] == [pytest.approx((3.2, 3.2, 9.6, 9.6))]
    assert ok.boxes[0].finding == "x"
    forced, _ = process_records(recs[:2], input_root=str(tmp_path), size=16, bits=8)
    assert all(im.pixels.dtype == np.uint8 for im in forced)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        process_records([], input_root=".", size=16, bits=12)
    with pytest.raises(ValueError):
        process_records([], input_root=".", size=0)


def test_pseudonymise_id_is_keyed_hmac():
    import hashlib
    import hmac
    want = hmac.new(b"k", b"patient-1", hashlib.sha256).hexdigest()[:24]
    assert pseudonymise_id("patient-1", b"k") == want == pseudonymise_id("patient-1", "k")
    assert pseudonymise_id("patient-1", b"k2") != want
    with pytest.raises(ValueError):
        pseudonymise_id("patient-1", b"")


@pytest.mark.parametrize("path,ok", [("a/b.png", "a/b.png"), ("./a//b.png", "a/b.png"),
                                     ("a\\b.png", "a/b.png"), ("../a.png", None),
                                     ("a/../../b", None), ("/abs", None), ("C:\\x", None),
                                     ("\\\\host\\share", None), ("", None), ("..", None)])
def test_safe_relpath(path, ok):
    from medxgan.ingest.records import BadRecord
    if ok is None:
        with pytest.raises(BadRecord):
            safe_relpath(path)
    else:
        assert safe_relpath(path) == ok
