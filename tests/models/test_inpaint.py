"""The healthy-anatomy inpainter: composite, hole sampler, seeded training, loss, save/load."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from medxgan.config.inpaint import InpaintConfig
from medxgan.generators.inpaint.inpainter import (Inpainter, cut_windows, draw_windows,
                                                  inpaint_loss, load_inpainter, window_side,
                                                  sample_masks, save_inpainter, train_inpainter)

S = 32


def _smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 1, S, S) in [0, 1]: vertical stripes (rib-like) + a gradient, easy to in-fill."""
    g = torch.Generator().manual_seed(seed)
    xx = torch.arange(S, dtype=torch.float32).view(1, 1, 1, S)
    yy = torch.arange(S, dtype=torch.float32).view(1, 1, S, 1)
    ph = torch.rand(n, 1, 1, 1, generator=g) * 6.28
    lvl = 0.3 + 0.2 * torch.rand(n, 1, 1, 1, generator=g)
    return (lvl + 0.15 * torch.sin(xx * 0.6 + ph) + 0.2 * yy / S).clamp(0, 1).expand(n, 1, S, S)


def test_config_forbids_unknown_keys_and_needs_a_budget():
    with pytest.raises(ValidationError):
        InpaintConfig(bogus=1)
    with pytest.raises(ValidationError):
        InpaintConfig(steps=None, seconds=None)
    with pytest.raises(ValidationError):
        InpaintConfig(shapes=(3, 1))
    assert InpaintConfig(steps=None, seconds=5).seconds == 5


def test_search_crop_scales_with_the_side_and_the_in_fillers_multiple():
    from medxgan.config.inpaint import SearchConfig

    sc = SearchConfig()
    assert sc.for_size(64)["crop"] == 48
    assert sc.for_size(128)["crop"] == 96
    assert sc.for_size(32)["crop"] == 24
    assert sc.for_size(32, multiple=16)["crop"] is None      # 32 would cover the image
    assert sc.for_size(224, multiple=16)["crop"] == 160      # 168 -> nearest multiple of 16
    assert SearchConfig(crop=None).for_size(64)["crop"] is None


def test_only_the_hole_is_replaced_and_its_content_is_never_seen():
    torch.manual_seed(0)
    net = Inpainter(base=4, depth=2).eval()
    x = torch.rand(3, 1, S, S)
    m = sample_masks(3, S, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x, m)
        x2 = torch.where(m.bool(), torch.rand_like(x), x)  # other content in the hole
        y2 = net(x2, m)
    assert y.shape == x.shape and bool(((y >= 0) & (y <= 1)).all())
    assert torch.equal(y[m == 0], x[m == 0])
    assert torch.equal(y, y2)
    with pytest.raises(ValueError):
        net(torch.rand(1, 1, 30, 30), torch.zeros(1, 1, 30, 30))


def test_masks_are_seeded_inside_the_image_and_follow_the_prior():
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = sample_masks(64, S, side_px=(4, 10), generator=g(0))
    assert a.shape == (64, 1, S, S) and a.dtype == torch.float32
    assert torch.equal(a, sample_masks(64, S, side_px=(4, 10), generator=g(0)))
    assert not torch.equal(a, sample_masks(64, S, side_px=(4, 10), generator=g(1)))
    area = a.flatten(1).sum(1)
    assert bool((area > 0).all()) and bool((area <= 3 * 10 * 10).all())
    prior = torch.zeros(S, S)
    prior[20:24, 4:8] = 1.0  # findings only there
    b = sample_masks(200, S, side_px=(2, 6), prior=prior, generator=g(2))
    allowed = torch.zeros(S, S, dtype=torch.bool)
    allowed[17:27, 1:11] = True  # the prior's pixels grown by half the largest side
    assert not bool(b[:, 0][:, ~allowed].any())
    with pytest.raises(ValueError):
        sample_masks(2, S, prior=torch.zeros(S, S))


def test_loss_parts():
    x = _smooth_images(2)
    m = torch.zeros_like(x)
    m[..., 8:16, 8:16] = 1
    loss, parts = inpaint_loss(x.clone(), x, m)
    assert float(loss) == 0.0 and parts == {"l1_in": 0.0, "l1_out": 0.0}
    raw = x + 0.1
    loss, parts = inpaint_loss(raw, x, m, outside_weight=0.5)
    assert parts["l1_in"] == pytest.approx(0.1, abs=1e-6)
    assert float(loss) == pytest.approx(0.1 * 1.5, abs=1e-6)


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    x = _smooth_images(16)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, sa = train_inpainter(x, steps=3, batch=4, seed=5, base=4, depth=2)
    assert torch.equal(before, torch.random.get_rng_state())
    b, _ = train_inpainter(x, steps=3, batch=4, seed=5, base=4, depth=2)
    c, _ = train_inpainter(x, steps=3, batch=4, seed=6, base=4, depth=2)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    assert sa["steps"] == 3 and sa["config"]["seed"] == 5 and sa["params"] > 0
    assert not a.training
    with pytest.raises(ValidationError):
        train_inpainter(x, steps=1, nonsense=True)
    prior = torch.zeros(S, S)
    prior[8:24, 4:12] = 1.0  # holes only where findings occur
    d, sd = train_inpainter(x, steps=2, batch=4, seed=5, base=4, depth=2, prior=prior)
    assert sd["steps"] == 2 and any(not torch.equal(v, a.state_dict()[k])
                                    for k, v in d.state_dict().items())


def test_a_few_steps_reduce_the_in_hole_error():
    train, held = _smooth_images(64, seed=0), _smooth_images(32, seed=1)
    m = sample_masks(32, S, side_px=(4, 10), generator=torch.Generator().manual_seed(9))

    def hole_l1(net):
        with torch.no_grad():
            return float(((net(held, m) - held).abs() * m).sum() / m.sum())

    cfg = InpaintConfig(base=4, depth=2, batch=16, lr=3e-3, shape_frac=(0.125, 0.3125))
    untrained, _ = train_inpainter(train, cfg, steps=1, lr=1e-12)
    trained, stats = train_inpainter(train, cfg, steps=150, log_every=50)
    assert len(stats["history"]) == 3
    assert hole_l1(trained) < 0.5 * hole_l1(untrained)


def test_training_windows_are_sub_images_of_the_in_fillers_multiple():
    assert [window_side(s, c, m) for s, c, m in
            [(128, 0.5, 16), (224, 0.5, 32), (64, 1.0, 8), (64, 0.1, 8), (96, 0.4, 16)]] == \
        [64, 128, 64, 8, 48]
    x = torch.arange(2 * 1 * 20 * 24, dtype=torch.float32).view(2, 1, 20, 24)
    g = torch.Generator().manual_seed(0)
    oy, ox = draw_windows(200, 20, 24, 8, None, g)
    assert int(oy.min()) == 0 and int(oy.max()) == 12 and int(ox.max()) == 16
    w = cut_windows(x, torch.tensor([3, 0]), torch.tensor([5, 16]), 8)
    assert torch.equal(w[0, 0], x[0, 0, 3:11, 5:13]) and torch.equal(w[1, 0], x[1, 0, 0:8, 16:24])
    prior = torch.zeros(20, 24)
    prior[19, 0] = 1.0   # findings only in the bottom-left corner: windows sit there
    oy, ox = draw_windows(50, 20, 24, 8, prior, g)
    assert set(oy.tolist()) == {12} and set(ox.tolist()) == {0}


def test_training_on_windows_in_fills_whole_images():
    """train_crop: each step sees (batch, 1, win, win) windows; the net in-fills whole images
    afterwards and learns as well per step (hole error halves, as on whole images)."""
    train, held = _smooth_images(64, seed=0), _smooth_images(32, seed=1)
    m = sample_masks(32, S, side_px=(4, 10), generator=torch.Generator().manual_seed(9))

    def hole_l1(net):
        with torch.no_grad():
            return float(((net(held, m) - held).abs() * m).sum() / m.sum())

    cfg = InpaintConfig(base=4, depth=2, batch=16, lr=3e-3, shape_frac=(0.125, 0.3125),
                        train_crop=0.5)
    untrained, _ = train_inpainter(train, cfg, steps=1, lr=1e-12)
    trained, stats = train_inpainter(train, cfg, steps=150)
    assert stats["window"] == S // 2
    assert trained(held, m).shape == held.shape
    assert hole_l1(trained) < 0.5 * hole_l1(untrained)
    assert stats["window_steps"] == 150
    whole, stats = train_inpainter(train, cfg, steps=1, train_crop=1.0)
    assert stats["window"] == S and stats["window_steps"] == 0
    _, stats = train_inpainter(train, cfg, steps=10, whole_share=0.3)   # the last 3 whole
    assert stats["window_steps"] == 7


def test_save_and_load_round_trip():
    torch.manual_seed(0)
    net = Inpainter(base=4, depth=2).eval()
    back, stats = load_inpainter(save_inpainter(net, {"steps": 7}))
    assert stats == {"steps": 7} and (back.base, back.depth) == (4, 2)
    x, m = torch.rand(2, 1, S, S), torch.ones(2, 1, S, S)
    with torch.no_grad():
        assert torch.equal(net(x, m), back(x, m))
