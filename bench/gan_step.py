"""GAN training step on CPU, before and after the profiled fix, side by side in one run.

Profiling one step of the published medXGAN (G width 0.25, D width 0.5, batch 32, 64 px,
small_cnn2 classifier, 1 torch thread) with ``torch.profiler`` put ``aten::bernoulli_`` (the
discriminator's six Dropout(0.5) layers, three D passes per step) at 15 % of CPU time, behind
the convolutions. :class:`medxgan.generators.published.gan.FastDropout` draws the same inverted-dropout mask
from random bits. This script times ``train_gan._step`` with the discriminator's dropout as
``nn.Dropout`` ("before") and as ``FastDropout`` ("after"), alternating rounds so both see
the same machine load, for the published and the local generator.

    .venv/bin/python -m bench.gan_step --quick     # ~30 s
    .venv/bin/python -m bench.gan_step             # 5 rounds x 20 steps per setting

Prints one line per generator and last ``gan_step_speedup=<x>`` (published generator, median
round time before / after). Writes bench/results/gan_step.json (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from bench._common import RESULTS, gan_variant, phantom_tensors, quick_classifier, write_results

OUT = RESULTS / "gan_step.json"


def _swap_dropout(D: nn.Module, fast: bool) -> None:
    from medxgan.generators.published.gan import FastDropout
    for name, m in list(D.phi.named_children()):
        if isinstance(m, (nn.Dropout, FastDropout)):
            D.phi._modules[name] = FastDropout(m.p) if fast else nn.Dropout(m.p)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds x 3 steps, 32 px")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per setting (5)")
    ap.add_argument("--steps", type=int, default=None, help="steps per round (20)")
    ap.add_argument("--size", type=int, default=None, help="image side (64; quick 32)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    q = args.quick
    rounds = args.rounds or (2 if q else 5)
    steps = args.steps or (3 if q else 20)
    size = args.size or (32 if q else 64)
    torch.set_num_threads(args.threads)

    from medxgan.cohort.loading import TrainData
    from medxgan.config.models import GanTrainConfig
    from medxgan.generators.published.train import _step, new_state

    x, y = phantom_tensors("phantom-cxr", 256 if q else 1024, size=size, seed=0)
    f = quick_classifier(x, y, epochs=1)
    f.requires_grad_(False)
    data = TrainData(x, y)
    res: dict = {"bench": "gan_step", "config": vars(args), "generators": {}}
    for gen in ("published", "local"):
        local = gen == "local"
        gc = gan_variant(gen, size=size)
        tc = GanTrainConfig(batch=args.batch, device="cpu", lambda_mask=1.0 if local else 0.0)
        times: dict[str, list[float]] = {"before": [], "after": []}
        states = {}
        for which in ("before", "after"):
            states[which] = new_state(gc, tc, "cpu")
            _swap_dropout(states[which].D, fast=which == "after")
            _step(states[which], f, data, tc)                          # warm-up
        for _ in range(rounds):
            for which in ("before", "after"):
                st = states[which]
                t = time.perf_counter()
                for _ in range(steps):
                    _step(st, f, data, tc)
                    st.step += 1
                times[which].append((time.perf_counter() - t) / steps)
        b, a = statistics.median(times["before"]), statistics.median(times["after"])
        res["generators"][gen] = {"s_per_step_before": b, "s_per_step_after": a,
                                  "speedup": b / a, "rounds": times}
        print(f"{gen:10s} s/step before {b:.3f}  after {a:.3f}  speedup {b / a:.2f}x", flush=True)
    write_results(args.out, res)
    print(f"gan_step_speedup={res['generators']['published']['speedup']:.3f}")
    return res


if __name__ == "__main__":
    main()
