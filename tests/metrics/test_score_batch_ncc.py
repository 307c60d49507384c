"""score_batch's counterfactual_ncc: the generator's change against the true change (phantoms)."""

from __future__ import annotations

import math

import torch

from medxgan.metrics.batch import score_batch


def _rows(df, metric):
    return df[df["metric"] == metric].set_index("image_id")["value"].to_dict()


def test_ncc_of_the_true_change_is_one_and_its_control_uses_the_partner():
    g = torch.Generator().manual_seed(0)
    true = torch.rand(3, 16, 16, generator=g)                  # (B, H, W) x - x_healthy
    changes = 2.0 * true[:, ::2, ::2] + 0.5                    # same pattern, other scale, 8x8
    partner = torch.stack([true[1], true[2], torch.full((16, 16), float("nan"))])
    maps = torch.rand(3, 8, 8, generator=g)
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True
    df = score_batch(maps, masks, masks.roll(1, 0), None, None, {"faithfulness": False},
                     method="medxgan", ids=["a", "b", "c"], changes=changes,
                     true_changes=true, partner_true_changes=partner)
    own, shuf = _rows(df, "counterfactual_ncc"), _rows(df, "counterfactual_ncc_shuffled")
    # area-averaged 16 -> 8 px true change vs strided samples: correlated, not identical
    assert all(v > 0.3 for v in own.values())
    assert all(abs(v) < own[k] for k, v in shuf.items() if not math.isnan(v))
    assert math.isnan(shuf["c"])                               # no partner: no control


def test_no_true_change_no_ncc_rows_and_other_methods_never_get_them():
    maps = torch.rand(2, 8, 8)
    masks = torch.ones(2, 8, 8, dtype=torch.bool)
    df = score_batch(maps, masks, masks, None, None, {"faithfulness": False}, method="medxgan",
                     ids=["a", "b"], changes=torch.rand(2, 8, 8))
    assert "counterfactual_ncc" not in set(df["metric"])
    df = score_batch(maps, masks, masks, None, None, {"faithfulness": False}, method="gradcam",
                     ids=["a", "b"], changes=torch.rand(2, 8, 8), true_changes=torch.rand(2, 8, 8))
    assert "counterfactual_ncc" not in set(df["metric"])


def test_dice_rows_beside_ncc_with_the_partner_as_control():
    true = torch.zeros(3, 8, 8)
    true[0, 1:4, 1:4] = 0.2                                    # three lesions, apart
    true[1, 4:7, 4:7] = 0.2
    true[2, 1:4, 4:7] = 0.2
    changes = true.clone()                                     # x_neg removes each lesion
    changes[1, 4:7, 6] = 0.0                                   # ... except a column of one
    partner = torch.stack([true[1], true[2], torch.full((8, 8), float("nan"))])
    masks = true > 0
    df = score_batch(torch.rand(3, 8, 8), masks, masks.roll(1, 0), None, None,
                     {"faithfulness": False}, method="medxgan", ids=["a", "b", "c"],
                     changes=changes, true_changes=true, partner_true_changes=partner)
    own, shuf = _rows(df, "counterfactual_dice"), _rows(df, "counterfactual_dice_shuffled")
    assert own["a"] == 1.0 and own["c"] == 1.0
    assert abs(own["b"] - 2 * 6 / (6 + 9)) < 1e-12
    assert shuf["a"] == 0.0 and shuf["b"] == 0.0 and math.isnan(shuf["c"])
    gc = score_batch(torch.rand(3, 8, 8), masks, masks, None, None, {"faithfulness": False},
                     method="gradcam", ids=["a", "b", "c"], changes=changes, true_changes=true)
    assert "counterfactual_dice" not in set(gc["metric"])
