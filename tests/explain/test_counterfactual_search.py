"""Counterfactual search by in-filling, on an analytic classifier whose answer is known.

f's logit is a scaled mean intensity inside a known window; positives carry a bright 8x8 square
inside it on a flat background; the stand-in "inpainter" fills holes with the background level,
i.e. it draws the healthy twin exactly. The search must flip f by in-filling (part of) the
square, with a mask that lies around the square, and leave negatives alone.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medxgan.generators.base import SearchResult
from medxgan.generators.inpaint.search import search_counterfactual
from medxgan.generators.inpaint.inpainter import Inpainter

S = 32
BG = 0.2
WIN = (6, 6, 26, 26)  # x0, y0, x1, y1 of f's window


class WindowMean(nn.Module):
    """logit = 40 * (mean intensity in WIN - 0.26); background alone is negative."""

    threshold = 0.5

    def __init__(self):
        super().__init__()
        m = torch.zeros(1, 1, S, S)
        x0, y0, x1, y1 = WIN
        m[..., y0:y1, x0:x1] = 1.0
        self.register_buffer("w", m / m.sum())

    def forward(self, x):
        return 40.0 * ((x * self.w).sum((1, 2, 3)) - 0.26)  # (B,)


class BackgroundFill(nn.Module):
    """In-fills every hole with the background level (the exact healthy twin here)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, m):
        return x * (1 - m) + BG * m


def _images():
    """(4, 1, S, S): three positives with the square at different places, one negative."""
    g = torch.Generator().manual_seed(0)
    x = BG + 0.01 * torch.rand(4, 1, S, S, generator=g)
    squares = [(10, 10), (14, 8), (8, 16)]  # (x0, y0) of 8x8 squares inside WIN
    for i, (x0, y0) in enumerate(squares):
        x[i, 0, y0:y0 + 8, x0:x0 + 8] = 0.9
    return x, squares


def _square_mask(x0, y0, grow=0):
    m = torch.zeros(S, S, dtype=torch.bool)
    m[max(0, y0 - grow):y0 + 8 + grow, max(0, x0 - grow):x0 + 8 + grow] = True
    return m


@pytest.mark.parametrize("patch_sizes", [(12,), (12, 8)])
def test_search_flips_f_with_a_mask_on_the_square(patch_sizes):
    x, squares = _images()
    f = WindowMean().eval()
    r = search_counterfactual(x, f, BackgroundFill(), patch_sizes=patch_sizes, area_cap=0.3)
    assert isinstance(r, SearchResult)
    assert r.x_neg.shape == x.shape and r.mask.shape == x.shape and r.mask.dtype == torch.bool
    assert r.p_x.shape == r.p_neg.shape == r.area.shape == (4,)
    assert bool((r.p_x[:3] > 0.5).all()) and r.p_x[3] < 0.5
    assert r.flipped[:3].all() and bool((r.p_neg < 0.5).all())
    for i, (x0, y0) in enumerate(squares):
        m = r.mask[i, 0]
        assert (m & _square_mask(x0, y0)).sum() >= 20  # removes a good part of the lesion
        assert float((m & _square_mask(x0, y0, grow=4)).sum() / m.sum()) >= 0.9
        assert torch.equal(r.x_neg[i][~r.mask[i]], x[i][~r.mask[i]])  # unchanged outside
        assert r.area[i] == pytest.approx(float(m.float().mean())) and r.area[i] <= 0.3
    # f already says negative: untouched
    assert torch.equal(r.x_neg[3], x[3]) and not r.mask[3].any() and r.area[3] == 0
    assert r.p_neg[3] == r.p_x[3]


def test_trimming_tightens_the_mask():
    x, _ = _images()
    f, g = WindowMean().eval(), BackgroundFill()
    coarse = search_counterfactual(x, f, g, patch_sizes=(12,), area_cap=0.3)
    fine = search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.3)
    assert bool((fine.mask[:3] <= coarse.mask[:3]).all())  # trimming only removes
    assert fine.area[:3].sum() < coarse.area[:3].sum()
    assert fine.flipped[:3].all()


def test_margin_keeps_more_of_the_lesion():
    x, squares = _images()
    f, g = WindowMean().eval(), BackgroundFill()
    tight = search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.3)
    safe = search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.3, margin=0.4)
    assert bool((safe.p_neg[:3] < 0.1).all())
    assert safe.area[:3].sum() >= tight.area[:3].sum()
    assert bool((tight.mask[:3] <= search_counterfactual(
        x, f, g, patch_sizes=(12,), area_cap=0.3).mask[:3]).all())


def test_batch_size_does_not_change_the_result():
    x, _ = _images()
    f, g = WindowMean().eval(), BackgroundFill()
    a = search_counterfactual(x, f, g, batch=5)
    b = search_counterfactual(x, f, g, batch=512)
    assert torch.equal(a.mask, b.mask) and torch.allclose(a.x_neg, b.x_neg)


def test_cropped_ranking_matches_whole_image_ranking_for_a_local_infiller():
    x, _ = _images()
    f, g = WindowMean().eval(), BackgroundFill()
    a = search_counterfactual(x, f, g, patch_sizes=(12, 8))
    b = search_counterfactual(x, f, g, patch_sizes=(12, 8), crop=16, batch=7)
    assert torch.equal(a.mask, b.mask) and torch.allclose(a.p_neg, b.p_neg)


def test_area_cap_and_an_unflippable_classifier():
    x, _ = _images()

    class Stubborn(WindowMean):  # even the background alone is positive
        def forward(self, x):
            return super().forward(x) + 10.0

    r = search_counterfactual(x, Stubborn(), BackgroundFill(), area_cap=0.2)
    assert not r.flipped.any()
    assert bool((r.area[:3] <= 0.2).all()) and bool((r.area[:3] > 0.1).all())
    assert bool((r.p_neg[:3] < r.p_x[:3]).all())  # the best union within the cap

    class Constant(nn.Module):  # nothing lowers f: no mask at all
        def forward(self, x):
            return torch.full((len(x),), 3.0) + 0 * x.sum((1, 2, 3))

    r = search_counterfactual(x, Constant(), BackgroundFill(), area_cap=0.2)
    assert not r.mask.any() and torch.equal(r.x_neg, x)
    # a cap below one patch: nothing may be in-filled
    r = search_counterfactual(x, WindowMean(), BackgroundFill(), area_cap=0.05)
    assert not r.mask.any() and torch.equal(r.x_neg, x)
    # the threshold argument wins over the classifier's attribute
    r = search_counterfactual(x, WindowMean(), BackgroundFill(), threshold=0.999)
    assert r.threshold == 0.999 and not r.mask.any()


def test_runs_with_the_unet_inpainter():
    torch.manual_seed(0)
    x, _ = _images()
    r = search_counterfactual(x, WindowMean().eval(), Inpainter(base=4, depth=2).eval(),
                              patch_sizes=(12, 8), area_cap=0.3, batch=64, crop=16)
    assert torch.isfinite(r.x_neg).all() and bool(((r.x_neg >= 0) & (r.x_neg <= 1)).all())
    assert torch.equal(r.x_neg[~r.mask], x[~r.mask])
    with pytest.raises(ValueError):
        search_counterfactual(x[:, 0], WindowMean(), BackgroundFill())


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_complete_grows_the_mask_to_the_whole_square():
    """The search alone stops once f crosses its threshold (about half the square here);
    ``complete`` grows the mask to the whole square it touches and its one-pixel rim (the
    background fills exactly), so x_neg is the healthy twin on the square, and never further."""
    x, squares = _images()
    f = WindowMean().eval()
    kw = {"patch_sizes": (12, 8, 4), "area_cap": 0.3}
    alone = search_counterfactual(x, f, BackgroundFill(), **kw)
    done = search_counterfactual(x, f, BackgroundFill(), complete=True, complete_steps=16, **kw)
    assert done.flipped[:3].all() and not done.mask[3].any()
    for i, (x0, y0) in enumerate(squares):
        sq = _square_mask(x0, y0)
        before, after = alone.mask[i, 0], done.mask[i, 0]
        assert bool((after | before).eq(after).all())                # a superset
        assert int((before & sq).sum()) < 64                          # the search left part
        assert int((after & sq).sum()) == 64                          # completion removed all
        assert _dice(after, sq) > _dice(before, sq)
        assert bool((after <= (before | _square_mask(x0, y0, grow=1))).all())  # nothing past
    twin = torch.where(x > 0.5, torch.full_like(x, BG), x)
    assert torch.allclose(done.x_neg[:3], twin[:3], atol=0.011)       # the background's noise
    on_square = x[:3] > 0.5
    assert torch.equal(done.x_neg[:3][on_square], twin[:3][on_square])


def test_complete_adds_no_finding_the_mask_does_not_touch():
    """Completion follows the finding the mask touches, not every bright thing near it: a
    second square past a one-pixel gap, inside the searched neighbourhood but outside f's
    window (f never needed it), stays as it is."""
    x, _ = _images()
    x = x[:1].clone()                                   # the square at x 10..17, y 10..17
    x[0, 0, 10:18, 19:27] = 0.9                         # a second one past a 1 px gap, x 19..26

    class LeftWindow(nn.Module):
        threshold = 0.5

        def __init__(self):
            super().__init__()
            m = torch.zeros(1, 1, S, S)
            m[..., 6:26, 6:18] = 1.0                    # the first square's columns only
            self.register_buffer("w", m / m.sum())

        def forward(self, x):
            return 40.0 * ((x * self.w).sum((1, 2, 3)) - 0.26)

    kw = {"patch_sizes": (4,), "area_cap": 0.5}
    f = LeftWindow().eval()
    alone = search_counterfactual(x, f, BackgroundFill(), **kw)
    done = search_counterfactual(x, f, BackgroundFill(), complete=True, complete_steps=16, **kw)
    assert bool(alone.flipped.all()) and bool(done.flipped.all())
    first, second = _square_mask(10, 10), _square_mask(19, 10)
    assert int((done.mask[0, 0] & first).sum()) == 64 > int((alone.mask[0, 0] & first).sum())
    assert not bool((done.mask[0, 0] & second).any())
    assert float(done.p_neg[0]) < float(alone.p_neg[0])


def _assert_cut_to_the_squares(before_masks: torch.Tensor, after_masks: torch.Tensor,
                               squares: list[tuple[int, int]]) -> None:
    """Each image's mask (B, 1, S, S) shrank to its square's pixels it covered and at most one
    ring around them, with a higher Dice with the square."""
    for i, (x0, y0) in enumerate(squares):
        sq = _square_mask(x0, y0)
        before, after = before_masks[i, 0], after_masks[i, 0]
        assert bool((after <= before).all()) and int(after.sum()) < int(before.sum())
        assert bool((after <= _square_mask(x0, y0, grow=1)).all())   # nothing past one ring
        assert int((after & sq).sum()) == int((before & sq).sum())    # the lesion it covered
        assert _dice(after, sq) > _dice(before, sq)


def test_support_cuts_the_square_mask_to_the_lesion():
    """Coarse 12 px patches cover the 8 px square and background around it; ``support`` cuts
    the mask to the pixels that differ from the healthy in-filling (the square, grown by one
    pixel), only where the cut mask still flips f; a cut that keeps nothing leaves the mask."""
    x, squares = _images()
    f = WindowMean().eval()
    kw = {"patch_sizes": (12,), "area_cap": 0.3}
    square = search_counterfactual(x, f, BackgroundFill(), **kw)
    cut = search_counterfactual(x, f, BackgroundFill(), support=True, **kw)
    assert cut.flipped[:3].all() and not cut.mask[3].any()
    _assert_cut_to_the_squares(square.mask, cut.mask, squares)
    nothing = search_counterfactual(x, f, BackgroundFill(), support=True, complete_tol=0.99,
                                    **kw)
    assert torch.equal(nothing.mask, square.mask)


class NoisyFill(nn.Module):
    """In-fills holes with the background level plus a fixed zero-mean noise (sd 0.01, at
    most 0.02 in size): an in-filler that draws healthy anatomy with an error, in both
    directions, under three of its sds and under the smallest difference that reads as a
    finding (``complete_tol``, 0.06)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        g = torch.Generator().manual_seed(1)
        self.register_buffer("noise", 0.01 * torch.randn(1, 1, S, S, generator=g).clamp(-2, 2))

    def forward(self, x, m):
        return x * (1 - m) + (BG + self.noise).clamp(0, 1) * m


def test_restore_gives_back_the_pixels_the_in_filling_only_redrew():
    """Coarse 12 px patches cover the 8 px square and flat background around it; the in-filler
    redraws that background with its own error. ``restore`` keeps the in-filling on the square
    (and one pixel around it) and gives every other pixel back its value, without in-filling
    again, only where f still flips; the mask is the restored region."""
    x, squares = _images()
    x = torch.where(x > 0.5, x, torch.full_like(x, BG))    # flat background: any change is error
    f = WindowMean().eval()
    kw = {"patch_sizes": (12,), "area_cap": 0.3}
    square = search_counterfactual(x, f, NoisyFill(), **kw)
    kept = search_counterfactual(x, f, NoisyFill(), restore=True, **kw)
    assert kept.flipped[:3].all() and not kept.mask[3].any()
    assert torch.equal(kept.x_neg[3], x[3])
    _assert_cut_to_the_squares(square.mask, kept.mask, squares)
    for i in range(len(squares)):
        after = kept.mask[i, 0]
        assert torch.equal(kept.x_neg[i, 0][~after], x[i, 0][~after])  # x, exactly
        assert torch.equal(kept.x_neg[i, 0][after], square.x_neg[i, 0][after])  # no new fill
    # k so large nothing but the core passes: still the core's connected part, and the ring
    tight = search_counterfactual(x, f, NoisyFill(), restore=True, restore_k=1e6, **kw)
    assert bool((tight.mask <= kept.mask).all()) and tight.flipped[:3].all()


def test_restore_never_gives_back_a_fainter_finding_in_the_mask():
    """A faint second spot (contrast 0.1, under the core's cut of half the square's contrast,
    over ``complete_tol``) that the in-filled mask covers but that does not touch the square
    stays removed: only what the in-filling merely redrew is given back."""
    x, squares = _images()
    x = torch.where(x > 0.5, x, torch.full_like(x, BG))
    x0, y0 = squares[0]
    x[0, 0, y0 + 2:y0 + 4, x0 - 4:x0 - 2] = BG + 0.1       # a 2 px gap left of the square
    f = WindowMean().eval()
    kw = {"patch_sizes": (12,), "area_cap": 0.3}
    square = search_counterfactual(x, f, NoisyFill(), **kw)
    kept = search_counterfactual(x, f, NoisyFill(), restore=True, **kw)
    spot = torch.zeros(S, S, dtype=torch.bool)
    spot[y0 + 2:y0 + 4, x0 - 4:x0 - 2] = True
    assert bool(square.mask[0, 0][spot].all())             # the in-filled mask covers it
    assert bool(kept.mask[0, 0][spot].all()) and kept.flipped[0]
    assert int(kept.mask[0].sum()) < int(square.mask[0].sum())


def test_restore_keeps_both_signs_of_a_ring_lesion():
    """A ring-enhancing lesion: a bright square with a dark core (darker than the background).
    The core differs from the healthy in-filling against the rim's sign; it is part of the
    finding and stays removed."""
    x, squares = _images()
    x = torch.where(x > 0.5, x, torch.full_like(x, BG))
    x0, y0 = squares[0]
    x[0, 0, y0 + 2:y0 + 6, x0 + 2:x0 + 6] = BG - 0.1               # the necrotic core
    f = WindowMean().eval()
    kept = search_counterfactual(x, f, NoisyFill(), restore=True, patch_sizes=(12,),
                                 area_cap=0.3)
    core = torch.zeros(S, S, dtype=torch.bool)
    core[y0 + 2:y0 + 6, x0 + 2:x0 + 6] = True
    assert kept.flipped[0] and bool(kept.mask[0, 0][core].all())
    assert bool((kept.x_neg[0, 0][core] > BG - 0.05).all())        # in-filled, not given back


def test_completion_on_both_signs_reaches_the_bright_core_from_a_dark_halo():
    """A tumour: a bright 6x6 core in a 3 px dark halo (oedema). A mask mostly on the halo and
    one row of the core flips f (which reads the bright core); the median difference in it is
    dark, so completion that follows the finding's sign grows along the halo and leaves the
    core; ``complete_both_signs`` follows |difference| and takes the whole core."""
    from medxgan.generators.inpaint.search import _complete, _Scorer

    class BrightMean(nn.Module):
        threshold = 0.5

        def forward(self, x):
            return 400.0 * ((x - 0.5).clamp(min=0).mean((1, 2, 3)) * (S * S) / 400 - 0.032)

    x = torch.full((1, 1, S, S), BG)
    x[0, 0, 9:21, 9:21] = BG - 0.1                      # the halo
    x[0, 0, 12:18, 12:18] = 0.9                         # the core, rows / columns 12..17
    mask = torch.zeros(1, 1, S, S, dtype=torch.bool)
    mask[0, 0, 17:21, 9:21] = True                      # the lower halo and the core's last row
    f = BrightMean().eval()
    sc = _Scorer(x, f, BackgroundFill(), 64)
    filled = BackgroundFill()(x, mask.float())
    assert float(torch.sigmoid(f(x))) > 0.5 > float(torch.sigmoid(f(filled)))
    core = torch.zeros(S, S, dtype=torch.bool)
    core[12:18, 12:18] = True
    idx = torch.tensor([0])
    signed = _complete(sc, idx, mask, 0.5, 0.5, 0.06, 0.5, steps=8)[0, 0]
    both = _complete(sc, idx, mask, 0.5, 0.5, 0.06, 0.5, steps=8, both_signs=True)[0, 0]
    inner = torch.zeros(S, S, dtype=torch.bool)
    inner[13:17, 13:17] = True                          # past the halo's one-pixel rim growth
    assert not bool((signed & inner).any())             # the signed rule grew along the halo
    assert bool(both[core].all()) and bool((mask[0, 0] <= both).all())


def test_the_finding_test_follows_the_findings_sign_or_both():
    """``_finding_test`` (shared by the trim's tail, completion, the support cut and restore):
    the sign of the median difference in the mask is the finding's direction, so a bright
    lesion's dark rim is not the finding and a dark lesion's pixels are; with both signs the rim
    counts too. Cut: max(0.05, 0.5 x the 90th percentile 0.5) = 0.25."""
    from medxgan.generators.inpaint.search import _finding_test

    cur = torch.zeros(2, 8, 8, dtype=torch.bool)
    cur[:, 2:6, 2:6] = True
    d = torch.zeros(2, 8, 8)
    d[0, 2:6, 2:6] = 0.5                                # a bright lesion...
    d[0, 2, 2:6] = -0.5                                 # ...with a dark rim row (4 of 16 pixels)
    d[0, 6, 6] = 0.2                                    # outside the mask, under the cut
    d[1] = -d[0]                                        # the same lesion, dark
    signed = _finding_test(d, cur, 0.05, 0.5)(d)
    for i in range(2):
        assert bool(signed[i, 3:6, 2:6].all()) and not bool(signed[i, 2].any())
        assert int(signed[i].sum()) == 12
    both = _finding_test(d, cur, 0.05, 0.5, both_signs=True)(d)
    assert bool(both[:, 2:6, 2:6].all()) and int(both.sum()) == 32
