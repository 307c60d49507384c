"""Choosing explainer options on held-out boxes (medxgan.explain.sweep, Grad-CAM's block
outputs and their mean)."""

from __future__ import annotations

import typing

import pytest
import torch
from torch import nn

from medxgan.config.audit import ExplainSection
from medxgan.explain import make_explainer
from medxgan.explain.gradcam import candidate_layers, find_target_layer
from medxgan.explain.sweep import (TUNABLE, default_candidates, merge_options, sweep_options)
from tests.explain.conftest import S, TinyGenerator

BOX = (4, 4, 10, 10)      # x0, y0, x1, y1: the finding
DECOY = (20, 20, 26, 26)  # brighter, and what the coarse layer points at


def _mask(box, size=S):
    m = torch.zeros(size, size, dtype=torch.bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


class TwoScales(nn.Module):
    """Grad-CAM at ``fine`` (32 px) points at BOX, at ``coarse`` (16 px) at DECOY.

    fine = [x ⊙ box, x ⊙ decoy] (a 1x1 identity conv), P = avgpool2(fine),
    coarse = P0 + P1 (a 1x1 conv), logit = mean(coarse) - 2 mean(P1). At ``fine`` the decoy
    channel's Grad-CAM weight is negative (-1 / N), so the map is x ⊙ box; at ``coarse`` the one
    channel has weight +1 / N and the map is the pooled x on box ∪ decoy, brightest on DECOY.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("masks", torch.stack([_mask(BOX), _mask(DECOY)])[None].float())
        self.fine = nn.Conv2d(2, 2, 1, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.coarse = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.fine.weight.copy_(torch.eye(2)[:, :, None, None])
            self.coarse.weight.fill_(1.0)

    def forward(self, x):
        p = self.pool(self.fine(x * self.masks))                 # (B, 2, S/2, S/2)
        return self.coarse(p).mean((1, 2, 3)) - 2 * p[:, 1].mean((1, 2))  # (B,)


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.05 * torch.rand(n, 1, S, S, generator=g)
    x[..., BOX[1]:BOX[3], BOX[0]:BOX[2]] += 0.3
    x[..., DECOY[1]:DECOY[3], DECOY[0]:DECOY[2]] += 0.6
    return x.clamp(0, 1)


def test_sweep_picks_the_layer_that_points_at_the_box():
    f = TwoScales().eval()
    x = _images()
    masks = _mask(BOX).expand(len(x), S, S)
    assert candidate_layers(f, size=S) == ["fine", "coarse"]
    cands = default_candidates("gradcam", f, size=S)
    assert cands == [{"layer": "fine"}, {"layer": "coarse"}, {"layer": "blocks-mean"}]
    res = sweep_options(x, masks, f, None, "gradcam", cands)
    rows = {r["options"]["layer"]: r for r in res.table}
    assert rows["fine"]["pointing_game"] == 1.0 and rows["coarse"]["pointing_game"] == 0.0
    assert rows["fine"]["relevance_mass"] == pytest.approx(1.0)
    assert rows["fine"]["n"] == len(x)
    # blocks-mean also points at the box here (ties on pointing) but spreads mass: the
    # tiebreak (relevance mass) keeps the fine layer
    assert rows["blocks-mean"]["pointing_game"] == 1.0
    assert rows["blocks-mean"]["relevance_mass"] < rows["fine"]["relevance_mass"]
    assert res.choice == {"layer": "fine"}
    # the choice reverses when the other layer is the one that points at the box
    res = sweep_options(x, _mask(DECOY).expand(len(x), S, S), f, None, "gradcam", cands)
    assert res.choice == {"layer": "coarse"}


def test_images_without_boxes_do_not_count_and_none_at_all_fails():
    f = TwoScales().eval()
    x = _images(4)
    masks = _mask(BOX).expand(4, S, S).clone()
    masks[2:] = False
    res = sweep_options(x, masks, f, None, "gradcam", [{"layer": "fine"}])
    assert res.table[0]["n"] == 2
    with pytest.raises(ValueError, match="no image has a box"):
        sweep_options(x, torch.zeros_like(masks), f, None, "gradcam", [{"layer": "fine"}])


def test_blocks_mean_is_the_mean_of_unit_scaled_block_maps():
    from bench._common import as_classifier
    from medxgan.classifiers.small_cnn import build_model

    torch.manual_seed(0)
    f = as_classifier(build_model("small_cnn2"), 32)
    names = candidate_layers(f)
    assert names == ["features.5", "features.12", "features.19"]   # the spec's naming
    assert names[-1] == f.target_layer_name()                     # the default is a candidate
    assert all(find_target_layer(f, n) is f.model.get_submodule(n) for n in names)
    x = torch.rand(3, 1, 32, 32)
    mean = make_explainer("gradcam", f, config={"layer": "blocks-mean"}).explain(x)
    listed = make_explainer("gradcam", f, config={"layers": names}).explain(x)
    torch.testing.assert_close(mean.maps, listed.maps)
    parts = []
    for n in names:
        m = make_explainer("gradcam", f, config={"layer": n}).explain(x).maps
        lo = m.flatten(1).min(1).values[:, None, None]
        hi = m.flatten(1).max(1).values[:, None, None]
        parts.append((m - lo) / (hi - lo + 1e-7))
    torch.testing.assert_close(mean.maps, torch.stack(parts).mean(0))
    assert mean.extras["layer_size"].tolist() == [[32, 32]] * 3      # the finest layer's
    with pytest.raises(ValueError, match="not both"):
        make_explainer("gradcam", f, config={"layer": "features.5", "layers": ["features.12"]})


def test_default_candidates_per_method():
    f = TwoScales().eval()
    ig = default_candidates("ig", f, TinyGenerator())
    assert ig == [{"baseline": "black"}, {"baseline": "blur"}]   # IG has no twin baseline
    with pytest.raises(ValueError, match="tunable"):
        default_candidates("occlusion", f)
    tune_args = typing.get_args(typing.get_args(ExplainSection.model_fields["tune"].annotation)[0])
    assert tuple(tune_args) == TUNABLE
    assert merge_options({"layers": ["a"], "relu": False}, {"layer": "b"}) == \
        {"layer": "b", "relu": False}


def test_ig_sweep_keeps_the_other_options():
    f = TwoScales().eval()
    x = _images(3)
    res = sweep_options(x, _mask(BOX).expand(3, S, S), f, None, "ig",
                        default_candidates("ig", f), options={"n_steps": 4})
    assert [r["options"] for r in res.table] == [{"baseline": "black"}, {"baseline": "blur"}]
    assert res.choice in [r["options"] for r in res.table]
    assert all(0.0 <= r["relevance_mass"] <= 1.0 for r in res.table)


def test_tune_config_is_checked_at_load():
    assert ExplainSection().tune == []                    # default: nothing tuned
    ok = ExplainSection(methods=["gradcam", "ig"], tune=["gradcam", "ig"])
    assert (ok.tune_split, ok.tune_images) == ("val", 64)
    for bad, msg in [({"tune": ["gradcam"], "tune_split": "test"}, "must differ"),
                     ({"tune": ["gradcam"], "split": ""}, "must differ"),
                     ({"tune": ["ig"], "methods": ["gradcam"]}, "not among"),
                     ({"tune": ["occlusion"]}, "tune")]:
        with pytest.raises(ValueError, match=msg):
            ExplainSection(**bad)


def test_tuning_images_are_validation_positives_with_boxes(tmp_path):
    from bench._common import write_phantom_cohort
    from medxgan.cohort.reader import Cohort
    from tasks.explain import plan_ids, plan_tune_ids

    url = str(tmp_path / "cohort")
    write_phantom_cohort(url, "phantom-cxr", 120, size=32, seed=5)
    c = Cohort(url)
    t = c.index().to_pandas().set_index("image_id")
    boxes = c.boxes_by_id()
    val = plan_tune_ids(url, "val", 64)
    assert val and all(t.loc[i, "split"] == "val" and t.loc[i, "label"] == 1 for i in val)
    assert all(len(boxes[i]) > 0 for i in val)
    assert not set(val) & set(plan_ids(url, "test", [1], None))
    assert plan_tune_ids(url, "val", 2) == val[:2]


def test_tuning_section_shows_the_table_and_the_choice():
    from medxgan.report._tuning import tuning_section

    assert tuning_section(None) == "" and tuning_section({}) == ""
    html = tuning_section({"gradcam": {
        "split": "val", "image_ids": ["a", "b"], "metric": "pointing_game",
        "tiebreak": "relevance_mass", "choice": {"layer": "features.12"},
        "candidates": [{"options": {"layer": "features.12"}, "pointing_game": 0.5,
                        "relevance_mass": 0.25, "n": 2},
                       {"options": {"layer": "<b>"}, "pointing_game": float("nan"),
                        "relevance_mass": 0.1, "n": 0}]}})
    assert 'id="tuning"' in html and "(chosen)" in html and "0.500" in html
    assert "<b>" not in html and "&lt;b&gt;" in html
    assert html.count("(chosen)") == 1
