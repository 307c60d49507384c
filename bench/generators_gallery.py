"""A picture of a trained family's counterfactuals on held-out positives (issue #14): per row
image | generated twin x_neg | true healthy twin | |x - x_neg| | boxes, with per-image numbers.

Reads what ``bench.generators`` left in its work folder (cohort, classifier f as the bench
picks it under its default AUROC floor, generator of
``--family`` / ``--dataset`` / ``--seed`` / ``--minutes``), takes the first ``--n`` test
positives with boxes that f calls positive (the bench's own selection) and computes their
counterfactuals with the generator's own ``counterfactual`` (inpaint) as ``medxgan`` does.

    .venv/bin/python -m bench.generators_gallery --dataset phantom-cxr --seed 0

    .venv/bin/python -m bench.generators_gallery --dataset phantom-brain --size 128 \
        --inpaint '{steps: 2000, seconds: null}' --search '{support: true}'

``--size`` and ``--inpaint`` name the bench run (its folder), ``--search`` replaces the loaded
in-filler's search as ``bench.generators --search`` does. Writes a PNG (``--out``, default
bench/results/gallery_<family>_<dataset>_s<seed>[_<size>px].png; each tile enlarged to about
256 px, boxes drawn in the last column) and prints one line per image: f's
probability before / after, in-filled area, share of box pixels in-filled, NCC of the change
with the true change, mean |x_neg - twin| inside the boxes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from skimage.segmentation import find_boundaries

from bench._common import RESULTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="inpaint", choices=["inpaint"])
    ap.add_argument("--dataset", default="phantom-cxr", choices=["phantom-cxr", "phantom-brain"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="the bench run's image side (px)")
    ap.add_argument("--inpaint", default=None,
                    help="the bench run's --inpaint options (YAML), which name its folder")
    ap.add_argument("--search", default=None,
                    help="SearchConfig fields (YAML) applied to the loaded in-filler, as "
                         "bench.generators --search does")
    ap.add_argument("--work", default="/tmp/medxgan-bench/generators/full")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from bench.generators import (AUROC_FLOOR, EPOCHS, _called_positive_ids, _classifier,
                                  run_tag, trained_for)
    from medxgan.cohort.png import encode_png, from_unit
    from medxgan.cohort.reader import Cohort
    from medxgan.metrics.counterfactual import counterfactual_ncc
    from medxgan.metrics.masks import boxes_to_masks
    from medxgan.generators import load_generator
    from medxgan.phantoms import true_twins

    import yaml

    from medxgan.config.inpaint import SearchConfig

    work = Path(args.work)
    c = str(work / f"cohort-{args.dataset}-{args.size}-n1200-s{args.seed}")
    cohort = Cohort(c)
    f, _ = _classifier(c, f"{c}-clf-small_cnn2-s{args.seed}", "small_cnn2", EPOCHS, args.seed,
                       "cpu", AUROC_FLOOR)  # the bench's f: its epochs under the AUROC floor
    tag = run_tag(yaml.safe_load(args.inpaint) if args.inpaint else None)
    gen = str(work / f"gen-{args.family}-{args.dataset}-{args.size}px-s{args.seed}-"
              f"{args.minutes:g}m{tag}")
    if not trained_for(gen, f):
        raise SystemExit(f"{gen}: trained for another classifier than the bench's f; run "
                         "bench.generators with the same options first")
    G, _ = load_generator(gen)
    if args.search:
        G.search = SearchConfig.model_validate(yaml.safe_load(args.search))
    ids, _ = _called_positive_ids(cohort, f, args.n, "cpu")
    b = cohort.load(ids)
    x = b.images                                                        # (n, 1, S, S)
    res = G.counterfactual(x, f)
    tw = true_twins(cohort, ids)
    S = x.shape[-1]
    m = boxes_to_masks(b.boxes, S, S, (S, S)).bool()                   # (n, S, S)
    change = (x - res.x_neg)[:, 0]
    ncc = counterfactual_ncc(change, (x - tw)[:, 0])
    rows = []
    for i, iid in enumerate(ids):
        mi, maski = m[i], res.mask[i, 0]
        cov = float((maski & mi).sum() / mi.sum().clamp_min(1))
        l1 = float(((res.x_neg[i, 0] - tw[i, 0]).abs() * mi).sum() / mi.sum().clamp_min(1))
        print(f"{iid}: p {float(res.p_x[i]):.2f} -> {float(res.p_neg[i]):.2f}, area "
              f"{float(res.area[i]):.3f}, box pixels in-filled {cov:.2f}, NCC "
              f"{float(ncc[i]):.2f}, in-box |x_neg - twin| {l1:.3f}")
        d = change[i].abs()
        d = (d / d.max().clamp_min(1e-6)).numpy()
        boxes = x[i, 0].numpy().copy()
        boxes[find_boundaries(mi.numpy(), mode="inner")] = 1.0        # the boxes' outlines
        tiles = [x[i, 0].numpy(), res.x_neg[i, 0].numpy(), tw[i, 0].numpy(), d, boxes]
        rows.append(np.concatenate([np.pad(t, 1, constant_values=1.0) for t in tiles], 1))
    k = max(1, 256 // S)                                               # enlargement
    grid = np.concatenate(rows, 0).repeat(k, 0).repeat(k, 1)
    out = args.out or RESULTS / (f"gallery_{args.family}_{args.dataset}_s{args.seed}"
                                 f"{'' if args.size == 64 else f'_{args.size}px'}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encode_png(from_unit(np.clip(grid, 0, 1))))
    print(f"wrote {out} (columns: image | generated twin | true twin | |change| | boxes)")


if __name__ == "__main__":
    main()
