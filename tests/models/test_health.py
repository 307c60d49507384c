"""Health metrics on analytic generators whose right answers are known."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from torch import nn

from medxgan.cohort.loading import HeldOut
from medxgan.generators.health import lesion_fidelity
from medxgan.generators.published.health import (agreement, change_similarity, inversion_health,
                                                 sample_grid)

S = 8


class _Brightness(nn.Module):
    """f(x) = 100 (mean(x) - 0.15): positive iff the mean pixel exceeds 0.15."""

    threshold = 0.5

    def forward(self, x):
        return 100 * (x.mean(dim=(1, 2, 3)) - 0.15)


class _BoxG(nn.Module):
    """Background from z_a (dark); z_p != 0 adds +1 inside rows/cols [2, 5) (or a per-sample
    random pattern everywhere when ``shared`` is False). Output in [-1, 1]."""

    def __init__(self, shared: bool = True, uses_zp: bool = True):
        super().__init__()
        self.d_a, self.d_p, self.image_size = 4, S * S, S
        self.w = nn.Parameter(torch.randn(4, S * S, generator=torch.Generator().manual_seed(0)))
        box = torch.zeros(S, S)
        box[2:5, 2:5] = 1
        self.register_buffer("box", box.flatten())
        self.shared, self.uses_zp = shared, uses_zp

    def forward(self, z_a, z_p):
        bg = -0.8 + 0.05 * torch.tanh(z_a @ self.w)                   # (B, S*S) dark
        if not self.uses_zp:
            return bg.view(-1, 1, S, S)
        if self.shared:
            change = self.box * torch.tanh(z_p.pow(2).sum(1, keepdim=True)) * 1.8
        else:
            change = 0.1 * torch.tanh(z_p)                   # image-specific, no clamp
        return (bg + change).clamp(-1, 1).view(-1, 1, S, S)


def test_agreement_counts_both_classes():
    f = _Brightness()
    assert agreement(_BoxG(shared=True), f, n=200) == (1.0, 1.0)   # background 0.1, box +0.13
    assert agreement(_BoxG(uses_zp=False), f, n=200) == (1.0, 0.0)


def test_change_similarity_one_pattern_vs_image_specific():
    assert change_similarity(_BoxG(shared=True), n=16) == pytest.approx(1.0, abs=1e-3)
    assert abs(change_similarity(_BoxG(shared=False), n=16)) < 0.1


def test_fidelity_is_the_share_of_the_change_inside_the_boxes():
    G, f = _BoxG(shared=True), _Brightness()
    images = torch.rand(4, 1, S, S, generator=torch.Generator().manual_seed(1))
    inside = torch.zeros(4, S, S, dtype=torch.bool)
    inside[:, 2:5, 2:5] = True
    outside = torch.zeros(4, S, S, dtype=torch.bool)
    outside[:, 5:, 5:] = True
    mixed = torch.stack([inside[0], outside[0], inside[0], outside[0]])
    labels = torch.ones(4, dtype=torch.long)
    h_in = inversion_health(G, f, HeldOut(images, labels, inside), steps=3)
    assert h_in["fidelity"] == pytest.approx(1.0) and h_in["n_fidelity"] == 4
    h_out = inversion_health(G, f, HeldOut(images, labels, outside), steps=3)
    assert h_out["fidelity"] == pytest.approx(0.0)
    h_mix = inversion_health(G, f, HeldOut(images, labels, mixed), steps=3)
    assert h_mix["fidelity"] == pytest.approx(0.5) and h_mix["fidelity_shuffled"] == \
        pytest.approx(0.5)
    assert h_in["recon_mse"] > 0
    neg = inversion_health(G, f, HeldOut(images, torch.zeros(4, dtype=torch.long), inside), 3)
    assert neg["n_fidelity"] == 0 and neg["fidelity"] != neg["fidelity"]  # NaN


def test_lesion_fidelity_own_and_shuffled_boxes():
    masks = torch.zeros(3, S, S, dtype=torch.bool)
    for i in range(3):                                  # disjoint boxes per image
        masks[i, 2 * i:2 * i + 2, :2] = True
    change = torch.where(masks, -2.0, 0.0)             # all of each change in its own box
    own, shuffled = lesion_fidelity(change, masks)
    assert own == pytest.approx(1.0) and shuffled == pytest.approx(0.0)
    change[0, S - 1, S - 1] = 4.0                      # image 0: 4 of 12 outside its box
    own, _ = lesion_fidelity(change, masks)
    assert own == pytest.approx((8 / 12 + 1 + 1) / 3)


def test_sample_grid_is_a_png_of_triples():
    img = Image.open(io.BytesIO(sample_grid(_BoxG(), n=3)))
    assert img.size == (3 * S + 4, 3 * (S + 2))
