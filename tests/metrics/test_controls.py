"""The run-wide shuffled-box control: shuffle_partners and partner_masks."""

from __future__ import annotations

import numpy as np
import torch

from medxgan.metrics import partner_masks, score_batch, shuffle_partners
from medxgan.metrics.masks import boxes_to_masks


def _boxes(n: int, without: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    return {f"im{i}": np.array([[i % 8, 0, i % 8 + 2, 4]], np.float32)
            for i in range(n) if i not in without}


def test_partners_are_a_seeded_derangement_of_the_boxed_ids():
    boxes = _boxes(10, without=(3, 7))
    ids = [f"im{i}" for i in range(10)]
    p = shuffle_partners(ids, boxes, seed=0)
    assert set(p) == set(boxes) and set(p.values()) == set(boxes)  # a permutation of the boxed
    assert all(k != v for k, v in p.items())                         # no image is its own
    assert p == shuffle_partners(ids, boxes, seed=0)
    assert p != shuffle_partners(ids, boxes, seed=1)


def test_partners_do_not_depend_on_id_order_or_duplicates():
    boxes = _boxes(9)
    ids = [f"im{i}" for i in range(9)]
    assert shuffle_partners(ids, boxes, 2) == shuffle_partners(ids[::-1] + ids[:3], boxes, 2)


def test_fewer_than_two_boxed_images_have_no_partner():
    assert shuffle_partners(["a", "b"], {"a": np.zeros((1, 4), np.float32) + 1}, 0) == {}
    assert shuffle_partners([], {}, 0) == {}


def test_partner_masks_are_the_partners_own_masks_across_batches():
    boxes = _boxes(7, without=(5,))
    ids = [f"im{i}" for i in range(7)]
    p = shuffle_partners(ids, boxes, seed=4)
    empty = np.zeros((0, 4), np.float32)
    own = boxes_to_masks([boxes.get(i, empty) for i in ids], 8, 8, (16, 16))
    for part in (ids[:3], ids[3:]):  # a batch's partners may sit in another batch
        got = partner_masks(part, p, boxes, 8, 8, (16, 16))
        for k, i in enumerate(part):
            want = own[ids.index(p[i])] if i in p else torch.zeros(8, 8, dtype=torch.bool)
            assert torch.equal(got[k], want)


def test_score_batch_rows_localisation_only():
    g = torch.Generator().manual_seed(0)
    boxes = _boxes(4)
    ids = list(boxes)
    maps = torch.rand(4, 8, 8, generator=g)
    masks = boxes_to_masks([boxes[i] for i in ids], 8, 8)
    others = partner_masks(ids, shuffle_partners(ids, boxes, 0), boxes, 8, 8)
    df = score_batch(maps, masks, others, None, None, {"faithfulness": False}, method="m",
                     ids=ids)
    assert len(df) == 4 * 12 and set(df["method"]) == {"m"}
    assert {m for m in df["metric"] if m.endswith("_shuffled")} == {
        f"{m}_shuffled" for m in ("pointing_game", "iou_otsu", "relevance_mass",
                                  "relevance_rank", "auroc", "auprc")}
    assert list(df["image_id"][:4]) == ids  # metric-major, images in the given order
