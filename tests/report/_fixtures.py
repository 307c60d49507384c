"""Synthetic audit tables whose right verdict is known, and a full sample ``ReportInputs``.

``tables(kind)`` builds per-image scores for a classifier of a known kind, then its summary
and comparisons with the same contracts as ``medxgan.metrics.aggregate`` (written here
with NumPy so these tests do not depend on that module):

- ``"lesion"``: Grad-CAM and IG point at each image's own boxes (pointing 0.9 / 0.7,
  relevance mass 0.35 / 0.3) and much less at another image's boxes; the floors are low;
  medXGAN's changes differ between images (similarity 0.3).
- ``"shortcut"``: every map is near the floors (the classifier looks at a corner tag);
  medXGAN's change is one pattern for all images (similarity 0.95).

``with_intervention(kind)`` adds the intervention evidence rows (method ``intervention``:
``ablation_drop`` and its shuffled control, ``ablation_flip``, ``retention``) of the same kind
of classifier, and ``shortcut_json(kind)`` a ``shortcut.json`` dict
(``ShortcutFinding.summary()``): for ``"lesion"`` the infilled boxes lower p by ~0.21 (0.02 for
another image's boxes) and no region outside them matters; for ``"shortcut"`` infilling the
boxes changes nothing and the corner (56,0)-(64,8) is a transplantable shortcut.

Run ``python -m tests.report._fixtures OUT.html [kind] [evidence]`` to write the sample report.
"""

from __future__ import annotations

import copy
import functools
import io
import sys

import numpy as np
import pandas as pd
from PIL import Image

from medxgan.report._text import bootstrap_mean

METHODS = ("gradcam", "ig", "medxgan", "latent_ig", "random", "box_prior")
EVIL = "<script>alert(1)</script>"

# (pointing own, pointing shuffled, mass own, mass shuffled) per method
_LESION = {
    "gradcam": (0.9, 0.15, 0.35, 0.06),
    "ig": (0.7, 0.15, 0.30, 0.07),
    "medxgan": (0.4, 0.15, 0.15, 0.08),
    "latent_ig": (0.6, 0.2, 0.22, 0.09),
    "random": (0.1, 0.1, 0.05, 0.05),
    "box_prior": (0.1, 0.1, 0.08, 0.08),
}
_SHORTCUT = {
    "gradcam": (0.08, 0.08, 0.05, 0.05),
    "ig": (0.1, 0.1, 0.05, 0.05),
    "medxgan": (0.1, 0.1, 0.05, 0.05),
    "latent_ig": (0.1, 0.1, 0.05, 0.05),
    "random": (0.1, 0.1, 0.05, 0.05),
    "box_prior": (0.1, 0.1, 0.08, 0.08),
}


def make_scores(kind: str = "lesion", n: int = 60, seed: int = 0, shift: dict | None = None) -> pd.DataFrame:
    """Long-form scores of ``n`` positive images; ``shift`` adds {(method, metric): delta} to values."""
    rng = np.random.default_rng(seed)
    spec = _LESION if kind == "lesion" else _SHORTCUT
    ids = [f"img{i:03d}" for i in range(n)]
    rows = []
    for m in METHODS:
        p, ps, r, rs = spec[m]
        vals = {
            "pointing_game": (rng.random(n) < p).astype(float),
            "pointing_game_shuffled": (rng.random(n) < ps).astype(float),
            "relevance_mass": np.clip(rng.normal(r, 0.05, n), 0, 1),
            "relevance_mass_shuffled": np.clip(rng.normal(rs, 0.05, n), 0, 1),
            "deletion_auc": np.clip(rng.normal(0.3 if kind == "lesion" else 0.5, 0.1, n), 0, 1),
        }
        if m == "medxgan":
            sim = 0.3 if kind == "lesion" else 0.95
            vals["counterfactual_similarity"] = np.clip(rng.normal(sim, 0.02, n), -1, 1)
            vals["counterfactual_flip"] = (rng.random(n) < 0.85).astype(float)
            vals["recon_mse"] = np.abs(rng.normal(0.045, 0.01, n))
        for k, v in vals.items():
            v = v + (shift or {}).get((m, k), 0.0)
            rows += [(i, m, k, float(x)) for i, x in zip(ids, v)]
    return pd.DataFrame(rows, columns=["image_id", "method", "metric", "value"])


def summarise(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """SUMMARY table of long-form scores (bootstrap over images)."""
    rows = []
    for (m, k), g in scores.groupby(["method", "metric"], sort=True):
        rows.append((m, k, *bootstrap_mean(g["value"].to_numpy(), seed=seed)))
    return pd.DataFrame(rows, columns=["method", "metric", "mean", "ci_low", "ci_high", "n"])


def compare(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """COMPARISONS table: every pair a < b, plus own - shuffled gap rows."""
    wide = scores.pivot(index="image_id", columns=["method", "metric"], values="value")
    cols = set(wide.columns)
    methods = sorted(set(scores["method"]))
    rows = []
    for k in sorted(set(scores["metric"])):
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                if (a, k) in cols and (b, k) in cols:
                    rows.append((a, b, k, *bootstrap_mean((wide[(a, k)] - wide[(b, k)]).to_numpy(), seed=seed)))
    for m, k in sorted(cols):
        if not k.endswith("_shuffled") and (m, k + "_shuffled") in cols:
            d = (wide[(m, k)] - wide[(m, k + "_shuffled")]).to_numpy()
            rows.append((m, m, k + "-shuffled_gap", *bootstrap_mean(d, seed=seed)))
    return pd.DataFrame(rows, columns=["method_a", "method_b", "metric", "mean_diff", "ci_low", "ci_high", "n"])


def tables(kind: str = "lesion", n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(scores, summary, comparisons) of a synthetic classifier of the given kind (fresh copies)."""
    return tuple(t.copy() for t in _tables(kind, n, seed))


@functools.lru_cache(maxsize=8)
def _tables(kind: str, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    s = make_scores(kind, n, seed)
    return s, summarise(s), compare(s)


# (ablation_drop own, shuffled, flip rate, retention) per kind
_INTERVENTION = {"lesion": (0.21, 0.02, 0.75, 0.8), "shortcut": (0.005, 0.005, 0.02, 0.1)}


def intervention_scores(kind: str = "lesion", n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Long-form intervention rows (method ``intervention``) of ``n`` positive images."""
    rng = np.random.default_rng(seed + 100)
    d, ds, f, r = _INTERVENTION[kind]
    ids = [f"img{i:03d}" for i in range(n)]
    vals = {
        "ablation_drop": np.clip(rng.normal(d, 0.08, n), -1, 1),
        "ablation_drop_shuffled": np.clip(rng.normal(ds, 0.03, n), -1, 1),
        "ablation_flip": (rng.random(n) < f).astype(float),
        "retention": np.clip(rng.normal(r, 0.1, n), 0, 1),
    }
    rows = [(i, "intervention", k, float(x)) for k, v in vals.items() for i, x in zip(ids, v)]
    return pd.DataFrame(rows, columns=["image_id", "method", "metric", "value"])


def with_intervention(kind: str = "lesion", n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(scores, summary, comparisons) of ``tables(kind)`` plus the intervention rows."""
    return tuple(t.copy() for t in _with_intervention(kind, n, seed))


@functools.lru_cache(maxsize=8)
def _with_intervention(kind: str, n: int, seed: int):
    s = pd.concat([make_scores(kind, n, seed), intervention_scores(kind, n, seed)], ignore_index=True)
    return s, summarise(s), compare(s)


def _effect(rate, control, eff, lo, hi, n):
    return {"rate": rate, "control_rate": control, "effect": eff, "ci_low": lo, "ci_high": hi, "n": n}


def shortcut_json(kind: str = "lesion", maps: dict | None = None) -> dict:
    """A ``shortcut.json`` (``ShortcutFinding.summary()`` keys) for a classifier of that kind:
    ``lesion`` (nothing outside the findings), ``shortcut`` (a fixed tag, located, strong),
    ``weak`` (a tag f is a little sensitive to), ``wide`` (a noise level: image-wide),
    ``unplaced`` (finding-free positives stay positive, no region or property found)."""
    res = {"lesion": (0.05, 0.03, 0.02, -0.06, 0.10), "shortcut": (0.9, 0.03, 0.87, 0.78, 0.94),
           "weak": (0.25, 0.03, 0.22, 0.11, 0.33), "wide": (0.8, 0.05, 0.75, 0.64, 0.85),
           "unplaced": (0.7, 0.04, 0.66, 0.53, 0.78)}[kind]
    tr = {"shortcut": (0.9, 0.05, 0.85, 0.75, 0.93), "weak": (0.37, 0.06, 0.31, 0.17, 0.45),
          "lesion": (0.05, 0.04, 0.01, -0.08, 0.1)}.get(kind)
    tr_ci = {"shortcut": (0.8, 0.97), "weak": (0.22, 0.52), "lesion": (0.0, 0.12)}.get(kind)
    wide = [{"name": n, "rate": 0.05, "control_rate": 0.05, "effect": 0.0, "ci_low": -0.06, "ci_high": 0.06,
             "n": 40, "dp": 0.0, "p_pos": 0.1, "p_neg": 0.1} for n in ("noise", "histogram", "border")]
    if kind == "wide":
        wide[0] = {**wide[0], "rate": 0.7, "control_rate": 0.04, "effect": 0.66, "ci_low": 0.52, "ci_high": 0.78}
    cluster = {"appearance": "small bright object", "polarity": "bright", "size": "small", "shape": "compact",
               "n_images": 27 if kind == "shortcut" else 8, "share": 0.9 if kind == "shortcut" else 0.27,
               "places": {"top-right corner": 27}, "place": "top-right corner",
               "place_text": "in the top-right corner", "box": [56, 0, 64, 8], "area": 0.004, "contrast": 0.6}
    if kind == "lesion":  # a few positives stay positive; the search finds a region in three
        cluster = {**cluster, "appearance": "small faint object", "polarity": "faint", "n_images": 3,
                   "share": 0.1, "places": {"left side": 3}, "place": "left side",
                   "place_text": "in the left side", "box": [8, 40, 16, 48]}
    located = {"searched": 27 if tr else 0, "found": {"shortcut": 27, "weak": 8, "lesion": 3}.get(kind, 0),
               "clusters": [cluster] if tr else [],
               "box": cluster["box"] if tr else None,
               "drop": 0.45 if tr else None, "drop_ci_low": 0.40 if tr else None,
               "drop_ci_high": 0.50 if tr else None, "drop_n": 27 if tr else 0}
    if tr:
        located.update(transplant_rate=tr[0], transplant_ci_low=tr_ci[0], transplant_ci_high=tr_ci[1],
                       control_rate=tr[1], control_ci_low=0.0, control_ci_high=tr[1] + 0.07,
                       effect=tr[2], effect_ci_low=tr[3], effect_ci_high=tr[4], n=40)
    else:
        located.update(transplant_rate=None, control_rate=None, effect=None, effect_ci_low=None,
                       effect_ci_high=None, n=0)
    residual = {"rate": res[0], "ci_low": res[0] - 0.05, "ci_high": res[0] + 0.05, "n": 30,
                "control_rate": res[1], "control_ci_low": 0.0, "control_ci_high": res[1] + 0.05,
                "control_n": 30, "effect": res[2], "effect_ci_low": res[3], "effect_ci_high": res[4],
                "auroc": 0.6}
    cands = [("location_free", "residual", res[2], res[3], res[4], 30)]
    if tr:
        cands.append(("located", "transplant", tr[2], tr[3], tr[4], 40))
    cands += [("image_wide", w["name"], w["effect"], w["ci_low"], w["ci_high"], 40) for w in wide]
    k, name, m, lo, hi, n = max(cands, key=lambda c: (c[3], c[2]))
    strongest = {"kind": k, "name": name, "effect": m, "ci_low": lo, "ci_high": hi, "n": n}
    w = max(wide, key=lambda d: d["ci_low"])
    return {"strongest": strongest, "residual": residual, "located": located, "image_wide": wide,
            "effect": m, "effect_ci_low": lo, "effect_ci_high": hi, "effect_n": n, "effect_kind": k,
            "residual_effect": res[2], "residual_effect_ci_low": res[3], "residual_effect_ci_high": res[4],
            "residual_n": 30, "transplant_effect": located["effect"],
            "transplant_effect_ci_low": located["effect_ci_low"],
            "transplant_effect_ci_high": located["effect_ci_high"],
            "wide_effect": w["effect"], "wide_effect_ci_low": w["ci_low"], "wide_effect_ci_high": w["ci_high"],
            "wide_n": 40, "wide_name": w["name"], "heatmap": [[0.0] * 8 for _ in range(8)],
            "top_images": [3, 1, 4], "top_boxes": [[56, 0, 64, 8]] * 3, "dilate": 2, "method": "inpaint",
            "threshold": 0.5, "box": located["box"], "drop": located["drop"],
            "drop_ci_low": located["drop_ci_low"], "drop_ci_high": located["drop_ci_high"],
            "n": located["drop_n"], "transplant_rate": located["transplant_rate"],
            "transplant_ci_low": located.get("transplant_ci_low"),
            "transplant_ci_high": located.get("transplant_ci_high"), "transplant_n": located["n"],
            "control_rate": located["control_rate"], "control_ci_low": located.get("control_ci_low"),
            "control_ci_high": located.get("control_ci_high"),
            "maps": maps if maps is not None else {}}


NIGHTLY_CRITERIA = [
    {"name": "relies on the findings", "evidence": "intervention", "metric": "ablation_drop-shuffled_gap",
     "comparison": ">", "threshold": 0.0},
    {"evidence": "shortcut", "metric": "transplant_rate", "comparison": "<=", "threshold": 0.2},
    {"method": "ig", "metric": "pointing_game", "comparison": ">=", "threshold": 0.5},
]


def phantom(size: int = 64, box: tuple[int, int, int, int] = (36, 20, 48, 32), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, map): a grey disc phantom with a bright lesion in ``box``; the map peaks in the box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = 0.2 + 0.5 * (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (0.4 * size) ** 2) + 0.03 * rng.standard_normal((size, size))
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] += 0.25
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    m = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 4.0**2)))
    return np.clip(img, 0, 1), m


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def sample_inputs(kind: str = "lesion", *, evil: bool = False, evidence: bool = False):
    """A full ``ReportInputs`` (history of 3 runs, a planted regression); ``evil`` puts
    ``<script>`` into the audit name, an image id, a finding name, a quarantine reason and a
    config value; ``evidence`` adds the intervention rows, ``shortcut.json`` and the
    ``NIGHTLY_CRITERIA`` results.
    Returns a fresh deep copy of a cached build."""
    return copy.deepcopy(_sample_inputs(kind, evil, evidence))


@functools.lru_cache(maxsize=8)
def _sample_inputs(kind: str, evil: bool, evidence: bool = False):
    from medxgan.report import ReportInputs, append_history, detect_regressions, history_rows, select_gallery

    scores, summary, comparisons = tables(kind)
    name = f"nightly {EVIL}" if evil else "nightly-cxr"
    hist = None
    prev_scores = None
    for j, (run, shift) in enumerate([("run-1", None), ("run-2", None), ("run-3", {("gradcam", "pointing_game"): -0.5})]):
        sc = make_scores(kind, seed=min(j, 1), shift=shift)  # run-3 = run-2's images and noise + the planted drop
        if run != "run-3":
            prev_scores = sc
        else:
            scores = sc
            summary, comparisons = summarise(sc), compare(sc)
        rows = history_rows(name, f"clf{j}", "cohortA", run, pd.Timestamp("2026-11-20", tz="UTC") + pd.Timedelta(days=j), summarise(sc))
        hist = append_history(hist, rows)
    reg = detect_regressions(prev_scores, scores, metrics=["pointing_game", "relevance_mass"], methods=["gradcam", "ig"], seed=0)
    best, worst = select_gallery(scores, "gradcam", "relevance_mass", k=2)
    gallery = []
    for note, ids in (("best", best), ("worst", worst)):
        for i, iid in enumerate(ids):
            img, m = phantom(seed=i)
            overlays = {"gradcam": m, "ig": m + 0.1 * np.random.default_rng(i).random(m.shape), "medxgan": m[::-1], "random": np.random.default_rng(i).random((16, 16))}
            gallery.append(
                {
                    "image_id": (EVIL if evil and i == 0 else iid),
                    "label": 1,
                    "image_png": png_bytes(img),
                    "boxes": [(36, 20, 48, 32, EVIL if evil else "nodule")],
                    "overlays": overlays,
                    "note": f"{note} Grad-CAM relevance mass",
                }
            )
    frames = [phantom(seed=0)[0] * (0.8 + 0.05 * a) for a in range(5)]
    strips = [{"image_id": best[0], "strip_png": png_bytes(np.concatenate(frames, axis=1)), "frame_probs": [0.05, 0.2, 0.55, 0.8, 0.93],
               "twin_png": png_bytes(frames[0])}]
    shortcut = criteria = None
    if evidence:
        from medxgan.report.criteria import evaluate_criteria

        scores = pd.concat([scores, intervention_scores(kind)], ignore_index=True)
        summary, comparisons = summarise(scores), compare(scores)
        shortcut = shortcut_json(kind)
        criteria = evaluate_criteria(NIGHTLY_CRITERIA, summary, shortcut, comparisons)
    return ReportInputs(
        audit=name,
        shortcut=shortcut,
        criteria=criteria,
        run_id="run-3",
        time=pd.Timestamp("2026-11-22", tz="UTC"),
        summary=summary,
        comparisons=comparisons,
        scores=scores,
        manifest={"counts": {"images": 400, "positives": 200, "negatives": 200, "boxes": 230, "quarantined": 3,
                             "by_split": {"train": 300, "test": 100}}, "source": "phantom-cxr", "content_hash": "ab12cd34"},
        quarantine=[("corrupt PNG", 2), (EVIL if evil else "box outside image", 1)],
        classifier={"auroc": 0.996, "accuracy": 0.965, "threshold": 0.5, "n": 400, "tp": 190, "fp": 4, "tn": 196, "fn": 10},
        provenance={
            "classifier_hash": "clf2", "cohort_hash": "cohortA", "generator_hash": "gen9", "code_version": "0.1.0",
            "libraries": {"torch": "2.14.1", "numpy": "2.1"}, "seeds": {"gan": 0, "bootstrap": 0},
            "config": {"store": "s3://medxgan/audits", "s3": {"endpoint": "http://admin:hunter2@127.0.0.1:9000",
                       "secret_access_key": "SUPERSECRET", "MEDXGAN_S3_SECRET": "SUPERSECRET2", "session_token": "TOK"},
                       "finding": EVIL if evil else "nodule"},
        },
        gallery=gallery,
        strips=strips,
        history=hist,
        regressions=reg,
        previous_run_id="run-2",
    )


if __name__ == "__main__":  # pragma: no cover
    from medxgan.report import render_report

    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/sample_report.html"
    with open(out, "w", encoding="utf-8") as f:
        f.write(render_report(sample_inputs(sys.argv[2] if len(sys.argv) > 2 else "lesion", evidence=len(sys.argv) > 3)))
    print(out)
