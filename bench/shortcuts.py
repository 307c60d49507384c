"""The shortcut panel: does the audit find the shortcuts a classifier relies on, whatever their
shape or place, and stay quiet on clean classifiers? (issue #20)

Each case is a phantom cohort (``medxgan.phantoms``, 64 px, 2 000 images), a classifier trained
on it by the product (``medxgan.classifiers.train``: small_cnn2, 12 epochs, horizontal
flips, as the demo's), the healthy in-filler trained by the product's GAN stage (``train_gan``
with ``family: inpaint``, 600 steps, as the demo's) and the product's shortcut search on the
test split (``medxgan.metrics.shortcut_run.cohort_shortcut``, 128 images, as ``medxgan audit``
runs it), judged by the product's rule (``medxgan.report.answers.shortcut_answer``).

- **Shortcut cases**: a shortcut kind (``medxgan.phantoms.shortcuts``: fixed ``tag``, extended
  ``band``, moving ``marker``, ``text``, support-device ``line``, image-wide ``noise`` /
  ``exposure``, ``border``, an ``arrow`` pointing at the largest finding, a ``blur`` of the
  anatomy) on a share of the positives (the strength: 0.9 or 0.6) and on 5 %
  of the negatives, faint findings (``lesion_scale`` 0.5). A case counts for the sensitivity
  only when its classifier **relies** on the shortcut: painting it onto the test negatives
  that do not carry it raises f's positive rate by at least 20 points (``reliance``).
- **Negative-class shortcuts** (``<kind>-neg``; cxr, the first seed): the shortcut marks the
  *negatives* (a screening site's tag, a healthy cohort's exposure) on 90 % or 60 % of them and
  5 % of the positives, so f reads its *absence* as evidence of disease. Nothing in a positive
  can be in-filled away to flip f, so the located search has nothing to find; the question is
  whether the location-free and image-wide evidence answer yes. Reliance: painting it onto the
  test positives that do not carry it lowers f's positive rate by at least 20 points.
- **Clean controls**: no shortcut (findings at full and at half strength), a
  label-independent marker on 30 % of both classes (the classifier learns to ignore it), and
  (the first two clean seeds) a label-independent arrow on 30 % of both classes: it points at a
  positive's largest finding and at a random place of a negative's lung, so where it lies
  follows the findings though its presence does not follow the label.

Per case it prints flagged (the answer is yes) / the evidence kind / located (for local
kinds: the IoU of the found regions' heatmap, cut at half its maximum, with the planted pixels and with
their bounding box (thin marks: text, a tube); the mean per-image IoU of each found region
with its image's planted shortcut (a moving one: marker, tube); and the share of found regions
that touch the planted shortcut of their image), then the
sensitivity over relying shortcut cases and the false-alarm rate over clean controls with
Wilson 95 % CIs. Models and cohorts are cached under ``bench/.cache/shortcuts`` (a rerun only
re-runs the search); ``--refresh`` re-runs every search.

    .venv/bin/python -m bench.shortcuts                      # the whole panel (~2-3 h, 2 cores)
    .venv/bin/python -m bench.shortcuts --cases band marker none --seeds 0
    .venv/bin/python -m bench.shortcuts --quick              # 32 px smoke run (tests)

Writes bench/results/shortcuts_panel.json (``--out``) and prints one last line of
``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench._common import RESULTS, write_phantom_cohort, write_results

CACHE = Path(__file__).parent / ".cache" / "shortcuts"
LOCAL_KINDS = ("tag", "band", "marker", "text", "line", "border", "arrow")


@dataclass(frozen=True)
class Case:
    """One classifier of the panel."""

    kind: str                 # shortcut kind, or "none"
    rate: float               # share of positives carrying it
    neg_rate: float           # share of negatives carrying it
    lesion_scale: float
    seed: int
    clean: bool               # a clean control (no label-related shortcut)
    phantom: str = "phantom-cxr"
    negative: bool = False    # the shortcut marks the negatives (``neg_rate`` of them)

    @property
    def key(self) -> str:
        """What ``--cases`` selects: the kind, ``<kind>-neg``, ``none`` or ``<kind>-indep``
        (``indep`` selects every label-independent control)."""
        if self.kind == "none":
            return "none"
        return f"{self.kind}-indep" if self.clean else f"{self.kind}-neg" if self.negative \
            else self.kind

    @property
    def name(self) -> str:
        """``<phantom>-<key>-r<strength>-l<lesion scale>-s<seed>``; the strength of a
        negative-class case is its negatives' rate."""
        r = self.neg_rate if self.negative else self.rate
        return f"{self.phantom[8:]}-{self.key}-r{r:g}-l{self.lesion_scale:g}-s{self.seed}"


BRAIN_KINDS = ("tag", "line", "noise", "border")
NEGATIVE_KINDS = ("tag", "marker", "exposure", "noise")


def panel(kinds: list[str] | None, seeds: list[int], quick: bool, clean_seeds: list[int] | None = None,
          phantoms: tuple[str, ...] = ("cxr", "brain")) -> list[Case]:
    """The panel's cases (module docstring), filtered by ``kinds`` (``none`` and ``indep`` name
    the clean controls): on ``phantom-cxr`` every kind at strengths 0.9 and 0.6 for ``seeds``,
    clean controls for ``clean_seeds`` (default: ``seeds``); on ``phantom-brain`` (a cohort the
    rules were not tuned on) four kinds at 0.9 and the clean controls at full lesion strength,
    for the first seed / the first two clean seeds."""
    if quick:
        return [Case("tag", 0.9, 0.05, 0.5, 0, False), Case("none", 0.0, 0.0, 1.0, 0, True)]
    clean_seeds = seeds if clean_seeds is None else clean_seeds
    cases = []
    if "cxr" in phantoms:
        for s in seeds:
            for k in ("tag", "band", "marker", "text", "line", "noise", "exposure", "border", "arrow",
                      "blur"):
                for r in (0.9, 0.6):
                    cases.append(Case(k, r, 0.05, 0.5, s, False))
        for s in seeds[:1]:
            for k in NEGATIVE_KINDS:
                for r in (0.9, 0.6):
                    cases.append(Case(k, 0.05, r, 0.5, s, False, negative=True))
        for s in clean_seeds:
            for ls in (1.0, 0.5):
                cases.append(Case("none", 0.0, 0.0, ls, s, True))
                cases.append(Case("marker", 0.3, 0.3, ls, s, True))
        for s in clean_seeds[:2]:  # an arrow at the largest finding, or anywhere, on 30 % of both
            cases.append(Case("arrow", 0.3, 0.3, 1.0, s, True))
    if "brain" in phantoms:
        for s in seeds[:1]:
            cases += [Case(k, 0.9, 0.05, 0.5, s, False, "phantom-brain") for k in BRAIN_KINDS]
        for s in clean_seeds[:2]:
            cases += [Case("none", 0.0, 0.0, 1.0, s, True, "phantom-brain"),
                      Case("marker", 0.3, 0.3, 1.0, s, True, "phantom-brain")]
    if kinds:
        cases = [c for c in cases if c.key in kinds or (c.key.endswith("-indep") and "indep" in kinds)]
    return cases


def _opts(c: Case) -> dict:
    if c.kind == "none":
        return {"lesion_scale": c.lesion_scale}
    return {"shortcut": c.kind, "shortcut_negative_rate": c.neg_rate, "lesion_scale": c.lesion_scale}


def _images(c: Case, indices: list[int], size: int, force: bool | None) -> torch.Tensor:
    from medxgan import phantoms

    px = [phantoms.phantom_image(c.phantom, i, size=size, seed=c.seed, shortcut_rate=c.rate,
                                 force_shortcut=force, **_opts(c)).pixels for i in indices]
    return torch.from_numpy(np.stack(px).astype(np.float32) / 255.0)[:, None]


def reliance(c: Case, f, cohort, size: int) -> dict:
    """f's positive rate on the test negatives that do not carry the shortcut, without and with
    it painted on (the same subjects, re-rendered); ``delta`` is on − off. For a shortcut that
    marks the negatives (``c.negative``): on the test positives that do not carry it, and
    ``delta`` is off − on (how many positives painting it turns negative)."""
    from medxgan.metrics.ablation import positive_probability
    from medxgan.phantoms import parse_source_ref

    if c.kind == "none":
        return {"off": float("nan"), "on": float("nan"), "delta": float("nan"), "n": 0}
    t = cohort.index()
    idx = [parse_source_ref(r)[2] for r, y, s in zip(t["source_ref"].to_pylist(), t["label"].to_pylist(),
                                                     t["split"].to_pylist())
           if y == int(c.negative) and s == "test" and not r.endswith(":tag=1")]
    thr = float(getattr(f, "threshold", 0.5))
    off = positive_probability(f, _images(c, idx, size, False)) >= thr
    on = positive_probability(f, _images(c, idx, size, True)) >= thr
    sign = -1.0 if c.negative else 1.0
    return {"off": float(off.double().mean()), "on": float(on.double().mean()),
            "delta": sign * float((on.double() - off.double()).mean()), "n": len(idx)}


def located(c: Case, found, ids: list[str], cohort, size: int) -> dict:
    """Where the found regions lie against the planted shortcut (local kinds)."""
    from medxgan.phantoms import parse_source_ref, shortcut_region

    out = {"iou": float("nan"), "iou_box": float("nan"), "iou_image": float("nan"),
           "on_shortcut": float("nan"), "top_on_shortcut": float("nan")}
    if c.kind not in LOCAL_KINDS or c.negative or not len(found.searched):
        return out
    refs = dict(zip(cohort.index()["image_id"].to_pylist(), cohort.index()["source_ref"].to_pylist()))
    planted, hits, ious = {}, {}, []
    for row, (b, ok) in enumerate(zip(found.searched, found.flipped)):
        ref = refs[ids[int(b)]]
        if not ok or not ref.endswith(":tag=1"):
            continue
        _, _, index = parse_source_ref(ref)
        reg = shortcut_region(c.phantom, index, size=size, seed=c.seed, shortcut=c.kind,
                              lesion_scale=c.lesion_scale)
        planted[int(b)] = reg
        hits[int(b)] = bool((found.masks[row] & reg).any())
        ious.append(float((found.masks[row] & reg).sum() / max(1, (found.masks[row] | reg).sum())))
    if not planted:
        return out
    heat = found.heatmap
    region = heat >= 0.5 * heat.max() if heat.max() > 0 else np.zeros_like(heat, bool)
    union = np.any(np.stack(list(planted.values())), 0) if c.kind != "marker" else None
    if union is not None:
        out["iou"] = float((region & union).sum() / max(1, (region | union).sum()))
        ys, xs = np.nonzero(union)
        box = np.zeros_like(union)
        box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        out["iou_box"] = float((region & box).sum() / max(1, (region | box).sum()))
    out["on_shortcut"] = float(np.mean(list(hits.values())))
    out["iou_image"] = float(np.mean(ious))
    top = [int(i) for i in found.top_images if int(i) in hits]
    out["top_on_shortcut"] = float(np.mean([hits[i] for i in top])) if top else float("nan")
    return out


def infill_table(f, G, cohort, seed: int = 0) -> dict:
    """The findings' ablation with each infill (``medxgan.metrics.ablation.ablation_scores``,
    as the audit's intervention stage) on the test positives with boxes and, as the infill's
    own control, the test negatives with a positive's boxes: per infill the share of positives
    f still calls positive without their findings (among those it calls positive), the mean
    drop, and the share of negatives f calls positive once the borrowed boxes are filled."""
    from medxgan.metrics.ablation import ablation_scores, positive_probability
    from medxgan.metrics.masks import boxes_to_masks
    from medxgan.metrics.shortcut_run import shortcut_sample

    ids = shortcut_sample(cohort, "test", 128)
    b = cohort.load(ids)
    H, W = b.images.shape[-2:]
    masks = boxes_to_masks(b.boxes, H, W)
    pos = torch.nonzero((b.labels == 1) & masks.flatten(1).any(1)).flatten()
    neg = torch.nonzero(b.labels == 0).flatten()
    g = torch.Generator().manual_seed(seed)
    borrowed = masks.clone()
    borrowed[neg] = masks[pos[torch.randint(len(pos), (len(neg),), generator=g)]]
    thr = float(getattr(f, "threshold", 0.5))
    p0 = positive_probability(f, b.images)
    out = {}
    for method in ("blur", "noisy_linear", "inpaint"):
        kw = {"inpainter": G} if method == "inpaint" else {}
        v = ablation_scores(f, b.images, masks, borrowed, method=method, seed=seed, **kw)
        called = pos[p0[pos] >= thr]
        still = (1 - v["ablation_flip"][called]).nanmean()
        neg_pos = ((p0[neg] - v["ablation_drop_shuffled"][neg]) >= thr).double().mean()
        out[method] = {"still_positive": float(still), "drop": float(v["ablation_drop"][pos].nanmean()),
                       "negatives_positive": float(neg_pos), "n_pos": len(called), "n_neg": len(neg)}
    return out


def run_case(c: Case, *, quick: bool, refresh: bool, device: str = "cpu",
             cache: Path = CACHE, images: int | None = None,
             residual_images: int | None = None) -> dict:
    """Cohort, classifier, in-filler (cached), reliance, the search and the answer of one case;
    the search on up to ``images`` test images, its location-free evidence on up to
    ``residual_images`` (defaults: the audit's ``score.shortcut_images`` and
    ``score.residual_images``; 48 with ``quick``)."""
    from medxgan.cohort.reader import Cohort
    from medxgan.config.audit import ScoreSection, field_default
    from medxgan.config.models import ClassifierTrainConfig, GanConfig, GanTrainConfig
    from medxgan.metrics.shortcut_run import cohort_shortcut, shortcut_json
    from medxgan.classifiers import load_classifier
    from medxgan.classifiers.train import train_classifier
    from medxgan.generators import load_generator, train_gan
    from medxgan.report._evidence import Evidence
    from medxgan.report.answers import shortcut_answer
    from medxgan.storage import Store

    size, n = (32, 600) if quick else (64, 2000)
    root = cache / ("quick" if quick else "full") / c.name
    t0 = time.perf_counter()
    cohort_url = str(root / "cohort")
    if Store(cohort_url).read_manifest() is None:
        write_phantom_cohort(cohort_url, c.phantom, n, size=size, seed=c.seed,
                             shortcut_rate=c.rate, **_opts(c))
    cohort = Cohort(cohort_url)
    clf = Store(str(root / "classifier"))
    if not clf.exists("spec.yaml"):
        train_classifier(cohort_url, clf, ClassifierTrainConfig(
            arch="small_cnn" if quick else "small_cnn2", epochs=12,
            flips="horizontal", seed=c.seed, device=device))
    metrics = clf.read_json("metrics.json")
    f = load_classifier(clf.url_of("spec.yaml"))
    gan = Store(str(root / "gan"))
    if gan.read_manifest() is None:
        train_gan(cohort_url, f, gan, GanConfig(family="inpaint", image_size=size),
                  GanTrainConfig(seed=c.seed, device=device, health_heldout=6 if quick else 24,
                                 inpaint={"steps": 100 if quick else 600,
                                          "health": {"negatives": 16 if quick else 32}}))
    G = load_generator(gan.url)[0]
    t_models = time.perf_counter() - t0
    rel = reliance(c, f, cohort, size)
    t1 = time.perf_counter()
    cap = 48 if quick else (images or field_default(ScoreSection, "shortcut_images"))
    rcap = 48 if quick else (residual_images or field_default(ScoreSection, "residual_images"))
    found, ids, batch = cohort_shortcut(cohort, f, split="test", cap=cap, residual_cap=rcap,
                                        inpainter=G, seed=0, n_boot=200 if quick else 1000)
    t_search = time.perf_counter() - t1
    js = shortcut_json(found, ids, batch.labels, "test")
    ans = shortcut_answer(js, Evidence(None, None, None, 0))
    infills = infill_table(f, G, cohort)
    return {"case": asdict(c), "name": c.name, "test_auroc": metrics["test"]["auroc"],
            "reliance": rel, "relies": bool(rel["delta"] >= 0.2) if rel["n"] else None,
            "flagged": ans.outcome == "yes", "outcome": ans.outcome,
            "grade": getattr(ans, "grade", None), "sentence": ans.sentence,
            "evidence": js["strongest"], "located": located(c, found, ids, cohort, size),
            "shortcut": {k: v for k, v in js.items() if k != "heatmap"}, "infill": infills,
            "seconds": {"models": round(t_models, 1), "search": round(t_search, 1)}}


def backfill_infill(c: Case, quick: bool, cache: Path = CACHE) -> dict:
    """:func:`infill_table` of a case whose models are cached (results of an earlier version)."""
    from medxgan.cohort.reader import Cohort
    from medxgan.classifiers import load_classifier
    from medxgan.generators import load_generator

    root = cache / ("quick" if quick else "full") / c.name
    f = load_classifier(str(root / "classifier" / "spec.yaml"))
    return infill_table(f, load_generator(str(root / "gan"))[0], Cohort(str(root / "cohort")))


def rejudge(r: dict) -> dict:
    """A stored case judged again by today's rule (the evidence is not recomputed)."""
    from medxgan.report._evidence import Evidence
    from medxgan.report.answers import shortcut_answer

    ans = shortcut_answer(r["shortcut"], Evidence(None, None, None, 0))
    return {**r, "flagged": ans.outcome == "yes", "outcome": ans.outcome,
            "grade": getattr(ans, "grade", None), "sentence": ans.sentence}


def wilson(k: int, n: int) -> tuple[float, float, float]:
    """Share k / n with its Wilson 95 % interval (NaNs for n = 0)."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    z, p = 1.96, k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return p, max(0.0, c - h), min(1.0, c + h)


def summarise(rows: list[dict]) -> dict:
    """Sensitivity over relying shortcut cases, false alarms over clean controls, location."""
    short = [r for r in rows if not r["case"]["clean"] and r["relies"]]
    clean = [r for r in rows if r["case"]["clean"]]
    sens = wilson(sum(r["flagged"] for r in short), len(short))
    fa = wilson(sum(r["flagged"] for r in clean), len(clean))
    pos = [r for r in short if not r["case"].get("negative")]
    loc = [r for r in pos if r["case"]["kind"] in LOCAL_KINDS and r["case"]["kind"] != "marker"]
    mov = [r for r in pos if r["case"]["kind"] == "marker"]
    iou_ok = [r for r in loc if max(r["located"]["iou"] or 0, r["located"].get("iou_box") or 0,
                                    r["located"].get("iou_image") or 0) >= 0.3]
    mov_ok = [r for r in mov if (r["located"]["top_on_shortcut"] or 0) >= 0.7]
    return {"n_shortcut": len(short), "n_not_relying": sum(1 for r in rows if not r["case"]["clean"] and not r["relies"]),
            "sensitivity": sens[0], "sensitivity_ci_low": sens[1], "sensitivity_ci_high": sens[2],
            "n_clean": len(clean), "false_alarm": fa[0], "false_alarm_ci_low": fa[1],
            "false_alarm_ci_high": fa[2], "located_iou_ok": len(iou_ok), "located_n": len(loc),
            "moving_ok": len(mov_ok), "moving_n": len(mov)}


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and v != v) else f"{v:.2f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two 32 px cases (a tag, a clean one)")
    ap.add_argument("--cases", nargs="*", help="kinds to run (tag band marker text line noise "
                    "exposure border arrow blur; <kind>-neg for a shortcut that marks the negatives: "
                    "tag-neg marker-neg exposure-neg noise-neg; none; indep, or marker-indep / "
                    "arrow-indep alone); default all")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1], help="seeds of the shortcut cases")
    ap.add_argument("--clean-seeds", nargs="*", type=int, default=[0, 1, 2, 3],
                    help="seeds of the clean controls")
    ap.add_argument("--phantoms", nargs="*", default=["cxr", "brain"], choices=["cxr", "brain"])
    ap.add_argument("--refresh", action="store_true", help="re-run every search (models cached)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=CACHE, help="cohorts and models (reused)")
    ap.add_argument("--images", type=int, default=None,
                    help="test images per search (default: the audit's score.shortcut_images)")
    ap.add_argument("--residual-images", type=int, default=None,
                    help="test images of the location-free evidence (default: score.residual_images)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = a.out or RESULTS / ("shortcuts_quick.json" if a.quick else "shortcuts_panel.json")
    done = {}
    if out.exists() and not a.refresh and not a.quick:
        import json

        done = {r["name"]: r for r in json.loads(out.read_text()).get("cases", [])}
    rows = []
    print(f"{'case':34s} {'AUROC':>5s} {'relies':>6s} {'flag':>4s} {'evidence':>22s} {'effect [CI]':>20s} "
          f"{'IoU':>5s} {'on':>5s}", flush=True)
    for c in panel(a.cases, a.seeds, a.quick, a.clean_seeds, tuple(a.phantoms)):
        r = done.get(c.name)
        r = rejudge(r) if r is not None else run_case(c, quick=a.quick, refresh=a.refresh,
                                                      cache=a.cache, images=a.images,
                                                      residual_images=a.residual_images)
        if "infill" not in r:
            r["infill"] = backfill_infill(c, a.quick, a.cache)
        rows.append(r)
        e = r["evidence"]
        print(f"{r['name']:34s} {_fmt(r['test_auroc']):>5s} {_fmt(r['reliance']['delta']):>6s} "
              f"{'YES' if r['flagged'] else 'no':>4s} {str(e['kind'])[:12] + ':' + str(e['name'])[:9]:>22s} "
              f"{_fmt(e['effect'])} [{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]".ljust(110)
              + f" {_fmt(r['located']['iou']):>5s} {_fmt(r['located']['on_shortcut']):>5s}", flush=True)
        write_results(out, {"cases": rows, "summary": summarise(rows)})
    s = summarise(rows)
    write_results(out, {"cases": rows, "summary": s})
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()))
    return s


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
