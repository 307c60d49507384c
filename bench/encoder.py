"""Inversion encoder vs random-init inversion, side by side, for trained generators.

For each trained medXGAN run (``--gan``, a train_gan output folder), an encoder is trained by
latent regression on the run's best generator for ``--minutes`` (``medxgan.generators.published.encoder``,
one torch thread), and the *test* split's held-out set (``--n-test`` positives with boxes and
half as many negatives, the images bench.train_gan scores) is inverted with the fast recipe
(``--steps`` Adam steps) from random latents and from E(x). Printed per run: recon MSE (GAN
space [-1, 1]) of both starts and of G(E(x)) alone, and the lesion fidelity of both (share of
|G(z_a, z_p) - G(z_a, 0)| inside the image's own boxes / another positive's boxes).

    .venv/bin/python -m bench.encoder --quick     # untrained 32 px G and classifier, seconds
    .venv/bin/python -m bench.encoder --cohort /tmp/medxgan-bench/train_gan/full/cohort \\
        --classifier /tmp/medxgan-bench/clf-small_cnn2-horizontal-14 \\
        --gan /tmp/medxgan-bench/train_gan/full/gan/published-unconditional --minutes 3

Last line: ``encoder_mse_ratio=<encoder-init MSE / random-init MSE, first run>`` (below 1:
the encoder is the better start and a train_gan run would keep it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench._args import classifier_flags
from bench._common import RESULTS, random_classifier, write_results


def _fidelity(G, z_a, z_p, masks) -> tuple[float, float]:
    from medxgan.generators.health import lesion_fidelity
    with torch.no_grad():
        d = G(z_a, z_p) - G(z_a, torch.zeros_like(z_p))                # (P, 1, S, S)
    return lesion_fidelity(d[:, 0], masks)


def _one(G, f, held, minutes: float, steps: int, seed: int, batch: int) -> dict:
    from medxgan.config.models import EncoderConfig
    from medxgan.generators.published.encoder import invert_from_both_starts, train_encoder

    E, n, secs, lat = train_encoder(G, EncoderConfig(steps=10**7, batch=batch, seed=seed,
                                                     time_limit_s=minutes * 60))
    x = held.images
    both = invert_from_both_starts(G, E, f, x, steps, seed)
    rand, enc = both.random, both.encoder
    sel = (held.labels == 1) & held.masks.flatten(1).any(1)
    m = held.masks[sel].float()
    fr = _fidelity(G, rand.z_a[sel], rand.z_p[sel], m)
    fe = _fidelity(G, enc.z_a[sel], enc.z_p[sel], m)
    return {"encoder_steps": n, "encoder_seconds": round(secs, 1), "latent_mse": lat,
            "mse_random_init": float(rand.recon_mse.mean()),
            "mse_encoder_init": float(enc.recon_mse.mean()),
            "mse_encoder_only": float(both.mse_encoder_only.mean()),
            "invert_seconds_random": round(both.seconds_random, 2),
            "invert_seconds_encoder": round(both.seconds_encoder, 2),
            "fidelity_random_init": fr[0], "fidelity_shuffled_random_init": fr[1],
            "fidelity_encoder_init": fe[0], "fidelity_shuffled_encoder_init": fe[1],
            "n_images": int(len(x)), "n_fidelity": int(sel.sum())}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[classifier_flags(
        train=False, folder=True, folder_help="classifier folder (spec.yaml)")])
    ap.add_argument("--quick", action="store_true", help="untrained 32 px generator, seconds")
    ap.add_argument("--gan", default="", help="comma-separated train_gan output folders")
    ap.add_argument("--cohort", default=None, help="cohort the runs were trained on")
    ap.add_argument("--minutes", type=float, default=3.0, help="encoder training per run")
    ap.add_argument("--steps", type=int, default=50, help="inversion Adam steps (both starts)")
    ap.add_argument("--batch", type=int, default=64, help="encoder batch (G samples per step)")
    ap.add_argument("--n-test", type=int, default=100, help="test positives inverted")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/"
                    "encoder.json, encoder_quick.json with --quick)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or RESULTS / ("encoder_quick.json" if args.quick else "encoder.json"))
    runs: dict[str, dict] = {}
    if args.quick:
        from medxgan.config.models import GanConfig
        from medxgan.generators.published.gan import Generator
        from medxgan.cohort.loading import HeldOut
        torch.manual_seed(0)
        G = Generator(GanConfig(image_size=32, d_a=8, d_p=3, g_width=0.05)).eval()
        g = torch.Generator().manual_seed(1)
        x = torch.rand(6, 1, 32, 32, generator=g)
        masks = torch.zeros(6, 32, 32, dtype=torch.bool)
        masks[:4, 8:16, 8:16] = True
        held = HeldOut(x, torch.tensor([1, 1, 1, 1, 0, 0]), masks)

        runs["untrained-32px"] = _one(G, random_classifier(0, 32), held, 0.05, 3, 0, 16)
    else:
        from medxgan.cohort.reader import Cohort
        from medxgan.classifiers import load_classifier
        from medxgan.cohort.loading import load_heldout
        from medxgan.generators import load_generator
        f = load_classifier(f"{args.classifier}/spec.yaml")
        for url in [u for u in args.gan.split(",") if u]:
            G, meta = load_generator(url, attach_encoder=False)
            held = load_heldout(Cohort(args.cohort), G.image_size, args.n_test, "test")
            runs[Path(url).name] = {"best_step": meta["step"],
                                    **_one(G, f, held, args.minutes, args.steps, 0, args.batch)}
            r = runs[Path(url).name]
            print(f"{Path(url).name:28s} encoder {r['encoder_steps']} steps  MSE random "
                  f"{r['mse_random_init']:.4f}  encoder-init {r['mse_encoder_init']:.4f}  "
                  f"E only {r['mse_encoder_only']:.4f}  fidelity random "
                  f"{r['fidelity_random_init']:.3f}/{r['fidelity_shuffled_random_init']:.3f}  "
                  f"encoder {r['fidelity_encoder_init']:.3f}/"
                  f"{r['fidelity_shuffled_encoder_init']:.3f}", flush=True)
    if not runs:
        ap.error("no run: give --gan (with --cohort and --classifier) or --quick")
    result = {"command": " ".join(sys.argv), "minutes": args.minutes, "steps": args.steps,
              "runs": runs}
    write_results(out, result)
    first = next(iter(runs.values()))
    print(f"encoder_mse_ratio={first['mse_encoder_init'] / first['mse_random_init']:.3f}")
    return result


if __name__ == "__main__":
    main()
