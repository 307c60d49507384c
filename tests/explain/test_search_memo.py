"""The search remembers each image's current in-filling (``_Scorer.current``) and the ranked
trim's tail skips the finding's own patches when the search completes its masks.

f is the window-mean classifier of ``test_counterfactual_search`` and the in-filler draws the
healthy twin exactly (the background level), so an in-filling is known in closed form."""

from __future__ import annotations

import torch

from medxgan.generators.inpaint.search import _Scorer, _trim, search_counterfactual
from tests.explain.test_counterfactual_search import BackgroundFill, WindowMean, _images
from tests.explain.test_trim_modes import _wide_start


class RecordingFill(BackgroundFill):
    """BackgroundFill that records every (image, mask) pair it in-fills."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[bytes, bytes]] = []

    def forward(self, x, m):
        for xi, mi in zip(x, m):
            self.seen.append((xi.numpy().tobytes(), mi.bool().numpy().tobytes()))
        return super().forward(x, m)

    def times(self, x, m) -> int:
        """How often image x (1, H, W) was in-filled with mask m (1, H, W)."""
        return self.seen.count((x.numpy().tobytes(), m.bool().numpy().tobytes()))


def _check_final(x, r, g, f, once=True):
    """x_neg is the in-filling of the returned mask, p_neg f's probability of it, and (``once``)
    the final mask of every flipped image was in-filled once, not again for the answer. (The
    ``exact`` trim in-fills each removal alone to rank it and again when it tries it.)"""
    with torch.no_grad():
        fresh = BackgroundFill()(x, r.mask.float())
        p = torch.sigmoid(f(fresh))
    assert torch.equal(r.x_neg, fresh)
    assert torch.allclose(r.p_neg, p, atol=1e-6)
    for i in (r.flipped & r.mask.flatten(1).any(1)).nonzero()[:, 0].tolist():
        n = g.times(x[i], r.mask[i])
        assert n == 1 if once else n >= 1, (i, n)


def test_the_final_in_filling_is_the_remembered_one_on_every_path():
    x, squares = _images()
    f = WindowMean().eval()
    init = _wide_start(squares)
    for kw in ({"trim": "exact"}, {"trim": "ranked", "complete": True},
               {"init": init, "trim_init": True, "trim": "ranked", "complete": True},
               {"init": init, "trim_init": True, "trim": "bisect", "support": True},
               {"patch_sizes": (12,), "crop": 16}):   # ranked in windows: other pairs
        g = RecordingFill()
        r = search_counterfactual(x, f, g, area_cap=0.5, **kw)
        assert r.flipped[:3].all() and not r.mask[3].any(), kw
        _check_final(x, r, g, f, once=kw.get("trim") != "exact"), kw


def test_a_start_in_filled_by_the_caller_is_not_in_filled_again():
    x, squares = _images()
    f = WindowMean().eval()
    init = _wide_start(squares)
    with torch.no_grad():
        fills = BackgroundFill()(x, init.float())
        p = torch.sigmoid(f(fills))
    assert bool((p[:3] < 0.5).all())                     # every start flips f
    g = RecordingFill()
    r = search_counterfactual(x, f, g, area_cap=0.5, init=init, trim_init=True,
                              trim="ranked", init_fill=(fills, p))
    assert all(g.times(x[i], init[i]) == 0 for i in range(3))
    _check_final(x, r, g, f)
    g2 = RecordingFill()                                  # without it: in-filled once more
    r2 = search_counterfactual(x, f, g2, area_cap=0.5, init=init, trim_init=True,
                               trim="ranked")
    assert all(g2.times(x[i], init[i]) == 1 for i in range(3))
    assert torch.equal(r.mask, r2.mask) and torch.equal(r.x_neg, r2.x_neg)


def test_current_in_fills_a_mask_it_has_not_seen():
    x, squares = _images()
    f, g = WindowMean().eval(), RecordingFill()
    sc = _Scorer(x, f, g, 8)
    a, b = _wide_start(squares)[:2], torch.zeros(2, 1, *x.shape[-2:], dtype=torch.bool)
    b[:, :, :4, :4] = True
    idx = torch.arange(2)
    fa, pa = sc.current(idx, a)
    fb, pb = sc.current(idx, b)                           # another mask: in-filled afresh
    assert torch.equal(fb, BackgroundFill()(x[:2], b.float()))
    assert not torch.equal(fa, fb) and bool((pb > pa).all())
    n = len(g.seen)
    fb2, _ = sc.current(idx, b)                           # the same mask: remembered
    assert len(g.seen) == n and torch.equal(fb2, fb)


def test_the_ranked_tail_skips_the_findings_patches_when_the_search_completes():
    """The square is the finding (its in-filling changes it by 0.7, the background by < 0.01):
    with completion's cut the tail tries only patches that are mostly background, so it
    in-fills fewer images, and every patch it removes from the start mask is mostly
    background."""
    x, squares = _images()
    f = WindowMean().eval()
    init = _wide_start(squares)[:3]
    idx = torch.arange(3)
    out = {}
    for finding in (None, (0.06, 0.5, False)):
        g = RecordingFill()
        sc = _Scorer(x, f, g, 64)
        m = _trim(sc, idx, init, 0.5, 8, 4, "ranked", finding)
        out[finding] = (m, len(g.seen))
    (m_all, n_all), (m_skip, n_skip) = out[None], out[(0.06, 0.5, False)]
    assert n_skip < n_all, (n_skip, n_all)
    square = torch.stack([_wide_start(squares)[i, 0] & (x[i, 0] > 0.5) for i in range(3)])
    kept_square = (m_skip[:, 0] & square).flatten(1).sum(1)
    assert bool((kept_square >= (m_all[:, 0] & square).flatten(1).sum(1)).all())
    with torch.no_grad():                                 # both still flip f
        for m in (m_all, m_skip):
            assert bool((torch.sigmoid(f(BackgroundFill()(x[:3], m.float()))) < 0.5).all())
