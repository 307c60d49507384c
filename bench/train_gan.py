"""medXGAN generator variants trained on phantom-cxr within a time budget: health side by side.

On a 64 px phantom-cxr cohort (medxgan.phantoms, ~4000 train images), a baseline small CNN is
trained (medxgan.classifiers.train: ``--arch`` small_cnn2 = the prototype's 3 blocks with
two convs each, 14 epochs, Adam + OneCycle 2e-3, batch 64, left-right flips) and its
test AUROC reported. Then each generator variant

    published + unconditional D | published + projection D | local + unconditional D |
    local + projection D

is trained for ``--minutes`` of wall clock (G width 0.25, D width 0.5, d_a 100, d_p 10,
lambda 2 on logits, batch 32, one torch thread, one run at a time) with checkpoints and
health every ``--checkpoint-every`` steps, and its best checkpoint (by held-out val lesion
fidelity) is scored on the *test* split:

- agreement: share of G(z_a, 0) f calls negative / of G(z_a, z_p) f calls positive (1000),
- recon MSE: quick batched inversion (fast recipe, 50 steps), GAN space [-1, 1],
- change similarity: mean cosine between samples' changes G(z_a, z_p) - G(z_a, 0),
- lesion fidelity: share of |x_pos - x_neg| inside the image's own boxes, and inside another
  positive's boxes (control),

next to the relevance mass of Grad-CAM and IG (own and shuffled boxes) on the same test
positives, explained and scored as the audit does (bench._pipeline.explain_and_score).

    .venv/bin/python -m bench.train_gan --quick          # ~3 min smoke run
    .venv/bin/python -m bench.train_gan                  # 4 x 10 min + classifier, 2 CPU cores

Writes bench/results/train_gan.json (``--out``) and prints one table row per variant.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from bench._args import classifier_flags, device_flags, gan_flags
from bench._common import gan_variant
from bench._pipeline import explain_and_score

VARIANTS = {
    "published-unconditional": dict(generator="published", discriminator="unconditional"),
    "published-projection": dict(generator="published", discriminator="projection"),
    "local-unconditional": dict(generator="local", discriminator="unconditional"),
    "local-projection": dict(generator="local", discriminator="projection"),
}
OUT = Path(__file__).parent / "results" / "train_gan.json"


def _cohort(url: str, n: int, size: int, seed: int) -> str:
    from medxgan import phantoms
    from medxgan.cohort.writer import CohortWriter
    from medxgan.storage import Store

    store = Store(url)
    m = store.read_manifest()
    if m is not None and m["counts"]["images"] == n and m.get("image_size") == [size, size]:
        return url
    w = CohortWriter(store, source="phantom-cxr")
    for im in phantoms.generate("phantom-cxr", n, size=size, seed=seed):
        w.add(im)
    w.close({"phantom": {"kind": "phantom-cxr", "n": n, "size": size, "seed": seed}})
    return url


def _baselines(f, cohort, n: int, device: str) -> dict:
    """Relevance mass of Grad-CAM and IG, own and shuffled boxes (the audit's run-wide
    partners), on the first ``n`` test positives with boxes (the ones ``load_heldout`` takes)."""
    ids: list[str] = []
    for b in cohort.iter_batches(256, split="test", labels=[1]):
        ids += [i for i, bx in zip(b.image_ids, b.boxes) if len(bx)]
        if len(ids) >= n:
            break
    out = {}
    for method in ("gradcam", "ig"):
        try:
            s, _ = explain_and_score(cohort, f, None, ids[:n], [method], faithfulness=False,
                                     device=device)
            mean = s.groupby("metric")["value"].mean()
            out[method] = {"mass": float(mean["relevance_mass"]),
                           "mass_shuffled": float(mean["relevance_mass_shuffled"])}
        except Exception as exc:  # noqa: BLE001 - the baseline is context, not the subject
            out[method] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[
        gan_flags(variant=False), device_flags(threads=1), classifier_flags(
            folder=True, folder_help="folder of an already trained classifier "
                                     "(train_classifier output)")])
    ap.add_argument("--quick", action="store_true", help="small cohort, 30 s per variant")
    ap.add_argument("--work", default="/tmp/medxgan-bench/train_gan", help="store folder")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/"
                    "train_gan.json, train_gan_quick.json with --quick)")
    ap.add_argument("--minutes", type=float, default=None, help="training minutes per variant")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ap.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    ap.add_argument("--lambda-mask", type=float, default=1.0, help="local mask-size prior weight")
    ap.add_argument("--cls-shift-px", type=float, default=0.0,
                    help="classifier loss on randomly shifted generated images (px)")
    ap.add_argument("--cls-noise", type=float, default=0.0,
                    help="classifier loss on generated images plus N(0, s^2) noise")
    ap.add_argument("--batch", type=int, default=32, help="GAN batch")
    ap.add_argument("--local-frame", type=int, default=6, help="local: border px without residual")
    ap.add_argument("--n-test", type=int, default=100, help="test positives scored")
    ap.add_argument("--health-heldout", type=int, default=24,
                    help="val positives inverted at each checkpoint (and half as many negatives)")
    args = ap.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(args.threads)
    args.out = args.out or str(OUT.with_name("train_gan_quick.json") if args.quick else OUT)

    from medxgan.cohort.reader import Cohort
    from medxgan.classifiers import load_classifier
    from medxgan.generators.published.health import agreement, change_similarity, inversion_health
    from medxgan.classifiers.train import train_classifier
    from medxgan.config.models import ClassifierTrainConfig, GanTrainConfig
    from medxgan.cohort.loading import load_heldout
    from medxgan.generators import load_generator, train_gan
    from medxgan.storage import Store

    work = Path(args.work) / ("quick" if args.quick else "full")
    n_images = 600 if args.quick else 5720          # 70 % train split: ~4000 train images
    minutes = args.minutes or (0.5 if args.quick else 10.0)
    t0 = time.perf_counter()
    cohort_url = _cohort(str(work / "cohort"), n_images, 64, seed=0)
    cohort = Cohort(cohort_url)
    print(f"cohort {cohort.manifest['counts']['by_split']} in {time.perf_counter() - t0:.0f} s",
          flush=True)

    clf_url = args.classifier or str(work / f"classifier-{args.arch}")
    if Store(clf_url).exists("spec.yaml"):
        clf_metrics = Store(clf_url).read_json("metrics.json")
    else:
        clf_metrics = train_classifier(cohort_url, clf_url, ClassifierTrainConfig(
            arch=args.arch, epochs=args.epochs or (2 if args.quick else 14), batch=64,
            max_lr=2e-3,
            flips="horizontal", device="cpu"))
    print(f"classifier test {clf_metrics['test']}  ({clf_metrics['train_seconds']} s)", flush=True)
    f = load_classifier(f"{clf_url}/spec.yaml").to(args.device)

    held_test = load_heldout(cohort, 64, args.n_test, "test").to(args.device)
    results = {"command": " ".join(sys.argv), "host": platform.node(),
               "torch": torch.__version__, "threads": args.threads,
               "minutes_per_variant": minutes, "cohort": cohort.manifest["counts"],
               "classifier": {k: clf_metrics.get(k)
                              for k in ("arch", "val", "test", "train_seconds", "config")},
               "baselines_test": _baselines(f, cohort, args.n_test, args.device),
               "variants": {}}
    print("baselines", json.dumps(results["baselines_test"]), flush=True)

    for name in args.variants.split(","):
        local = VARIANTS[name]["generator"] == "local"
        if args.lambda_d_cls and VARIANTS[name]["discriminator"] != "projection":
            continue
        gc = gan_variant(**VARIANTS[name], size=64, g_width=args.g_width, d_width=args.d_width,
                         local_frame=args.local_frame)
        tc = GanTrainConfig(lambda_cls=2.0, batch=args.batch, steps=10**6, seed=0,
                            device=args.device, lambda_d_cls=args.lambda_d_cls,
                            cls_shift_px=args.cls_shift_px, cls_noise=args.cls_noise,
                            checkpoint_every=args.checkpoint_every,
                            lambda_min_change=args.lambda_min_change,
                            lambda_mask=args.lambda_mask if local else 0.0,
                            health_heldout=args.health_heldout, time_limit_s=minutes * 60)
        tag = f"-minchange{args.lambda_min_change:g}" if args.lambda_min_change else ""
        tag += f"-dcls{args.lambda_d_cls:g}" if args.lambda_d_cls else ""
        tag += f"-shift{args.cls_shift_px:g}" if args.cls_shift_px else ""
        tag += f"-noise{args.cls_noise:g}" if args.cls_noise else ""
        tag += f"-g{args.g_width:g}-d{args.d_width:g}" if (args.g_width, args.d_width) != (0.25, 0.5) \
            else ""
        tag += f"-{args.device}" if args.device != "cpu" else ""
        out_url = str(work / "gan" / f"{name}{tag}")
        Store(out_url).delete("")
        t = time.perf_counter()
        last = {}
        summary = train_gan(cohort_url, f, out_url, gc, tc,
                            progress=lambda s, d: last.update(step=s, **d))
        train_s = time.perf_counter() - t
        G, meta = load_generator(out_url)
        G = G.to(args.device)
        t = time.perf_counter()
        neg, pos = agreement(G, f, 1000, seed=10)
        test = {"agree_neg": neg, "agree_pos": pos,
                "change_similarity": change_similarity(G, 64, seed=11),
                **inversion_health(G, f, held_test, steps=50, seed=12)}
        row = {"gan_config": gc.model_dump(mode="json"), "train_config": tc.model_dump(mode="json"),
               "steps": summary["steps"], "train_seconds": round(train_s, 1),
               "s_per_step": round(train_s / max(summary["steps"], 1), 3),
               "best_step": meta["step"], "best_val_health": meta["health"],
               "last_val_health": summary["last_health"], "test": test,
               "eval_seconds": round(time.perf_counter() - t, 1)}
        results["variants"][name + tag] = row
        print(f"{name + tag:24s} steps {row['steps']:5d} best@{row['best_step']:5d}  agree "
              f"{neg:.2f}/{pos:.2f}  mse {test['recon_mse']:.4f}  sim "
              f"{test['change_similarity']:.2f}  fidelity {test['fidelity']:.3f} / shuffled "
              f"{test['fidelity_shuffled']:.3f}  (n={test['n_fidelity']})", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=_nan))
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(results, indent=2, default=_nan))
    print(f"wrote {args.out} in {results['total_seconds']} s")


def _nan(x):
    return None if isinstance(x, float) and math.isnan(x) else str(x)


if __name__ == "__main__":
    main()
