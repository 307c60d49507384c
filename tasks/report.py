"""Prefect tasks of the report stage: classifier performance, provenance, history, HTML."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from medxgan.storage import Store
from tasks.explain import part_key

LIBRARIES = ("torch", "torchvision", "captum", "numpy", "pyarrow", "pandas", "pydicom",
             "scikit-image", "prefect", "s3fs")


def code_version() -> str:
    """The package version plus the git commit when running from a checkout."""
    from medxgan import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parents[1])
        if sha.returncode == 0 and sha.stdout.strip():
            return f"{__version__}+g{sha.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            pass
    return out


@task(name="evaluate-classifier", cache_policy=NO_CACHE)
def evaluate_classifier(cohort_url: str, spec: str, split: str = "test") -> dict:
    """AUROC, accuracy and confusion at the spec's threshold on a split of the cohort."""
    import torch

    from medxgan.cohort.reader import Cohort
    from medxgan.models.train_classifier import auroc
    from tasks.common import classifier

    f = classifier(spec)
    p, y = [], []
    with torch.no_grad():
        for b in Cohort(cohort_url).iter_batches(256, split=split, labels=[0, 1]):
            p.append(f.prob(b.images).numpy())
            y.append(b.labels.numpy())
    if not p:
        return {"split": split, "n": 0}
    p, y = np.concatenate(p), np.concatenate(y)
    t = float(f.threshold)
    pred = p >= t
    return {"split": split, "n": int(len(y)), "auroc": float(auroc(p, y)),
            "accuracy": float((pred == (y == 1)).mean()), "threshold": t,
            "tp": int((pred & (y == 1)).sum()), "fp": int((pred & (y == 0)).sum()),
            "tn": int((~pred & (y == 0)).sum()), "fn": int((~pred & (y == 1)).sum()),
            "sha256": f.sha256}


def _gallery(store: Store, cohort_url: str, scores: pd.DataFrame, methods: list[str],
             shard_of: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """Best and worst images (by Grad-CAM relevance mass, else the first method) with every
    method's map, and medXGAN interpolation strips for them."""
    from medxgan.cohort.png import encode_png, from_unit
    from medxgan.cohort.reader import Cohort
    from medxgan.explain.serialize import read_maps
    from medxgan.report import select_gallery

    if scores.empty:
        return [], []
    ref = "gradcam" if "gradcam" in methods else methods[0]
    best, worst = select_gallery(scores, method=ref, metric="relevance_mass", k=3)
    chosen = best + worst
    if not chosen:
        return [], []
    maps: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    strips: dict[str, dict] = {}
    for m in methods:
        for s in sorted({shard_of[i] for i in chosen if i in shard_of}):  # only their shards
            t = store.read_parquet(part_key("explanations", m, s))
            ids, mp = read_maps(t)
            for j, i in enumerate(ids):
                if i in chosen:
                    maps[m][i] = mp[j].numpy()
                    if m == "medxgan" and "strip_png" in t.column_names:
                        strips[i] = {"image_id": i, "strip_png": t["strip_png"][j].as_py(),
                                     "frame_probs": t["frame_probs"][j].as_py()}
    cohort = Cohort(cohort_url)
    batch = cohort.load(chosen)
    bt = cohort.boxes_table()
    findings: dict[str, list[str]] = {}
    if "finding" in bt.column_names:
        for i, f in zip(bt["image_id"].to_pylist(), bt["finding"].to_pylist()):
            if i in chosen and f and f not in findings.setdefault(i, []):
                findings[i].append(f)
    items = []
    for j, i in enumerate(chosen):
        img = batch.images[j, 0].numpy()
        items.append({"image_id": i, "label": int(batch.labels[j]),
                      "image_png": encode_png(from_unit(img)),
                      "boxes": [tuple(map(float, b)) for b in batch.boxes[j]],
                      "findings": findings.get(i, []),
                      "overlays": {m: maps[m][i] for m in methods if i in maps[m]},
                      "note": ("best" if i in best else "worst") + f" by {ref} relevance mass"})
    return items, [strips[i] for i in chosen if i in strips]


@task(name="build-report", cache_policy=NO_CACHE)
def build_report(run_url: str, store_url: str, audit: str, run_id: str, cohort_url: str,
                 classifier_perf: dict, provenance: dict) -> dict:
    """Write ``provenance.json``, append the audit history, render ``report/index.html``.

    Returns: ``{"report": URL, "verdict": headline, "flags": [...], "regressions": n}``.
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.report import (ReportInputs, append_history, audit_verdict, detect_regressions,
                                history_rows, history_table, previous_run_id, render_report,
                                sanitise)

    run, root = Store(run_url), Store(store_url)
    info = run.read_json("run.json")
    expl = run.require_manifest("explanations")
    scores = run.read_parquet("scores.parquet").to_pandas()
    summary = run.read_parquet("summary.parquet").to_pandas()
    comparisons = run.read_parquet("comparisons.parquet").to_pandas()
    cohort = Cohort(cohort_url)
    qt = cohort.quarantine_table().to_pandas()
    quarantine = [(str(r), int(n)) for r, n in qt["reason"].value_counts().items()] if len(qt) else []
    now = _dt.datetime.now(_dt.timezone.utc)
    provenance = sanitise({**provenance, "sanity": _read_or_none(run, "sanity.json")})
    run.write_json("provenance.json", provenance)

    hist_key = "audits/history.parquet"
    history = root.read_parquet(hist_key).to_pandas() if root.exists(hist_key) else None
    rows = history_rows(audit, classifier_perf.get("sha256", ""), cohort.content_hash, run_id,
                        now, summary)
    history = append_history(history, rows)
    root.write_parquet(hist_key, history_table(history))
    prev = previous_run_id(history, audit=audit, cohort_hash=cohort.content_hash, run_id=run_id)
    regressions = None
    if prev is not None:
        prev_store = root.child(f"runs/{prev}")
        if prev_store.exists("scores.parquet"):
            regressions = detect_regressions(
                prev_store.read_parquet("scores.parquet").to_pandas(), scores,
                metrics=["pointing_game", "relevance_mass", "iou_otsu", "deletion_auc",
                         "insertion_auc"])
    size = info["shard_size"]
    shard_of = {i: k // size for k, i in enumerate(expl["image_ids"])}  # as explain_flow cut them
    gallery, strips = _gallery(run, cohort_url, scores, expl["methods"], shard_of)
    verdict = audit_verdict(summary, comparisons, scores)
    html = render_report(ReportInputs(
        audit=audit, run_id=run_id, time=now, summary=summary, comparisons=comparisons,
        scores=scores, verdict=verdict, manifest=cohort.manifest, quarantine=quarantine,
        classifier=classifier_perf, provenance=provenance, gallery=gallery, strips=strips,
        history=history, regressions=regressions, previous_run_id=prev))
    run.write_bytes("report/index.html", html.encode("utf-8"))
    n_reg = int(regressions["regression"].sum()) if regressions is not None and len(regressions) else 0
    return {"report": run.url_of("report/index.html"), "verdict": verdict.headline,
            "flags": list(verdict.flags), "localises": verdict.localises, "regressions": n_reg,
            "previous_run_id": prev, "methods": info["methods"]}


def _read_or_none(store: Store, key: str) -> Any:
    try:
        return store.read_json(key)
    except FileNotFoundError:
        return None
