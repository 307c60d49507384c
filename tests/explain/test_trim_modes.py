"""The search's trim (step 3) three ways: ``exact`` (each removal in-filled alone to rank),
``bisect`` (ranked by the whole mask's in-filling change, the longest removable prefix found by
bisection) and ``ranked`` (``bisect``, then each later patch tried in turn; the default at 128 px
and above since session 15).

f is the window-mean classifier of ``test_counterfactual_search`` (it needs about half of the
8 x 8 square in-filled to call an image negative) and the in-filler draws the healthy twin
exactly, so the in-filling changes nothing but the square: a ranking by that change puts the
healthy patches first."""

from __future__ import annotations

import pytest
import torch

from medxgan.config.inpaint import SearchConfig
from medxgan.generators.inpaint.search import search_counterfactual
from medxgan.metrics.shortcut import driver_search_options
from tests.explain.test_counterfactual_search import (
    S,
    BackgroundFill,
    WindowMean,
    _images,
    _square_mask,
)

MODES = ("exact", "ranked", "bisect")


class CountingBackgroundFill(BackgroundFill):
    """BackgroundFill that counts the images it in-fills."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def forward(self, x, m):
        self.n += x.shape[0]
        return super().forward(x, m)


def _wide_start(squares) -> torch.Tensor:
    """(4, 1, S, S) start masks: each square grown by 6 px (mostly healthy background); none on
    the negative."""
    init = torch.zeros(4, 1, S, S, dtype=torch.bool)
    for i, (x0, y0) in enumerate(squares):
        init[i, 0] = _square_mask(x0, y0, grow=6)
    return init


@pytest.mark.parametrize("trim", MODES)
def test_every_trim_only_removes_and_keeps_the_flip(trim):
    x, squares = _images()
    f, g = WindowMean().eval(), BackgroundFill()
    init = _wide_start(squares)
    r = search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.5, init=init,
                              trim_init=True, trim=trim)
    assert r.flipped[:3].all() and not r.mask[3].any()
    assert bool((r.mask <= init).all())                              # trimming only removes
    assert bool((r.area[:3] < init[:3].flatten(1).float().mean(1)).all())
    for i, (x0, y0) in enumerate(squares):   # what stays is on the lesion, or within a fine
        m = r.mask[i, 0]                     # patch (8 px) of it
        assert int((m & _square_mask(x0, y0)).sum()) >= 30
        assert not bool((m & ~_square_mask(x0, y0, grow=7)).any())


def test_ranked_trims_cost_fewer_in_fillings_and_bisect_fewest():
    x, squares = _images()
    f = WindowMean().eval()
    init = _wide_start(squares)
    n = {}
    for trim in MODES:
        g = CountingBackgroundFill()
        search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.5, init=init,
                              trim_init=True, trim=trim)
        n[trim] = g.n
    assert n["bisect"] < n["ranked"] < n["exact"], n
    assert n["bisect"] * 2 < n["exact"], n


def test_bisect_removes_the_longest_prefix_of_the_ranking_that_keeps_the_flip():
    """Against a brute-force scan: rank the fine patches touching each start mask by the mean
    |image - in-filling| over their part of the mask, remove the first k for k = 0, 1, ...,
    and stop before the first k whose in-filling f no longer calls negative. Here f rises as
    less of the square is in-filled, so that scan's answer is the longest such prefix."""
    from medxgan.generators.inpaint.search import _patch_masks

    x, squares = _images()
    f, g = WindowMean().eval(), BackgroundFill()
    init = _wide_start(squares)
    r = search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.5, init=init,
                              trim_init=True, trim="bisect")
    patches = _patch_masks(S, S, 8, 4)[:, 0]                          # (K, S, S)
    for i in range(3):
        m = init[i, 0]
        d = (x[i, 0] - g(x[i:i + 1], m[None, None].float())[0, 0]).abs()
        touching = [k for k in range(len(patches)) if bool((patches[k] & m).any())]
        change = {k: float(d[patches[k] & m].mean()) for k in touching}
        order = sorted(touching, key=change.get)
        cur = m
        for k in order:
            nxt = cur & ~patches[k]
            with torch.no_grad():
                p = torch.sigmoid(f(g(x[i:i + 1], nxt[None, None].float())))
            if not bool(nxt.any()) or float(p) >= 0.5:
                break
            cur = nxt
        assert torch.equal(r.mask[i, 0], cur), i


def test_the_trim_is_a_search_option_and_the_shortcut_finder_keeps_exact():
    x, _ = _images()
    with pytest.raises(ValueError, match="trim must be"):
        search_counterfactual(x, WindowMean(), BackgroundFill(), trim="fast")
    assert SearchConfig().trim == "auto"                 # ranked at 128 px and above,
    assert SearchConfig().for_size(128)["trim"] == "ranked"
    assert SearchConfig().for_size(224)["trim"] == "ranked"
    assert SearchConfig().for_size(64)["trim"] == "exact"    # exact below (64 px: measured)
    assert SearchConfig(trim="bisect").for_size(64)["trim"] == "bisect"
    assert driver_search_options(64)["trim"] == "exact"   # validated on the shortcut panel so


def test_the_ranked_tail_tries_at_most_tail_patches_per_image():
    x, squares = _images()
    f = WindowMean().eval()
    init = _wide_start(squares)
    n, masks = {}, {}
    for tail in (None, 2, 1):
        g = CountingBackgroundFill()
        r = search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.5, init=init,
                                  trim_init=True, trim="ranked", tail=tail)
        assert r.flipped[:3].all() and bool((r.mask <= init).all())  # still only removes
        n[tail], masks[tail] = g.n, r.mask
    g = CountingBackgroundFill()
    search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.5, init=init,
                          trim_init=True, trim="bisect")
    assert g.n < n[1] < n[2] <= n[None], (g.n, n)
    assert n[1] - g.n <= 3 * 1 + 3  # one tail trial per started image (3), and a margin of 3
    # a shorter tail tries a prefix of the same candidates: its masks contain the full tail's
    assert bool((masks[None] <= masks[1]).all()) and bool((masks[None] <= masks[2]).all())
    assert SearchConfig(tail=2).for_size(64)["tail"] == 2 and SearchConfig().for_size(128)["tail"] is None
