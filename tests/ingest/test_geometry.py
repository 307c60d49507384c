"""Square pad + resize with boxes: analytic cases whose answer is known."""

import numpy as np
import pytest

from medxgan.ingest.geometry import (clip_boxes, pad_resize, square_transform, transform_boxes,
                                     validate_label)
from medxgan.ingest.records import BadRecord, RawBox

from .helpers import assert_bright_inside


@pytest.mark.parametrize("h,w,size", [(40, 60, 32), (60, 40, 32), (48, 48, 32), (30, 50, 64),
                                      (1024, 1024, 256), (100, 37, 64)])
def test_bright_rectangle_lands_in_transformed_box(h, w, size):
    box = (0.3 * w, 0.25 * h, 0.75 * w, 0.6 * h)
    img = np.zeros((h, w), np.float32)
    img[int(np.ceil(box[1])):int(box[3]), int(np.ceil(box[0])):int(box[2])] = 1.0
    out = pad_resize(img, size)
    assert out.shape == (size, size) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    tb = transform_boxes(clip_boxes([RawBox(*box)], h, w), h, w, size)
    assert tb.dtype == np.float32 and tb.shape == (1, 4)
    assert_bright_inside(out, tb, thr=0.5)
    # the mass of the image is preserved by area averaging and lies in the box
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = (out * xx).sum() / out.sum(), (out * yy).sum() / out.sum()
    assert tb[0, 0] < cx < tb[0, 2] and tb[0, 1] < cy < tb[0, 3]


def test_padding_is_centred_black():
    img = np.ones((20, 40), np.float32)             # wide: pad 10 rows above and below
    px, py, s = square_transform(20, 40, 40)
    assert (px, py, s) == (0.0, 10.0, 1.0)
    out = pad_resize(img, 40)
    assert out[:10].max() == 0 and out[30:].max() == 0 and out[10:30].min() == 1
    whole = transform_boxes(np.array([[0, 0, 40, 20]]), 20, 40, 40)
    np.testing.assert_allclose(whole, [[0, 10, 40, 30]])


def test_transform_exact_numbers():
    # 1024 square -> 256: scale 1/4, no pad
    np.testing.assert_allclose(transform_boxes(np.array([[264, 152, 477, 531]]), 1024, 1024, 256),
                               [[66, 38, 119.25, 132.75]])
    # 200 high x 100 wide -> 50: pad 50 left, scale 1/4
    np.testing.assert_allclose(transform_boxes(np.array([[0, 0, 100, 200]]), 200, 100, 50),
                               [[12.5, 0, 37.5, 50]])


def test_partly_outside_box_is_clipped_and_kept():
    b = clip_boxes([RawBox(-10, 5, 20, 300)], 100, 50)
    np.testing.assert_allclose(b, [[0, 5, 20, 100]])


@pytest.mark.parametrize("box,reason", [
    (RawBox(np.nan, 0, 5, 5), "NaN"), (RawBox(0, 0, np.inf, 5), "NaN or infinite"),
    (RawBox(5, 0, 5, 5), "degenerate"), (RawBox(5, 5, 10, 2), "degenerate"),
    (RawBox(60, 0, 70, 10), "fully outside"), (RawBox(-20, -20, 0, 0), "fully outside"),
    (RawBox(0, 100, 10, 120), "fully outside"),
])
def test_bad_boxes(box, reason):
    with pytest.raises(BadRecord, match=reason):
        clip_boxes([RawBox(1, 1, 4, 4), box], 100, 50)


@pytest.mark.parametrize("label,ok", [(1, True), (0, True), (-1, True), ("1", True),
                                      (2, False), (-2, False), ("yes", False), (0.5, False),
                                      (None, False), (True, False)])
def test_validate_label(label, ok):
    if ok:
        assert validate_label(label) == int(label)
    else:
        with pytest.raises(BadRecord, match="not in"):
            validate_label(label)
