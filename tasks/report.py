"""Prefect tasks of the report stage: classifier performance, provenance, history, verdict,
acceptance criteria, HTML and PDF."""

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

REGRESSION_METRICS = ("pointing_game", "relevance_mass", "iou_otsu", "deletion_auc",
                      "insertion_auc", "ablation_drop")
"""Metrics whose fall against the previous run of the same audit is a regression."""

SHORTCUT_GALLERY = 3
"""Images of the shortcut search's gallery shown in the report (largest drop first)."""

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
    from medxgan.classifiers.train import auroc
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
    twins = _twin_pngs(cohort, [i for i in chosen if i in strips])
    return items, [{**strips[i], **({"twin_png": twins[i]} if i in twins else {})}
                   for i in chosen if i in strips]


def _twin_pngs(cohort, ids: list[str]) -> dict[str, bytes]:
    """PNGs of the true healthy twins of ``ids`` on a phantom cohort (the renderer's subject
    without its lesions: ``medxgan.phantoms.true_twins``); {} on any other cohort."""
    from medxgan.cohort.png import encode_png, from_unit
    from medxgan.phantoms import true_twins

    tw = true_twins(cohort, ids) if ids else None
    if tw is None:
        return {}
    return {i: encode_png(from_unit(tw[j, 0].numpy())) for j, i in enumerate(ids)}


def _shortcut_gallery(cohort_url: str, shortcut: dict | None, k: int = SHORTCUT_GALLERY) -> list[dict]:
    """Gallery items of the shortcut search: the cohort heatmap of what had to change outside
    the findings, then the images where the found region matters most, each with its boxes
    and its own region as an overlay."""
    from medxgan.cohort.png import encode_png, from_unit
    from medxgan.cohort.reader import Cohort

    if not shortcut or not shortcut.get("top_image_ids"):
        return []
    ids = list(shortcut["top_image_ids"])[:k]
    boxes = list(shortcut.get("top_boxes") or [])
    batch = Cohort(cohort_url).load(ids)
    H, W = batch.images.shape[-2:]
    items = []
    heat = np.asarray(shortcut.get("heatmap") or [], np.float32)
    if heat.ndim == 2 and heat.size and heat.max() > 0:
        ry, rx = -(-H // heat.shape[0]), -(-W // heat.shape[1])
        big = np.kron(heat / heat.max(), np.ones((ry, rx), np.float32))[:H, :W]
        items.append({"image_id": "cohort heatmap", "image_png": encode_png(from_unit(big)),
                      "boxes": [], "overlays": {},
                      "note": f"shortcut search: share of the {shortcut.get('located', {}).get('searched')} "
                              "searched positives whose region outside the findings covers each pixel "
                              f"(white: {float(heat.max()):.0%})"})
    for j, i in enumerate(ids):
        img = batch.images[j, 0].numpy()
        region = np.zeros(img.shape, np.float32)
        if j < len(boxes):
            x0, y0, x1, y1 = (int(v) for v in boxes[j])
            region[y0:y1, x0:x1] = 1.0
        items.append({"image_id": i, "label": int(batch.labels[j]),
                      "image_png": encode_png(from_unit(img)),
                      "boxes": [tuple(map(float, b)) for b in batch.boxes[j]],
                      "overlays": {"shortcut region": region},
                      "note": "shortcut search: in-filling this region outside the findings makes "
                              "f call the image negative"})
    return items


def headline_metrics(summary: pd.DataFrame, comparisons: pd.DataFrame,
                     shortcut: dict | None) -> list[dict]:
    """The numbers of the table artifact: intervention evidence (own, shuffled, gap, flip,
    retention), the shortcut search's region and transplant rate, and each method's pointing
    game and relevance mass; ``{evidence, metric, mean, ci_low, ci_high, n}`` rows."""
    from medxgan.catalogue import GAP_SUFFIX, INTERVENTION, order_methods

    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and v != v) else round(float(v), 4)

    rows = []

    def add(evidence: str, metric: str, r: Any) -> None:
        rows.append({"evidence": evidence, "metric": metric, "mean": num(r[0]),
                     "ci_low": num(r[1]), "ci_high": num(r[2]), "n": None if r[3] is None else int(r[3])})

    by = {(m, k): (r.mean, r.ci_low, r.ci_high, r.n)
          for m, k, r in zip(summary["method"], summary["metric"], summary.itertuples())}
    gaps = {(m, k): (r.mean_diff, r.ci_low, r.ci_high, r.n)
            for m, b, k, r in zip(comparisons["method_a"], comparisons["method_b"],
                                  comparisons["metric"], comparisons.itertuples()) if m == b}
    for k in ("ablation_drop", "ablation_drop_shuffled"):
        if (INTERVENTION, k) in by:
            add(INTERVENTION, k, by[(INTERVENTION, k)])
    if (INTERVENTION, "ablation_drop" + GAP_SUFFIX) in gaps:
        add(INTERVENTION, "ablation_drop" + GAP_SUFFIX, gaps[(INTERVENTION, "ablation_drop" + GAP_SUFFIX)])
    for k in ("ablation_flip", "retention"):
        if (INTERVENTION, k) in by:
            add(INTERVENTION, k, by[(INTERVENTION, k)])
    if shortcut and "residual" in shortcut:
        g = shortcut.get
        for k, n in (("effect", "effect_n"), ("residual_effect", "residual_n"),
                     ("transplant_effect", "transplant_n"), ("wide_effect", "wide_n")):
            if g(k) is not None:
                add("shortcut", k, (g(k), g(k + "_ci_low"), g(k + "_ci_high"), g(n)))
    if shortcut and shortcut.get("box") is not None:
        g = shortcut.get
        add("shortcut", "drop", (g("drop"), g("drop_ci_low"), g("drop_ci_high"), g("n")))
        add("shortcut", "transplant_rate", (g("transplant_rate"), g("transplant_ci_low"),
                                            g("transplant_ci_high"), g("transplant_n")))
        add("shortcut", "control_rate", (g("control_rate"), g("control_ci_low"),
                                         g("control_ci_high"), g("transplant_n")))
    for m in order_methods({m for m, _ in by} - {INTERVENTION}):
        for k in ("pointing_game", "relevance_mass"):
            if (m, k) in by:
                add(m, k, by[(m, k)])
    return rows


@task(name="build-report", cache_policy=NO_CACHE)
def build_report(run_url: str, store_url: str, audit: str, run_id: str, cohort_url: str,
                 classifier_perf: dict, provenance: dict) -> dict:
    """Write ``provenance.json``, append the audit history, judge the acceptance criteria
    (``provenance["config"]["criteria"]``), render ``report/index.html`` and
    ``report/report.pdf``.

    Returns: ``{"report": URL, "pdf": URL, "verdict": headline, "answers":
    Verdict.to_dict(), "flags": [...], "criteria": [CriterionResult.to_dict()],
    "criteria_failed": [...the FAIL ones], "regressions": n, "regressed": [rows],
    "headline_metrics": [rows], ...}``.
    """
    from medxgan.cohort.reader import Cohort
    from medxgan.report import (ReportInputs, append_history, audit_verdict, detect_regressions,
                                evaluate_criteria, history_rows, history_table, previous_run_id,
                                render_pdf, render_report, sanitise)
    from medxgan.report.criteria import failed

    run, root = Store(run_url), Store(store_url)
    info = run.read_json("run.json")
    expl = run.require_manifest("explanations")
    scores = run.read_parquet("scores.parquet").to_pandas()
    summary = run.read_parquet("summary.parquet").to_pandas()
    comparisons = run.read_parquet("comparisons.parquet").to_pandas()
    shortcut = _read_or_none(run, "shortcut.json")
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
                metrics=list(REGRESSION_METRICS))
    size = info["shard_size"]
    shard_of = {i: k // size for k, i in enumerate(expl["image_ids"])}  # as explain_flow cut them
    gallery, strips = _gallery(run, cohort_url, scores, expl["methods"], shard_of)
    gallery = gallery + _shortcut_gallery(cohort_url, shortcut)
    gan_best = ((provenance.get("stages") or {}).get("gan") or {}).get("best") or {}
    health = gan_best.get("health")
    if "medxgan" in expl["methods"]:  # rules 6 and 7 vs a located shortcut
        health = {**(health or {}), **_change_on_shortcut(run, expl, shortcut)} or None
    verdict = audit_verdict(summary, comparisons, scores, shortcut=shortcut,
                            generator_health=health, generator_family=_family(info.get("gan")))
    criteria = evaluate_criteria((provenance.get("config") or {}).get("criteria") or [], summary,
                                 shortcut=shortcut, comparisons=comparisons, scores=scores)
    inputs = ReportInputs(
        audit=audit, run_id=run_id, time=now, summary=summary, comparisons=comparisons,
        scores=scores, verdict=verdict, shortcut=shortcut, criteria=criteria or None,
        manifest=cohort.manifest, quarantine=quarantine, classifier=classifier_perf,
        provenance=provenance, gallery=gallery, strips=strips, history=history,
        regressions=regressions, previous_run_id=prev,
        tuning=run.read_json("tuning.json") if run.exists("tuning.json") else None)
    run.write_bytes("report/index.html", render_report(inputs).encode("utf-8"))
    run.write_bytes("report/report.pdf", render_pdf(inputs))
    regressed = []
    if regressions is not None and len(regressions):
        r = regressions[regressions["regression"].astype(bool)]
        regressed = [{"method": str(m), "metric": str(k), "prev_mean": float(a),
                      "cur_mean": float(b), "diff": float(d), "ci_low": float(lo),
                      "ci_high": float(hi), "n": int(n)}
                     for m, k, a, b, d, lo, hi, n in zip(r["method"], r["metric"], r["prev_mean"],
                                                         r["cur_mean"], r["diff"], r["ci_low"],
                                                         r["ci_high"], r["n"])]
    return {"report": run.url_of("report/index.html"), "pdf": run.url_of("report/report.pdf"),
            "verdict": verdict.headline, "answers": verdict.to_dict(),
            "flags": list(verdict.flags), "localises": verdict.localises,
            "criteria": [c.to_dict() for c in criteria],
            "criteria_failed": [c.to_dict() for c in failed(criteria)],
            "regressions": len(regressed), "regressed": regressed, "previous_run_id": prev,
            "headline_metrics": headline_metrics(summary, comparisons, shortcut),
            "methods": info["methods"]}


def _change_on_shortcut(run: Store, expl: dict, shortcut: dict | None) -> dict:
    """For rule 7: the change similarity of the run's medxgan explanations with and without the
    shortcut search's region (heatmap >= a quarter of its maximum, grown by 2 px):
    ``run_change_similarity``, ``change_similarity_outside_shortcut``; {} without a located
    region."""
    import torch

    from medxgan.explain.serialize import read_changes
    from medxgan.metrics.counterfactual import similarity_outside
    from medxgan.metrics.shortcut import dilate_masks

    heat = np.asarray((shortcut or {}).get("heatmap") or [], np.float64)
    if heat.ndim != 2 or not heat.size or heat.max() <= 0 or (shortcut or {}).get("box") is None:
        return {}
    changes = torch.cat([read_changes(run.read_parquet(part_key("explanations", "medxgan", s)))[1]
                         for s in range(expl["n_shards"])])
    if changes.dim() == 4:
        changes = changes[:, 0]
    H, W = changes.shape[-2:]
    reg = torch.from_numpy(heat >= 0.25 * heat.max())[None, None].float()
    reg = torch.nn.functional.interpolate(reg, size=(H, W), mode="nearest")[:, 0] > 0
    reg = dilate_masks(reg, 2)[0]
    whole, outside = similarity_outside(changes, reg)
    return {"run_change_similarity": whole, "change_similarity_outside_shortcut": outside}


def _family(gan: str | None) -> str | None:
    """The generator family of the run's generator (None without one)."""
    if not gan:
        return None
    from tasks.common import generator_family

    return generator_family(gan).name


def _read_or_none(store: Store, key: str) -> Any:
    try:
        return store.read_json(key)
    except FileNotFoundError:
        return None
