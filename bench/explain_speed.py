"""Seconds per image of every explanation method, and medXGAN ``fast`` vs ``published-brain``.

On a 64 px phantom-cxr cohort (medxgan.phantoms), with a small CNN classifier trained here for a
few seconds (medxgan.classifiers.small_cnn.SmallCNN, OneCycle; bench._common.quick_classifier, wrapped
as the audit wraps it) and the published generator
architecture (medxgan.generators.published.gan.Generator, width ``--g-width``), random-init or trained for
``--gan-steps`` steps here (medxgan.generators.published.train). Both inversion recipes run on the same
G, f and test positives:

- ``published-brain`` one image at a time (the published code's way: 1000 Adam steps, lr 1e-3),
- ``fast`` batched (50 steps, lr 0.1, best iterate, plateau stop),

and the ratio of their seconds per image is the speed-up. Recon MSE is in GAN space [-1, 1];
the flip rate is the share of images whose x_neg = G(z_a, 0) f calls negative. Every method is
timed through ``medxgan.explain.explain_batch`` (what the explain stage runs per shard).

    .venv/bin/python -m bench.explain_speed --quick      # < 2 min on 2 CPU cores
    .venv/bin/python -m bench.explain_speed              # fuller run (a few minutes)

Writes bench/results/explain_speed.json; the last line printed is
``medxgan_speedup=<x> recon_mse_fast=<a> recon_mse_published=<b>``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench._args import gan_flags
from bench._common import RESULTS, gan_variant, quick_classifier
from medxgan import phantoms
from medxgan.config.explain import InversionConfig
from medxgan.explain import METHODS, explain_batch
from medxgan.generators.published.inversion import invert
from medxgan.explain.floors import box_prior_map
from medxgan.explain.seeding import content_seeds

OUT = RESULTS / "explain_speed.json"


def _cohort(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    imgs = list(phantoms.generate("phantom-cxr", n, size=size, seed=seed))
    x = torch.from_numpy(np.stack([i.pixels for i in imgs]).astype(np.float32) / 255.0)[:, None]
    y = torch.tensor([i.label for i in imgs])
    boxes = [np.array([[b.x0, b.y0, b.x1, b.y1] for b in i.boxes], np.float32).reshape(-1, 4)
             for i in imgs]
    return x, y, boxes


def _generator(args, f: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    from medxgan.cohort.loading import TrainData
    from medxgan.config.models import GanTrainConfig
    from medxgan.generators.published.train import new_state, train_steps
    gc = gan_variant("published", size=args.size, g_width=args.g_width, d_width=args.d_width)
    tc = GanTrainConfig(steps=args.gan_steps, batch=32, seed=args.seed, device="cpu")
    state = new_state(gc, tc)
    if args.gan_steps:
        train_steps(state, f, TrainData(x, y.long()), tc, args.gan_steps)
    return state.G.eval()


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _flip(G, f, z_a, z_p) -> torch.Tensor:
    with torch.no_grad():
        p = torch.sigmoid(f((G(z_a, torch.zeros_like(z_p)) + 1) / 2))
    return (p < 0.5).float()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 parents=[gan_flags(variant=False, losses=False)])
    ap.add_argument("--quick", action="store_true", help="small sizes: under 2 min on 2 cores")
    ap.add_argument("--size", type=int, default=64, help="image side (px)")
    ap.add_argument("--n-train", type=int, default=None, help="classifier training images")
    ap.add_argument("--epochs", type=int, default=None, help="classifier epochs")
    ap.add_argument("--n-explain", type=int, default=None, help="positives explained batched")
    ap.add_argument("--n-single", type=int, default=None, help="images timed at batch 1")
    ap.add_argument("--n-published", type=int, default=None,
                    help="images inverted with published-brain, one at a time")
    ap.add_argument("--gan-steps", type=int, default=None, help="GAN training steps (0: random G)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT, help="JSON results path")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder to save / reuse the trained classifier and generator")
    args = ap.parse_args(argv)
    q = args.quick
    d = dict(n_train=(400 if q else 1600), epochs=(3 if q else 8), n_explain=(16 if q else 32),
             n_single=(2 if q else 4), n_published=(1 if q else 8), gan_steps=(0 if q else 300))
    for k, v in d.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    x_tr, y_tr, boxes_tr = _cohort(args.n_train, args.size, args.seed)
    key = (f"s{args.size}-n{args.n_train}-e{args.epochs}-g{args.gan_steps}-w{args.g_width}"
           f"-{args.seed}-audited")  # -audited: f saved as AuditedClassifier (model.* keys)
    cached = args.cache / f"models-{key}.pt" if args.cache else None
    if cached is not None and cached.exists():
        f = quick_classifier(x_tr[:1], y_tr[:1], epochs=0, seed=args.seed)
        G = _generator(argparse.Namespace(**{**vars(args), "gan_steps": 0}), f, x_tr, y_tr)
        state = torch.load(cached, map_location="cpu", weights_only=True)
        f.load_state_dict(state["f"])
        G.load_state_dict(state["G"])
        f.eval(), G.eval()
        t_cls = t_gan = 0.0
    else:
        f, t_cls = _timed(lambda: quick_classifier(x_tr, y_tr, epochs=args.epochs,
                                                   seed=args.seed))
    x_te, y_te, _ = _cohort(4 * args.n_explain + 64, args.size, args.seed + 1)
    with torch.no_grad():
        acc = float(((torch.sigmoid(f(x_te)) > 0.5).long() == y_te).float().mean())
    if cached is None or not cached.exists():
        G, t_gan = _timed(lambda: _generator(args, f, x_tr, y_tr))
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"f": f.state_dict(), "G": G.state_dict()}, cached)
    pos = (y_te == 1).nonzero()[:, 0][:args.n_explain]
    x = x_te[pos]                                                      # (N, 1, S, S) positives
    prior = box_prior_map(boxes_tr, (args.size, args.size))          # train split's boxes
    print(f"classifier: {t_cls:.1f} s, test acc {acc:.3f}; generator: {args.gan_steps} steps "
          f"{t_gan:.1f} s; {len(x)} positives at {args.size} px", flush=True)

    # ---- every method: batched and batch 1 (latent_ig timed with and without inversion)
    methods: dict[str, dict] = {}
    lat = None
    for m in METHODS + ("latent_ig+inversion",):
        name = m.split("+")[0]

        def run(images, latents=None, name=name):
            return explain_batch(images, f, G, [name], {}, latents=latents, box_prior=prior)[name]
        out, tb = _timed(lambda: run(x, lat if m == "latent_ig" else None))
        if m == "medxgan":
            lat = (out.extras["z_a"], out.extras["z_p"])
        n1 = args.n_single
        k1 = [(lat[0][i:i + 1], lat[1][i:i + 1]) if m == "latent_ig" else None
              for i in range(n1)]
        _, t1 = _timed(lambda: [run(x[i:i + 1], k1[i]) for i in range(n1)])
        methods[m] = dict(s_per_image_batched=tb / len(x), s_per_image_batch1=t1 / n1)
        print(f"{m:22s} batched {tb / len(x):8.4f} s/img   batch 1 {t1 / n1:8.4f} s/img",
              flush=True)

    # ---- medXGAN fast (batched) vs published-brain (one image at a time), same images
    npub = min(args.n_published, len(x))
    seeds = content_seeds(x, args.seed)
    fast_cfg = InversionConfig.recipe("fast")
    pub_cfg = InversionConfig.recipe("published-brain")
    fast, t_fast = _timed(lambda: invert(G, f, x, fast_cfg, seed=seeds))
    pubs, t_pub = _timed(lambda: [invert(G, f, x[i:i + 1], pub_cfg, seed=seeds[i:i + 1])
                                  for i in range(npub)])
    pub_mse = torch.cat([p.recon_mse for p in pubs])
    pub_flip = torch.cat([_flip(G, f, p.z_a, p.z_p) for p in pubs])
    fast_flip = _flip(G, f, fast.z_a, fast.z_p)
    s_fast, s_pub = t_fast / len(x), t_pub / npub
    inv = dict(
        n_fast=len(x), n_published=npub, s_per_image_fast=s_fast, s_per_image_published=s_pub,
        speedup=s_pub / s_fast,
        recon_mse_fast_same_images=float(fast.recon_mse[:npub].mean()),
        recon_mse_fast_all=float(fast.recon_mse.mean()),
        recon_mse_published=float(pub_mse.mean()),
        flip_rate_fast_same_images=float(fast_flip[:npub].mean()),
        flip_rate_fast_all=float(fast_flip.mean()),
        flip_rate_published=float(pub_flip.mean()),
        mean_steps_fast=float(fast.steps_run.float().mean()))
    print(json.dumps(inv, indent=1), flush=True)

    result = dict(
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        models_from_cache=str(cached) if cached is not None and t_cls == 0.0 else None,
        classifier=dict(arch="SmallCNN 16/32/64", train_s=t_cls, test_accuracy=acc),
        generator=dict(arch="published", g_width=args.g_width, d_a=100, d_p=10,
                       gan_steps=args.gan_steps, train_s=t_gan),
        methods=methods, inversion=inv, total_s=time.perf_counter() - t0,
        env=dict(torch=torch.__version__, python=platform.python_version(),
                 machine=platform.machine(), threads=torch.get_num_threads()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} in {result['total_s']:.0f} s")
    print(f"medxgan_speedup={inv['speedup']:.1f} "
          f"recon_mse_fast={inv['recon_mse_fast_same_images']:.4f} "
          f"recon_mse_published={inv['recon_mse_published']:.4f}")
    return result


if __name__ == "__main__":
    main()
