"""Inversion encoder (issue #3, item 6): latent regression learns, inversion starts from E(x)
when G carries one, and a run keeps (and load_generator attaches) an encoder only where it beat
random starts on held-out images and matches the checkpoint and its own recorded sha256."""

from __future__ import annotations

import io

import pytest
import torch

from medxgan.config.explain import InversionConfig
from medxgan.generators.published.inversion import invert
from medxgan.config.models import EncoderConfig
from medxgan.generators.published.encoder import (Encoder, compare_inversion, encoder_content_hash,
                                                  train_encoder)
from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.generators.published.gan import Generator, to_gan
from medxgan.generators import load_generator, train_gan
from medxgan.storage import Store

GAN = dict(family="published", image_size=32, d_a=8, d_p=3, g_width=0.05, d_width=0.125)
HEALTH = dict(health_samples=16, health_heldout=4, health_inversion_steps=2)


class _MeanLogit(torch.nn.Module):
    """A stand-in classifier: the image mean as the positive logit (B,)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3))


def _generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(GanConfig(**GAN)).eval()


def test_encoder_shapes_for_every_size():
    for size in (32, 64, 128):
        E = Encoder(size, 7, 3, width=0.25)
        z_a, z_p = E(torch.zeros(2, 1, size, size))
        assert z_a.shape == (2, 7) and z_p.shape == (2, 3)


def test_latent_regression_learns_the_generators_codes():
    G = _generator()
    g = torch.Generator().manual_seed(5)
    z_a, z_p = torch.randn(64, G.d_a, generator=g), torch.randn(64, G.d_p, generator=g)
    with torch.no_grad():
        x = G(z_a, z_p)

    def err(E):
        with torch.no_grad():
            ea, ep = E(x)
        return float(torch.cat([ea - z_a, ep - z_p], 1).pow(2).mean())

    untrained, *_ = train_encoder(G, EncoderConfig(steps=0, width=0.25, seed=1))
    trained, steps, secs, last = train_encoder(G, EncoderConfig(steps=150, batch=32, width=0.25,
                                                                 lr=3e-3, seed=1))
    assert steps == 150 and secs > 0 and not trained.training
    assert err(trained) < 0.7 * err(untrained), (err(trained), err(untrained))
    assert not G.training and all(p.requires_grad for p in G.parameters())  # G restored


def test_inversion_starts_from_the_attached_encoder():
    G = _generator()
    E = Encoder(32, G.d_a, G.d_p, width=0.25).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        ea, ep = E(to_gan(x))
    cfg = InversionConfig.recipe("fast", steps=0)
    plain = invert(G, _MeanLogit(), x, cfg, seed=0)
    G.attach_encoder(E)
    started = invert(G, _MeanLogit(), x, cfg, seed=0)
    assert torch.allclose(started.z_a, ea) and torch.allclose(started.z_p, ep)
    assert not torch.allclose(plain.z_a, ea)
    off = invert(G, _MeanLogit(), x, cfg.model_copy(update={"use_encoder": False}),
                 seed=0)
    assert torch.equal(off.z_a, plain.z_a)
    G.attach_encoder(None)
    assert G.encoder is None and not any(k.startswith("encoder.") for k in G.state_dict())


def test_compare_inversion_reports_both_starts():
    G = _generator()
    E = Encoder(32, G.d_a, G.d_p, width=0.25).eval()
    out = compare_inversion(G, E, _MeanLogit(), torch.rand(4, 1, 32, 32), steps=3)
    assert out["n_heldout"] == 4
    for k in ("mse_random_init", "mse_encoder_init", "mse_encoder_only"):
        assert out[k] > 0


def test_run_writes_the_encoder_and_loads_it_only_when_kept_and_intact(
        blob_cohort, tiny_classifier, tmp_path):
    out = str(tmp_path / "gan")
    tc = GanTrainConfig(steps=2, batch=8, checkpoint_every=2, **HEALTH,
                        encoder=EncoderConfig(steps=5, batch=8, width=0.25, compare_steps=3))
    summary = train_gan(blob_cohort, tiny_classifier, out, GanConfig(**GAN), tc)
    store = Store(out)
    rec = store.read_json("encoder.json")
    assert summary["encoder"] == rec and rec["steps"] == 5
    assert rec["kept"] == (rec["mse_encoder_init"] < rec["mse_random_init"])
    best = store.read_json("best.json")
    G, meta = load_generator(out)
    assert rec["generator_sha256"] == meta["sha256"] and best["step"] == rec["generator_step"]
    assert rec["generator_content_hash"] == meta["content_hash"] == best["content_hash"]
    e = torch.load(io.BytesIO(store.read_bytes("encoder.pt")), map_location="cpu",
                   weights_only=True)
    assert rec["content_hash"] == encoder_content_hash(e["encoder"], e["spec"], e["config"])
    assert (G.encoder is not None) == rec["kept"]

    rec["kept"] = True                                 # as if it had won the comparison
    store.write_json("encoder.json", rec)
    G, meta = load_generator(out)
    assert isinstance(G.encoder, Encoder) and meta["encoder"]["sha256"] == rec["sha256"]
    G, _ = load_generator(out, attach_encoder=False)
    assert G.encoder is None

    blob = bytearray(store.read_bytes("encoder.pt"))
    blob[-1] ^= 0xFF
    store.write_bytes("encoder.pt", bytes(blob))
    with pytest.warns(UserWarning, match="does not match"):
        G, meta = load_generator(out)
    assert G.encoder is None and meta["encoder"] is None

    store.delete("encoder.pt")
    with pytest.warns(UserWarning, match="missing"):
        G, meta = load_generator(out)
    assert G.encoder is None

    again = train_gan(blob_cohort, tiny_classifier, out, GanConfig(**GAN), tc)  # retrained
    assert store.exists("encoder.pt") and again["encoder"]["steps"] == 5
    record = store.read_json("encoder.json")                  # reused: same record, same seconds
    assert train_gan(blob_cohort, tiny_classifier, out, GanConfig(**GAN), tc)["encoder"] == record
    tc2 = tc.model_copy(update={"encoder": tc.encoder.model_copy(update={"steps": 6})})
    other = train_gan(blob_cohort, tiny_classifier, out, GanConfig(**GAN), tc2)  # new config
    assert other["encoder"]["steps"] == 6 and store.exists("encoder.pt")
