"""The ``inpaint`` generator family (gan.model.family: inpaint): the GAN stage trains it with the
run contract of a GAN run and reloads it; every generator method explains with it (maps hot on
the known square, IG completeness along the line); the published family is unchanged."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from medxgan.config import AuditConfig, error_line
from medxgan.config.inpaint import InpaintConfig
from medxgan.explain import explain_batch
from medxgan.explain.base import make_explainer
from medxgan.checkpoints import sha256
from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.generators.inpaint.inpainter import InpaintGenerator
from medxgan.generators import load_generator, train_gan
from medxgan.storage import Store

S = 32


class BlobClassifier(nn.Module):
    """Analytic f: logit = 20 (max over 6x6 means of x - 0.6), positive on a bright blob."""

    threshold = 0.5
    sha256 = "b" * 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * (F.avg_pool2d(x, 6, 1).flatten(1).amax(1) - 0.6)


class SquareClassifier(nn.Module):
    """Analytic, non-linear f on the known square rows/cols 10..15: softplus of its mean."""

    threshold = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, 0, 10:16, 10:16].mean((1, 2))
        return 8 * F.softplus(20 * (m - 0.6)) - 4


class ConstantFill(nn.Module):
    """An in-filler that fills the hole with a learnable constant (0.3, the background)."""

    def __init__(self):
        super().__init__()
        self.v = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        m = m.to(x.dtype)
        return x * (1 - m) + self.v * m


def _square_images(n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.02 * torch.randn(n, 1, S, S, generator=g)
    x[:, :, 10:16, 10:16] = 0.9
    return x.clamp(0, 1)


def _inpaint_configs(**inpaint) -> tuple[GanConfig, GanTrainConfig]:
    ic = InpaintConfig(base=4, depth=2, steps=15, batch=8, log_every=5,
                       health={"negatives": 8}, **inpaint)
    return GanConfig(family="inpaint", image_size=S), \
        GanTrainConfig(health_heldout=6, device="cpu", inpaint=ic)


def test_family_is_a_typed_config_field():
    assert GanConfig().family == "inpaint"              # the default since issue #14
    with pytest.raises(ValidationError) as e:
        AuditConfig.model_validate({"gan": {"model": {"family": "vae"}}})
    assert "gan.model.family: Input should be 'published', 'inpaint' or 'residual'" in error_line(e.value)
    with pytest.raises(ValidationError) as e:
        AuditConfig.model_validate({"gan": {"train": {"inpaint": {"serch": {}}}}})
    assert "gan.train.inpaint.serch: Extra inputs are not permitted" in error_line(e.value)


def test_train_dispatch_writes_the_run_contract_and_reloads(blob_cohort, tmp_path):
    out = str(tmp_path / "inpaint")
    f = BlobClassifier()
    gc, tc = _inpaint_configs()
    summary = train_gan(blob_cohort, f, out, gc, tc)
    store = Store(out)
    assert summary["family"] == "inpaint" and summary["steps"] == 15
    best = store.read_json("best.json")
    assert best == store.read_json("checkpoints/latest.json")
    assert sha256(store.read_bytes("best.pt")) == best["sha256"] == \
        sha256(store.read_bytes(best["key"]))
    assert store.exists(best["key"].replace(".pt", ".png"))
    assert store.read_manifest()["best"]["content_hash"] == best["content_hash"]
    obj = torch.load(io.BytesIO(store.read_bytes("best.pt")), weights_only=True)
    assert obj["family"] == "inpaint" and "cohort_url" not in obj
    h = best["health"]
    for k in ("change_similarity", "change_similarity_boxes", "universal_flip", "fidelity",
              "fidelity_shuffled", "change_in_boxes", "change_out_boxes", "null_change",
              "flip_rate", "oracle_flip", "counterfactual_ncc", "mask_dice", "mask_precision",
              "mask_recall", "healthy_control"):
        assert k in h, k
    assert 0 <= h["healthy_control"] <= 1 or math.isnan(h["healthy_control"])
    assert math.isnan(h["oracle_flip"]) and math.isnan(h["counterfactual_ncc"])  # no oracle,
    assert 0 <= h["flip_rate"] <= 1                                   # not a phantom cohort

    G, meta = load_generator(out)
    assert isinstance(G, InpaintGenerator) and G.family == "inpaint" and not G.training
    assert meta["content_hash"] == best["content_hash"] and meta["step"] == 15
    again = train_gan(blob_cohort, f, out, gc, tc)                     # a finished run: reused
    assert again["reused"] and again["best"]["content_hash"] == best["content_hash"]
    with pytest.raises(ValueError, match="other configs"):
        train_gan(blob_cohort, f, out, gc, tc.model_copy(update={"seed": 3}))

    # a second fresh run in another store: the same generator identity (CPU, one thread)
    other = train_gan(blob_cohort, f, str(tmp_path / "again"), gc, tc)
    assert other["best"]["content_hash"] == best["content_hash"]


@pytest.mark.parametrize("method", ["medxgan", "latent_ig", "counterfactual_ig"])
def test_inpaint_family_maps_are_hot_on_the_known_square(method):
    f = SquareClassifier()
    G = InpaintGenerator(ConstantFill(), S)
    x = _square_images()
    expl = make_explainer(method, f, generator=G).explain(x)
    maps = expl.maps                                                   # (B, S, S)
    assert maps.shape == (4, S, S)
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[10:16, 10:16] = True
    flat = maps.abs().flatten(1)
    hot = flat.argmax(1)
    assert bool(inside.flatten()[hot].all())
    assert float((maps.abs() * inside).flatten(1).sum(1).min()
                 / flat.sum(1).max()) > 0.9                            # mass inside the square
    if method == "medxgan":
        ex = expl.extras
        assert bool((ex["counterfactual_flip"] == 1).all())
        assert torch.equal(ex["recon_mse"], torch.zeros(4))
        assert ex["frames"].shape[0] == 4 and ex["frames"].shape[2:] == (S, S)
        assert torch.allclose(ex["frames"][:, 0], ex["x_neg"][:, 0])
        assert ex["z_a"].shape == (4, S * S) and bool((ex["area"] > 0).all())
    else:
        delta = f(x) - f(expl.extras["x_neg"])
        assert torch.allclose(maps.flatten(1).sum(1), delta, atol=1e-3)   # completeness
        assert float(expl.extras["completeness_error"].max()) < 1e-3
        assert expl.extras["path"] == ["line"] * 4


def test_explain_batch_reuses_the_medxgan_counterfactual():
    f = SquareClassifier()
    G = InpaintGenerator(ConstantFill(), S)
    x = _square_images(3)
    out = explain_batch(x, f, G, ["latent_ig", "medxgan", "counterfactual_ig"], None)
    assert torch.allclose(out["latent_ig"].extras["x_neg"], out["medxgan"].extras["x_neg"])
    assert torch.allclose(out["latent_ig"].maps, out["counterfactual_ig"].maps)
    # the stored latents (the mask) give the same counterfactual as the search
    z = (out["medxgan"].extras["z_a"], out["medxgan"].extras["z_p"])
    again = explain_batch(x, f, G, ["latent_ig"], None, latents=z)["latent_ig"]
    assert torch.allclose(again.maps, out["latent_ig"].maps)


class CountingSquare(SquareClassifier):
    """SquareClassifier that counts the images it scores."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += x.shape[0]
        return super().forward(x)


@pytest.mark.parametrize("n_frames", [2, 5])
def test_medxgan_reuses_the_search_s_probabilities_of_x_and_x_neg(n_frames):
    """The search already ran f on each image and on its x_neg: the explanation's p_x, frame 0
    and frame n - 1 are those values (equal to f run again), and f runs on the inner frames
    only."""
    from medxgan.config.explain import MedXGANConfig

    f = CountingSquare()
    G = InpaintGenerator(ConstantFill(), S)
    x = _square_images()
    cfg = MedXGANConfig(n_frames=n_frames)
    expl = make_explainer("medxgan", f, generator=G, config=cfg).explain(x)
    ex = expl.extras
    with torch.no_grad():
        p_frames = torch.sigmoid(SquareClassifier()(ex["frames"].reshape(-1, 1, S, S)))
        p_x = torch.sigmoid(SquareClassifier()(x))
    assert torch.allclose(ex["frame_probs"], p_frames.reshape(4, n_frames), atol=1e-6)
    assert torch.allclose(ex["p_x"], p_x, atol=1e-6)
    assert torch.allclose(ex["p_neg"], ex["frame_probs"][:, 0])
    search = CountingSquare()
    G.counterfactual(x, search)                                        # the search alone
    assert f.n == search.n + 4 * (n_frames - 2)


def test_published_family_ignores_the_new_fields():
    """A published GanConfig saved before ``family`` existed validates to today's default, and
    the published generator still has no ``family`` of its own."""
    from medxgan.generators.published.gan import Generator

    old = GanConfig().model_dump(mode="json")
    old.pop("family")
    assert GanConfig.model_validate(old) == GanConfig()
    assert getattr(Generator(GanConfig(image_size=32, d_a=4, d_p=2, g_width=0.05)),
                   "family", "published") == "published"
