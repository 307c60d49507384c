"""Generator families as plug-ins (docs/design.md, "Generator families as plug-ins"): the registry
agrees with the typed config, every generator module names its family, and a new family is one
module + one ``register`` line: the explainers run it without a change."""

from __future__ import annotations

import typing

import pytest
import torch
from torch import nn

from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.explain import explain_batch
from medxgan.generators import GeneratorFamily, SearchResult, family, family_of, names, register
from medxgan.generators.image_family import ImageFamily
from medxgan.generators.registry import DEFAULT, INFILLER, family_of_checkpoint, unregister


def test_the_registry_is_the_config_s_list_of_families():
    assert set(names()) == set(typing.get_args(GanConfig.model_fields["family"].annotation))
    assert DEFAULT in names() and INFILLER in names()
    for name in names():
        fam = family(name)
        assert isinstance(fam, GeneratorFamily) and fam.name == name
        assert fam.own_config is None or fam.own_config in GanTrainConfig.model_fields
        assert fam.progress and fam.x_neg_text
    assert [n for n in names() if family(n).latent] == ["published"]
    assert family(INFILLER).infiller(object()) is not None
    with pytest.raises(ValueError, match="unknown generator family 'nope'"):
        family("nope")
    with pytest.raises(ValueError, match="registered already"):
        register("inpaint", type(family("inpaint")))


def test_every_generator_names_its_family():
    from medxgan.generators.inpaint.inpainter import InpaintGenerator, Inpainter
    from medxgan.generators.published.gan import Generator
    from medxgan.generators.residual.vagan import ResidualGenerator, ResidualNet

    tiny = GanConfig(family="published", image_size=32, d_a=4, d_p=2, g_width=0.05)
    assert family_of(Generator(tiny)).name == "published"
    assert family_of(InpaintGenerator(Inpainter(4, 2), 32)).name == "inpaint"
    assert family_of(ResidualGenerator(ResidualNet(4, 2), 32)).name == "residual"
    assert family_of(nn.Linear(2, 2)).name == DEFAULT       # the latent contract, duck-typed
    assert family_of_checkpoint({"step": 1}).name == DEFAULT  # a run before the family key
    assert family_of_checkpoint({"family": "residual"}).name == "residual"


class _DarkenGenerator(nn.Module):
    """A toy image-conditioned generator: x_neg is x with its brightest 4 x 4 patch set to 0."""

    family = "darken"

    def fill(self, x, mask):
        return torch.where(mask.to(torch.bool), torch.zeros_like(x), x)

    @torch.no_grad()
    def counterfactual(self, images, f):
        x = images.float()
        B, _, H, W = x.shape
        pooled = nn.functional.avg_pool2d(x, 4)                          # (B, 1, H/4, W/4)
        k = pooled.flatten(1).argmax(1)
        mask = torch.zeros(B, 1, H // 4, W // 4, dtype=torch.bool)
        mask.view(B, -1)[torch.arange(B), k] = True
        mask = mask.repeat_interleave(4, 2).repeat_interleave(4, 3)      # (B, 1, H, W)
        x_neg = self.fill(x, mask)
        p = lambda t: torch.sigmoid(f(t).float().reshape(-1))  # noqa: E731
        return SearchResult(x_neg, mask, p(x), p(x_neg), mask.flatten(1).float().mean(1), 0.5)


class _DarkenFamily(ImageFamily):
    """The toy family: nothing to train, a generator with no weights."""

    def fit(self, *args, **kwargs):
        raise NotImplementedError

    def build(self, checkpoint):
        return _DarkenGenerator()


def test_a_new_family_is_one_module_and_one_registry_line():
    from tests.explain.conftest import SmallCNN

    register("darken", _DarkenFamily)  # the one line
    try:
        f, G = SmallCNN().eval(), _DarkenGenerator()
        x = torch.rand(3, 1, 32, 32)
        out = explain_batch(x, f, G, ["medxgan", "counterfactual_ig", "latent_ig"],
                            {"latent_ig": {"n_points": 5}, "counterfactual_ig": {"n_points": 5}})
        m = out["medxgan"]
        x_neg = G.counterfactual(x, f).x_neg
        assert torch.equal(m.extras["x_neg"], x_neg) and torch.equal(m.extras["x_pos"], x)
        assert torch.allclose(m.maps, (x - x_neg)[:, 0].abs())
        assert (m.extras["area"] == 16 / 32 ** 2).all() and (m.extras["recon_mse"] == 0).all()
        ig = out["counterfactual_ig"]
        assert ig.extras["path"] == ["line"] * 3          # the straight line from x_neg to x
        assert torch.equal(ig.maps, out["latent_ig"].maps)
        assert torch.allclose(ig.maps.flatten(1).sum(1), ig.extras["delta_logit"], atol=1e-3)
    finally:
        unregister("darken")
    assert "darken" not in names()
