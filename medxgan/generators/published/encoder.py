"""Inversion encoder E: x -> (z_a, z_p), trained after the generator G (issue #3, item 6).

E only gives GAN inversion a starting point: ``inversion.invert`` starts restart 0 from
E(x) instead of N(0, I) when G carries an encoder (``Generator.encoder``), and then runs its
usual Adam steps. An encoder is kept for a run only where that start *beats* random-init
inversion on a held-out set of real images (the prototype's 3-minute CPU encoder was a worse
start than N(0, I)).

Training (``train_encoder``): latent regression on G's own samples, the recipe that kept the
prototype's codes on the prior (reconstruction through G on real images pulled them off it).
Every step draws B latents with the class mix of training (z_p = 0 for a share ``1 - pos_frac``
of them), renders x = G(z_a, z_p) with G frozen in eval mode, and minimises

    mean_i |E(x_i) - z_i|^2          over z = [z_a, z_p]   (Adam)

Architecture: 4x4 stride-2 convs (32, 64, 128, 256, ... channels x ``width``) with GroupNorm
and LeakyReLU(0.2) from S px down to 4 px, then Linear -> d_a + d_p. Input is GAN space
[-1, 1].

Keep-or-drop (``compare_inversion``): the held-out images are inverted twice with the same
recipe and steps, from random latents and from E(x); the encoder is kept when its start gives
a lower mean recon MSE (GAN space). Both numbers go into ``encoder.json``.

Hashes in ``encoder.json``: ``sha256`` (of ``encoder.pt``'s bytes) and ``generator_sha256``
(of ``best.pt``'s bytes) are integrity checks that tie the files of one store together;
``content_hash`` (E's weights, spec and config, :func:`encoder_content_hash`) and
``generator_content_hash`` are identities, the same for the same weights in any store.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medxgan.checkpoints import (CKPT_FORMAT, content_hash, read_json, verified_bytes,
                                 write_blob)
from medxgan.config.models import EncoderConfig
from medxgan.generators.published.gan import generator_from_checkpoint, to_gan
from medxgan.generators.published.inversion import InversionConfig, InversionResult, invert
from medxgan.generators.run import generator_content_hash, load_checkpoint
from medxgan.storage import Store

if TYPE_CHECKING:
    from medxgan.cohort.loading import HeldOut

log = logging.getLogger(__name__)


class Encoder(nn.Module):
    """E: images (B, 1, S, S) in GAN space [-1, 1] -> (z_a (B, d_a), z_p (B, d_p))."""

    def __init__(self, image_size: int, d_a: int, d_p: int, width: float = 1.0):
        super().__init__()
        self.image_size, self.d_a, self.d_p, self.width = image_size, d_a, d_p, width
        layers: list[nn.Module] = []
        c, s, k = 1, image_size, 0
        while s > 4:
            co = max(8, int(round(32 * 2 ** k * width)))
            layers += [nn.Conv2d(c, co, 4, 2, 1), nn.GroupNorm(min(8, co), co),
                       nn.LeakyReLU(0.2, True)]
            c, s, k = co, s // 2, k + 1
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(c * s * s, d_a + d_p)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.net(x).flatten(1))                            # (B, d_a + d_p)
        return h[:, :self.d_a], h[:, self.d_a:]

    def spec(self) -> dict[str, Any]:
        """Constructor arguments (stored with the weights)."""
        return {"image_size": self.image_size, "d_a": self.d_a, "d_p": self.d_p,
                "width": self.width}


@dataclass
class EncoderReport:
    """What training and the keep-or-drop test measured (all MSE in GAN space [-1, 1])."""

    steps: int
    seconds: float
    final_latent_mse: float        # latent regression loss, mean of the last 20 steps
    mse_random_init: float         # held-out recon MSE after ``compare_steps``, random start
    mse_encoder_init: float        # the same from E(x)
    mse_encoder_only: float        # G(E(x)) with no inversion step
    n_heldout: int
    kept: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train_encoder(G: nn.Module, config: EncoderConfig, pos_frac: float = 0.5,
                  device: torch.device | str | None = None) -> tuple[Encoder, int, float, float]:
    """Latent regression of a new encoder on G's samples (G frozen, eval mode).

    Returns:
        (E in eval mode, steps run, seconds, mean latent MSE of the last 20 steps).
    """
    from medxgan.explain._torch import frozen

    dev = torch.device(device) if device is not None else next(G.parameters()).device
    torch.manual_seed(config.seed)
    E = Encoder(int(G.image_size), int(G.d_a), int(G.d_p), config.width).to(dev)
    opt = torch.optim.Adam(E.parameters(), lr=config.lr)
    g = torch.Generator().manual_seed(config.seed + 1)
    t0 = time.perf_counter()
    tail: list[float] = []
    step = 0
    E.train()
    with frozen(G):
        for step in range(1, config.steps + 1):
            B = config.batch
            z_a = torch.randn(B, G.d_a, generator=g).to(dev)
            c = (torch.rand(B, generator=g) < pos_frac).float().to(dev)
            z_p = torch.randn(B, G.d_p, generator=g).to(dev) * c[:, None]
            with torch.no_grad():
                x = G(z_a, z_p)                                        # (B, 1, S, S)
            ea, ep = E(x)
            loss = torch.cat([ea - z_a, ep - z_p], 1).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tail = (tail + [float(loss.detach())])[-20:]
            if config.time_limit_s is not None and time.perf_counter() - t0 >= config.time_limit_s:
                break
    E.eval()
    return E, step, time.perf_counter() - t0, (sum(tail) / len(tail) if tail else float("nan"))


@dataclass
class BothStarts:
    """The same held-out images inverted from random latents and from E(x).

    Attributes:
        random / encoder: the two :class:`~medxgan.generators.published.inversion.InversionResult`.
        mse_encoder_only: (N,) recon MSE of G(E(x)) with no inversion step (GAN space).
        seconds_random / seconds_encoder: wall time of each inversion.
    """

    random: InversionResult
    encoder: InversionResult
    mse_encoder_only: torch.Tensor
    seconds_random: float
    seconds_encoder: float


def invert_from_both_starts(G: nn.Module, E: Encoder, f: nn.Module, images01: torch.Tensor,
                            steps: int = 50, seed: int = 0) -> BothStarts:
    """Invert images01 (N, 1, S, S) in [0, 1] with the ``fast`` recipe (``steps`` Adam steps,
    G's own encoder ignored) from seeded random latents and from E(x)."""
    cfg = InversionConfig.recipe("fast", steps=steps, use_encoder=False)
    t = time.perf_counter()
    rand = invert(G, f, images01, cfg, seed=seed)
    t_rand = time.perf_counter() - t
    with torch.no_grad():
        ea, ep = E(to_gan(images01))
        only = (G(ea, ep) - to_gan(images01)).pow(2).flatten(1).mean(1)
    t = time.perf_counter()
    enc = invert(G, f, images01, cfg, seed=seed, init=(ea, ep))
    return BothStarts(rand, enc, only, t_rand, time.perf_counter() - t)


def compare_inversion(G: nn.Module, E: Encoder, f: nn.Module, images01: torch.Tensor,
                      steps: int = 50, seed: int = 0) -> dict[str, float]:
    """Held-out recon MSE (GAN space) of the ``fast`` inversion from random latents and from
    E(x), and of G(E(x)) alone. images01: (N, 1, S, S) in [0, 1]."""
    both = invert_from_both_starts(G, E, f, images01, steps, seed)
    return {"mse_random_init": float(both.random.recon_mse.mean()),
            "mse_encoder_init": float(both.encoder.recon_mse.mean()),
            "mse_encoder_only": float(both.mse_encoder_only.mean()),
            "n_heldout": int(images01.shape[0])}


def fit_encoder(G: nn.Module, f: nn.Module, heldout01: torch.Tensor, config: EncoderConfig,
                pos_frac: float = 0.5) -> tuple[Encoder, EncoderReport]:
    """Train an encoder for G and run the keep-or-drop test on ``heldout01`` (N, 1, S, S)."""
    was = G.training
    G.eval()
    try:
        E, steps, secs, lat = train_encoder(G, config, pos_frac)
        cmp = compare_inversion(G, E, f, heldout01, config.compare_steps, config.seed)
    finally:
        G.train(was)
    kept = cmp["mse_encoder_init"] < cmp["mse_random_init"]
    return E, EncoderReport(steps=steps, seconds=round(secs, 2), final_latent_mse=lat,
                            kept=kept, **cmp)


# ---------------------------------------------------------------------------------- stage
def _encoder_stage(store: Store, f: nn.Module, held: HeldOut | None, cfg: EncoderConfig,
                   pos_frac: float, dev: torch.device) -> dict[str, Any] | None:
    """Train the inversion encoder for the run's best generator and write ``encoder.pt``,
    then ``encoder.json`` (the report, ``kept``, the sha256 of both files it ties together
    and the content hashes of both models). Reused when ``encoder.json`` already names the
    current best checkpoint and the same encoder config, and ``encoder.pt`` matches it;
    retrained otherwise."""
    if held is None or len(held.images) < 2:
        log.warning("%s: no held-out images to test an encoder against; none trained", store.url)
        return None
    obj, digest, _, _ = load_checkpoint(store)
    G = generator_from_checkpoint(obj)
    meta = {"sha256": digest, "content_hash": generator_content_hash(obj), "step": obj.get("step")}
    done = read_json(store, "encoder.json")
    if done is not None and done.get("generator_sha256") == meta["sha256"] \
            and done.get("config") == cfg.model_dump(mode="json") \
            and _encoder_blob(store, done) is not None:
        if "content_hash" not in done:  # written before content hashes: add them
            e = torch.load(io.BytesIO(_encoder_blob(store, done)), map_location="cpu",
                           weights_only=True)
            done = {**done, "content_hash": encoder_content_hash(e["encoder"], e["spec"],
                                                                 e["config"]),
                    "generator_content_hash": meta["content_hash"]}
            store.write_json("encoder.json", done)
        return done
    G = G.to(dev)
    E, report = fit_encoder(G, f, held.images, cfg, pos_frac)
    _, digest = write_blob(store, "encoder.pt", {
        "format": CKPT_FORMAT, "encoder": E.state_dict(), "spec": E.spec(),
        "config": cfg.model_dump(mode="json")})
    record = {**report.as_dict(), "config": cfg.model_dump(mode="json"),
              "sha256": digest, "generator_sha256": meta["sha256"],
              "content_hash": encoder_content_hash(E.state_dict(), E.spec(),
                                                   cfg.model_dump(mode="json")),
              "generator_content_hash": meta["content_hash"],
              "generator_step": meta["step"]}
    store.write_json("encoder.json", record)
    log.info("encoder for %s: held-out recon MSE %.4f from E(x) vs %.4f from random latents "
             "(%s)", store.url, report.mse_encoder_init, report.mse_random_init,
             "kept" if report.kept else "not kept")
    return record


def encoder_content_hash(state_dict: dict, spec: dict, config: dict) -> str:
    """The identity of an encoder: content hash of its weights, spec and config."""
    return content_hash(encoder=state_dict, spec=spec, config=config)


def _encoder_blob(store: Store, record: dict) -> bytes | None:
    """The bytes of ``encoder.pt`` when the file exists and matches ``record["sha256"]``
    (the ``encoder.json`` record), else None."""
    return verified_bytes(store, "encoder.pt", record.get("sha256"))


def attach_kept_encoder(G: nn.Module, store: Store, sha256: str) -> dict | None:
    """Attach the run's inversion encoder to G (``G.attach_encoder``) when ``encoder.json``
    says it was kept and was trained for the checkpoint whose file has ``sha256``, and
    ``encoder.pt`` matches its record (else a warning and none); returns the record attached,
    or None."""
    rec = read_json(store, "encoder.json")
    if rec is None or not rec.get("kept") or rec.get("generator_sha256") != sha256:
        return None
    blob = _encoder_blob(store, rec)
    if blob is None:  # stacklevel: the caller of load_generator
        warnings.warn(f"{store.url_of('encoder.pt')} is missing or does not match "
                      "encoder.json's sha256; inverting without it", stacklevel=4)
        return None
    e = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    E = Encoder(**e["spec"])
    E.load_state_dict(e["encoder"])
    G.attach_encoder(E.eval())
    return rec
