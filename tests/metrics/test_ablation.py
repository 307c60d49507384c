"""Intervention evidence (medxgan.metrics.ablation) on analytic classifiers and phantoms."""

import math

import numpy as np
import pytest
import torch

from medxgan import phantoms
from medxgan.metrics.ablation import ABLATION_METRICS, ablation_scores, infill, noisy_linear_infill
from medxgan.metrics.faithfulness import gaussian_blur
from medxgan.metrics.localization import shuffled_masks
from medxgan.metrics.masks import boxes_to_masks

H = W = 32
L = 6  # lesion side, px
# distinct, non-overlapping lesion cells (row, col) so a partner's box never covers the own one
CELLS = [(2, 2), (2, 13), (2, 24), (13, 2), (13, 24), (24, 2), (24, 13), (24, 24)]


class LesionDetector(torch.nn.Module):
    """logit = scale * (max over LxL windows of the mean intensity - c): a bright LxL square
    anywhere makes the image positive (p ~ 1), background 0.2 makes it negative (p ~ 0)."""

    threshold = 0.5

    def __init__(self, scale: float = 25.0, c: float = 0.55):
        super().__init__()
        self.scale, self.c = scale, c

    def forward(self, x):
        m = torch.nn.functional.avg_pool2d(x, L, stride=1)  # (B, 1, H-L+1, W-L+1)
        return self.scale * (m.flatten(1).amax(1) - self.c)


class TagDetector(torch.nn.Module):
    """logit = scale * (mean intensity in the phantom tag box - c): the corner shortcut only."""

    threshold = 0.5

    def __init__(self, size: int, scale: float = 20.0, c: float = 0.5):
        super().__init__()
        self.box, self.scale, self.c = phantoms.tag_box(size), scale, c

    def forward(self, x):
        x0, y0, x1, y1 = self.box
        return self.scale * (x[:, 0, y0:y1, x0:x1].mean((1, 2)) - self.c)


def lesion_batch(n_pos: int = 8, n_neg: int = 2, seed: int = 0):
    """Background 0.2 + noise, positives with a 0.9 LxL square in their own cell.

    Returns: images (B, 1, H, W), masks (B, H, W), healthy twins (B, 1, H, W).
    """
    g = torch.Generator().manual_seed(seed)
    B = n_pos + n_neg
    twin = 0.2 + 0.05 * torch.rand(B, 1, H, W, generator=g)
    x = twin.clone()
    masks = torch.zeros(B, H, W, dtype=torch.bool)
    for i in range(n_pos):
        r, c = CELLS[i % len(CELLS)]
        x[i, 0, r:r + L, c:c + L] = 0.9
        masks[i, r:r + L, c:c + L] = True
    return x, masks, twin


def phantom_batch(n: int, size: int = 64, shortcut_rate: float = 0.9, seed: int = 0):
    """Real phantom-cxr images: (n, 1, S, S) in [0, 1], labels (n,), box masks (n, S, S), tagged (n,)."""
    imgs = list(phantoms.generate("phantom-cxr", n, size=size, seed=seed, shortcut_rate=shortcut_rate))
    x = torch.from_numpy(np.stack([i.pixels for i in imgs]).astype(np.float32) / 255.0)[:, None]
    boxes = [np.array([[b.x0, b.y0, b.x1, b.y1] for b in i.boxes], np.float64).reshape(-1, 4) for i in imgs]
    masks = boxes_to_masks(boxes, size, size)
    labels = torch.tensor([i.label for i in imgs])
    tagged = torch.tensor([i.source_ref.endswith(":tag=1") for i in imgs])
    return x, labels, masks, tagged


# ---- infill -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["blur", "mean", "noisy_linear", "twin"])
def test_infill_changes_only_the_masked_pixels(method):
    x, masks, twin = lesion_batch()
    out = infill(x, masks, method, seed=0, twin=twin)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[~masks[:, None]], x[~masks[:, None]])
    changed = (out - x).abs()[masks[:, None]]
    assert changed.min() > 0.3  # the 0.9 lesion is gone everywhere inside the mask
    if method == "twin":
        assert torch.equal(out[masks[:, None]], twin[masks[:, None]])
    if method == "blur":
        assert torch.allclose(out[masks[:, None]], gaussian_blur(x, 5.0)[masks[:, None]])
    if method == "mean":
        assert torch.allclose(out[0, 0][masks[0]], x[0].mean().expand(L * L))


def test_infill_rejects_bad_shapes_and_methods():
    x, masks, _ = lesion_batch()
    with pytest.raises(ValueError):
        infill(x, masks[:, :-1], "blur", seed=0)
    with pytest.raises(ValueError):
        infill(x, masks, "inpaint", seed=0)
    with pytest.raises(ValueError):
        infill(x, masks, "twin", seed=0)  # no twin given


def test_noisy_linear_keeps_a_constant_image_constant():
    x = torch.full((3, 1, H, W), 0.4)
    masks = torch.zeros(3, H, W, dtype=torch.bool)
    masks[0, 5:20, 8:30] = True
    masks[1] = True
    masks[1, 10:12, 10:12] = False  # almost everything unknown
    masks[2, :, :16] = True  # touching the border
    out = noisy_linear_infill(x, masks, seed=0, noise=0.0)
    assert (out - 0.4).abs().max() < 1e-5
    noisy = infill(x, masks, "noisy_linear", seed=0)  # default noise 0.01
    d = (noisy - 0.4)[masks[:, None]]
    assert d.abs().max() < 0.06 and 0.005 < d.std() < 0.015 and d.mean().abs() < 2e-3


def test_noisy_linear_reproduces_a_linear_ramp_inside_the_mask():
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    ramp = (0.1 + 0.5 * xx / (W - 1) + 0.3 * yy / (H - 1))[None, None].repeat(2, 1, 1, 1)
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, 4:28, 6:20] = True  # a big interior hole
    masks[1, 10:13, 3:29] = True  # a thin band
    exact = noisy_linear_infill(ramp, masks, seed=0, noise=0.0)
    assert (exact - ramp).abs().max() < 1e-4
    # the mean infill, for contrast, is far off the ramp
    assert (infill(ramp, masks, "mean", seed=0) - ramp).abs().max() > 0.1
    noisy = infill(ramp, masks, "noisy_linear", seed=3)
    err = (noisy - ramp)[masks[:, None]]
    assert err.abs().mean() < 0.012 and err.abs().max() < 0.06
    assert torch.equal(noisy, infill(ramp, masks, "noisy_linear", seed=3))  # seeded
    assert not torch.equal(noisy, infill(ramp, masks, "noisy_linear", seed=4))


def test_noisy_linear_is_batch_independent():
    x, masks, _ = lesion_batch()
    batched = noisy_linear_infill(x, masks, noise=0.0)
    single = torch.cat([noisy_linear_infill(x[i:i + 1], masks[i:i + 1], noise=0.0) for i in range(len(x))])
    assert (batched - single).abs().max() < 1e-5


# ---- ablation_scores -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["blur", "mean", "noisy_linear", "twin"])
def test_a_lesion_classifier_loses_its_belief_with_its_own_boxes_only(method):
    x, masks, twin = lesion_batch(n_pos=8, n_neg=2)
    f = LesionDetector()
    partners = shuffled_masks(masks, seed=0)
    s = ablation_scores(f, x, masks, partners, method=method, seed=0, twin=twin)
    assert list(s) == list(ABLATION_METRICS)
    for v in s.values():
        assert v.shape == (10,) and v.dtype == torch.float64
    p = torch.sigmoid(f(x)).double()
    pos = slice(0, 8)
    assert (p[pos] > 0.99).all()
    assert (s["ablation_drop"][pos] > 0.9).all()
    assert s["ablation_drop_shuffled"][pos].abs().max() < 0.05
    assert (s["ablation_flip"][pos] == 1.0).all()
    assert (s["retention"][pos] - p[pos]).abs().max() < 0.01
    # negatives: no boxes, no partner, f calls them negative -> NaN everywhere
    for v in s.values():
        assert v[8:].isnan().all()


def test_a_positive_that_stays_positive_does_not_flip_and_negative_calls_are_nan():
    x, masks, _ = lesion_batch(n_pos=4, n_neg=0)
    x[1, 0, 20:26, 20:26] = 0.9  # a second, unannotated lesion keeps image 1 positive
    x[2] = 0.2  # image 2 has a box but f calls it negative
    x[3, 0, 24:30, 24:30] = 0.9  # image 3: its box (cell 3) is empty, the lesion lies elsewhere
    x[3, 0, 13:19, 2:8] = 0.2
    s = ablation_scores(LesionDetector(), x, masks, shuffled_masks(masks, seed=0), seed=0)
    assert s["ablation_flip"][0] == 1.0 and s["retention"][0] > 0.99
    assert s["ablation_flip"][1] == 0.0 and s["ablation_drop"][1].abs() < 0.01
    assert s["retention"][1] > 0.99  # its own lesion alone still convinces f
    assert math.isnan(s["ablation_flip"][2]) and not math.isnan(s["ablation_drop"][2])
    assert s["ablation_flip"][3] == 0.0 and s["ablation_drop"][3].abs() < 0.01
    assert s["retention"][3] < 0.2  # the box alone carries nothing (the blurred lesion a little)


def test_chunking_does_not_change_the_scores():
    x, masks, _ = lesion_batch()
    partners = shuffled_masks(masks, seed=1)
    a = ablation_scores(LesionDetector(), x, masks, partners, seed=0, batch_size=3)
    b = ablation_scores(LesionDetector(), x, masks, partners, seed=0)
    for k in a:
        assert torch.allclose(a[k], b[k], equal_nan=True)


def test_a_shortcut_classifier_on_phantoms_does_not_care_about_the_findings():
    x, labels, masks, tagged = phantom_batch(40)
    f = TagDetector(64)
    partners = shuffled_masks(masks, seed=0)
    s = ablation_scores(f, x, masks, partners, seed=0)
    boxed = masks.flatten(1).any(1)
    assert boxed.sum() >= 10
    assert s["ablation_drop"][boxed].abs().max() < 0.01
    assert s["ablation_drop_shuffled"][boxed].abs().max() < 0.01
    called = boxed & (torch.sigmoid(f(x)) >= 0.5)
    assert called.sum() >= 8 and (s["ablation_flip"][called] == 0.0).all()
    # the tag lies outside the boxes: keeping only the boxes removes it
    assert (s["retention"][boxed & tagged] < 0.1).all()
