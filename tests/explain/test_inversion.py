"""Batched inversion: per-sample independence, early stop, restarts, frozen models."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medxgan.config.explain import InversionConfig
from medxgan.generators.published.inversion import initial_latents, invert
from medxgan.explain.seeding import content_seeds, index_seeds
from tests.explain.conftest import SmallCNN, TinyGenerator


def _targets(G, n=4, seed=5):
    """Images G can draw exactly (from known latents), in [0, 1]: the inversion has an answer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = G(torch.randn(n, G.d_a, generator=g), torch.randn(n, G.d_p, generator=g))
    return ((x + 1) / 2).clamp(0, 1)


def _one_image_loop(G, f, x01, z_a, z_p, w_pix, lr, steps):
    """The published code's way: one image, torch Adam, plain loop (reference)."""
    z_a = z_a.clone().requires_grad_(True)
    z_p = z_p.clone().requires_grad_(True)
    opt = torch.optim.Adam([z_a, z_p], lr=lr)
    with torch.no_grad():
        target = torch.sigmoid(f(x01))
    for _ in range(steps):
        opt.zero_grad()
        g = G(z_a, z_p)
        loss = w_pix * F.mse_loss(g, 2 * x01 - 1) + F.binary_cross_entropy_with_logits(
            f((g + 1) / 2), target)
        loss.backward()
        opt.step()
    with torch.no_grad():
        g = G(z_a, z_p)
        mse = F.mse_loss(g, 2 * x01 - 1)
        loss = w_pix * mse + F.binary_cross_entropy_with_logits(f((g + 1) / 2), target)
    return z_a.detach(), z_p.detach(), float(mse), float(loss)


def test_batched_equals_one_image_published_loop():
    G, f = TinyGenerator().eval(), SmallCNN().eval()
    x = _targets(G)
    cfg = InversionConfig.recipe("published-brain", steps=40, lr=1e-2)
    z_a0, z_p0 = initial_latents(G, index_seeds(4, 3), cfg)
    res = invert(G, f, x, cfg, init=(z_a0, z_p0))
    assert res.steps_run.tolist() == [40] * 4
    for i in range(4):
        za, zp, mse, loss = _one_image_loop(G, f, x[i:i + 1], z_a0[i:i + 1], z_p0[i:i + 1],
                                            cfg.w_pix, cfg.lr, cfg.steps)
        torch.testing.assert_close(res.z_a[i:i + 1], za, atol=2e-4, rtol=1e-3)
        torch.testing.assert_close(res.z_p[i:i + 1], zp, atol=2e-4, rtol=1e-3)
        assert abs(float(res.recon_mse[i]) - mse) <= 1e-4 + 1e-3 * mse
        assert abs(float(res.loss[i]) - loss) <= 1e-4 + 1e-3 * loss
    # the optimisation did something: error fell from the start
    start = invert(G, f, x, cfg.model_copy(update={"steps": 0}), init=(z_a0, z_p0))
    assert (res.recon_mse < start.recon_mse).all()


def test_batch_independence_with_content_seeds_restarts_and_early_stop():
    G, f = TinyGenerator().eval(), SmallCNN().eval()
    x = _targets(G, n=3)
    cfg = InversionConfig(steps=30, restarts=2, tol=1e-3, patience=2)
    seeds = content_seeds(x, 7)
    together = invert(G, f, x, cfg, seed=seeds)
    for i in range(3):
        alone = invert(G, f, x[i:i + 1], cfg, seed=seeds[i:i + 1])
        torch.testing.assert_close(together.z_a[i:i + 1], alone.z_a, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(together.z_p[i:i + 1], alone.z_p, atol=1e-4, rtol=1e-3)
        assert together.steps_run[i] == alone.steps_run[0]
    again = invert(G, f, x, cfg, seed=seeds)  # determinism
    assert torch.equal(again.z_a, together.z_a)


def test_early_stop_freezes_a_sample_exactly():
    """A sample stopped after k steps holds the latents of a k-step run (no momentum drift)."""
    G, f = TinyGenerator().eval(), SmallCNN().eval()
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))  # plateaus early
    cfg = InversionConfig(steps=120, lr=3e-2, keep_best=False, tol=3e-4, patience=3)
    res = invert(G, f, x, cfg, seed=11)
    k = res.steps_run
    assert (k < cfg.steps).all() and len(set(k.tolist())) > 1, k
    z0 = initial_latents(G, index_seeds(4, 11), cfg)
    for i in range(4):
        ref = invert(G, f, x[i:i + 1], cfg.model_copy(update={"steps": int(k[i]), "tol": 0.0}),
                     init=(z0[0][i:i + 1], z0[1][i:i + 1]))
        torch.testing.assert_close(res.z_a[i:i + 1], ref.z_a, atol=1e-4, rtol=1e-3)


def test_restarts_never_worse_and_fast_beats_start():
    G, f = TinyGenerator().eval(), SmallCNN().eval()
    x = _targets(G, n=4, seed=1)
    one = invert(G, f, x, InversionConfig(steps=20, tol=0.0), seed=0)
    three = invert(G, f, x, InversionConfig(steps=20, tol=0.0, restarts=3), seed=0)
    assert (three.loss <= one.loss + 1e-6).all()
    assert (three.loss < one.loss - 1e-6).any()
    start = invert(G, f, x, InversionConfig(steps=0), seed=0)
    assert (one.recon_mse < 0.5 * start.recon_mse).all()
    assert one.x_pos.shape == x.shape and one.x_pos.min() >= 0 and one.x_pos.max() <= 1


def test_models_frozen_and_modes_restored():
    G, f = TinyGenerator(), SmallCNN()
    G.train()
    f.eval()
    before = [p.clone() for p in list(G.parameters()) + list(f.parameters())]
    bn = G.net[1].running_mean.clone()
    invert(G, f, _targets(G.eval(), n=2), InversionConfig(steps=5), seed=0)
    G.train()
    invert(G, f, _targets(TinyGenerator().eval(), n=2), InversionConfig(steps=5), seed=0)
    assert G.training and not f.training
    assert torch.equal(G.net[1].running_mean, bn)  # eval mode during inversion
    for p, q in zip(before, list(G.parameters()) + list(f.parameters())):
        assert torch.equal(p, q) and q.grad is None
        assert q.requires_grad


def test_recipes_and_config_errors():
    import pytest
    from pydantic import ValidationError
    assert InversionConfig.recipe("published-cxr").steps == 5000
    assert InversionConfig(name="published-brain", steps=7).lr == 1e-3
    assert InversionConfig().name == "fast"
    with pytest.raises(ValidationError):
        InversionConfig(stepz=3)
    with pytest.raises(ValidationError):
        InversionConfig.recipe("nope")
    z_a, _ = initial_latents(TinyGenerator(), [1, 2], InversionConfig.recipe("published-cxr"))
    assert torch.equal(z_a, torch.zeros_like(z_a))


def test_frozen_restores_each_submodules_own_mode():
    """A wrapper in train mode around a generator in eval mode stays exactly that (a plain
    ``wrapper.train(True)`` on exit would switch the inner BatchNorm to batch statistics)."""
    from medxgan.explain._torch import frozen
    inner = TinyGenerator()
    outer = torch.nn.Sequential(inner).train()
    inner.eval()
    with frozen(outer):
        assert not outer.training and not inner.training
    assert outer.training and not inner.training
    assert not any(m.training for m in inner.modules())
