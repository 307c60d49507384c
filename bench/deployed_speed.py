"""Images per second of a deployed-size classifier: ``check-classifier`` and explain with
Grad-CAM and IG for TorchXRayVision's DenseNet-121 at 224 px (issue #16).

The classifier is what an audit loads: a ``kind: torchxrayvision`` spec
(``densenet121-res224-all``, ``preset: torchxrayvision``: 224 px, [-1024, 1024], centre crop;
18 sigmoid outputs, ``finding: Pneumonia``) over weights built here with ``weights=None`` and
saved to a file (no download; speed does not depend on the weight values). Images come from a
phantom-cxr cohort stored at ``--size`` px (default 256: the generator's size differs from the
classifier's 224, item 6 of the issue). Timed through the product's code:

- ``check``: :func:`medxgan.classifiers.check.check_classifier` (its own images/s line);
- ``gradcam``, ``ig``: :func:`medxgan.explain.explain_batch` with the audit's default options
  (Grad-CAM at the spec's default target layer; IG with its default steps and baseline) on
  ``--n`` test positives in batches of ``--batch``.

    .venv/bin/python -m bench.deployed_speed                     # ~10 min on one CPU thread
    .venv/bin/python -m bench.deployed_speed --quick             # 64 px cohort, seconds

Writes bench/results/deployed_speed.json; the last line printed is
``check_images_per_s=<a> gradcam_images_per_s=<b> ig_images_per_s=<c>``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from bench._common import RESULTS, phantom_cohort, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256, help="stored cohort side (px)")
    ap.add_argument("--n", type=int, default=8, help="test positives explained")
    ap.add_argument("--batch", type=int, default=4, help="images per explain_batch call")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--methods", default="gradcam,ig")
    ap.add_argument("--quick", action="store_true", help="64 px cohort, 2 images, no IG steps")
    ap.add_argument("--work", default="/tmp/medxgan-bench/deployed", help="store folder")
    ap.add_argument("--out", type=Path, default=RESULTS / "deployed_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchxrayvision as xrv

    from medxgan.cohort.reader import Cohort
    from medxgan.explain import explain_batch
    from medxgan.classifiers.check import check_classifier, format_check
    from medxgan.classifiers import load_classifier

    size, n = (64, 2) if args.quick else (args.size, args.n)
    work = Path(args.work) / ("quick" if args.quick else f"s{size}")
    work.mkdir(parents=True, exist_ok=True)
    cohort_url = str(work / "cohort")
    phantom_cohort(cohort_url, "phantom-cxr", 96 if args.quick else 160, size=size, seed=0)
    weights = work / "xrv-densenet121-random.pt"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(xrv.models.DenseNet(weights=None).state_dict(), weights)
    spec = work / "spec.yaml"
    spec.write_text(f"kind: torchxrayvision\narch: densenet121-res224-all\npath: {weights}\n"
                    "preset: torchxrayvision\nfinding: Pneumonia\n")

    check = check_classifier(str(spec), cohort_url, "test", max_images=32 if not args.quick else 8)
    for line in format_check(check):
        print(line, flush=True)
    f = load_classifier(str(spec)).eval()
    for p in f.parameters():
        p.requires_grad_(False)
    cohort = Cohort(cohort_url)
    ids: list[str] = []
    for b in cohort.iter_batches(64, split="test", labels=[1]):
        ids += list(b.image_ids)
    ids = ids[:n]
    methods = [m for m in args.methods.split(",") if m]
    options = {"ig": {"n_steps": 4}} if args.quick else None
    per: dict[str, float] = {}
    for m in methods:
        seconds = 0.0
        for s in range(0, len(ids), args.batch):
            part = ids[s:s + args.batch]
            x = cohort.load(part).images
            t = time.perf_counter()
            explain_batch(x, f, None, [m], options, ids=part)
            seconds += time.perf_counter() - t
        per[m] = len(ids) / seconds
        print(f"{m}: {len(ids)} images of {size} px -> 224 px in {seconds:.1f} s = "
              f"{per[m]:.3f} images/s ({args.threads} thread(s))", flush=True)
    line = {"check_images_per_s": check["images_per_s"],
            **{f"{m}_images_per_s": v for m, v in per.items()}}
    write_results(args.out, {"bench": "deployed_speed",
                             "command": " ".join(["python -m bench.deployed_speed"] + sys.argv[1:]),
                             "cohort_size": size, "classifier_input": 224, "n": len(ids),
                             "batch": args.batch, "threads": args.threads,
                             "ig_options": (options or {}).get("ig", "defaults"),
                             "check": {k: v for k, v in check.items() if not callable(v)},
                             "cpu": platform.processor() or platform.machine(), "result": line})
    print(" ".join(f"{k}={v:.4f}" for k, v in line.items()))


if __name__ == "__main__":
    main()
