"""Localisation metrics: ours (batched torch, float64) vs Quantus 0.6 on identical inputs.

Inputs: N random non-negative maps (H x W, float64) and random box masks (one to three
boxes per image, about 10 % of images without boxes). Both sides score the same four
metrics that Quantus has: pointing game, relevance mass, relevance rank, AUROC
(Quantus: PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy, AUC, with
normalise=False). Our full set (six metrics) is timed too.

    .venv/bin/python -m bench.metrics_speed            # 512 maps of 128 x 128
    .venv/bin/python -m bench.metrics_speed --quick    # 64 maps of 64 x 64

Prints wall and CPU times and, last, ``speedup=<x> max_abs_diff=<d>``: x = CPU time of
Quantus on its four metrics / CPU time of our ``localization_scores`` (all six metrics, one
call, as the score flow uses it; CPU time because the machine may be shared), d = largest
|ours - Quantus| where both are defined. The per-function ratio (our four metrics called
one by one) and wall-clock ratios are printed and saved too. Writes
bench/results/metrics_speed.json (--quick: metrics_speed_quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from medxgan.metrics import partner_masks, score_batch, shuffle_partners
from medxgan.metrics.localization import LOCALIZATION_METRICS, localization_scores

SHARED = {
    "pointing_game": "PointingGame",
    "relevance_mass": "RelevanceMassAccuracy",
    "relevance_rank": "RelevanceRankAccuracy",
    "auroc": "AUC",
}


def make_inputs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(n, size, size) float64 maps in [0, 1) (smooth plus noise), bool box masks, and the
    boxes by id (ids ``"0"``, ``"1"``, ...; (k, 4) ``x0, y0, x1, y1`` in map pixels)."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, size, size, generator=g, dtype=torch.float64)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    boxes: dict[str, np.ndarray] = {}
    for i in range(n):
        if torch.rand(1, generator=g).item() < 0.1:
            continue  # no boxes
        bs = []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            h, w = torch.randint(size // 16, size // 3, (2,), generator=g).tolist()
            y0, x0 = torch.randint(0, size - 1, (2,), generator=g).tolist()
            masks[i, y0 : y0 + h, x0 : x0 + w] = True  # boxes may run off the edge: clipped
            maps[i, y0 : y0 + h, x0 : x0 + w] += 0.3 * torch.rand(1, generator=g).item()
            bs.append([x0, y0, x0 + w, y0 + h])
        boxes[str(i)] = np.asarray(bs, np.float32)
    return maps, masks, boxes


def run_score_batch(maps, masks, boxes):
    """The score stage's localisation part (``score_batch`` without faithfulness): own boxes
    and the run-wide partner's (``shuffle_partners``), as long-form rows."""
    ids = [str(i) for i in range(len(maps))]
    partners = shuffle_partners(ids, boxes, seed=0)
    others = partner_masks(ids, partners, boxes, *maps.shape[1:])
    return score_batch(maps, masks, others, None, None, {"faithfulness": False}, method="m",
                       ids=ids)


def run_ours(maps, masks, names):
    return {k: LOCALIZATION_METRICS[k](maps, masks) for k in names}


def run_quantus(maps, masks):
    import quantus

    a = maps.numpy()[:, None]
    s = masks.numpy()[:, None].astype(np.float64)
    x = np.zeros_like(a)
    y = np.zeros(len(a), dtype=int)
    out = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for ours, cls in SHARED.items():
            m = getattr(quantus, cls)(normalise=False, disable_warnings=True, display_progressbar=False)
            r = m(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True)
            out[ours] = np.asarray(r, dtype=np.float64)
    return out


def best_time(fn, reps):
    """Best (wall, cpu) seconds over ``reps`` calls and the last result. CPU time is the
    process's, which on a shared machine is the fairer measure of work (all torch work
    runs on ``--threads`` threads; Quantus's numpy/sklearn work is single-threaded)."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return (wall, cpu), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="64 maps of 64 x 64 (under 2 minutes)")
    p.add_argument("--n", type=int, default=None, help="number of maps (default 512, quick 64)")
    p.add_argument("--size", type=int, default=None, help="map side in pixels (default 128, quick 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (Quantus/numpy sorts are single-threaded)")
    p.add_argument("--out", default=None, help="JSON output (default bench/results/metrics_speed[_quick].json)")
    args = p.parse_args()
    out_name = "metrics_speed_quick.json" if args.quick else "metrics_speed.json"
    args.out = args.out or str(Path(__file__).parent / "results" / out_name)
    n = args.n or (64 if args.quick else 512)
    size = args.size or (64 if args.quick else 128)
    torch.set_num_threads(args.threads)
    maps, masks, boxes = make_inputs(n, size, args.seed)
    import quantus  # noqa: F401  (import time not counted)

    run_ours(maps[:2], masks[:2], list(LOCALIZATION_METRICS))  # warm-up
    t_sep, ours = best_time(lambda: run_ours(maps, masks, list(SHARED)), 3)
    t_set, _ = best_time(lambda: localization_scores(maps, masks), 3)
    t_sh, _ = best_time(lambda: run_score_batch(maps, masks, boxes), 3)
    t_q, q = best_time(lambda: run_quantus(maps, masks), 1 if not args.quick else 2)

    per_metric = {}
    max_diff = 0.0
    for k in SHARED:
        o = ours[k].numpy()
        both = ~np.isnan(o) & ~np.isnan(q[k])
        d = float(np.max(np.abs(o[both] - q[k][both]))) if both.any() else float("nan")
        max_diff = max(max_diff, d)
        per_metric[k] = {
            "max_abs_diff": d,
            "both_defined": int(both.sum()),
            "defined_only_by_quantus": int((np.isnan(o) & ~np.isnan(q[k])).sum()),
        }
    speedup = t_q[1] / t_set[1]  # CPU time: Quantus's 4 metrics vs our whole set of 6
    result = {
        "n_maps": n,
        "size": size,
        "seed": args.seed,
        "wall_s": {"ours_set6": t_set[0], "ours_set6_with_shuffled": t_sh[0], "ours_4_separate": t_sep[0], "quantus_4": t_q[0]},
        "cpu_s": {"ours_set6": t_set[1], "ours_set6_with_shuffled": t_sh[1], "ours_4_separate": t_sep[1], "quantus_4": t_q[1]},
        "speedup": speedup,
        "speedup_definition": "CPU time of Quantus (4 metrics) / CPU time of localization_scores (all 6 metrics)",
        "speedup_4_separate_cpu": t_q[1] / t_sep[1],
        "speedup_set6_wall": t_q[0] / t_set[0],
        "max_abs_diff": max_diff,
        "per_metric": per_metric,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "quantus": __import__("quantus").__version__,
        "numpy": np.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{n} maps of {size}x{size}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':44s} {'wall ms':>10s} {'cpu ms':>10s}")
    for label, t in [
        ("ours: localization_scores, all 6 metrics", t_set),
        ("ours: score_batch, all 6 + _shuffled control", t_sh),
        ("ours: the 4 shared metrics, called one by one", t_sep),
        ("quantus 0.6: the 4 shared metrics", t_q),
    ]:
        print(f"{label:44s} {t[0] * 1e3:10.1f} {t[1] * 1e3:10.1f}")
    print(f"cpu speedup: set of 6 {speedup:.1f}x, 4 one by one {t_q[1] / t_sep[1]:.1f}x; wall speedup set of 6 {t_q[0] / t_set[0]:.1f}x")
    for k, v in per_metric.items():
        print(f"  {k:15s} max|diff| {v['max_abs_diff']:.3g} on {v['both_defined']} maps; "
              f"defined only by Quantus (empty mask counted as a hit): {v['defined_only_by_quantus']}")
    print(f"speedup={speedup:.1f} max_abs_diff={max_diff:.3g}")


if __name__ == "__main__":
    main()
