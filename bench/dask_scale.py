"""Explain-stage throughput with the local runner, 1 and 2 Dask workers.

One 32 px phantom-cxr cohort and one SmallCNN classifier (a few epochs, ClassifierSpec
``small_cnn``) are written to a temporary store; then ``flows.explain.explain_flow`` explains
the same positives with Grad-CAM and IG three times, each into a fresh run folder, under the
task runners of ``flows.audit.task_runner``: ``local`` (one thread), ``dask`` with 1 worker and
``dask`` with 2 workers. The Dask LocalCluster (single-threaded worker processes, as
``task_runner('dask', workers=n)`` builds it) is started here with 1 worker, scaled to 2 for the
last run, and warmed (workers import torch
and the library) before the flow runs against its address (``task_runner('dask', address)``),
so throughput = images / flow wall time is the steady state; the cluster's start-up is timed
and reported separately (``cluster_start_s``). Every process runs torch with one thread
(OMP_NUM_THREADS=1), so 2 workers can use 2 cores.

Prefect runs on a temporary ephemeral server (prefect_test_harness, PREFECT_HOME in a temp
folder), so no user database is touched.

    .venv/bin/python -m bench.dask_scale --quick    # ~40 s on 2 CPU cores
    .venv/bin/python -m bench.dask_scale            # 512 images, IG 50 steps: a few minutes

Writes bench/results/dask_scale.json (``--out``); the last line printed is
``dask_speedup_2w=<x>`` (2 workers over 1 worker, images/s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: workers inherit it

from bench._common import RESULTS, write_results  # noqa: E402  (after OMP_NUM_THREADS)

OUT = RESULTS / "dask_scale.json"


def _setup(tmp: str, args: argparse.Namespace) -> tuple[str, str]:
    """Cohort and classifier spec in ``tmp``; returns (cohort URL, spec YAML path)."""
    import torch

    from bench._common import phantom_tensors, quick_classifier, write_phantom_cohort
    from medxgan.config.classifier import ClassifierSpec
    cohort = f"{tmp}/cohort"
    write_phantom_cohort(cohort, "phantom-cxr", 2 * args.n + 16, size=args.size, seed=args.seed)
    x, y = phantom_tensors("phantom-cxr", 256, size=args.size, seed=args.seed + 1)
    f = quick_classifier(x, y, epochs=2, seed=args.seed)
    torch.save(f.model.state_dict(), f"{tmp}/f.pt")
    spec = ClassifierSpec(kind="small_cnn", path=f"{tmp}/f.pt", input_size=args.size)
    Path(f"{tmp}/f.yaml").write_text(spec.to_yaml())
    return cohort, f"{tmp}/f.yaml"


def _warm(client) -> None:
    import importlib

    def _imports() -> None:
        for m in ("torch", "captum.attr", "medxgan.explain.gradcam", "medxgan.explain.ig",
                  "medxgan.cohort.reader", "tasks.explain"):
            importlib.import_module(m)

    client.run(_imports)


def _explain(explain_flow, runner, cohort: str, spec: str, run: str, args) -> tuple[dict, float]:
    t = time.perf_counter()
    man = explain_flow.with_options(task_runner=runner)(
        cohort=cohort, classifier=spec, run=run, methods=["gradcam", "ig"], split=None,
        labels=[1], max_images=args.n, shard_size=args.shard_size,
        options={"ig": {"n_steps": args.ig_steps}})
    return man, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 images, IG 8 steps (~40 s)")
    ap.add_argument("--n", type=int, default=None, help="positives explained (512; quick 32)")
    ap.add_argument("--shard-size", type=int, default=None, help="images per shard (32; quick 8)")
    ap.add_argument("--ig-steps", type=int, default=None, help="IG steps (50; quick 8)")
    ap.add_argument("--size", type=int, default=32, help="image side (px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT, help="JSON results path")
    args = ap.parse_args(argv)
    q = args.quick
    for k, v in dict(n=(32 if q else 512), shard_size=(8 if q else 32),
                     ig_steps=(8 if q else 50)).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    t0 = time.perf_counter()
    prefect_home = tempfile.TemporaryDirectory(prefix="dask-scale-prefect-")
    os.environ["PREFECT_HOME"] = prefect_home.name
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.pop("PREFECT_API_URL", None)
    from prefect.testing.utilities import prefect_test_harness

    from flows.audit import task_runner
    from flows.explain import explain_flow

    import logging

    from distributed import Client, LocalCluster
    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.core"):
        logging.getLogger(name).setLevel(logging.ERROR)
    methods = ["gradcam", "ig"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dask-scale-") as tmp, \
            prefect_test_harness(server_startup_timeout=300):
        print(f"prefect harness up: {time.perf_counter() - t0:.1f} s", flush=True)
        cohort, spec = _setup(tmp, args)
        print(f"cohort and classifier: {time.perf_counter() - t0:.1f} s", flush=True)
        cluster = None
        try:
            for name, workers in (("local", 0), ("dask-1w", 1), ("dask-2w", 2)):
                start_s = 0.0
                if workers:
                    t = time.perf_counter()
                    if cluster is None:
                        cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                               processes=True, dashboard_address=None,
                                               silence_logs=logging.ERROR)
                    else:
                        cluster.scale(workers)  # same cluster, one more worker
                    with Client(cluster) as client:
                        client.wait_for_workers(workers)
                        _warm(client)
                    start_s = time.perf_counter() - t
                    runner = task_runner("dask", cluster.scheduler_address)
                else:
                    runner = task_runner("local")
                man, dt = _explain(explain_flow, runner, cohort, spec, f"{tmp}/run-{name}",
                                   args)
                n = len(man["image_ids"])
                rows.append({"runner": name, "workers": max(workers, 1), "images": n,
                             "shards": man["n_shards"], "wall_s": dt, "images_per_s": n / dt,
                             "cluster_start_s": start_s})
                print(f"{name:>8}: {n} images, {man['n_shards']} shards, {dt:7.2f} s, "
                      f"{n / dt:7.2f} images/s (cluster start/scale {start_s:.1f} s)",
                      flush=True)
        finally:
            if cluster is not None:
                cluster.close()
    print(f"total: {time.perf_counter() - t0:.1f} s", flush=True)
    prefect_home.cleanup()
    by = {r["runner"]: r for r in rows}
    speedup = by["dask-2w"]["images_per_s"] / by["dask-1w"]["images_per_s"]
    res = {"bench": "dask_scale", "config": vars(args), "methods": methods, "rows": rows,
           "dask_speedup_2w": speedup,
           "dask_1w_over_local": by["dask-1w"]["images_per_s"] / by["local"]["images_per_s"],
           "note": "flow wall time on a warmed cluster; cluster start timed separately"}
    write_results(args.out, res)
    print(f"dask_speedup_2w={speedup:.3f}")
    return res


if __name__ == "__main__":
    main()
