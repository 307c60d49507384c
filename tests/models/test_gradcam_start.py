"""The inpaint family's Grad-CAM start (``search.start: gradcam``): f's Grad-CAM proposes the
start mask instead of the coarse ranking; a proposal f does not need, or a classifier Grad-CAM
cannot hook, leaves the search as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medxgan.config.inpaint import SearchConfig
from medxgan.generators.inpaint.inpainter import InpaintGenerator
from medxgan.generators.inpaint.start import gradcam_cuts
from tests.models.test_inpaint_family import S, BlobClassifier, ConstantFill


class ConvBlob(nn.Module):
    """f with a conv layer for Grad-CAM: A = relu(x - 0.6) (a 1x1 conv), logit = 20 (max over
    6x6 means of A - 0.1): positive on a bright blob anywhere."""

    threshold = 0.5

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(-0.6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x))
        return 20 * (F.avg_pool2d(a, 6, 1).flatten(1).amax(1) - 0.1)


class CountingFill(ConstantFill):
    """ConstantFill that counts the images it in-fills."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        self.n += x.shape[0]
        return super().forward(x, m)


def _blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """Three images with a 6 x 6 lesion (0.85-0.95) at a different place each, one healthy;
    (4, 1, S, S) images and (4, S, S) lesion supports."""
    x = 0.3 + 0.02 * torch.randn(4, 1, S, S, generator=torch.Generator().manual_seed(3))
    lesion = torch.zeros(4, S, S, dtype=torch.bool)
    for i, (r, c) in enumerate([(3, 4), (20, 22), (12, 5)]):
        lesion[i, r:r + 6, c:c + 6] = True
    x[:, 0][lesion] = 0.85 + 0.1 * torch.rand(int(lesion.sum()), generator=torch.Generator()
                                               .manual_seed(4))   # no ties in Grad-CAM's map
    return x.clamp(0, 1), lesion


def test_gradcam_cuts_are_nested_sized_and_on_f_s_evidence():
    x, lesion = _blobs()
    cuts = gradcam_cuts(x, ConvBlob(), (0.01, 0.02, 0.5))
    assert len(cuts) == 3 and all(c.shape == (4, 1, S, S) and c.dtype == torch.bool for c in cuts)
    with torch.no_grad():                             # a caller's no_grad changes nothing
        again = gradcam_cuts(x, ConvBlob(), (0.01, 0.02, 0.5))
    assert all(torch.equal(a, b) for a, b in zip(cuts, again))
    for tight, wide in zip(cuts, cuts[1:]):
        assert not bool((tight & ~wide).any())                        # tight inside wide
    # at least the top share of pixels, ties included, and only where the map is positive:
    # on the positives that is the lesion (A = 0 elsewhere), on the healthy image nothing
    assert all(int(c[i].sum()) >= round(a * S * S) for c, a in zip(cuts[:2], (0.01, 0.02))
               for i in range(3))
    assert not bool((cuts[2][:, 0] & ~lesion).any())
    assert not bool(cuts[2][3].any())


def test_gradcam_start_replaces_the_coarse_ranking():
    x, lesion = _blobs()
    f = ConvBlob()
    cold_fill = CountingFill()
    cold = InpaintGenerator(cold_fill, S, {"complete": True, "start": "coarse"}
                            ).counterfactual(x, f)
    warm_fill = CountingFill()
    G = InpaintGenerator(warm_fill, S, {"complete": True, "start": "gradcam"})
    res = G.counterfactual(x, f)
    assert res.started.tolist() == [True, True, True, False]
    assert res.flipped[:3].all() and not bool(res.mask[3].any())
    assert torch.equal(res.x_neg[3], x[3])
    for i in range(3):                           # the whole lesion, one ring beyond at most
        m = res.mask[i, 0]
        assert bool(m[lesion[i]].all())
        ring = F.max_pool2d(lesion[i][None, None].float(), 3, 1, 1)[0, 0] > 0
        assert not bool((m & ~ring).any())
        assert torch.equal(res.x_neg[i, 0][~m], x[i, 0][~m])        # nothing else changed
    assert warm_fill.n * 3 < cold_fill.n, (warm_fill.n, cold_fill.n)


def test_a_start_f_does_not_need_leaves_the_search_as_it_was():
    x, _ = _blobs()
    f = ConvBlob()
    plain = InpaintGenerator(ConstantFill(), S, {"start": "coarse"}).counterfactual(x, f)
    one_px = InpaintGenerator(ConstantFill(), S, {"start": "gradcam",
                                                  "start_areas": [1 / (S * S)]})
    res = one_px.counterfactual(x, f)                 # a 1-pixel cut flips nothing
    assert not bool(res.started.any())
    assert torch.equal(res.mask, plain.mask) and torch.equal(res.x_neg, plain.x_neg)
    scripted = torch.jit.script(ConvBlob())           # Grad-CAM cannot hook TorchScript
    scripted.threshold = 0.5
    assert gradcam_cuts(x, scripted, (0.05,)) is None
    G = InpaintGenerator(ConstantFill(), S, {"start": "gradcam"})
    res = G.counterfactual(x, scripted)
    assert not bool(res.started.any()) and torch.equal(res.mask, plain.mask)
    blob = BlobClassifier()                           # no convolution to hook: the coarse search
    assert gradcam_cuts(x, blob, (0.05,)) is None
    res = G.counterfactual(x, blob)
    base = InpaintGenerator(ConstantFill(), S, {"start": "coarse"}).counterfactual(x, blob)
    assert not bool(res.started.any()) and torch.equal(res.mask, base.mask)


def test_start_areas_are_checked():
    with pytest.raises(ValueError, match="start_areas"):
        SearchConfig(start="gradcam", start_areas=(0.0,))


def test_start_prune_drops_a_part_of_the_cut_f_does_not_need():
    """A Grad-CAM cut over the lesion and a faint blob f does not fire on alone: with
    ``start_prune`` the blob is dropped and left as it was; without it both are in-filled."""
    x, lesion = _blobs()
    x, lesion = x[:1].clone(), lesion[:1]
    faint = torch.zeros_like(lesion)
    faint[0, 22:28, 20:26] = True
    x[:, 0][faint] = 0.65                                 # A = 0.05: below f's 0.1 alone
    f = ConvBlob()
    cfg = {"start": "gradcam", "start_areas": [0.08], "start_trim": False}
    kept = InpaintGenerator(ConstantFill(), S, cfg).counterfactual(x, f)
    assert kept.started.all() and bool(kept.mask[0, 0][faint[0]].all())
    res = InpaintGenerator(ConstantFill(), S, {**cfg, "start_prune": True}).counterfactual(x, f)
    assert res.started.all() and res.flipped.all()
    assert bool(res.mask[0, 0][lesion[0]].all()) and not bool(res.mask[0, 0][faint[0]].any())
    assert torch.equal(res.x_neg[0, 0][faint[0]], x[0, 0][faint[0]])


def test_only_starts_wider_than_start_trim_above_are_trimmed():
    """``start_trim_above``: a start covering more of the image than that share is trimmed,
    a tighter one is kept as the Grad-CAM cut gave it."""
    x, lesion = _blobs()
    f = ConvBlob()
    cfg = {"start": "gradcam", "start_areas": [0.1]}     # the cut: the lesion (map > 0 there)
    untrimmed = InpaintGenerator(ConstantFill(), S, {**cfg, "start_trim": False}
                                 ).counterfactual(x, f)
    trimmed = InpaintGenerator(ConstantFill(), S, cfg).counterfactual(x, f)
    area = float(untrimmed.area[0])
    assert untrimmed.started[:3].all() and bool((trimmed.area[:3] < untrimmed.area[:3]).all())
    above = InpaintGenerator(ConstantFill(), S, {**cfg, "start_trim_above": area / 2}
                             ).counterfactual(x, f)
    assert torch.equal(above.mask, trimmed.mask)                  # wider than the share: trimmed
    below = InpaintGenerator(ConstantFill(), S, {**cfg, "start_trim_above": min(1.0, 2 * area)}
                             ).counterfactual(x, f)
    assert torch.equal(below.mask, untrimmed.mask)                # tighter: kept
