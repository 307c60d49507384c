import math

import pytest
import torch

from medxgan.metrics.counterfactual import counterfactual_flip, counterfactual_similarity


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
