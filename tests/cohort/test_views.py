"""The view of one finding of a cohort (``medxgan.cohort.views``): boxes of that finding only,
labels re-derived from them, pixels and splits untouched, manifest last, reruns reused."""

from __future__ import annotations

import numpy as np
import pytest

from medxgan.cohort.reader import Cohort
from medxgan.cohort.views import FindingViewError, box_denotes, finding_view, view_hash
from medxgan.cohort.writer import Box, CohortImage, CohortWriter
from medxgan.storage import Store


def _cohort(url: str) -> Cohort:
    rng = np.random.default_rng(0)
    w = CohortWriter(Store(url), "folder", part_size=3)
    px = lambda: rng.integers(0, 255, (16, 16), dtype=np.uint8)  # noqa: E731
    w.add(CohortImage("a", 1, px(), "a.png", [Box(1, 1, 5, 5, "Effusion")]))
    w.add(CohortImage("b", 1, px(), "b.png", [Box(2, 2, 6, 6, "Nodule")]))
    w.add(CohortImage("c", 1, px(), "c.png", [Box(0, 0, 4, 4, "pleural_effusion"),
                                              Box(8, 8, 12, 12, "Nodule")]))
    w.add(CohortImage("d", 0, px(), "d.png"))
    w.add(CohortImage("e", 1, px(), "e.png"))                     # positive, no box
    w.add(CohortImage("f", -1, px(), "f.png"))
    w.quarantine("g.png", "unreadable PNG")
    w.close()
    return Cohort(url)


def test_box_names_match_by_normalised_name_and_synonym():
    assert box_denotes("Pleural_Effusion", "effusion") and box_denotes("EFFUSION", "Effusion")
    assert box_denotes("Lung Opacity", "Pneumonia")
    assert not box_denotes("Nodule", "Effusion") and not box_denotes("", "Effusion")


def test_view_keeps_pixels_and_relabels_from_the_findings_boxes(tmp_path):
    src = _cohort(str(tmp_path / "src"))
    m = finding_view(src, str(tmp_path / "eff"), "Effusion")
    view = Cohort(str(tmp_path / "eff"))
    idx = view.index().to_pandas().set_index("image_id")
    assert idx["label"].to_dict() == {"a": 1, "b": -1, "c": 1, "d": 0, "e": -1, "f": -1}
    assert idx["split"].to_dict() == src.index().to_pandas().set_index("image_id")["split"].to_dict()
    assert sorted(view.boxes_by_id()) == ["a", "c"] and len(view.boxes_by_id()["c"]) == 1
    b_src, b_view = src.load(["c", "d"]), view.load(["c", "d"])
    assert np.array_equal(b_src.images.numpy(), b_view.images.numpy())
    assert m["counts"]["positives"] == 2 and m["counts"]["negatives"] == 1
    assert m["counts"]["unknown"] == 3 and m["counts"]["quarantined"] == 1
    assert m["content_hash"] == view_hash(src.content_hash, "effusion")
    assert m["content_hash"] != src.content_hash and m["view"]["of"] == src.content_hash
    assert view.quarantine_table().num_rows == 1

    nod = finding_view(src, str(tmp_path / "nod"), "nodules")
    assert nod["content_hash"] != m["content_hash"] and nod["counts"]["positives"] == 2
    again = finding_view(src, str(tmp_path / "eff"), "Effusion")           # reused as it is
    assert again["created"] == m["created"]


def test_a_finding_no_box_names_is_one_line(tmp_path):
    src = _cohort(str(tmp_path / "src"))
    with pytest.raises(FindingViewError, match=r"'Cardiomegaly'.*box findings: 'Effusion', "
                                                r"'Nodule', 'pleural_effusion'") as e:
        finding_view(src, str(tmp_path / "x"), "Cardiomegaly")
    assert "\n" not in str(e.value) and not Store(str(tmp_path / "x")).exists("manifest.json")
