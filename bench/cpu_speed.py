"""CPU execution (:mod:`medxgan.cpu`) on and off, side by side in one run: what channels-last
U-Nets and cache-sized no-grad batches buy, on the models ``bench.generators`` trained.

Timed through the product's code, each setting alternately (off, on, off, on, ...; ``--reps``
rounds, the median per setting), on the same models and images:

- ``explain``: the inpaint family's ``medxgan`` explanation of ``--n`` test positives f calls
  positive (:func:`medxgan.explain.explain_batch`, as ``bench.generators`` and the audit run
  it: the counterfactual search and the interpolation), with a check that both settings give
  the same masks and x_neg up to float rounding;
- ``train``: ``--train-steps`` steps of :func:`medxgan.generators.inpaint.inpainter.
  train_inpainter` with the run's in-filler config, on whole images and on half-side windows;
- ``train_classifier`` (since session 18): ``--clf-epochs`` epochs of
  :func:`medxgan.classifiers.train.train_classifier` (small_cnn2, the audit's classifier
  stage, its evaluations included) on the cohort's train split;
- ``classify``: f's no-grad probabilities (:func:`medxgan.explain._torch.probabilities`) of
  256 test images;
- ``baselines`` (since session 18): the audit's gradient methods, Grad-CAM, IG and
  counterfactual IG (from the ``medxgan`` explanation's mask, as the audit passes it), of one
  audit shard of ``--shard`` images (:func:`medxgan.explain.explain_batch`), with a check that
  both settings give the same maps up to float rounding;
- ``score``: the score stage's metrics of those IG maps, deletion and insertion curves
  included (:func:`medxgan.metrics.score_batch`, as ``tasks.score`` runs it).

    .venv/bin/python -m bench.cpu_speed --dataset phantom-brain --size 128   # ~15 min, 1 thread
    .venv/bin/python -m bench.cpu_speed --quick                              # 32 px, seconds

The full run needs the cohort, f and the in-filler of ``bench.generators --dataset <ds> --size
<S> --seed <s>`` under ``--work`` (it says which command to run when they are missing); with
``--quick`` a 32 px cohort, f and a freshly initialised in-filler. Writes
bench/results/cpu_speed_<dataset>_<size>px.json; the last line printed is
``explain_speedup=<a> train_speedup=<b> classify_speedup=<c> masks_equal=<0|1>
baselines_speedup=<d> score_speedup=<e> maps_max_rel_diff=<f> classifier_train_speedup=<g>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from bench._common import RESULTS, phantom_cohort, write_results


def _commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _alternate(fn, reps: int) -> dict[str, list[float]]:
    """Seconds of ``fn(setting)`` with CPU execution ``off`` (NCHW U-Nets, the callers' batches)
    and ``on`` (:mod:`medxgan.cpu`'s defaults), alternately, ``reps`` rounds each."""
    from medxgan.cpu import CPU_BATCH_PIXELS, cpu_execution

    out: dict[str, list[float]] = {"off": [], "on": []}
    with cpu_execution(channels_last=False, batch_pixels=None):
        fn("off")                                        # warm-up, not timed
    for _ in range(reps):
        for name, on in (("off", False), ("on", True)):
            with cpu_execution(channels_last=on, batch_pixels=CPU_BATCH_PIXELS if on else None):
                t = time.perf_counter()
                fn(name)
                out[name].append(time.perf_counter() - t)
    return out


def _ratio(t: dict[str, list[float]]) -> float:
    return statistics.median(t["off"]) / statistics.median(t["on"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="phantom-cxr", choices=["phantom-cxr", "phantom-brain"])
    ap.add_argument("--size", type=int, default=128, help="image side (px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=64, help="test positives explained")
    ap.add_argument("--reps", type=int, default=2, help="rounds of off / on per measurement")
    ap.add_argument("--train-steps", type=int, default=12, help="in-filler steps timed")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--clf-epochs", type=int, default=1,
                    help="classifier training epochs timed per setting")
    ap.add_argument("--shard", type=int, default=32,
                    help="images of the baselines and score measurements (an audit shard)")
    ap.add_argument("--generator", default=None,
                    help="the in-filler's run folder (default: the newest bench.generators "
                         "run of this dataset, size and seed under --work)")
    ap.add_argument("--quick", action="store_true", help="32 px, 16 images, seconds")
    ap.add_argument("--work", default="/tmp/medxgan-bench/generators", help="store folder")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(args.threads)

    from bench.generators import EPOCHS, _called_positive_ids, _classifier, _family_scores
    from medxgan.cohort.reader import Cohort
    from medxgan.config.inpaint import InpaintConfig
    from medxgan.explain._torch import probabilities
    from medxgan.generators import load_generator
    from medxgan.generators.inpaint.inpainter import (InpaintGenerator, Inpainter,
                                                      train_inpainter)
    from medxgan.storage import Store

    size = 32 if args.quick else args.size
    n_images = 240 if args.quick else 1200
    work = Path(args.work) / ("quick" if args.quick else "full")
    cohort_url = str(work / f"cohort-{args.dataset}-{size}-n{n_images}-s{args.seed}")
    if args.quick:
        phantom_cohort(cohort_url, args.dataset, n_images, size=size, seed=args.seed)
    elif not Store(cohort_url).exists("manifest.json"):
        raise SystemExit(f"no bench.generators cohort at {cohort_url}: run `python -m "
                         f"bench.generators --dataset {args.dataset} --size {size} --seed "
                         f"{args.seed}` first")
    cohort = Cohort(cohort_url)
    # the validation floor holds for --quick too: on an AMD EPYC VM (2026-12-07) the 20-epoch
    # quick f called no test positive positive, leaving nothing to explain
    f, _ = _classifier(cohort_url, f"{cohort_url}-clf-small_cnn2-s{args.seed}", "small_cnn2",
                       20 if args.quick else EPOCHS, args.seed, "cpu", 0.9)
    if args.quick:
        cfg = InpaintConfig(steps=1, seconds=None, base=4, depth=2)
        G = InpaintGenerator(Inpainter(cfg.base, cfg.depth_for(size)).eval(), size)
        gen = "a freshly initialised in-filler"
    else:
        runs = [Path(args.generator)] if args.generator else sorted(
            (p for p in work.glob(f"gen-inpaint-{args.dataset}-{size}px-s{args.seed}-*")
             if (p / "manifest.json").exists()), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise SystemExit(f"no bench.generators in-filler for {args.dataset} at {size} px, "
                             f"seed {args.seed}, under {work}: run `python -m bench.generators "
                             f"--dataset {args.dataset} --size {size} --seed {args.seed}` first")
        G, _ = load_generator(str(runs[-1]))
        gen = runs[-1].name
        trained = json.loads((runs[-1] / "manifest.json").read_text())["train_config"]
        cfg = InpaintConfig.model_validate(trained["inpaint"])
    print(f"in-filler: {gen}", flush=True)
    ids, _ = _called_positive_ids(cohort, f, 16 if args.quick else args.n, "cpu")

    kept: dict[str, dict] = {}

    def explain(setting: str) -> None:
        kept[setting] = _family_scores(cohort, f, G, ids, args.seed, "cpu")[2]

    if not ids:
        raise SystemExit("f calls none of the test positives positive: nothing to explain")
    t_explain = _alternate(explain, args.reps)
    same_masks = bool(torch.equal(kept["on"]["x_neg"].ne(kept["on"]["x"]),
                                  kept["off"]["x_neg"].ne(kept["off"]["x"])))
    x_neg_diff = float((kept["on"]["x_neg"] - kept["off"]["x_neg"]).abs().max())
    print(f"explain {len(ids)} images: s/image off "
          f"{statistics.median(t_explain['off']) / len(ids):.3f} on "
          f"{statistics.median(t_explain['on']) / len(ids):.3f}; the same changed pixels: "
          f"{same_masks}, max |x_neg difference| {x_neg_diff:.2e}", flush=True)

    neg = next(cohort.iter_batches(256, split="train", labels=[0])).images
    steps = 2 if args.quick else args.train_steps
    train = {}
    for name, crop in (("whole", 1.0), ("windows", 0.5)):
        over = dict(steps=steps, seconds=None, train_crop=crop, whole_share=0.0, seed=args.seed,
                    device="cpu")
        train[name] = _alternate(lambda _: train_inpainter(neg, cfg, **over), args.reps)
        print(f"train {name}: s/step off {statistics.median(train[name]['off']) / steps:.3f} "
              f"on {statistics.median(train[name]['on']) / steps:.3f}", flush=True)

    t_clf = _classifier_training(cohort_url, args)

    test = next(cohort.iter_batches(256, split="test")).images
    t_cls = _alternate(lambda _: probabilities(f, test), args.reps)
    print(f"classify {len(test)} images: ms/image off "
          f"{1e3 * statistics.median(t_cls['off']) / len(test):.2f} on "
          f"{1e3 * statistics.median(t_cls['on']) / len(test):.2f}", flush=True)

    t_base, t_score, rel_diff = _baselines_and_score(cohort, f, G, ids[:args.shard], args)

    line = {"explain_speedup": _ratio(t_explain),
            "train_speedup": statistics.mean(_ratio(t) for t in train.values()),
            "classify_speedup": _ratio(t_cls), "masks_equal": float(same_masks),
            "baselines_speedup": _ratio(t_base), "score_speedup": _ratio(t_score),
            "maps_max_rel_diff": rel_diff, "classifier_train_speedup": _ratio(t_clf)}
    out = args.out or RESULTS / f"cpu_speed_{args.dataset}_{size}px.json"
    write_results(out, {
        "bench": "cpu_speed", "command": " ".join(["python -m bench.cpu_speed"] + sys.argv[1:]),
        "commit": _commit(),
        "dataset": args.dataset, "size": size, "in_filler": gen, "n_images": len(ids),
        "seconds": {"explain": t_explain, "train": train, "classify": t_cls,
                    "baselines": t_base, "score": t_score, "train_classifier": t_clf},
        "clf_epochs": args.clf_epochs, "shard": min(args.shard, len(ids)),
        "train_steps": steps, "x_neg_max_abs_diff": x_neg_diff, "result": line})
    print(f"wrote {out}", flush=True)
    print(" ".join(f"{k}={v:.4f}" for k, v in line.items()))


BASELINES = ["gradcam", "ig", "counterfactual_ig"]


def _classifier_training(cohort_url: str, args) -> dict[str, list[float]]:
    """Seconds of ``--clf-epochs`` epochs of ``train_classifier`` (small_cnn2, batch 64) off
    and on alternately, each into a fresh temporary store."""
    import tempfile

    from medxgan.classifiers.train import train_classifier
    from medxgan.config.models import ClassifierTrainConfig

    cfg = ClassifierTrainConfig(arch="small_cnn2", epochs=args.clf_epochs, seed=args.seed,
                                device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        n = iter(range(1000))
        t = _alternate(lambda _: train_classifier(cohort_url, f"{tmp}/c{next(n)}", cfg),
                       args.reps)
    print(f"train classifier, {args.clf_epochs} epoch(s): s off "
          f"{statistics.median(t['off']):.1f} on {statistics.median(t['on']):.1f}", flush=True)
    return t


def _baselines_and_score(cohort, f, G, ids: list[str], args):
    """Seconds of the audit's gradient methods and of the score stage's metrics on one shard,
    off and on alternately, and the largest difference of a map between the settings relative
    to that map's largest |value| (the maps of both must agree up to float rounding)."""
    from medxgan.explain import explain_batch
    from medxgan.explain.serialize import explanation_table
    from medxgan.metrics import partner_masks, score_batch, scoring_inputs, shuffle_partners
    from medxgan.metrics.masks import boxes_to_masks

    batch = cohort.load(ids)
    x = batch.images
    own = explain_batch(x, f, G, ["medxgan"], None, ids=ids)["medxgan"]
    latents = (own.extras["z_a"], own.extras["z_p"])
    maps: dict[str, dict] = {}

    def baselines(setting: str) -> None:
        maps[setting] = explain_batch(x, f, G, BASELINES, None, ids=ids, latents=latents)

    t_base = _alternate(baselines, args.reps)
    rel = max(float((maps["on"][m].maps - maps["off"][m].maps).abs().max()
                    / maps["off"][m].maps.abs().max().clamp_min(1e-12)) for m in BASELINES)
    print(f"baselines {BASELINES} of {len(ids)} images: s/image off "
          f"{statistics.median(t_base['off']) / len(ids):.3f} on "
          f"{statistics.median(t_base['on']) / len(ids):.3f}; max relative map difference "
          f"{rel:.1e}", flush=True)

    _, ig_maps, extras = scoring_inputs(explanation_table(ids, maps["on"]["ig"], "ig"))
    H, W = ig_maps.shape[1:]
    boxes = cohort.boxes_by_id()
    masks = boxes_to_masks(batch.boxes, H, W, tuple(x.shape[-2:]))
    others = partner_masks(ids, shuffle_partners(ids, boxes, args.seed), boxes, H, W,
                           tuple(x.shape[-2:]))
    opts = {"faithfulness": True, "robustness": False, "seed": args.seed, "method_options": {}}
    t_score = _alternate(lambda _: score_batch(ig_maps, masks, others, f, x, opts, method="ig",
                                               ids=ids, extras=extras), args.reps)
    print(f"score (ig maps, faithfulness curves) of {len(ids)} images: s/image off "
          f"{statistics.median(t_score['off']) / len(ids):.3f} on "
          f"{statistics.median(t_score['on']) / len(ids):.3f}", flush=True)
    return t_base, t_score, rel


if __name__ == "__main__":
    main()
