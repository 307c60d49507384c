"""The ``residual`` generator family (gan.model.family: residual, VA-GAN style): its training
removes what separates positives from negatives, the GAN stage trains it with the run contract
and reloads it, and every generator method explains with it."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from medxgan.config.residual import ResidualConfig
from medxgan.explain import explain_batch
from medxgan.explain.base import make_explainer
from medxgan.checkpoints import sha256
from medxgan.config.models import GanConfig
from medxgan.generators.residual.vagan import (Critic, ResidualGenerator, ResidualNet,
                                               gradient_penalty, train_residual)
from medxgan.config.models import GanTrainConfig
from medxgan.generators import load_generator, train_gan
from medxgan.storage import Store
from tests.models.test_inpaint_family import BlobClassifier, SquareClassifier, _square_images

S = 32


class SquareEraser(nn.Module):
    """An analytic map generator: M(x) sets rows/cols 10..15 to a learnable 0.3, nothing else."""

    def __init__(self):
        super().__init__()
        self.v = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.zeros_like(x)
        m[:, :, 10:16, 10:16] = 1.0
        return (self.v - x) * m


def test_training_removes_what_only_positives_have():
    """Positives = negatives + a bright 4x4 square at a fixed place: the critic sees the square,
    so M learns to take it away and leave the rest (no classifier gradient at all)."""
    g = torch.Generator().manual_seed(0)

    def imgs(n: int, pos: bool) -> torch.Tensor:
        x = 0.3 + 0.03 * torch.randn(n, 1, 16, 16, generator=g)
        if pos:
            x[:, :, 5:9, 5:9] = 0.9
        return x.clamp(0, 1)

    pos, neg = imgs(64, True), imgs(64, False)
    M, stats = train_residual(pos, neg, base=4, depth=2, critic_base=4, steps=150, batch=16,
                              critic_steps=2, lr=1e-3, flip=False, log_every=50)
    with torch.no_grad():
        d = M(pos[:8]).abs()[:, 0]                                     # (8, 16, 16)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[5:9, 5:9] = True
    assert float(d[:, inside].mean()) > 0.2
    assert float(d[:, inside].mean()) > 5 * float(d[:, ~inside].mean())
    assert stats["steps"] == 150 and len(stats["history"]) == 3 and not M.training
    assert stats["params"] == sum(p.numel() for p in M.parameters())


def test_training_is_seeded_and_checks_its_inputs():
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    kw = dict(base=2, depth=2, critic_base=2, steps=3, batch=4, critic_steps=1)
    a, _ = train_residual(x, x.flip(-1), **kw)
    b, _ = train_residual(x, x.flip(-1), **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    with pytest.raises(ValueError, match="images_neg must be"):
        train_residual(x, x[:0], **kw)
    with pytest.raises(ValueError, match="needs the classifier"):
        train_residual(x, x, cls_weight=0.1, **kw)
    with pytest.raises(ValueError, match="set steps, seconds or both"):
        ResidualConfig(steps=None)


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    """D(x) = <w, x> with ||w|| = 1 has gradient norm 1 everywhere: no penalty; scaled by 3,
    the penalty is (3 - 1)^2 = 4."""
    w = torch.randn(1, 1, 8, 8)
    w = w / w.norm()

    class Linear(nn.Module):
        def __init__(self, k: float):
            super().__init__()
            self.k = k

        def forward(self, x):
            return self.k * (x * w).flatten(1).sum(1)

    real, fake = torch.rand(5, 1, 8, 8), torch.rand(5, 1, 8, 8)
    assert float(gradient_penalty(Linear(1.0), real, fake)) == pytest.approx(0.0, abs=1e-10)
    assert float(gradient_penalty(Linear(3.0), real, fake)) == pytest.approx(4.0, rel=1e-5)
    assert Critic(4)(torch.rand(5, 1, 16, 16)).shape == (5,)


def test_counterfactual_keeps_negatives_and_marks_the_change():
    f = SquareClassifier()
    G = ResidualGenerator(SquareEraser(), S)
    x = torch.cat([_square_images(2), _square_images(2).fill_(0.3)])     # 2 positive, 2 not
    res = G.counterfactual(x, f)
    assert res.flipped.tolist() == [True] * 4
    assert torch.equal(res.x_neg[2:], x[2:]) and not bool(res.mask[2:].any())
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[10:16, 10:16] = True
    assert bool((res.mask[:2, 0] == inside).all())                      # |change| > mask_tol
    assert torch.allclose(res.area[:2], torch.full((2,), 36 / S ** 2))
    assert torch.allclose(res.x_neg[:2, :, 10:16, 10:16], torch.full((2, 1, 6, 6), 0.3))
    assert torch.equal(G.fill(x, res.mask), res.x_neg)                  # the carried mask


@pytest.mark.parametrize("method", ["medxgan", "latent_ig", "counterfactual_ig"])
def test_residual_family_maps_are_hot_on_the_known_square(method):
    f = SquareClassifier()
    G = ResidualGenerator(SquareEraser(), S)
    x = _square_images()
    expl = make_explainer(method, f, generator=G).explain(x)
    maps = expl.maps.abs()                                              # (B, S, S)
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[10:16, 10:16] = True
    assert float((maps * inside).flatten(1).sum(1).min() / maps.flatten(1).sum(1).max()) > 0.99
    if method == "medxgan":
        ex = expl.extras
        assert bool((ex["counterfactual_flip"] == 1).all())
        assert torch.equal(ex["recon_mse"], torch.zeros(4))
        assert torch.allclose(ex["frames"][:, 0], ex["x_neg"][:, 0])
    else:
        delta = f(x) - f(expl.extras["x_neg"])
        assert torch.allclose(expl.maps.flatten(1).sum(1), delta, atol=1e-3)  # completeness
    # the stored latents (the changed mask) give the same explanation again
    out = explain_batch(x, f, G, ["medxgan", "latent_ig"], None)
    z = (out["medxgan"].extras["z_a"], out["medxgan"].extras["z_p"])
    again = explain_batch(x, f, G, ["latent_ig"], None, latents=z)["latent_ig"]
    assert torch.allclose(again.maps, out["latent_ig"].maps)


def _residual_configs(**residual) -> tuple[GanConfig, GanTrainConfig]:
    rc = ResidualConfig(base=4, depth=2, critic_base=4, steps=6, batch=8, critic_steps=2,
                        log_every=2, health={"negatives": 8}, **residual)
    return GanConfig(family="residual", image_size=S), \
        GanTrainConfig(health_heldout=6, device="cpu", residual=rc)


def test_train_dispatch_writes_the_run_contract_and_reloads(blob_cohort, tmp_path):
    out = str(tmp_path / "residual")
    f = BlobClassifier()
    gc, tc = _residual_configs()
    summary = train_gan(blob_cohort, f, out, gc, tc)
    store = Store(out)
    assert summary["family"] == "residual" and summary["steps"] == 6
    assert summary["stats"]["train_on"] == "called_positive+called_negative"
    best = store.read_json("best.json")
    assert best == store.read_json("checkpoints/latest.json")
    assert sha256(store.read_bytes("best.pt")) == best["sha256"]
    assert store.exists(best["key"].replace(".pt", ".png"))
    assert store.read_manifest()["best"]["content_hash"] == best["content_hash"]
    obj = torch.load(io.BytesIO(store.read_bytes("best.pt")), weights_only=True)
    assert obj["family"] == "residual" and obj["residual_net"] == {"base": 4, "depth": 2}
    h = best["health"]
    for k in ("change_similarity", "universal_flip", "fidelity", "null_change", "flip_rate",
              "area", "recon_mse"):
        assert k in h, k
    assert math.isnan(h["counterfactual_ncc"]) and 0 <= h["flip_rate"] <= 1

    G, meta = load_generator(out)
    assert isinstance(G, ResidualGenerator) and isinstance(G.net, ResidualNet)
    assert G.image_conditioned and not G.training and meta["content_hash"] == best["content_hash"]
    assert train_gan(blob_cohort, f, out, gc, tc)["reused"]
    other = train_gan(blob_cohort, f, str(tmp_path / "again"), gc, tc)
    assert other["best"]["content_hash"] == best["content_hash"]      # seeded (CPU, 1 thread)
