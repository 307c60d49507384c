"""The shortcut finder (medxgan.metrics.shortcut) on phantoms with a tag classifier and on a
lesion-only classifier."""

import math

import numpy as np
import pytest
import torch

from medxgan import phantoms
from medxgan.metrics.shortcut import ShortcutFinding, find_shortcut
from tests.metrics.test_ablation import LesionDetector, TagDetector, lesion_batch, phantom_batch

S = 64


def _overlaps(a, b) -> bool:
    """Do boxes (x0, y0, x1, y1) a and b share a pixel?"""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class FlippedTag(TagDetector):
    """The tag detector of left-right flipped images: the shortcut sits in the top-left corner."""

    def forward(self, x):
        return super().forward(x.flip(-1))


@pytest.fixture(scope="module")
def cohort():
    return phantom_batch(48, size=S, shortcut_rate=0.9)


@pytest.mark.parametrize("flipped", [False, True])
def test_the_finder_points_at_the_tag_and_the_transplant_flips_negatives(cohort, flipped):
    x, labels, masks, tagged = cohort
    f = TagDetector(S)
    tag = phantoms.tag_box(S)
    if flipped:  # same cohort mirrored, classifier reads the mirrored corner
        x, masks, f = x.flip(-1), masks.flip(-1), FlippedTag(S)
        tag = (S - tag[2], tag[1], S - tag[0], tag[3])
    r = find_shortcut(f, x, masks, labels, seed=0)
    assert isinstance(r, ShortcutFinding)
    assert (r.patch, r.stride) == (8, 4) and r.drop_map.shape == r.counts.shape == (15, 15)
    assert r.box is not None and _overlaps(r.box, tag)
    assert r.box[2] - r.box[0] == r.box[3] - r.box[1] == 8
    assert r.drop_ci_low > 0.2 and r.n == 48
    # away from the tag nothing moves f
    far = np.array([[not _overlaps((int(xx), int(yy), int(xx) + 8, int(yy) + 8), tag)
                     for xx in r.xs] for yy in r.ys])
    assert np.nanmax(np.abs(r.drop_map[far])) < 0.02
    # the gallery: tagged positives
    assert len(r.top_images) == 8 and bool(tagged[r.top_images].all())
    assert bool((labels[r.top_images] == 1).all())
    # transplant flips most negatives, a random region of the same size none
    n_neg_called_neg = int(((labels == 0) & (torch.sigmoid(f(x)) < 0.5)).sum())
    assert r.transplant_n == n_neg_called_neg >= 15
    assert r.transplant_rate > 0.6 and r.control_rate < 0.05
    assert r.transplant_ci_low > r.control_ci_high
    s = r.summary()
    assert s["box"] == list(r.box) and "drop_map" not in s


def test_a_lesion_only_classifier_shows_no_shortcut():
    x, masks, _ = lesion_batch(n_pos=8, n_neg=8)
    labels = torch.tensor([1] * 8 + [0] * 8)
    r = find_shortcut(LesionDetector(), x, masks, labels, seed=0)
    assert abs(r.drop) < 0.01 and r.drop_ci_high < 0.01
    assert np.nanmax(np.abs(r.drop_map)) < 0.01
    assert r.transplant_n == 8 and r.transplant_rate == 0.0 and r.control_rate == 0.0


def test_patches_over_the_own_boxes_are_skipped():
    x, masks, _ = lesion_batch(n_pos=8, n_neg=2)
    labels = torch.tensor([1] * 8 + [0] * 2)
    r = find_shortcut(LesionDetector(), x, masks, labels, patch=6, stride=4, seed=0)
    ys, xs = r.ys.tolist(), r.xs.tolist()
    assert ys == xs == [0, 4, 8, 12, 16, 20, 24, 26]  # the last start ends at the edge
    want = np.zeros((len(ys), len(xs)), np.int64)
    for b in range(len(x)):
        for i, yy in enumerate(ys):
            for j, xx in enumerate(xs):
                want[i, j] += not bool(masks[b, yy:yy + 6, xx:xx + 6].any())
    assert np.array_equal(r.counts, want)
    assert (r.counts < len(x)).any()  # some positions were skipped for some images


def test_chunking_and_the_seed_do_not_change_the_map(cohort):
    x, labels, masks, _ = (t[:24] for t in cohort)
    a = find_shortcut(TagDetector(S), x, masks, labels, seed=0, batch_size=37)
    b = find_shortcut(TagDetector(S), x, masks, labels, seed=0)
    assert np.allclose(a.drop_map, b.drop_map, equal_nan=True)
    assert a.box == b.box and a.transplant_rate == b.transplant_rate


def test_noisy_linear_and_mean_infill_find_the_tag_too(cohort):
    x, labels, masks, _ = (t[:20] for t in cohort)
    for method in ("noisy_linear", "mean"):
        r = find_shortcut(TagDetector(S), x, masks, labels, method=method, seed=0, n_boot=200)
        assert r.method == method and _overlaps(r.box, phantoms.tag_box(S)) and r.drop > 0.2


def test_without_negatives_there_is_no_transplant():
    x, masks, _ = lesion_batch(n_pos=6, n_neg=0)
    r = find_shortcut(LesionDetector(), x, masks, torch.ones(6, dtype=torch.long), seed=0)
    assert r.transplant_n == 0 and math.isnan(r.transplant_rate) and math.isnan(r.control_rate)


def test_bad_arguments_are_refused():
    x, masks, _ = lesion_batch()
    with pytest.raises(ValueError):
        find_shortcut(LesionDetector(), x, masks, torch.ones(3), seed=0)
    with pytest.raises(ValueError):
        find_shortcut(LesionDetector(), x, masks, torch.ones(len(x)), patch=64, seed=0)
