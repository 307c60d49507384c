"""Quality table: every method, every localisation metric (own and shuffled boxes) and
deletion / insertion AUC, mean and 95 % bootstrap CI, on phantom-cxr and phantom-brain, clean
and shortcut classifier.

For each dataset (``--datasets``) and classifier variant:

- ``clean``: a cohort with no shortcut tag (shortcut_rate 0), classifier trained with
  ``ClassifierTrainConfig(remove_tag=True)``;
- ``shortcut``: a cohort whose positives carry the tag 90 % of the time (shortcut_rate 0.9),
  classifier trained with ``remove_tag=False``;

the script writes the cohort (``--n`` images, ``--size`` px, medxgan.phantoms), trains the
classifier (medxgan.classifiers.train, SmallCNN, ``--epochs``), trains a medXGAN generator
for it (medxgan.generators.train_gan, published architecture, GanConfig g_width 0.25,
d_width 0.5, d_a 100, d_p 10, ``--gan-steps``), explains ``--images`` held-out test positives
with medxgan (difference map, default fast inversion), latent_ig (exact path sum on the same
latents), gradcam, ig, random and box_prior (average train box), scores every localisation
metric with its shuffled-box control and deletion / insertion AUC exactly as the audit's explain
and score stages do (bench._pipeline.explain_and_score: medxgan.explain.explain_batch and
medxgan.metrics.score_batch in batches of ``--batch`` images, partners by
medxgan.metrics.shuffle_partners over all explained images, maps in their stored float16 form)
and summarises with medxgan.metrics.aggregate.summarise.

    .venv/bin/python -m bench.quality --quick     # 32 px, tiny sizes: ~40 s, numbers meaningless
    .venv/bin/python -m bench.quality             # 64 px, 4000 images, 1800 GAN steps: ~13 min per
                                                  # dataset and classifier on 2 idle cores
    .venv/bin/python -m bench.quality --n 2000 --epochs 8 --gan-steps 300 --images 100 \
        --datasets phantom-cxr --variants clean   # a medium run

Writes bench/results/quality.json (``--out``); the last line printed is
``medxgan_pointing=<a> gradcam_pointing=<b> ig_pointing=<c> random_pointing=<d>
medxgan_mass=<e> gradcam_mass=<f> ig_mass=<g>`` (one line) for phantom-cxr with the clean
classifier, where medxgan is the best by pointing game (ties: relevance mass) of the medXGAN
maps: the difference map, latent IG and counterfactual IG (IG from the generated negative twin
to the image; NaN when none was run). The line before it names the map and says whether its
relevance-mass CI lies above Grad-CAM's and IG's (the issue #7 target). ``ig_blur`` (IG from a
blurred copy of the image) is a control: does the medXGAN baseline beat a generic one?

GPU (issue #7's numbers; one process per dataset and variant, then merged):

    for ds in phantom-cxr phantom-brain; do for v in clean shortcut; do
      python -m bench.quality --device cuda --datasets $ds --variants $v --gan-time-limit 150 \
          --out /tmp/q/$ds-$v.json & done; done; wait
    python -m bench.quality --merge /tmp/q/*.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from bench._args import classifier_flags, device_flags, gan_flags
from bench._common import RESULTS, gan_variant, write_phantom_cohort, write_results
from bench._pipeline import explain_and_score

OUT = RESULTS / "quality.json"
METHODS = ("medxgan", "latent_ig", "counterfactual_ig", "gradcam", "ig", "ig_blur", "random",
           "box_prior")
MEDXGAN_MAPS = ("medxgan", "latent_ig", "counterfactual_ig")
ALIASES = {"ig_blur": ("ig", {"baseline": "blur"})}  # bench-only rows: (method, config)
VARIANTS = {"clean": (0.0, True), "shortcut": (0.9, False)}  # shortcut_rate, remove_tag


def _run_one(tmp: str, kind: str, variant: str, args: argparse.Namespace) -> tuple[list, dict]:
    """Cohort -> classifier -> generator -> explanations -> scores for one (dataset, variant)."""
    from medxgan.cohort import Cohort
    from medxgan.classifiers import load_classifier
    from medxgan.classifiers.train import train_classifier
    from medxgan.config.models import ClassifierTrainConfig, GanTrainConfig
    from medxgan.generators import load_generator, train_gan

    rate, remove = VARIANTS[variant]
    root = f"{tmp}/{kind}-{variant}"
    info: dict = {}
    t = time.perf_counter()
    write_phantom_cohort(f"{root}/cohort", kind, args.n, size=args.size, seed=args.seed,
                         shortcut_rate=rate)
    cohort = Cohort(f"{root}/cohort")
    info["cohort_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = train_classifier(cohort.url, f"{root}/classifier", ClassifierTrainConfig(
        arch=args.arch, epochs=args.epochs, batch=64, max_lr=2e-3, flips="horizontal",
        remove_tag=remove, seed=args.seed, device=args.device))
    f = load_classifier(f"{root}/classifier/spec.yaml").to(args.device)
    info["classifier_s"] = time.perf_counter() - t
    info["classifier_metrics"] = {k: v for k, v in metrics.items()
                                  if isinstance(v, (int, float, dict)) and k != "config"}
    t = time.perf_counter()
    local = args.generator == "local"
    gc = gan_variant(args.generator, args.discriminator, size=args.size, g_width=args.g_width,
                     d_width=args.d_width)
    tc = GanTrainConfig(steps=args.gan_steps, batch=32, seed=args.seed, device=args.device,
                        lambda_d_cls=args.lambda_d_cls, lambda_min_change=args.lambda_min_change,
                        lambda_mask=1.0 if local else 0.0,
                        checkpoint_every=max(1, args.gan_steps),
                        health_samples=16 if args.quick else 256,
                        health_heldout=2 if args.quick else 16,
                        health_inversion_steps=2 if args.quick else 50,
                        time_limit_s=args.gan_time_limit)
    train_gan(cohort.url, f, f"{root}/gan", gc, tc)
    G, meta = load_generator(f"{root}/gan")
    G = G.to(args.device)
    info["gan_s"] = time.perf_counter() - t
    info["gan_health"] = meta.get("health")
    info["gan_steps_done"] = meta.get("step")
    # held-out positives with boxes (at most --images), explained and scored as the audit does
    batch = next(cohort.iter_batches(args.images, split="test", labels=[1]))
    ids = [i for i, b in zip(batch.image_ids, batch.boxes) if len(b)]
    options = {"ig": {"n_steps": args.ig_steps}, "ig_blur": {"n_steps": args.ig_steps},
               "latent_ig": {"n_points": args.lig_points},
               "counterfactual_ig": {"n_points": args.lig_points}}
    scores, times = explain_and_score(cohort, f, G, ids, METHODS, options, seed=args.seed,
                                      batch_size=args.batch,
                                      faithfulness=not args.no_faithfulness, aliases=ALIASES,
                                      device=args.device)
    info["s_per_image"] = times
    info["device"] = args.device
    info["n_explained"] = len(ids)
    return [scores], info


def _fmt(s, method: str, metric: str) -> str:
    r = s[(s.method == method) & (s.metric == metric)]
    if r.empty or math.isnan(r["mean"].iloc[0]):
        return "    n/a           "
    r = r.iloc[0]
    return f"{r['mean']:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"


def _print_table(s, kind: str, variant: str, info: dict) -> None:
    print(f"\n{kind}, {variant} classifier ({info['n_explained']} test positives; "
          f"classifier {info['classifier_s']:.0f} s, test AUROC "
          f"{info['classifier_metrics'].get('test', {}).get('auroc', float('nan')):.3f}; "
          f"GAN {info['gan_steps_done']} steps {info['gan_s']:.0f} s; {info.get('device', 'cpu')})")
    print(f"{'method':>17} {'pointing':>18} {'pointing shuf':>18} "
          f"{'mass':>18} {'mass shuf':>18} {'auroc':>18}")
    for m in METHODS:
        print(f"{m:>17} {_fmt(s, m, 'pointing_game'):>18} "
              f"{_fmt(s, m, 'pointing_game_shuffled'):>18} "
              f"{_fmt(s, m, 'relevance_mass'):>18} "
              f"{_fmt(s, m, 'relevance_mass_shuffled'):>18} "
              f"{_fmt(s, m, 'auroc'):>18}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 parents=[gan_flags(), classifier_flags(),
                                          device_flags(threads=2)])
    ap.add_argument("--quick", action="store_true", help="32 px, tiny sizes (~40 s)")
    ap.add_argument("--size", type=int, default=None, help="image side (64; quick 32)")
    ap.add_argument("--n", type=int, default=None, help="cohort images (4000; quick 200)")
    ap.add_argument("--gan-steps", type=int, default=None, help="GAN steps (1800; quick 2)")
    ap.add_argument("--gan-time-limit", type=float, default=None,
                    help="stop GAN training after this many seconds (None: all steps)")
    ap.add_argument("--images", type=int, default=None,
                    help="test positives explained (100; quick 6)")
    ap.add_argument("--batch", type=int, default=32,
                    help="images per explained batch (the explain flow's shard size)")
    ap.add_argument("--no-faithfulness", action="store_true",
                    help="skip deletion / insertion AUC (the score flow's --no-faithfulness)")
    ap.add_argument("--ig-steps", type=int, default=None, help="IG steps (50; quick 4)")
    ap.add_argument("--lig-points", type=int, default=None,
                    help="latent IG path points (101; quick 5)")
    ap.add_argument("--datasets", nargs="+", default=None,
                    help="phantom kinds (both; quick: phantom-cxr only)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--merge", nargs="+", type=Path, default=None,
                    help="combine result JSONs of runs made separately (e.g. one process per "
                         "dataset and variant), print the tables and write --out")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT, help="JSON results path")
    args = ap.parse_args(argv)
    q = args.quick
    for k, v in dict(size=(32 if q else 64), n=(200 if q else 4000), epochs=(1 if q else 14),
                     gan_steps=(2 if q else 1800), images=(6 if q else 100),
                     ig_steps=(4 if q else 50), lig_points=(5 if q else 101)).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.datasets is None:
        args.datasets = ["phantom-cxr"] if q else ["phantom-cxr", "phantom-brain"]
    if q:
        args.n_boot = min(args.n_boot, 100)
    import pandas as pd
    import torch

    from medxgan.metrics.aggregate import summarise
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tables, infos = [], {}
    if args.merge:
        for path in args.merge:
            if not Path(path).exists():
                print(f"skipped {path}: no such file (that run did not finish)")
                continue
            part = json.loads(Path(path).read_text())
            s = pd.DataFrame(part["summary"])
            for key, info in part["runs"].items():
                kind, variant = key.split("/")
                tables.append(s[(s.dataset == kind) & (s.variant == variant)])
                infos[key] = {**info, "config": part["config"]}
                _print_table(tables[-1], kind, variant, info)
    else:
        with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
            for kind in args.datasets:
                for variant in args.variants:
                    scores, info = _run_one(tmp, kind, variant, args)
                    s = summarise(pd.concat(scores), n_boot=args.n_boot, seed=args.seed)
                    s.insert(0, "variant", variant)
                    s.insert(0, "dataset", kind)
                    tables.append(s)
                    infos[f"{kind}/{variant}"] = info
                    _print_table(s, kind, variant, info)
    summary = pd.concat(tables, ignore_index=True)
    head = summary[(summary.dataset == "phantom-cxr") & (summary.variant == "clean")]

    def mean(method: str, metric: str) -> float:
        r = head[(head.method == method) & (head.metric == metric)]["mean"]
        return float(r.iloc[0]) if len(r) else float("nan")

    def ci(method: str, metric: str) -> tuple[float, float]:
        r = head[(head.method == method) & (head.metric == metric)]
        return (float(r.ci_low.iloc[0]), float(r.ci_high.iloc[0])) if len(r) else (math.nan,) * 2

    def rank(m: str) -> tuple[float, float]:
        p, r = mean(m, "pointing_game"), mean(m, "relevance_mass")
        return (-1.0 if math.isnan(p) else p, -1.0 if math.isnan(r) else r)

    mx = max(MEDXGAN_MAPS, key=rank)
    lo = ci(mx, "relevance_mass")[0]
    above = {b: lo > ci(b, "relevance_mass")[1] for b in ("gradcam", "ig")}
    line = {"medxgan_pointing": mean(mx, "pointing_game"),
            "gradcam_pointing": mean("gradcam", "pointing_game"),
            "ig_pointing": mean("ig", "pointing_game"),
            "random_pointing": mean("random", "pointing_game"),
            "medxgan_mass": mean(mx, "relevance_mass"),
            "gradcam_mass": mean("gradcam", "relevance_mass"),
            "ig_mass": mean("ig", "relevance_mass")}
    res = {"bench": "quality", "config": vars(args), "medxgan_map": mx, "headline": line,
           "medxgan_mass_ci_above": above,
           "runs": infos, "summary": summary.to_dict(orient="records"),
           "total_s": time.perf_counter() - t0}
    write_results(args.out, res)
    print(f"\nmedxgan = {mx} (best pointing game of {', '.join(MEDXGAN_MAPS)}); its relevance-mass "
          f"CI lies above " + ", ".join(f"{b}'s: {'yes' if v else 'no'}" for b, v in above.items()))
    print(" ".join(f"{k}={v:.3f}" for k, v in line.items()))
    return res


if __name__ == "__main__":
    main()
