"""Training the published family's generator against a frozen classifier, with checkpoints
and resume (:func:`train_published`, which ``train_gan`` runs for ``family: published``).

Losses per step (batch B; real images x with labels y from the cohort's train split; classes
c ~ Bernoulli(share of positives) decide z_p = 0 (c = 0) or z_p ~ N(0, I) (c = 1)):

    L_D = BCE(D(x, y), 1) + BCE(D(G(z), c), 0)                         (non-saturating GAN)
    L_G = BCE(D(G(z), c), 1) + lambda_cls * CE(f(G(z)), c)
          + lambda_min_change * mean |G(z_a, z_p) - G(z_a, 0)|   (over c = 1 samples)
          + lambda_mask * mean M(z_a, z_p)                       (local generator, c = 1)

CE is BCE on f's positive logit (``cls_loss="logits"``, default) or, as the published code
does, cross-entropy applied to the softmax probabilities (``"double_softmax"``). f is frozen
(eval mode, no parameter gradients); gradients pass through it to G. The unconditional D
ignores the classes; the projection D sees real images with their labels.

Determinism and resume: every step reseeds torch's global RNG (dropout) and draws its batch
and latents from a generator seeded by ``(seed, step)``, so a run killed after a checkpoint
and resumed gives the same weights as an uninterrupted run (CPU). Checkpoints go to the out
store as ``checkpoints/step-XXXXXXX.pt`` (G/D/optimiser state_dicts, step, RNG states,
resolved configs, cohort and classifier hashes, health; no URL), a sample grid
``checkpoints/step-XXXXXXX.png``, then ``best.pt`` + ``best.json`` when the checkpoint has
the best lesion fidelity so far, and last the pointer ``checkpoints/latest.json``. Everything loads with ``weights_only=True``.
``manifest.json`` at the out root is written when training ends.

Identity: a generator's hash (``meta["content_hash"]`` of ``load_generator``, the
``content_hash`` of the pointers) is :func:`~medxgan.generators.run.generator_content_hash`:
G's weights, configs, step and cohort hash, not the checkpoint file's bytes (which also hold
D, the optimisers and RNG states, and change with the torch version). Python's and numpy's
global RNGs are seeded from ``train_config.seed`` with torch's
(:func:`~medxgan.checkpoints.seed_all`), so the RNG states stored in checkpoints are the same
in two fresh runs, too.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.checkpoints import (CKPT_FORMAT, pointer, read_json, resume_scan, rng_state,
                                 seed_all, set_rng_state, step_key, write_blob)
from medxgan.cohort.loading import HeldOut, TrainData, load_heldout, load_train_data
from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.generators.base import ProgressFn
from medxgan.generators.published.encoder import _encoder_stage
from medxgan.generators.published.gan import (Discriminator, Generator, build_discriminator,
                                              from_gan, to_gan)
from medxgan.generators.published.health import evaluate_health, sample_grid
from medxgan.generators.run import REQUIRED, device, generator_content_hash
from medxgan.storage import Store

log = logging.getLogger(__name__)


@dataclass
class GanState:
    """Everything that changes during training."""

    G: Generator
    D: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0
    resumed_health: dict[str, float] | None = None  # health stored in the resumed checkpoint


# ---------------------------------------------------------------------------------- training
def new_state(gan_config: GanConfig, train_config: GanTrainConfig,
              device: torch.device | str = "cpu") -> GanState:
    """Freshly initialised G, D and their Adam optimisers (seeded by ``train_config.seed``,
    which also seeds numpy's and Python's global RNGs, whose states checkpoints store)."""
    seed_all(train_config.seed)
    G = Generator(gan_config).to(device)
    D = build_discriminator(gan_config).to(device)
    tc = train_config
    opt_g = torch.optim.Adam(G.parameters(), lr=tc.lr, betas=tc.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=tc.lr, betas=tc.betas)
    return GanState(G, D, opt_g, opt_d, 0)


def train_steps(state: GanState, classifier: nn.Module, data: TrainData,
                config: GanTrainConfig, n_steps: int,
                progress: ProgressFn | None = None,
                deadline: float | None = None) -> dict[str, float]:
    """Run ``n_steps`` optimisation steps (D then G each), fewer if ``time.perf_counter()``
    passes ``deadline``; returns the last step's losses."""
    losses: dict[str, float] = {}
    classifier.eval()
    state.G.train()
    state.D.train()
    for _ in range(n_steps):
        if deadline is not None and time.perf_counter() >= deadline:
            break
        losses = _step(state, classifier, data, config)
        state.step += 1
        if progress is not None:
            progress(state.step, losses)
    return losses


def evaluate(state: GanState, classifier: nn.Module, held: HeldOut | None,
             config: GanTrainConfig) -> dict[str, float]:
    """Health metrics of the current generator (see :mod:`medxgan.generators.published.health`)."""
    return evaluate_health(state.G, classifier, held, config.health_samples,
                           config.health_inversion_steps, seed=config.seed)


def _mix(*xs: int) -> int:
    h = hashlib.sha256(repr(xs).encode()).digest()
    return int.from_bytes(h[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def _step(state: GanState, f: nn.Module, data: TrainData, cfg: GanTrainConfig
          ) -> dict[str, float]:
    G, D = state.G, state.D
    dev = next(G.parameters()).device
    B = cfg.batch
    torch.manual_seed(_mix(cfg.seed, state.step, 0))                   # dropout
    g = torch.Generator().manual_seed(_mix(cfg.seed, state.step, 1))   # batch + latents
    idx = torch.randint(len(data.images), (B,), generator=g)
    x = to_gan(data.images[idx]).to(dev)                               # (B, 1, S, S)
    y = data.labels[idx].to(dev)                                       # (B,)
    c = (torch.rand(B, generator=g) < data.pos_frac).long().to(dev)    # (B,)
    z_a = torch.randn(B, G.d_a, generator=g).to(dev)
    z_p = torch.randn(B, G.d_p, generator=g).to(dev) * c[:, None]      # exactly 0 for c = 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" \
        else torch.autocast("cpu", enabled=False)
    need_neg = cfg.lambda_min_change > 0
    with amp:
        if need_neg:  # one batch, so BatchNorm sees G(z_a, z_p) and G(z_a, 0) together
            both, mask = G.forward_with_mask(torch.cat([z_a, z_a]),
                                             torch.cat([z_p, torch.zeros_like(z_p)]))
            fake, fake_neg = both[:B], both[B:]
            mask = mask[:B] if mask is not None else None
        else:
            fake, mask = G.forward_with_mask(z_a, z_p)                 # (B, 1, S, S)

        # discriminator
        D.requires_grad_(True)
        d_cls = torch.zeros((), device=dev)
        if cfg.lambda_d_cls > 0 and getattr(D, "conditional", False):
            d_real, cls_real = D.forward_with_class(x, y)
            d_real = d_real.float()                                    # (B,)
            d_cls = F.binary_cross_entropy_with_logits(cls_real.float(), y.float())
        else:
            d_real = D(x, y).float()                                   # (B,)
        d_fake = D(fake.detach(), c).float()
        loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) \
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)) \
            + cfg.lambda_d_cls * d_cls
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()

    with amp:
        D.requires_grad_(False)
        d_gen = D(fake, c).float()
        loss_adv = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
        logit = f(_for_classifier(from_gan(fake), cfg, g)).float().reshape(B)  # (B,)
        if cfg.cls_loss == "logits":
            loss_cls = F.binary_cross_entropy_with_logits(logit, c.float())
        else:  # published: cross-entropy on softmax probabilities
            p = torch.sigmoid(logit)
            loss_cls = F.cross_entropy(torch.stack([1 - p, p], 1), c)
        loss_g = loss_adv + cfg.lambda_cls * loss_cls
        pos = c.bool()
        n_pos = max(int(pos.sum()), 1)
        min_change = torch.zeros((), device=dev)
        if need_neg:
            change = (fake.float() - fake_neg.float()).abs().flatten(1).mean(1)  # (B,)
            min_change = (change * pos).sum() / n_pos
            loss_g = loss_g + cfg.lambda_min_change * min_change
        mask_size = torch.zeros((), device=dev)
        if mask is not None:
            mask_size = (mask.float().flatten(1).mean(1) * pos).sum() / n_pos
            if cfg.lambda_mask > 0:
                loss_g = loss_g + cfg.lambda_mask * mask_size
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    D.requires_grad_(True)
    out = {"loss_d": loss_d, "loss_g": loss_g, "loss_adv": loss_adv, "loss_cls": loss_cls,
           "min_change": min_change, "mask_size": mask_size, "d_cls": d_cls}
    return {k: float(v.detach()) for k, v in out.items()}


def _for_classifier(x: torch.Tensor, cfg: GanTrainConfig, g: torch.Generator) -> torch.Tensor:
    """x (B, 1, S, S) in [0, 1] as the classifier loss sees it: randomly shifted by up to
    ``cfg.cls_shift_px`` px (bilinear, border pixels repeated) and with N(0, cls_noise^2)
    noise; x itself when both are 0. Random draws come from ``g`` (the step's generator)."""
    if cfg.cls_shift_px <= 0 and cfg.cls_noise <= 0:
        return x
    B, _, H, W = x.shape
    if cfg.cls_shift_px > 0:
        shift = (torch.rand(B, 2, generator=g) * 2 - 1) * cfg.cls_shift_px    # (B, 2) px
        theta = torch.zeros(B, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = 2 * shift[:, 0] / W                                  # normalised
        theta[:, 1, 2] = 2 * shift[:, 1] / H
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.cls_noise > 0:
        x = x + cfg.cls_noise * torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    return x


# ---------------------------------------------------------------------------------- entry point
def train_published(cohort_url: str, classifier: nn.Module, store: Store, gc: GanConfig,
                    tc: GanTrainConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train (or resume training) a medXGAN generator for ``classifier`` on a cohort.

    Args:
        cohort_url: finished cohort (its train split is loaded into memory, resized to
            ``gan_config.image_size`` if needed).
        classifier: the frozen classifier, ``f(x (B, 1, H, W) in [0, 1]) -> logit (B,)``
            (an :class:`~medxgan.classifiers.wrapper.AuditedClassifier`).
        store: the run folder; an existing run there is resumed from its latest complete
            checkpoint.
        gc, tc: the generator's and the training's configs.
        progress: called as ``progress(step, losses)`` after every step, and with the health
            metrics merged in after every health evaluation.

    Returns:
        The run summary (also written to ``manifest.json``): steps, best step and health,
        last health, configs, classifier and cohort hashes, seconds.

    Raises:
        ValueError: the out store holds a run with another ``GanConfig`` or seed, or the
            cohort's train split has no labelled images.
    """
    from medxgan.cohort.reader import Cohort

    dev = device(tc.device)
    if tc.lambda_d_cls > 0 and gc.discriminator != "projection":
        raise ValueError("lambda_d_cls trains the class term of the projection discriminator; "
                         f"discriminator is {gc.discriminator!r}")
    cohort = Cohort(cohort_url)
    data = load_train_data(cohort, gc.image_size)
    held = load_heldout(cohort, gc.image_size, tc.health_heldout, tc.heldout_split)
    held = held.to(dev) if held is not None else None
    f = classifier.to(dev).eval()
    f.requires_grad_(False)
    meta = {"classifier_sha256": str(getattr(classifier, "sha256", "")),
            "cohort_hash": cohort.content_hash}  # no URL: checkpoints are location-free

    state = new_state(gc, tc, dev)
    best_score = -math.inf
    resumed = _resume(store, state, gc, tc)
    if resumed is not None:
        best = read_json(store, "best.json")
        best_score = _score(best.get("health", {})) if best else -math.inf
        best_score = _reconsider_best(store, state, best, best_score)
        log.info("resumed %s at step %d", store.url, state.step)
    else:
        store.write_json("config.json", {"gan_config": gc.model_dump(mode="json"),
                                         "train_config": tc.model_dump(mode="json"), **meta,
                                         "cohort_url": cohort.url})
    t0 = time.perf_counter()
    health: dict[str, float] = {}
    health_every = tc.health_every or tc.checkpoint_every
    deadline = t0 + tc.time_limit_s if tc.time_limit_s else None
    while state.step < tc.steps:
        n = min(tc.checkpoint_every - state.step % tc.checkpoint_every, tc.steps - state.step)
        train_steps(state, f, data, tc, n, progress, deadline)
        out_of_time = deadline is not None and time.perf_counter() >= deadline
        last = state.step == tc.steps or out_of_time
        health = {}
        if state.step % health_every == 0 or last:
            health = evaluate(state, f, held, tc)
            if progress is not None:
                progress(state.step, dict(health))
        best_score = _save_checkpoint(store, state, gc, tc, meta, health, best_score)
        if out_of_time:
            log.info("time limit %.0f s reached at step %d", tc.time_limit_s, state.step)
            break
    encoder = _encoder_stage(store, f, held, tc.encoder, data.pos_frac, dev) \
        if tc.encoder.steps > 0 else None
    summary = {"steps": state.step, "resumed_from": resumed, "last_health": health,
               "encoder": encoder,
               "best": read_json(store, "best.json"),
               "latest": read_json(store, "checkpoints/latest.json"),
               "gan_config": gc.model_dump(mode="json"), "train_config": tc.model_dump(mode="json"),
               "seconds": round(time.perf_counter() - t0, 2), "device": str(dev), **meta,
               "cohort_url": cohort.url}
    store.write_manifest(summary)
    return summary


# ---------------------------------------------------------------------------------- checkpoints
def _ckpt_key(step: int) -> str:
    return step_key(step)


def _score(health: dict) -> float:
    v = health.get("fidelity", float("nan")) if health else float("nan")
    return float(v) if v is not None and math.isfinite(float(v)) else -math.inf


def _save_checkpoint(store: Store, state: GanState, gc: GanConfig, tc: GanTrainConfig,
                     meta: dict, health: dict, best_score: float) -> float:
    """Write checkpoint, grid, maybe best, then the latest pointer; returns the best score."""
    key = _ckpt_key(state.step)
    obj = {
        "format": CKPT_FORMAT,
        "step": state.step,
        "generator": state.G.state_dict(),
        "discriminator": state.D.state_dict(),
        "opt_g": state.opt_g.state_dict(),
        "opt_d": state.opt_d.state_dict(),
        "rng": rng_state(),
        "gan_config": gc.model_dump(mode="json"),
        "train_config": tc.model_dump(mode="json"),
        "health": {k: float(v) for k, v in health.items()},
        **meta,
    }
    blob, digest = write_blob(store, key, obj)
    store.write_bytes(key.replace(".pt", ".png"), sample_grid(state.G))
    ptr = {**pointer(state.step, key, digest, obj["health"]),
           "content_hash": generator_content_hash(obj)}
    score = _score(health)
    if health and (score > best_score or best_score == -math.inf):  # no fidelity: newest
        store.write_bytes("best.pt", blob)
        store.write_json("best.json", ptr)
        best_score = max(score, best_score)
    store.write_json("checkpoints/latest.json", ptr)
    return best_score


def _reconsider_best(store: Store, state: GanState, best: dict | None, best_score: float) -> float:
    """After a resume: a kill between a checkpoint file and its pointers leaves a checkpoint
    newer than ``best.json`` whose health was never compared; compare it now."""
    health, key = state.resumed_health, _ckpt_key(state.step)
    if not health or (best is not None and int(best.get("step", -1)) >= state.step):
        return best_score
    score = _score(health)
    if score > best_score or best_score == -math.inf:
        blob = store.read_bytes(key)
        obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        store.write_bytes("best.pt", blob)
        store.write_json("best.json", {
            **pointer(state.step, key, hashlib.sha256(blob).hexdigest(), health),
            "content_hash": generator_content_hash(obj)})
        return max(score, best_score)
    return best_score


def _resume(store: Store, state: GanState, gc: GanConfig, tc: GanTrainConfig) -> int | None:
    """Load the latest readable checkpoint into ``state``; its step, or None if none exists."""
    obj = resume_scan(store, REQUIRED, "generator", stacklevel=5)  # the caller of train_gan
    if obj is None:
        return None
    if GanConfig.model_validate(obj["gan_config"]).model_dump(mode="json") != \
            gc.model_dump(mode="json"):  # a run saved before a new field resumes
        raise ValueError(f"{store.url} holds a run with another GanConfig "
                         f"({obj['gan_config']}); use a new out URL")
    if obj["train_config"].get("seed") != tc.seed:
        raise ValueError(f"{store.url} holds a run with seed "
                         f"{obj['train_config'].get('seed')}, not {tc.seed}")
    state.G.load_state_dict(obj["generator"])
    state.D.load_state_dict(obj["discriminator"])
    state.opt_g.load_state_dict(obj["opt_g"])
    state.opt_d.load_state_dict(obj["opt_d"])
    for opt in (state.opt_g, state.opt_d):  # new lr / betas of a continued run apply
        for group in opt.param_groups:
            group["lr"], group["betas"] = tc.lr, tuple(tc.betas)
    set_rng_state(obj["rng"])
    state.step = int(obj["step"])
    state.resumed_health = {k: float(v) for k, v in (obj.get("health") or {}).items()}
    return state.step
