"""Cohort writer/reader: the docs/design.md contract, streaming, splits, idempotent rewrites."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxgan.cohort.png import decode_png, encode_png, from_unit, to_unit
from medxgan.cohort.reader import Cohort
from medxgan.cohort.schema import BOXES, IMAGES, QUARANTINE
from medxgan.cohort.splits import assign_split
from medxgan.cohort.writer import Box, CohortImage, CohortWriter
from medxgan.storage import Store, StorageError


def _image(i: int, size: int = 16, positive: bool | None = None) -> CohortImage:
    rng = np.random.default_rng(i)
    pix = rng.integers(0, 200, (size, size)).astype(np.uint8)
    pos = (i % 2 == 1) if positive is None else positive
    boxes = [Box(2, 3, 7, 9, "opacity")] if pos else []
    if pos:
        pix[3:9, 2:7] = 255
    return CohortImage(f"img-{i:04d}", int(pos), pix, f"src/{i}.png", boxes)


def _write(url: str, n: int, part_size: int = 7) -> dict:
    w = CohortWriter(Store(url), source="unit", part_size=part_size)
    for i in range(n):
        w.add(_image(i))
    return w.close()


def test_png_roundtrip_8_and_16_bit():
    a8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    a16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    assert np.array_equal(decode_png(encode_png(a8)), a8)
    got16 = decode_png(encode_png(a16))
    assert got16.dtype == np.uint16 and np.array_equal(got16, a16)
    assert to_unit(a16).max() == pytest.approx(1.0)
    assert np.array_equal(from_unit(to_unit(a8), 8), a8)


def test_write_read_contract(any_store_url):
    m = _write(any_store_url, 20)
    store = Store(any_store_url)
    assert m["counts"]["images"] == 20 and m["counts"]["positives"] == 10
    assert m["image_size"] == [16, 16]
    assert len(m["parts"]) == 3  # parts of 7
    assert store.read_parquet(m["parts"][0]).schema.equals(IMAGES)
    assert store.read_parquet("boxes.parquet").schema.equals(BOXES)
    assert store.read_parquet("quarantine.parquet").schema.equals(QUARANTINE)

    c = Cohort(any_store_url)
    batches = list(c.iter_batches(batch_size=6))
    assert [len(b) for b in batches] == [6, 6, 6, 2]
    ids = [i for b in batches for i in b.image_ids]
    assert ids == [f"img-{i:04d}" for i in range(20)]
    b0 = batches[0]
    assert b0.images.shape == (6, 1, 16, 16) and b0.images.dtype == torch.float32
    assert torch.equal(b0.labels, torch.tensor([0, 1, 0, 1, 0, 1]))
    assert b0.boxes[1].tolist() == [[2, 3, 7, 9]] and b0.boxes[0].shape == (0, 4)
    # the pixels under the box are the bright lesion we drew
    assert torch.all(b0.images[1, 0, 3:9, 2:7] == 1.0)
    assert b0.splits == [assign_split(i) for i in b0.image_ids]


def test_filters_and_load(tmp_path):
    _write(str(tmp_path), 30)
    c = Cohort(str(tmp_path))
    pos = [i for b in c.iter_batches(8, labels=[1]) for i in b.image_ids]
    assert len(pos) == 15
    for split in ("train", "val", "test"):
        for b in c.iter_batches(8, split=split):
            assert set(b.splits) == {split}
    got = c.load(["img-0007", "img-0002"])
    assert got.image_ids == ["img-0007", "img-0002"] and got.labels.tolist() == [1, 0]
    assert sum(len(b) for b in c.iter_batches(4, limit=9)) == 9
    with pytest.raises(KeyError):
        c.load(["nope"])


def test_duplicates_are_quarantined_and_accounted(tmp_path):
    w = CohortWriter(Store(str(tmp_path)), source="unit")
    assert w.add(_image(1))
    assert not w.add(_image(1))
    w.quarantine("bad.png", "unreadable\nfile")
    m = w.close()
    assert m["counts"]["images"] == 1 and m["counts"]["quarantined"] == 2
    q = Cohort(str(tmp_path)).quarantine_table().to_pylist()
    assert {"source_ref": "bad.png", "reason": "unreadable file"} in q
    assert any("duplicate image_id" in r["reason"] for r in q)


def test_incomplete_cohort_is_refused(tmp_path):
    Store(str(tmp_path)).write_bytes("images/part-00000.parquet", b"junk")
    with pytest.raises(StorageError, match="no manifest"):
        Cohort(str(tmp_path))


def test_rewrite_is_idempotent_and_drops_stale_parts(tmp_path):
    m1 = _write(str(tmp_path), 20)
    m2 = _write(str(tmp_path), 20)
    assert m1["content_hash"] == m2["content_hash"]
    m3 = _write(str(tmp_path), 5)
    assert Store(str(tmp_path)).list("images/") == m3["parts"] == ["images/part-00000.parquet"]
    assert m3["content_hash"] != m1["content_hash"]


def test_splits_are_deterministic_and_proportional():
    ids = [f"id-{i}" for i in range(5000)]
    s = [assign_split(i) for i in ids]
    assert s == [assign_split(i) for i in ids]
    frac = {k: s.count(k) / len(s) for k in ("train", "val", "test")}
    assert abs(frac["train"] - 0.7) < 0.03 and abs(frac["val"] - 0.1) < 0.02
