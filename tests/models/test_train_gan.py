"""GAN training: a tiny GAN trains on CPU, checkpoints round-trip (local and S3), resume after a
kill gives the weights of an uninterrupted run, a corrupt latest checkpoint falls back."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.generators.published.gan import Generator
from medxgan.generators import load_generator, train_gan
from medxgan.storage import Store

GAN = dict(family="published", image_size=32, d_a=8, d_p=3, g_width=0.05, d_width=0.125)
HEALTH = dict(health_samples=16, health_heldout=4, health_inversion_steps=2)


def _state(store_url: str, key: str) -> dict:
    import io
    blob = Store(store_url).read_bytes(key)
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def _assert_same_weights(a: dict, b: dict) -> None:
    for part in ("generator", "discriminator"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["step"] == b["step"]


def test_tiny_gan_trains_and_writes_checkpoints(blob_cohort, tiny_classifier, tmp_path):
    out = str(tmp_path / "gan")
    seen: list[int] = []
    gc = GanConfig(**GAN)
    tc = GanTrainConfig(steps=4, batch=8, checkpoint_every=2, cls_loss="double_softmax", **HEALTH)
    summary = train_gan(blob_cohort, tiny_classifier, out, gc, tc,
                        progress=lambda step, losses: seen.append(step))
    assert summary["steps"] == 4 and seen[:4] == [1, 2, 2, 3]
    store = Store(out)
    keys = store.list("checkpoints/")
    for s in (2, 4):
        assert f"checkpoints/step-{s:07d}.pt" in keys and f"checkpoints/step-{s:07d}.png" in keys
    latest = store.read_json("checkpoints/latest.json")
    assert latest["step"] == 4
    h = latest["health"]
    assert 0 <= h["agree_neg"] <= 1 and 0 <= h["agree_pos"] <= 1
    assert -1 <= h["change_similarity"] <= 1 and h["recon_mse"] > 0
    assert 0 <= h["fidelity"] <= 1 and 0 <= h["fidelity_shuffled"] <= 1
    assert store.read_manifest()["steps"] == 4
    best = store.read_json("best.json")
    assert best["health"]["fidelity"] == max(
        _state(out, f"checkpoints/step-{s:07d}.pt")["health"]["fidelity"] for s in (2, 4))
    G, meta = load_generator(out)
    assert isinstance(G, Generator) and not G.training and meta["source"] == "best"
    ck = _state(out, best["key"])
    for k, v in G.state_dict().items():
        assert torch.equal(v, ck["generator"][k])
    assert meta["classifier_sha256"] == "0" * 64
    assert meta["gan_config"] == gc.model_dump(mode="json")
    G2, meta2 = load_generator(out, which="latest")
    assert meta2["step"] == 4 and meta2["source"] == "latest"
    losses = _state(out, "checkpoints/step-0000004.pt")
    assert losses["train_config"]["cls_loss"] == "double_softmax"


LOCAL = GanConfig(generator="local", discriminator="projection", upsample="resize_conv", **GAN)
LOCAL_TC = dict(batch=8, checkpoint_every=2, lambda_min_change=1.0, lambda_mask=0.5,
                health_every=4, **HEALTH)


def test_kill_and_resume_gives_the_uninterrupted_weights(blob_cohort, tiny_classifier, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train_gan(blob_cohort, tiny_classifier, a, LOCAL, GanTrainConfig(steps=4, **LOCAL_TC))
    torch.manual_seed(123)                                            # a "new process"
    s = train_gan(blob_cohort, tiny_classifier, a, LOCAL, GanTrainConfig(steps=8, **LOCAL_TC))
    assert s["resumed_from"] == 4
    train_gan(blob_cohort, tiny_classifier, b, LOCAL, GanTrainConfig(steps=8, **LOCAL_TC))
    _assert_same_weights(_state(a, "checkpoints/step-0000008.pt"),
                         _state(b, "checkpoints/step-0000008.pt"))
    ca, cb = _state(a, "checkpoints/step-0000008.pt"), _state(b, "checkpoints/step-0000008.pt")
    assert torch.equal(ca["opt_g"]["state"][0]["exp_avg"], cb["opt_g"]["state"][0]["exp_avg"])
    # training moves the weights at every step, so equality at step 8 is not vacuous
    c6 = _state(b, "checkpoints/step-0000006.pt")
    assert not all(torch.equal(c6["generator"][k], cb["generator"][k]) for k in cb["generator"])


def test_two_fresh_runs_in_two_stores_have_one_generator_hash(blob_cohort, tiny_classifier,
                                                               tmp_path):
    import random
    import threading

    import numpy as np

    from medxgan.generators.run import generator_content_hash

    tc = GanTrainConfig(steps=2, batch=8, checkpoint_every=2, **HEALTH)
    outs = [str(tmp_path / "a"), str(tmp_path / "far" / "away" / "b")]
    # another thread of the process draws from Python's global RNG while the runs train, as
    # Prefect's service loops do (their jittered intervals): the checkpoints must not record it
    stop = threading.Event()
    drawer = threading.Thread(target=lambda: [random.random() for _ in iter(stop.is_set, True)],
                              daemon=True)
    drawer.start()
    try:
        for noise, out in enumerate(outs):
            random.seed(noise)                   # unrelated global states, as in a new process
            np.random.seed(noise)
            torch.manual_seed(noise)
            train_gan(blob_cohort, tiny_classifier, out, GanConfig(**GAN), tc)
    finally:
        stop.set()
        drawer.join()
    (ga, ma), (gb, mb) = (load_generator(o) for o in outs)
    assert ma["content_hash"] == mb["content_hash"] == \
        Store(outs[0]).read_json("best.json")["content_hash"]
    ca, cb = (_state(o, "best.pt") for o in outs)
    assert "cohort_url" not in ca and ma["content_hash"] == generator_content_hash(ca)
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])        # seeded, not inherited
    assert torch.equal(ca["rng"]["numpy"]["keys"], cb["rng"]["numpy"]["keys"])
    assert ma["sha256"] == mb["sha256"]          # so even the files are byte-identical (CPU)
    assert Store(outs[1]).read_json("config.json")["cohort_url"] == Store(blob_cohort).url
    # the hash is of content: another step's weights have another hash
    other = {**ca, "generator": {k: v + 1 if v.is_floating_point() else v
                                 for k, v in ca["generator"].items()}}
    assert generator_content_hash(other) != ma["content_hash"]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(blob_cohort, tiny_classifier,
                                                              tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    tc = dict(batch=8, checkpoint_every=2, health_every=100, **HEALTH)
    gc = GanConfig(**GAN)
    train_gan(blob_cohort, tiny_classifier, a, gc, GanTrainConfig(steps=4, **tc))
    Store(a).write_bytes("checkpoints/step-0000004.pt", b"\x00garbage")  # killed mid-write
    with pytest.warns(UserWarning, match="falling back"):
        s = train_gan(blob_cohort, tiny_classifier, a, gc, GanTrainConfig(steps=6, **tc))
    assert s["resumed_from"] == 2
    train_gan(blob_cohort, tiny_classifier, b, gc, GanTrainConfig(steps=6, **tc))
    _assert_same_weights(_state(a, "checkpoints/step-0000006.pt"),
                         _state(b, "checkpoints/step-0000006.pt"))
    with pytest.raises(ValueError, match="another GanConfig"):
        train_gan(blob_cohort, tiny_classifier, a, GanConfig(**{**GAN, "d_p": 4}),
                  GanTrainConfig(steps=8, **tc))


def test_checkpoint_round_trip_through_s3(blob_cohort, tiny_classifier, request):
    url = request.getfixturevalue("s3_store_url")
    gc = GanConfig(**GAN)
    tc = GanTrainConfig(steps=2, batch=8, checkpoint_every=2, **HEALTH)
    summary = train_gan(blob_cohort, tiny_classifier, url, gc, tc)
    assert summary["steps"] == 2
    store = Store(url)
    assert store.exists("checkpoints/latest.json") and store.exists("best.pt")
    G, meta = load_generator(url)
    assert meta["step"] == 2 and meta["key"].startswith("s3://")
    assert math.isfinite(meta["health"]["agree_pos"])
    z = torch.randn(2, 8)
    assert G(z, torch.zeros(2, 3)).shape == (2, 1, 32, 32)
    s2 = train_gan(blob_cohort, tiny_classifier, url, gc,
                   GanTrainConfig(steps=4, batch=8, checkpoint_every=2, **HEALTH))
    assert s2["resumed_from"] == 2 and json.loads(store.read_bytes("manifest.json"))["steps"] == 4


def test_time_limit_stops_with_a_final_checkpoint(blob_cohort, tiny_classifier, tmp_path):
    out = str(tmp_path / "t")
    tc = GanTrainConfig(steps=1000, batch=8, checkpoint_every=500, time_limit_s=1e-6, **HEALTH)
    summary = train_gan(blob_cohort, tiny_classifier, out, GanConfig(**GAN), tc)
    assert summary["steps"] < 1000
    latest = Store(out).read_json("checkpoints/latest.json")
    assert latest["step"] == summary["steps"] and "agree_pos" in latest["health"]


def test_discriminator_class_loss_trains_the_class_term(blob_cohort, tiny_classifier, tmp_path):
    """lambda_d_cls > 0 reports the real-image class loss and changes D's class embedding
    differently from the plain projection GAN (same seed, same batches)."""
    gc = GanConfig(**GAN, discriminator="projection")
    runs = {}
    for lam in (0.0, 5.0):
        seen: list[dict] = []
        tc = GanTrainConfig(steps=3, batch=8, checkpoint_every=3, lambda_d_cls=lam, **HEALTH)
        train_gan(blob_cohort, tiny_classifier, str(tmp_path / f"d{lam:g}"), gc, tc,
                  progress=lambda step, d: seen.append(d))
        runs[lam] = (_state(str(tmp_path / f"d{lam:g}"), "checkpoints/step-0000003.pt"), seen)
    plain, aux = runs[0.0], runs[5.0]
    assert all(d["d_cls"] == 0 for d in plain[1] if "d_cls" in d)
    assert all(d["d_cls"] > 0 for d in aux[1] if "d_cls" in d)
    assert not torch.equal(plain[0]["discriminator"]["embed.weight"],
                           aux[0]["discriminator"]["embed.weight"])


def test_discriminator_class_loss_needs_the_projection_discriminator(blob_cohort, tiny_classifier,
                                                                      tmp_path):
    with pytest.raises(ValueError, match="projection"):
        train_gan(blob_cohort, tiny_classifier, str(tmp_path / "u"), GanConfig(**GAN),
                  GanTrainConfig(steps=1, batch=8, lambda_d_cls=1.0, **HEALTH))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("generator", ["published", "local"])
def test_gan_trains_on_cuda_with_bf16_autocast(blob_cohort, tiny_classifier, tmp_path, generator):
    out = str(tmp_path / f"cuda-{generator}")
    gc = GanConfig(**GAN, generator=generator, discriminator="projection")
    tc = GanTrainConfig(steps=4, batch=8, checkpoint_every=2, device="cuda", lambda_d_cls=1.0,
                        lambda_min_change=1.0, **HEALTH)
    summary = train_gan(blob_cohort, tiny_classifier, out, gc, tc)
    assert summary["device"].startswith("cuda") and summary["steps"] == 4
    h = Store(out).read_json("checkpoints/latest.json")["health"]
    assert all(math.isfinite(h[k]) for k in ("agree_neg", "agree_pos", "recon_mse"))
    G, _ = load_generator(out)           # loads on the CPU, whatever it was trained on
    assert next(G.parameters()).device.type == "cpu"
    assert all(torch.isfinite(v).all() for v in G.state_dict().values() if v.is_floating_point())


def test_classifier_view_shifts_and_adds_noise_reproducibly():
    from medxgan.generators.published.train import _for_classifier
    x = torch.zeros(4, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0
    plain = GanTrainConfig()
    assert _for_classifier(x, plain, torch.Generator().manual_seed(0)) is x
    cfg = GanTrainConfig(cls_shift_px=3.0)
    a = _for_classifier(x, cfg, torch.Generator().manual_seed(1))
    b = _for_classifier(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.allclose(a, x)                                     # moved ...
    assert torch.allclose(a.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-3)  # ... not erased
    com = lambda t: (t[:, 0].sum(1) * torch.arange(16.)).sum(1) / t[:, 0].sum((1, 2))  # noqa: E731
    assert ((com(a) - com(x)).abs() <= 3.0 + 1e-4).all()                # within the bound
    n = _for_classifier(x, GanTrainConfig(cls_noise=0.1), torch.Generator().manual_seed(2))
    assert 0.08 < float((n - x).std()) < 0.12
    y = x.clone().requires_grad_(True)
    _for_classifier(y, cfg, torch.Generator().manual_seed(1)).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0                # G gets gradients


def test_eot_options_train_and_change_the_run(blob_cohort, tiny_classifier, tmp_path):
    gc = GanConfig(**GAN)
    out = {}
    for name, kw in {"plain": {}, "eot": {"cls_shift_px": 2.0, "cls_noise": 0.05}}.items():
        train_gan(blob_cohort, tiny_classifier, str(tmp_path / name), gc,
                  GanTrainConfig(steps=2, batch=8, checkpoint_every=2, **kw, **HEALTH))
        out[name] = _state(str(tmp_path / name), "checkpoints/step-0000002.pt")["generator"]
    assert any(not torch.equal(out["plain"][k], out["eot"][k]) for k in out["plain"])
