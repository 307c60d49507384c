"""The shortcut panel's cases (bench/shortcuts.py): which cases ``--cases`` selects, and the
reliance of a shortcut that marks the negatives (measured on the positives, sign flipped)."""

from __future__ import annotations

import torch
from torch import nn

from bench.shortcuts import Case, panel, reliance


def test_negative_class_cases_mark_the_negatives_and_are_selected_by_kind_neg():
    cases = panel(["tag-neg", "noise-neg"], [0, 1], False)
    assert sorted(c.name for c in cases) == [
        "cxr-noise-neg-r0.6-l0.5-s0", "cxr-noise-neg-r0.9-l0.5-s0",
        "cxr-tag-neg-r0.6-l0.5-s0", "cxr-tag-neg-r0.9-l0.5-s0"]  # the first seed only
    assert all(c.negative and not c.clean and c.rate == 0.05 and c.neg_rate in (0.9, 0.6)
               for c in cases)
    full = panel(None, [0, 1], False, [0, 1, 2, 3])
    assert sum(c.negative for c in full) == 8
    assert sum(c.kind in ("arrow", "blur") and not c.clean for c in full) == 8
    assert sum(c.kind == "arrow" and c.clean for c in full) == 2  # label-independent arrows
    # `tag` is the positives' tag only, `indep` the label-independent marks only
    assert {c.name for c in panel(["tag"], [0], False, phantoms=("cxr",))} == {
        "cxr-tag-r0.9-l0.5-s0", "cxr-tag-r0.6-l0.5-s0"}
    assert {(c.kind, c.clean, c.rate, c.neg_rate) for c in panel(["indep"], [0], False, [0])} == {
        ("marker", True, 0.3, 0.3), ("arrow", True, 0.3, 0.3)}


class _TagReader(nn.Module):
    """A classifier that calls an image negative when the tag's corner is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B,)
        H, W = x.shape[-2:]
        corner = x[:, 0, :max(2, H // 8), -max(2, W // 8):].amax((1, 2))
        return 8.0 * (0.6 - corner)


def test_reliance_of_a_negative_class_shortcut_is_measured_on_the_positives(tmp_path):
    from bench._common import write_phantom_cohort
    from medxgan.cohort.reader import Cohort

    c = Case("tag", 0.05, 0.9, 0.5, 0, False, negative=True)
    url = str(tmp_path / "cohort")
    write_phantom_cohort(url, c.phantom, 200, size=32, seed=0, shortcut_rate=c.rate,
                         shortcut="tag", shortcut_negative_rate=c.neg_rate, lesion_scale=0.5)
    t = Cohort(url).index()
    untagged_test_pos = sum(1 for r, y, sp in zip(t["source_ref"].to_pylist(), t["label"].to_pylist(),
                                                  t["split"].to_pylist())
                            if y == 1 and sp == "test" and not r.endswith(":tag=1"))
    r = reliance(c, _TagReader().eval(), Cohort(url), 32)
    assert r["n"] == untagged_test_pos > 0                    # the positives without it
    assert r["off"] > 0.9 and r["on"] < 0.1                   # painting it on turns them negative
    assert r["delta"] > 0.8                                   # counted as reliance
