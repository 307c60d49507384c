import math

import pytest
import torch

from medxgan.metrics.counterfactual import (
    counterfactual_flip,
    counterfactual_ncc,
    counterfactual_similarity,
    universal_flip,
)


def test_flip():
    p = torch.tensor([0.1, 0.5, 0.9, float("nan")])
    out = counterfactual_flip(p, threshold=0.5)
    assert out.dtype == torch.float64
    assert out[:3].tolist() == [1.0, 0.0, 0.0] and math.isnan(out[3])
    assert counterfactual_flip(p, threshold=0.95)[:3].tolist() == [1.0, 1.0, 1.0]


def test_similarity_hand_cases_exact_branch():
    c = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0))
    same = counterfactual_similarity(c.expand(5, 8, 8))
    torch.testing.assert_close(same, torch.ones(5, dtype=torch.float64))
    signs = torch.tensor([1.0, 1.0, -1.0, -1.0]).view(4, 1, 1) * c
    torch.testing.assert_close(counterfactual_similarity(signs), torch.full((4,), -1 / 3, dtype=torch.float64))
    onehot = torch.eye(6).view(6, 1, 2, 3)  # (B, C, H, W) orthogonal changes
    assert torch.equal(counterfactual_similarity(onehot), torch.zeros(6, dtype=torch.float64))
    with_zero = torch.cat([c.expand(3, 8, 8), torch.zeros(1, 8, 8)])
    out = counterfactual_similarity(with_zero)
    assert math.isnan(out[3]) and torch.allclose(out[:3], torch.ones(3, dtype=torch.float64))
    assert math.isnan(counterfactual_similarity(c)[0])  # one image: no others


def test_similarity_sampled_branch_never_compares_an_image_with_itself():
    B = 40
    onehot = torch.eye(B).view(B, 1, 5, 8)
    out = counterfactual_similarity(onehot, sample=8, seed=0)
    assert torch.equal(out, torch.zeros(B, dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 16, generator=g)
    ch = base + 0.5 * torch.randn(B, 16, generator=g)
    a = counterfactual_similarity(ch.view(B, 4, 4), sample=8, seed=3)
    assert torch.equal(a, counterfactual_similarity(ch.view(B, 4, 4), sample=8, seed=3))
    exact = counterfactual_similarity(ch.view(B, 4, 4), sample=B)
    assert a.mean().item() == pytest.approx(exact.mean().item(), abs=0.05)
    assert exact.mean() > 0.5  # one shared pattern


def test_ncc_hand_cases():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(4, 1, 16, 16, generator=g)
    torch.testing.assert_close(counterfactual_ncc(c, c), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(counterfactual_ncc(c, -c), -torch.ones(4, dtype=torch.float64))
    # invariant to offset and positive scale of either change
    torch.testing.assert_close(counterfactual_ncc(3 * c + 1, c), torch.ones(4, dtype=torch.float64))
    out = counterfactual_ncc(c, torch.cat([torch.zeros(1, 1, 16, 16), c[1:]]))
    assert math.isnan(out[0]) and out.dtype == torch.float64
    assert math.isnan(counterfactual_ncc(torch.full((1, 4, 4), 2.0), torch.rand(1, 4, 4))[0])
    with pytest.raises(ValueError):
        counterfactual_ncc(c, c[:, :, :8])


def test_ncc_of_unrelated_changes_is_near_zero_and_partial_overlap_in_between():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, 32, 32, generator=g)
    b = torch.randn(200, 32, 32, generator=g)
    assert abs(counterfactual_ncc(a, b).mean().item()) < 0.01
    true = torch.zeros(1, 32, 32)
    true[0, 8:16, 8:16] = 1.0
    half = torch.zeros(1, 32, 32)
    half[0, 8:16, 8:12] = 1.0  # half of the lesion
    v = counterfactual_ncc(half, true).item()
    assert 0.5 < v < 0.8  # exactly sqrt(32 * (1 - 64/1024) / (64 * (1 - 32/1024)))
    assert v == pytest.approx(math.sqrt(32 * (1 - 64 / 1024) / (64 * (1 - 32 / 1024))))


def test_universal_flip_counts_negatives_turned_positive():
    class Bright(torch.nn.Module):  # positive when the image's mean exceeds 0.5
        threshold = 0.5

        def forward(self, x):
            return 50.0 * (x.mean((1, 2, 3)) - 0.5)

    neg = torch.linspace(0.1, 0.45, 8).view(8, 1, 1, 1).expand(8, 1, 4, 4).contiguous()
    f = Bright()
    assert universal_flip(torch.zeros(4, 4), neg, f) == 0.0
    assert universal_flip(torch.full((1, 1, 4, 4), 0.2), neg, f) == 0.5  # 0.3 .. 0.45 cross
    assert universal_flip(torch.full((1, 4, 4), 0.6), neg, f, batch=3) == 1.0
    assert universal_flip(torch.full((4, 4), 0.2), neg, f, threshold=0.9999) == 0.0
    assert math.isnan(universal_flip(torch.zeros(4, 4), neg[:0], f))


def test_counterfactual_dice_against_the_true_support():
    from medxgan.metrics.counterfactual import SUPPORT_TOL, counterfactual_dice

    true = torch.zeros(3, 8, 8)
    true[:, 2:6, 2:6] = 0.3                      # a 16-pixel lesion
    change = torch.zeros(3, 8, 8)
    change[0, 2:6, 2:6] = 0.1                    # exactly the lesion (any amplitude)
    change[1, 2:6, 2:4] = 0.1                    # half of it
    change[1, 0, 0] = SUPPORT_TOL / 2            # below the tolerance: not a change
    change[2, 6:8, 6:8] = 0.2                    # somewhere else
    d = counterfactual_dice(change, true)
    torch.testing.assert_close(d, torch.tensor([1.0, 2 * 8 / (8 + 16), 0.0],
                                               dtype=torch.float64))
    assert math.isnan(counterfactual_dice(change[:1], torch.zeros(1, 8, 8))[0])  # no lesion
    with pytest.raises(ValueError, match="shapes differ"):
        counterfactual_dice(change, true[:, :4])


def test_mask_overlap_splits_dice_into_precision_and_recall():
    """A mask too big loses precision, a mask that leaves part of the lesion loses recall;
    Dice is their harmonic mean, and an empty change has no precision."""
    from medxgan.metrics.counterfactual import counterfactual_dice, mask_overlap

    true = torch.zeros(3, 8, 8)
    true[:, 2:6, 2:6] = 0.3                      # 16 lesion pixels
    change = torch.zeros(3, 8, 8)
    change[0, 1:7, 1:7] = 0.1                    # the lesion and a ring: 36 pixels
    change[1, 2:6, 2:4] = 0.1                    # half the lesion
    o = mask_overlap(change, true)
    torch.testing.assert_close(o["precision"][:2], torch.tensor([16 / 36, 1.0],
                                                                dtype=torch.float64))
    torch.testing.assert_close(o["recall"][:2], torch.tensor([1.0, 0.5], dtype=torch.float64))
    p, r = o["precision"][:2], o["recall"][:2]
    torch.testing.assert_close(o["dice"][:2], 2 * p * r / (p + r))
    torch.testing.assert_close(o["dice"], counterfactual_dice(change, true), equal_nan=True)
    assert math.isnan(o["precision"][2]) and o["recall"][2] == 0 and o["dice"][2] == 0
    assert all(math.isnan(v[0]) for v in mask_overlap(change[:1], torch.zeros(1, 8, 8)).values())


def test_healthy_control_tells_an_in_filler_that_invents_findings():
    """f calls an image positive when any 3x3 mean is bright; an in-filler that draws healthy
    background is never called positive, one that paints a bright spot in every hole always."""
    from torch import nn

    from medxgan.metrics.counterfactual import healthy_control

    class Bright(nn.Module):
        threshold = 0.5

        def forward(self, x):
            return 50 * (torch.nn.functional.avg_pool2d(x, 3, 1).amax((1, 2, 3)) - 0.5)

    class Filler(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, x, m):
            return x * (1 - m) + self.value * m

    g = torch.Generator().manual_seed(0)
    negs = 0.2 + 0.05 * torch.rand(10, 1, 32, 32, generator=g)
    f = Bright()
    assert healthy_control(Filler(0.2), negs, f, seed=1) == 0.0
    assert healthy_control(Filler(0.9), negs, f, seed=1) == 1.0
    positives = negs.clone()
    positives[:, :, 10:14, 10:14] = 1.0          # f calls them positive: skipped
    assert math.isnan(healthy_control(Filler(0.2), positives, f))
