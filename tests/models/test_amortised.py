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
    """A 'mask net' that says ``p_in`` on rows/cols 10..15 and ``p_out`` elsewhere."""

    def __init__(self, p_in: float, p_out: float = 0.01):
        super().__init__()
        self.p_in, self.p_out = p_in, p_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.full_like(x, self.p_out)
        p[:, :, 10:16, 10:16] = self.p_in
        return p


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
