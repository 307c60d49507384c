"""Generator / discriminator architecture: shapes, ranges, the local variant's exact zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medxgan.config.models import GanConfig
from medxgan.generators.published.gan import (Discriminator, Generator, ProjectionDiscriminator,
                                              build_discriminator, from_gan, to_gan)

TINY = dict(g_width=0.05, d_width=0.125, d_a=8, d_p=3)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("generator", ["published", "local"])
@pytest.mark.parametrize("upsample", ["convtranspose", "resize_conv"])
def test_generator_shape_and_range(size, generator, upsample):
    torch.manual_seed(0)
    G = Generator(GanConfig(image_size=size, generator=generator, upsample=upsample, **TINY))
    z_a, z_p = torch.randn(4, 8) * 3, torch.randn(4, 3) * 3
    x = G(z_a, z_p)
    assert x.shape == (4, 1, size, size)
    assert x.abs().max() <= 1.0 and torch.isfinite(x).all()
    assert (G.d_a, G.d_p, G.image_size) == (8, 3, size)


def test_published_layout_at_64_px_matches_the_paper():
    G = Generator(GanConfig(image_size=64))
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [384, 256, 192, 1]
    assert [c.kernel_size[0] for c in convs] == [5, 5, 5, 8]
    assert all(c.bias is None for c in convs[:-1])
    assert G.net.fc.out_features == 768
    D = Discriminator(GanConfig(image_size=64))
    dconv = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in dconv] == [16, 32, 64, 128, 256, 512]
    assert [c.stride[0] for c in dconv] == [2, 1, 2, 1, 2, 1]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 5


@pytest.mark.parametrize("upsample", ["convtranspose", "resize_conv"])
def test_local_residual_is_exactly_zero_at_zero_pathology_code(upsample):
    torch.manual_seed(0)
    G = Generator(GanConfig(image_size=32, generator="local", upsample=upsample,
                            local_frame=2, **TINY))
    z_a = torch.randn(6, 8)
    for train in (True, False):
        G.train(train)
        out, mask = G.forward_with_mask(z_a, torch.zeros(6, 3))
        a = torch.tanh(G.anatomy(z_a))
        assert torch.equal(out, a)                                     # bit for bit
        assert torch.equal(mask, torch.zeros_like(mask))
    G.eval()
    assert torch.equal(G.residual(z_a, torch.zeros(6, 3)), torch.zeros(6, 1, 32, 32))
    change = G.residual(z_a, torch.randn(6, 3))
    assert change.abs().amax(dim=(1, 2, 3)).min() > 0                 # z_p != 0 changes it
    assert change[..., :2, :].abs().max() == 0 and change[..., :, -2:].abs().max() == 0


def test_published_generator_uses_z_p():
    torch.manual_seed(0)
    G = Generator(GanConfig(image_size=32, **TINY)).eval()
    z_a = torch.randn(3, 8)
    assert G.residual(z_a, torch.randn(3, 3)).abs().sum() > 0


def test_projection_discriminator_adds_a_class_term():
    torch.manual_seed(0)
    D = build_discriminator(GanConfig(image_size=32, discriminator="projection", **TINY)).eval()
    assert isinstance(D, ProjectionDiscriminator)
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    d1, d0 = D(x, torch.ones(5, dtype=torch.long)), D(x, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(d1 - d0, D.class_term(x))
    assert (d1 - d0).abs().sum() > 0
    with pytest.raises(ValueError):
        D(x)
    U = build_discriminator(GanConfig(image_size=32, **TINY)).eval()
    assert torch.equal(U(x), U(x, torch.ones(5, dtype=torch.long)))  # unconditional ignores c


def test_weights_are_initialised_n_0_002():
    torch.manual_seed(0)
    G = Generator(GanConfig(image_size=64))
    w = torch.cat([m.weight.flatten() for m in G.modules()
                   if isinstance(m, (nn.ConvTranspose2d, nn.Linear))])
    assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) - 0.02) < 1e-3


def test_pixel_space_helpers_are_inverse():
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(from_gan(to_gan(x)), x)
    assert to_gan(torch.zeros(1)) == -1 and to_gan(torch.ones(1)) == 1


def test_config_forbids_unknown_keys_and_sizes():
    with pytest.raises(ValueError):
        GanConfig(image_size=50)          # not a multiple of 8
    with pytest.raises(ValueError):
        Generator(GanConfig(family="published", image_size=48))
    with pytest.raises(ValueError):
        GanConfig(widht=0.5)


@pytest.mark.parametrize("p", [0.5, 0.25, 0.0])
def test_fast_dropout_is_inverted_dropout(p):
    from medxgan.generators.published.gan import FastDropout
    d = FastDropout(p)
    x = torch.ones(64, 8, 16, 16, requires_grad=True)
    torch.manual_seed(3)
    y = d(x)
    keep = y != 0
    assert keep.float().mean().item() == pytest.approx(1 - p, abs=0.01)
    if p:
        assert torch.allclose(y[keep], torch.full_like(y[keep], 1 / (1 - p)))
    torch.manual_seed(3)
    assert torch.equal(d(x), y)                                         # seeded: repeatable
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, y.detach())                                   # d/dx = mask * scale
    d.eval()
    assert d(x) is x
    # no state: a discriminator's state_dict is the same as with nn.Dropout
    assert not list(d.state_dict())


def test_fast_dropout_masks_are_independent_across_elements():
    from medxgan.generators.published.gan import FastDropout
    torch.manual_seed(0)
    m = (FastDropout(0.5)(torch.ones(4096, 33)) != 0).float()
    # neighbouring elements (same int32 word or not) are uncorrelated, every column is fair
    assert abs(torch.corrcoef(torch.stack([m[:, :-1].flatten(), m[:, 1:].flatten()]))[0, 1]) < 0.03
    assert (m.mean(0) - 0.5).abs().max() < 0.04
    with pytest.raises(ValueError):
        FastDropout(1.0)
