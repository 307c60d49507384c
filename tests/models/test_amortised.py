"""The inpaint family's amortised mask: distilled from the search's masks, tried before the
search (cut by cut, tight first), the search only where no cut flips f; trained, stored and
reloaded by the GAN stage when ``inpaint.amortise.images`` > 0."""

from __future__ import annotations

import io

import torch
from torch import nn

from medxgan.config.inpaint import AmortiseConfig, InpaintConfig
from medxgan.generators.inpaint.amortised import MaskNet, train_mask_net
from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.generators.inpaint.inpainter import InpaintGenerator
from medxgan.generators import load_generator, train_gan
from medxgan.storage import Store
from tests.models.test_inpaint_family import (S, BlobClassifier, ConstantFill, SquareClassifier,
                                              _square_images)


class FixedMask(nn.Module):
    """A 'mask net' that says ``p_in`` on rows/cols ``lo``..``hi - 1`` (10..15) and ``p_out``
    elsewhere."""

    def __init__(self, p_in: float, p_out: float = 0.01, lo: int = 10, hi: int = 16):
        super().__init__()
        self.p_in, self.p_out, self.lo, self.hi = p_in, p_out, lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.full_like(x, self.p_out)
        p[:, :, self.lo:self.hi, self.lo:self.hi] = self.p_in
        return p


def _square(lo: int, hi: int) -> torch.Tensor:
    """(S, S) bool: rows/cols lo..hi - 1."""
    m = torch.zeros(S, S, dtype=torch.bool)
    m[lo:hi, lo:hi] = True
    return m


def test_mask_net_learns_the_masks_it_is_shown():
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.03 * torch.randn(64, 1, 16, 16, generator=g)
    m = torch.zeros(64, 1, 16, 16, dtype=torch.bool)
    for i in range(64):
        r, c = (int(v) for v in torch.randint(0, 12, (2,), generator=g))
        x[i, :, r:r + 4, c:c + 4] = 0.9
        m[i, :, r:r + 4, c:c + 4] = True
    net, stats = train_mask_net(x, m, AmortiseConfig(steps=200, seconds=None, base=4, depth=2,
                                                     batch=16))
    with torch.no_grad():
        pred = net(x[:16]) > 0.5
    iou = float((pred & m[:16]).sum() / (pred | m[:16]).sum())
    assert iou > 0.8, iou
    assert stats["steps"] == 200 and stats["pos_weight"] == 15.0 and not net.training
    assert stats["fit_iou"] > 0.8                      # its own fit, on all 64 images


def test_a_collapsed_mask_net_is_reported(caplog):
    """A net that cannot fit its masks (no steps: one map for every image) says so: its
    fit IoU is low and a warning names the cause."""
    x = 0.3 + 0.03 * torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(16, 1, 16, 16, dtype=torch.bool)
    for i in range(16):
        m[i, :, i % 12:i % 12 + 4, 2:6] = True
        x[i, :, i % 12:i % 12 + 4, 2:6] = 0.9
    with caplog.at_level("WARNING"):
        _, stats = train_mask_net(x, m, AmortiseConfig(steps=1, seconds=None, base=4, depth=2,
                                                       lr=1e-9))
    assert stats["fit_iou"] < 0.2
    assert "fits its own masks badly" in caplog.text


def test_amortised_mask_is_used_where_it_flips_and_the_search_elsewhere():
    f = SquareClassifier()
    x = torch.cat([_square_images(3), _square_images(1).fill_(0.3)])   # 3 positive, 1 not
    plain = InpaintGenerator(ConstantFill(), S)
    searched = plain.counterfactual(x, f)
    # a net that marks the square: every positive takes the first cut, no search
    G = InpaintGenerator(ConstantFill(), S, mask_net=FixedMask(0.9))
    res = G.counterfactual(x, f)
    square = torch.zeros(S, S, dtype=torch.bool)
    square[10:16, 10:16] = True
    assert res.amortised.tolist() == [True, True, True, False]
    assert bool((res.mask[:3, 0] == square).all()) and not bool(res.mask[3].any())
    assert res.flipped.all() and torch.equal(res.x_neg[3], x[3])
    # a net whose marks never flip f (below every cut): the search decides, as without it
    G0 = InpaintGenerator(ConstantFill(), S, mask_net=FixedMask(0.05))
    res0 = G0.counterfactual(x, f)
    assert not bool(res0.amortised.any())
    assert torch.equal(res0.mask, searched.mask) and torch.allclose(res0.x_neg, searched.x_neg)
    # a cut above the net's mark is skipped, the next one takes it
    G2 = InpaintGenerator(ConstantFill(), S, mask_net=FixedMask(0.4),
                          amortise={"thresholds": [0.7, 0.3]})
    assert G2.counterfactual(x, f).amortised[:3].all()


def test_run_trains_stores_and_reloads_the_mask_net(blob_cohort, tmp_path):
    ic = InpaintConfig(base=4, depth=2, steps=10, batch=8, health={"negatives": 8},
                       amortise={"images": 8, "steps": 4, "seconds": None, "base": 4,
                                 "depth": 2, "batch": 4})
    gc, tc = GanConfig(family="inpaint", image_size=S), \
        GanTrainConfig(health_heldout=4, device="cpu", inpaint=ic)
    out = str(tmp_path / "amortised")
    summary = train_gan(blob_cohort, BlobClassifier(), out, gc, tc)
    assert summary["stats"]["amortise"]["steps"] == 4
    obj = torch.load(io.BytesIO(Store(out).read_bytes("best.pt")), weights_only=True)
    assert obj["mask_net"]["base"] == 4 and obj["mask_net"]["state_dict"]
    G, meta = load_generator(out)
    assert isinstance(G.mask_net, MaskNet) and not G.mask_net.training
    assert meta["content_hash"] == Store(out).read_json("best.json")["content_hash"]
    x = torch.rand(3, 1, S, S, generator=torch.Generator().manual_seed(2))
    assert G.counterfactual(x, BlobClassifier()).amortised.shape == (3,)


def test_the_net_s_mask_is_completed_to_the_whole_finding():
    """The net replaces the coarse ranking only: a net mask on part of a lesion is grown to
    the whole lesion by completion (search.complete), as a searched mask would be."""
    f = BlobClassifier()                      # the net marks 10..15 of a 9..16 lesion
    x = 0.3 + 0.02 * torch.randn(3, 1, S, S, generator=torch.Generator().manual_seed(1))
    x[:, :, 9:17, 9:17] = 0.9
    x = x.clamp(0, 1)
    lesion = _square(9, 17)
    part = InpaintGenerator(ConstantFill(), S, mask_net=FixedMask(0.9)).counterfactual(x, f)
    assert part.amortised.all() and bool((part.mask[:, 0] == _square(10, 16)).all())
    G = InpaintGenerator(ConstantFill(), S, {"complete": True}, mask_net=FixedMask(0.9))
    res = G.counterfactual(x, f)
    assert res.amortised.all() and res.flipped.all()
    m = res.mask[:, 0]
    assert bool((m & lesion).eq(lesion).all())                        # the whole lesion
    grown = _square(8, 18)
    assert not bool((m & ~grown).any())                               # and one ring at most
    assert float((x - res.x_neg).abs()[:, 0][:, lesion].min()) > 0.5      # all of it in-filled


def test_trim_cuts_the_net_s_mask_to_what_f_needs():
    """amortise.trim: the net's mask goes through the search's fine trimming; without it the
    net's (too large) mask is kept as it is."""
    f = SquareClassifier()
    x = _square_images(2)                                             # lesion 10..15
    wide = FixedMask(0.9, lo=7, hi=19)                                # 12 x 12 around it
    kept = InpaintGenerator(ConstantFill(), S, mask_net=wide).counterfactual(x, f)
    assert kept.amortised.all() and bool((kept.mask[:, 0] == _square(7, 19)).all())
    G = InpaintGenerator(ConstantFill(), S, mask_net=wide, amortise={"trim": True})
    res = G.counterfactual(x, f)
    assert res.amortised.all() and res.flipped.all()
    assert not bool((res.mask[:, 0] & ~_square(10, 16)).any())       # inside the lesion
    assert float(res.area.max()) < 0.5 * float(kept.area.min()), (res.area, kept.area)


class TwoPlaces(nn.Module):
    """A 'mask net' sure of the lesion (10..15) and of a healthy place (rows/cols 22..27)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.full_like(x, 0.01)
        p[:, :, 10:16, 10:16] = 0.9
        p[:, :, 22:28, 22:28] = 0.9
        return p


def test_prune_drops_the_places_f_does_not_need():
    """amortise.prune: a part of the net's mask away from the lesion (in-filling it changes
    nothing f reads) is dropped, the lesion's part kept; without prune both are in-filled."""
    f = SquareClassifier()
    x = _square_images(3)
    both = _square(10, 16) | _square(22, 28)
    kept = InpaintGenerator(ConstantFill(), S, mask_net=TwoPlaces()).counterfactual(x, f)
    assert kept.amortised.all() and bool((kept.mask[:, 0] == both).all())
    G = InpaintGenerator(ConstantFill(), S, mask_net=TwoPlaces(), amortise={"prune": True})
    res = G.counterfactual(x, f)
    assert res.amortised.all() and res.flipped.all()
    assert bool((res.mask[:, 0] == _square(10, 16)).all())
    assert torch.equal(res.x_neg[..., 22:28, 22:28], x[..., 22:28, 22:28])   # left as it was


def test_completion_is_on_by_default_at_128_px_and_above_only():
    """``search.complete: auto`` (the default since session 16): the same lesion and net mask
    (a 1 px ring of the lesion left) are completed to the whole lesion at 128 px, as with
    ``complete: true``, and left as the net's mask at 64 px, as with ``complete: false``."""
    f = BlobClassifier()
    for side in (64, 128):
        x = 0.3 + 0.02 * torch.randn(2, 1, side, side,
                                     generator=torch.Generator().manual_seed(side))
        x[:, :, 40:56, 40:56] = 0.9
        x = x.clamp(0, 1)
        net = FixedMask(0.9, lo=41, hi=55)
        masks = {c: InpaintGenerator(ConstantFill(), side, None if c == "auto" else
                                     {"complete": c}, mask_net=net).counterfactual(x, f).mask
                 for c in ("auto", True, False)}
        lesion = torch.zeros(side, side, dtype=torch.bool)
        lesion[40:56, 40:56] = True
        assert bool(masks[True][:, 0][:, lesion].all()), side        # completion: all of it
        assert not bool(masks[False][:, 0][:, lesion].all()), side   # the net's mask: not
        assert torch.equal(masks["auto"], masks[side >= 128]), side
    from medxgan.metrics.shortcut import driver_search_options

    assert driver_search_options(128)["complete"] is False    # the shortcut search: unchanged
