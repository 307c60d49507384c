"""Time linear and memory flat in cohort size: ingest -> Grad-CAM -> localisation metrics.

For each cohort size (full: 1k, 4k, 16k images; ``--quick``: 200, 400, 800) a **fresh
subprocess** renders 32 px phantom-cxr images (medxgan.phantoms), writes them as a cohort
(medxgan.cohort.CohortWriter, parts of 512), then streams the cohort back batch by batch
(Cohort.iter_batches), explains every image with Grad-CAM (the
classifier is a SmallCNN trained for a few epochs in the parent on the smallest size's
images and loaded by every child) and scores every localisation metric, own and shuffled, as
the audit does (medxgan.explain.explain_batch, medxgan.metrics.score_batch without faithfulness,
partners by medxgan.metrics.shuffle_partners over the whole cohort). Only running sums
of the scores are kept, never the maps of more than one batch. The child reports its wall time
per stage and its peak RSS (VmHWM), so memory is measured per size.

    .venv/bin/python -m bench.scale --quick     # ~20 s on 2 CPU cores
    .venv/bin/python -m bench.scale             # 1k, 4k, 16k: a few minutes

Writes bench/results/scale.json (``--out``); the last line printed is
``time_ratio_16k_1k=<t> rss_ratio_16k_1k=<m>`` (largest over smallest size; targets:
time <= 20 for 16x the images, memory <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import RESULTS, write_results

OUT = RESULTS / "scale.json"
FULL = (1000, 4000, 16000)
QUICK = (200, 400, 800)


def _child(n: int, size: int, batch: int, threads: int, seed: int, weights: str) -> dict:
    """Ingest, explain and score ``n`` images in this process; figures as a dict."""
    import math

    import torch

    from bench._common import peak_rss_mib, random_classifier, write_phantom_cohort
    from medxgan.cohort import Cohort
    from medxgan.explain import explain_batch
    from medxgan.metrics import partner_masks, score_batch, shuffle_partners
    from medxgan.metrics.masks import boxes_to_masks

    torch.set_num_threads(threads)
    rss0 = peak_rss_mib()
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        t0 = time.perf_counter()
        write_phantom_cohort(f"{tmp}/cohort", "phantom-cxr", n, size=size, seed=seed)
        t1 = time.perf_counter()
        rss_ingest = peak_rss_mib()
        f = random_classifier(seed, size)
        f.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        cohort = Cohort(f"{tmp}/cohort")
        boxes = cohort.boxes_by_id()
        partners = shuffle_partners(cohort.index()["image_id"].to_pylist(), boxes, seed)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        n_seen = t_explain = t_metrics = 0.0
        for b in cohort.iter_batches(batch):
            s = time.perf_counter()
            maps = explain_batch(b.images, f, None, ["gradcam"], {},
                                 ids=b.image_ids)["gradcam"].maps  # (B, H, W)
            s2 = time.perf_counter()
            H, W = maps.shape[-2:]
            hw = tuple(b.images.shape[-2:])
            masks = boxes_to_masks(b.boxes, H, W, image_size=hw)
            others = partner_masks(b.image_ids, partners, boxes, H, W, hw)
            scores = score_batch(maps, masks, others, f, b.images, {"faithfulness": False},
                                 method="gradcam", ids=b.image_ids)
            for name, v in scores.groupby("metric", sort=False)["value"]:
                ok = v.notna()
                sums[name] = sums.get(name, 0.0) + float(v[ok].sum())
                counts[name] = counts.get(name, 0) + int(ok.sum())
            t_explain += s2 - s
            t_metrics += time.perf_counter() - s2
            n_seen += len(b)
        t2 = time.perf_counter()
    means = {k: (sums[k] / counts[k] if counts[k] else math.nan) for k in sums}
    return {"n": n, "n_streamed": int(n_seen), "ingest_s": t1 - t0, "stream_s": t2 - t1,
            "explain_s": t_explain, "metrics_s": t_metrics, "total_s": t2 - t0,
            "peak_rss_mib": peak_rss_mib(), "rss_after_imports_mib": rss0,
            "peak_rss_after_ingest_mib": rss_ingest,
            "n_scored_positive": counts.get("pointing_game", 0), "means": means}


def _run_size(n: int, args: argparse.Namespace, weights: str) -> dict:
    cmd = [sys.executable, "-m", "bench.scale", "--_child", str(n), "--weights", weights,
           "--size", str(args.size),
           "--batch", str(args.batch), "--threads", str(args.threads), "--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])  # the repository root
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes 200, 400, 800 (~20 s)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="cohort sizes (default 1000 4000 16000; quick 200 400 800)")
    ap.add_argument("--size", type=int, default=32, help="image side (px)")
    ap.add_argument("--batch", type=int, default=256, help="images per streamed batch")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads in each child")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT, help="JSON results path")
    ap.add_argument("--epochs", type=int, default=None, help="classifier epochs (3; quick 1)")
    ap.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child is not None:
        print(json.dumps(_child(args._child, args.size, args.batch, args.threads, args.seed,
                                args.weights)))
        return {}
    sizes = sorted(args.sizes or (QUICK if args.quick else FULL))
    if args.epochs is None:
        args.epochs = 1 if args.quick else 3
    import torch

    from bench._common import phantom_tensors, quick_classifier
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    x, y = phantom_tensors("phantom-cxr", sizes[0], size=args.size, seed=args.seed + 1)
    f = quick_classifier(x, y, epochs=args.epochs, seed=args.seed)
    with torch.no_grad():
        acc = float(((f(x) > 0).long() == y).float().mean())
    print(f"classifier: SmallCNN, {args.epochs} epochs on {sizes[0]} images "
          f"({time.perf_counter() - t:.1f} s, train accuracy {acc:.2f})")
    tmp = tempfile.TemporaryDirectory(prefix="scale-w-")
    weights = f"{tmp.name}/f.pt"
    torch.save(f.model.state_dict(), weights)
    rows = []
    print(f"{'images':>7} {'ingest s':>9} {'explain s':>9} {'metrics s':>9} {'total s':>8} "
          f"{'img/s':>7} {'peak RSS MiB':>12}")
    for n in sizes:
        r = _run_size(n, args, weights)
        rows.append(r)
        print(f"{n:>7} {r['ingest_s']:>9.2f} {r['explain_s']:>9.2f} {r['metrics_s']:>9.2f} "
              f"{r['total_s']:>8.2f} {n / r['total_s']:>7.0f} {r['peak_rss_mib']:>12.0f}")
    tmp.cleanup()
    lo, hi = rows[0], rows[-1]
    t_ratio = hi["total_s"] / lo["total_s"]
    m_ratio = hi["peak_rss_mib"] / lo["peak_rss_mib"]
    res = {"bench": "scale", "config": {k: v for k, v in vars(args).items() if k != "_child"},
           "classifier": {"arch": "SmallCNN 16/32/64", "epochs": args.epochs,
                          "train_images": sizes[0], "train_accuracy": acc},
           "sizes": sizes, "rows": rows, "images_ratio": hi["n"] / lo["n"],
           "time_ratio": t_ratio, "rss_ratio": m_ratio,
           "targets": {"time_ratio_max": 20 * (hi["n"] / lo["n"]) / 16, "rss_ratio_max": 1.3}}
    write_results(args.out, res)
    print(f"time_ratio_16k_1k={t_ratio:.3f} rss_ratio_16k_1k={m_ratio:.3f}")
    return res


if __name__ == "__main__":
    main()
