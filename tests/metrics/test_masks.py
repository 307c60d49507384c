import numpy as np
import torch

from medxgan.metrics.masks import boxes_to_masks


def _box(*b):
    return np.array([b], dtype=np.float32)


def _cells(mask):
    return {tuple(ij) for ij in torch.nonzero(mask).tolist()}


def test_box_in_own_pixels_covers_exactly_its_pixels():
    m = boxes_to_masks([_box(1, 2, 4, 3)], 8, 8)  # x 1..3, y 2
    assert m.shape == (1, 8, 8) and m.dtype == torch.bool
    assert _cells(m[0]) == {(2, 1), (2, 2), (2, 3)}


def test_boxes_at_and_beyond_the_image_edge():
    edge = boxes_to_masks([_box(6, 6, 8, 8)], 8, 8)[0]
    beyond = boxes_to_masks([_box(6, 6, 11, 12)], 8, 8)[0]
    assert _cells(edge) == {(6, 6), (6, 7), (7, 6), (7, 7)}
    assert torch.equal(edge, beyond)
    whole = boxes_to_masks([_box(-3, -3, 100, 100)], 8, 8)[0]
    assert whole.all()
    outside = boxes_to_masks([_box(9, 9, 12, 12)], 8, 8)[0]
    assert not outside.any()


def test_rescaling_from_the_stored_image_size():
    # 64 px image, 8 px map: box 8..16 maps to map pixel 1 on both axes.
    m = boxes_to_masks([_box(8, 8, 16, 16)], 8, 8, image_size=(64, 64))[0]
    assert _cells(m) == {(1, 1)}
    # non-square: 32 high x 64 wide image onto a 4x4 map
    m = boxes_to_masks([_box(0, 8, 32, 16)], 4, 4, image_size=(32, 64))[0]
    assert _cells(m) == {(1, 0), (1, 1)}


def test_box_smaller_than_a_map_pixel_marks_the_pixel_of_its_centre():
    m = boxes_to_masks([np.concatenate([_box(3, 3, 4, 4), _box(60, 20, 61, 21)])], 8, 8, image_size=(64, 64))[0]
    assert _cells(m) == {(0, 0), (2, 7)}
    # thin in x only: whole rows of its y range, one column
    m = boxes_to_masks([_box(17, 0, 18, 64)], 8, 8, image_size=(64, 64))[0]
    assert _cells(m) == {(i, 2) for i in range(8)}


def test_centre_rule_is_half_open():
    # centres at 0.5, 1.5: a box [0, 1.5) holds only column 0; [0, 1.51) holds 0 and 1
    assert _cells(boxes_to_masks([_box(0, 0, 1.5, 1)], 2, 2)[0]) == {(0, 0)}
    assert _cells(boxes_to_masks([_box(0, 0, 1.51, 1)], 2, 2)[0]) == {(0, 0), (0, 1)}


def test_union_empty_images_and_per_image_sizes():
    boxes = [np.concatenate([_box(0, 0, 2, 2), _box(1, 1, 3, 3)]), np.zeros((0, 4), np.float32), _box(0, 0, 16, 16)]
    m = boxes_to_masks(boxes, 4, 4, image_size=[(4, 4), (4, 4), (16, 16)])
    assert _cells(m[0]) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)}
    assert not m[1].any()
    assert m[2].all()
    assert not boxes_to_masks([np.zeros((0, 4))] * 3, 5, 6).any()
    assert boxes_to_masks([np.zeros((0, 4))] * 3, 5, 6).shape == (3, 5, 6)
