"""Generator families side by side on a phantom cohort: does the change model *this* image's
lesion? (issue #14; docs/design.md, "The medXGAN method").

On a phantom cohort (``--dataset``, 64 px, 1 200 images: ~820 train, ~260 test) a small_cnn2
classifier f is trained (10 epochs; seed ``--seed``) and an oracle: the same architecture
trained with seed + 1 (the issue's "second classifier trained with another seed"; its flip rate
on the true twins, ``oracle_flip_true_twins`` in the JSON's ``test_health``, is the ceiling of
``oracle_flip``). Either is trained again from scratch with 20, then 40 epochs while its
validation AUROC is below ``--auroc-floor`` (0.9; the JSON's ``classifier.epochs`` and
``oracle.epochs`` say how many it got): every 64 px classifier passes at 10, but 10 epochs left
cxr at 128 px at test AUROC 0.65-0.90, a classifier that reads little of the lesions.
Then the family's generator is trained by the GAN stage itself (``train_gan`` with
``gan.model.family``; ``--minutes`` of wall clock; published: the benches' G 0.25 / D 0.5
variant, checkpoint kept by held-out *val* fidelity; inpaint: the default in-filler and search,
its one checkpoint; residual: the default VA-GAN map generator, its one checkpoint), loaded with ``load_generator`` and judged on the first ``--n-test`` test
positives with boxes that f calls positive (as the issue's prototypes were; positives f calls
negative have no counterfactual, their difference map is empty, and the JSON counts them as
``n_called_negative_skipped``):

- the ``medxgan`` difference map of the family, explained and scored as the audit does
  (``explain_batch`` -> the stored float16 table -> ``score_batch`` against the own boxes and
  the run-wide ``shuffle_partners`` partner's): ``mass_own`` / ``mass_shuffled`` (relevance
  mass), ``pointing_own`` / ``pointing_shuffled``; Grad-CAM and IG on the same images
  (``bench._pipeline.explain_and_score``);
- ``counterfactual_health`` (medxgan.generators.health) of its counterfactuals: change
  similarity, universal flip (mean change added to up to 100 test negatives f calls negative),
  oracle flip, counterfactual NCC with the true change x - healthy twin
  (``medxgan.phantoms.true_twins``) and with a partner's (shuffled);
- ``recon_mse``: the medxgan explanation's (published: inversion MSE in GAN space [-1, 1];
  inpaint, residual: 0, x_pos = x), ``explain_s_per_image``: seconds of the medxgan explanation;
- ``size`` (px); ``mask_dice``: Dice of the pixels x_neg changed with the rendered lesion's
  (``medxgan.metrics.counterfactual.counterfactual_dice``); ``healthy_control``: share of
  in-fillings of random lesion-sized holes in test negatives that f calls positive (the
  family's healthy in-filler, ``medxgan.metrics.counterfactual.healthy_control``; NaN for a
  family without one); ``speedup_vs_published``: seconds per image of the published per-image
  inversion (``published-brain`` recipe, one image at a time, a published generator of the same
  size, random-init unless the family is ``published``) timed in the same run on the first
  ``--n-published`` of the same images, over ``explain_s_per_image``; ``flip_rate`` (f calls
  x_neg negative) and ``area`` (share of the image's pixels x_neg changed);
- the ceilings, in the JSON's ``test_health``: ``oracle_flip_true_twins`` and
  ``flip_rate_true_twins`` (the oracle and f on the true healthy twins),
  ``flip_rate_true_support`` / ``oracle_flip_true_support`` (f and the oracle on the
  in-filling of the true lesion support: a perfect mask) and ``mask_dice_support_1px`` (the
  mask Dice of that support grown by one pixel); ``mask_precision`` / ``mask_recall`` (the
  halves of ``mask_dice``) and ``mask_recall_visible`` / ``support_faint_share`` (the recall on
  the lesion pixels above ``VISIBLE`` contrast, the share of the support below it).

The in-filler of an image-conditioned family is trained once per cohort, family, seed, minutes,
options and f (it learns healthy anatomy from the train images f calls negative) and reused by
later runs (``--retrain`` trains it again); ``--search`` then only
changes how the loaded generator searches (``G.search``), so search variants are compared on
the same in-filler.

    .venv/bin/python -m bench.generators --family inpaint --minutes 6
    .venv/bin/python -m bench.generators --family residual --dataset phantom-brain --seed 1
    .venv/bin/python -m bench.generators --size 128 --dataset phantom-brain
    .venv/bin/python -m bench.generators --search '{complete: true}'   # same in-filler
    .venv/bin/python -m bench.generators --quick          # 32 px smoke run, seconds

Writes bench/results/generators_<family>_<dataset>_s<seed>.json (``--out``) and prints one
last line of ``key=value`` pairs (``family`` first, a name; every other value a number).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

from bench._args import device_flags
from bench._common import RESULTS, gan_variant, phantom_cohort, write_results
from bench._pipeline import explain_and_score

KEYS = ["change_similarity", "universal_flip", "oracle_flip", "counterfactual_ncc",
        "counterfactual_ncc_shuffled", "mass_own", "mass_shuffled", "pointing_own",
        "pointing_shuffled", "gradcam_mass", "ig_mass", "gradcam_pointing", "ig_pointing",
        "recon_mse", "explain_s_per_image", "size", "mask_dice", "healthy_control",
        "speedup_vs_published", "flip_rate", "area"]


def _visible_tol() -> float:
    from medxgan.config.inpaint import SearchConfig

    return SearchConfig.model_fields["complete_tol"].default


VISIBLE = _visible_tol()
"""Contrast (intensity in [0, 1]) above the in-filler's own error on healthy anatomy: the
smallest difference the search's completion reads as the finding (``SearchConfig.complete_tol``)."""


def _configs(family: str, size: int, minutes: float, seed: int, device: str, quick: bool,
             search: dict | None = None, options: dict | None = None):
    """(GanConfig, GanTrainConfig) of the family as this bench trains it (``search``: the
    inpaint family's ``SearchConfig`` fields that differ from the default; ``options``: the
    fields of the family's own training config, ``InpaintConfig`` / ``ResidualConfig``, that
    do). A family with its own section of ``gan.train`` trains for ``minutes`` of wall clock
    in it; the published family by ``gan.train`` itself."""
    from medxgan.config.models import GanConfig, GanTrainConfig
    from medxgan.generators import family as generator_family

    held = 6 if quick else 24
    own = generator_family(family).own_config
    if own:
        Own = type(getattr(GanTrainConfig(), own))
        extra = {"search": search or {}} if _has_search(family) else {}
        kw = {"steps": None, "seconds": minutes * 60, "seed": seed,
              "health": {"negatives": 16 if quick else 64}, **extra}
        oc = Own(**{**kw, **(options or {})})  # e.g. '{steps: 2000, seconds: null}'

        return GanConfig(family=family, image_size=size), GanTrainConfig(
            seed=seed, device=device, health_heldout=held, **{own: oc})
    gc = gan_variant("published", "unconditional", size=size)
    return gc, GanTrainConfig(lambda_cls=2.0, batch=32, steps=10**6, seed=seed, device=device,
                              checkpoint_every=20 if quick else 250, health_heldout=held,
                              health_samples=64 if quick else 1000,
                              time_limit_s=minutes * 60)


def _has_search(family: str) -> bool:
    """Does the family's own section of ``gan.train`` have a ``search`` (the inpaint family's
    :class:`~medxgan.config.inpaint.SearchConfig`)?"""
    from medxgan.config.models import GanTrainConfig
    from medxgan.generators import family as generator_family

    own = generator_family(family).own_config
    return bool(own) and "search" in type(getattr(GanTrainConfig(), own)).model_fields


def _published_s_per_image(G, family: str, f, x: torch.Tensor, size: int, seed: int) -> float:
    """Seconds per image of the published per-image inversion (``published-brain``: 1000 Adam
    steps, lr 1e-3, one image at a time) of images ``x`` (n, 1, S, S): with G itself when the
    family is the latent one, else with a random-init published generator of the same size (its
    weights do not change the cost); NaN where no published generator of that size exists."""
    from medxgan.config.explain import InversionConfig
    from medxgan.config.models import GanTrainConfig
    from medxgan.explain.seeding import content_seeds
    from medxgan.generators import family as generator_family
    from medxgan.generators.published.inversion import invert
    from medxgan.generators.published.train import new_state

    if not len(x):
        return float("nan")
    dev = next(iter(f.parameters())).device
    if not generator_family(family).latent:
        try:
            gc = gan_variant("published", "unconditional", size=size)
            G = new_state(gc, GanTrainConfig(seed=seed, device=dev.type)).G.eval()
        except (ValueError, RuntimeError, KeyError) as e:
            print(f"no published generator at {size} px ({e}): speedup_vs_published=nan")
            return float("nan")
    x = x.to(dev)
    seeds = content_seeds(x, seed)
    cfg = InversionConfig.recipe("published-brain")
    t = time.perf_counter()
    for i in range(len(x)):
        invert(G, f, x[i:i + 1], cfg, seed=seeds[i:i + 1])
    return (time.perf_counter() - t) / len(x)


EPOCHS = 10  # f's and the oracle's first try
AUROC_FLOOR = 0.9  # --auroc-floor's default


def _classifier(cohort_url: str, url: str, arch: str, epochs: int, seed: int, device: str,
                floor: float = 0.0):
    """The classifier of ``url`` (trained for ``epochs`` when absent) and its metrics; while its
    validation AUROC is below ``floor`` it is trained again from scratch with twice the epochs
    (at most 4 x ``epochs``; kept in ``<url>-e<epochs>``). The metrics gain ``epochs``.

    A classifier that does not read the lesions makes every counterfactual number a statement
    about it, not about the generator: 10 epochs gave cxr at 128 px test AUROC 0.65 on seed 2
    (20 epochs: 0.94)."""
    from medxgan.classifiers import load_classifier
    from medxgan.classifiers.train import train_classifier
    from medxgan.config.models import ClassifierTrainConfig
    from medxgan.storage import Store

    for k, ep in enumerate((epochs, 2 * epochs, 4 * epochs)):  # the last try is kept anyway
        u = url if k == 0 else f"{url}-e{ep}"
        if not Store(u).exists("spec.yaml"):
            train_classifier(cohort_url, u, ClassifierTrainConfig(
                arch=arch, epochs=ep, batch=64, max_lr=2e-3, seed=seed, device=device))
        metrics = {**Store(u).read_json("metrics.json"), "epochs": ep}
        if not metrics["val"]["auroc"] < floor:  # NaN passes
            break
    return load_classifier(f"{u}/spec.yaml").to(device), metrics


def _distil(G, cohort, f, fields: dict, size: int, seed: int, device: str, cache: Path) -> dict:
    """Distil an amortised mask net (``AmortiseConfig`` ``fields``) onto the loaded in-filler G
    from the search (G's config) on the train images f calls positive, as the GAN stage does
    (:func:`medxgan.generators.inpaint.amortised.distil`); returns its stats with
    ``seconds_total`` (search and training). The net is kept in ``cache`` (a folder named by
    the in-filler run, the search and the fields that shape the net) and reused from there:
    ``prune``, ``trim`` and ``thresholds`` act at explanation time only."""
    import hashlib

    from medxgan.cohort.loading import load_train_data
    from medxgan.config.inpaint import AmortiseConfig
    from medxgan.explain._torch import probabilities
    from medxgan.generators.inpaint.amortised import MaskNet, distil

    cfg = AmortiseConfig.model_validate(fields)
    G.amortise = cfg
    shaping = {**cfg.model_dump(mode="json", exclude={"prune", "trim", "thresholds"}),
               "search": G.search.model_dump(mode="json"), "seed": seed}
    key = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"mask-net-{key}.pt"
    if path.exists():
        kept = torch.load(path, weights_only=True)
        G.mask_net = MaskNet(cfg.base, cfg.depth)
        G.mask_net.load_state_dict(kept["state_dict"])
        G.mask_net.to(device).eval()
        return {**kept["stats"], "reused": True}
    t = time.perf_counter()
    data = load_train_data(cohort, size)
    called = probabilities(f, data.images, device=device) >= float(getattr(f, "threshold", 0.5))
    rec, stats = distil(G, f, data.images[called], cfg, seed, torch.device(device))
    stats["seconds_total"] = round(time.perf_counter() - t, 1)
    if rec is not None:
        cache.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": rec["state_dict"], "stats": stats}, path)
    print(f"amortised mask: {stats}", flush=True)
    return stats


def trained_for(run_url: str, f) -> bool:
    """Whether the generator run at ``run_url`` was trained for classifier ``f`` (its manifest's
    ``classifier_sha256``): an in-filler learns healthy anatomy from what f calls negative."""
    from medxgan.storage import Store

    kept = Store(run_url).read_json("manifest.json") or {}
    return kept.get("classifier_sha256") == str(getattr(f, "sha256", ""))


def _test_ids(cohort, n: int, label: int) -> list[str]:
    """The first ``n`` test images of ``label`` (positives: with boxes), in cohort order."""
    ids: list[str] = []
    for b in cohort.iter_batches(256, split="test", labels=[label]):
        ids += [i for i, bx in zip(b.image_ids, b.boxes) if len(bx) or not label]
        if len(ids) >= n:
            break
    return ids[:n]


def _called_positive_ids(cohort, f, n: int, device: str) -> tuple[list[str], int]:
    """The first ``n`` test positives with boxes that f calls positive, in cohort order, and
    how many positives with boxes f called negative on the way (they have no counterfactual:
    the difference map is empty; the issue's prototypes were measured on the same selection)."""
    thr = float(getattr(f, "threshold", 0.5))
    ids: list[str] = []
    skipped = 0
    for b in cohort.iter_batches(256, split="test", labels=[1]):
        with torch.no_grad():
            p = torch.sigmoid(f(b.images.to(device)).float()).cpu()
        for i, bx, pi in zip(b.image_ids, b.boxes, p.tolist()):
            if len(bx) and len(ids) < n:
                if pi >= thr:
                    ids.append(i)
                else:
                    skipped += 1
        if len(ids) >= n:
            break
    return ids, skipped


def _family_scores(cohort, f, G, ids: list[str], seed: int, device: str, batch_size: int = 32):
    """The family's medxgan maps explained and scored as the audit does; returns (scores,
    seconds per image, images, x_neg, changes, masks, recon_mse)."""
    import pandas as pd

    from medxgan.explain import explain_batch
    from medxgan.explain.serialize import explanation_table
    from medxgan.metrics import partner_masks, score_batch, scoring_inputs, shuffle_partners
    from medxgan.metrics.masks import boxes_to_masks

    boxes = cohort.boxes_by_id()
    partners = shuffle_partners(ids, boxes, seed)
    opts = {"faithfulness": False, "robustness": False, "seed": seed, "method_options": {}}
    frames, keep, seconds = [], {"x": [], "x_neg": [], "change": [], "masks": [], "mse": []}, 0.0
    for s in range(0, len(ids), batch_size):
        part = ids[s:s + batch_size]
        batch = cohort.load(part)
        x = batch.images.to(device)
        t = time.perf_counter()
        expl = explain_batch(x, f, G, ["medxgan"], None, ids=part)["medxgan"]
        seconds += time.perf_counter() - t
        _, maps, extras = scoring_inputs(explanation_table(part, expl, "medxgan"))
        H, W = maps.shape[1:]
        size = tuple(x.shape[-2:])
        masks = boxes_to_masks(batch.boxes, H, W, size)
        others = partner_masks(part, partners, boxes, H, W, size)
        frames.append(score_batch(maps, masks, others, f, x, opts, method="medxgan", ids=part,
                                  extras=extras))
        for k, v in (("x", x), ("x_neg", expl.extras["x_neg"]), ("change", expl.extras["change"]),
                     ("masks", masks), ("mse", expl.extras["recon_mse"])):
            keep[k].append(v.detach().cpu())
    cat = {k: torch.cat(v) for k, v in keep.items()}
    return (pd.concat(frames, ignore_index=True), seconds / max(1, len(ids)), cat)


@torch.no_grad()
def _true_support_ceiling(filler, f, oracle, x: torch.Tensor, twins: torch.Tensor,
                          sel: torch.Tensor) -> dict[str, float]:
    """What a perfect mask would give with this in-filler: images ``x`` (n, 1, S, S) in-filled
    on their true lesion support (pixels that differ from the healthy ``twins`` by at least
    ``SUPPORT_TOL``): f's flip rate (``flip_rate_true_support``) and the oracle's, among the
    images ``sel`` (n,) bool it calls positive (``oracle_flip_true_support``): the ceilings of
    ``flip_rate`` and ``oracle_flip`` when the mask is right and only the in-filling differs
    from the twin; and ``mask_dice_support_1px``, the mask Dice of in-filling that support
    grown by one pixel (how close to the true support a mask must be for a given Dice)."""
    from medxgan.generators.inpaint.complete import dilate_masks, fill_batches
    from medxgan.metrics.counterfactual import SUPPORT_TOL, counterfactual_dice

    dev = next(iter(f.parameters())).device
    x, twins = x.cpu(), twins.cpu()
    support = (x - twins).abs()[:, 0] >= SUPPORT_TOL                  # (n, S, S) bool
    xf = fill_batches(filler, x, support, 64)                         # (n, 1, S, S), CPU
    dice_1px = counterfactual_dice(x - fill_batches(filler, x, dilate_masks(support, 1), 64),
                                   x - twins)
    thr, thr_o = float(getattr(f, "threshold", 0.5)), float(getattr(oracle, "threshold", 0.5))
    p_f = torch.sigmoid(f(xf.to(dev)).float()).cpu()
    p_o = torch.sigmoid(oracle(xf.to(dev)).float()).cpu()
    sel = sel.cpu()
    return {"flip_rate_true_support": float((p_f < thr).float().mean()),
            "oracle_flip_true_support": float((p_o[sel] < thr_o).float().mean())
            if bool(sel.any()) else float("nan"),
            "mask_dice_support_1px": float(dice_1px.nanmean())}


def _visible_recall(x: torch.Tensor, x_neg: torch.Tensor, twins: torch.Tensor,
                    visible: float) -> dict[str, float]:
    """Where the mask Dice's recall is lost: ``mask_recall_visible``, the share of each lesion's
    pixels of contrast ``|x - twin| >= visible`` (intensity in [0, 1]) that x_neg changed (by at
    least ``SUPPORT_TOL``), and ``support_faint_share``, the share of the true support (every
    pixel the lesion moved by ``SUPPORT_TOL``) fainter than ``visible``: the lesion's tails,
    which count in Dice but which no in-filler's error bar resolves. Means over images with a
    lesion; x, x_neg, twins (n, 1, S, S)."""
    from medxgan.metrics.counterfactual import SUPPORT_TOL, mask_overlap

    true = (x - twins.to(x.device))[:, 0]                                # (n, S, S)
    vis = true.abs() >= visible
    n_vis = vis.flatten(1).sum(1).double()
    n_sup = (true.abs() >= SUPPORT_TOL).flatten(1).sum(1).double()
    rec = mask_overlap((x - x_neg)[:, 0], torch.where(vis, true, 0.0))["recall"]  # NaN: no vis
    return {"mask_recall_visible": float(rec.nanmean()),
            "support_faint_share": float((1 - n_vis / n_sup.clamp(min=1))[n_sup > 0].mean())
            if bool((n_sup > 0).any()) else float("nan")}


def _loc(scores, method: str | None = None) -> dict[str, float]:
    s = scores if method is None else scores[scores["method"] == method]
    mean = s.groupby("metric")["value"].mean()
    get = lambda k: float(mean.get(k, float("nan")))  # noqa: E731
    return {"mass": get("relevance_mass"), "mass_shuffled": get("relevance_mass_shuffled"),
            "pointing": get("pointing_game"), "pointing_shuffled": get("pointing_game_shuffled")}


def run_tag(*options: dict | None) -> str:
    """The suffix of a trained run's folder name from the options it was trained with
    (``-stepsN-train_crop0.5``...), so later runs and the gallery find it."""
    return "".join("-" + "-".join(f"{k}{v}" for k, v in sorted(d.items()))
                   for d in options if d).replace(" ", "").replace("'", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 parents=[device_flags(threads=1)])
    ap.add_argument("--family", default="inpaint", choices=["published", "inpaint", "residual"],
                    help="gan.model.family (medxgan.generators.registry.names())")
    ap.add_argument("--dataset", default="phantom-cxr", choices=["phantom-cxr", "phantom-brain"])
    ap.add_argument("--minutes", type=float, default=None,
                    help="training wall clock of the generator (default 10; 0.15 with --quick)")
    ap.add_argument("--seed", type=int, default=0, help="cohort, classifier and generator seed")
    ap.add_argument("--quick", action="store_true", help="32 px, 240 images, seconds")
    ap.add_argument("--size", type=int, default=None,
                    help="image side in px of the cohort, f and the generator (default 64; "
                         "32 with --quick), e.g. 128, 224, 256")
    ap.add_argument("--n-images", type=int, default=None,
                    help="phantom cohort size (default 1200; 240 with --quick)")
    ap.add_argument("--n-published", type=int, default=None,
                    help="images inverted by the published per-image recipe for "
                         "speedup_vs_published (default 4; 1 with --quick; 0: not timed)")
    ap.add_argument("--retrain", action="store_true",
                    help="train the generator again even where this bench trained it before")
    ap.add_argument("--search", default=None,
                    help="inpaint: SearchConfig fields as YAML, e.g. '{crop: null, stride: 8}'")
    ap.add_argument("--residual", default=None,
                    help="residual: ResidualConfig fields as YAML, e.g. '{cls_weight: 0.1}'")
    ap.add_argument("--inpaint", default=None,
                    help="inpaint: InpaintConfig fields as YAML, e.g. "
                         "'{amortise: {images: 160}}'")
    ap.add_argument("--amortise", default=None,
                    help="inpaint: AmortiseConfig fields as YAML, e.g. '{images: 160, trim: "
                         "true}': a mask net distilled (medxgan.generators.inpaint.amortised."
                         "distil, with --search) onto the in-filler trained without one, which "
                         "is reused; its seconds count as training")
    ap.add_argument("--auroc-floor", type=float, default=AUROC_FLOOR,
                    help="f and the oracle are trained again with twice the epochs (at most "
                    "4x) while their validation AUROC is below this (0: off; --quick: off)")
    ap.add_argument("--n-test", type=int, default=None, help="test positives (default 100)")
    ap.add_argument("--work", default="/tmp/medxgan-bench/generators", help="store folder")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/"
                    "generators_<family>_<dataset>_s<seed>.json)")
    args = ap.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(args.threads)

    from medxgan.cohort.reader import Cohort
    from medxgan.generators import load_generator, train_gan
    from medxgan.generators import family as generator_family
    from medxgan.generators.health import counterfactual_health
    from medxgan.metrics.counterfactual import SUPPORT_TOL, healthy_control
    from medxgan.phantoms import true_twins
    from medxgan.storage import Store

    size = args.size or (32 if args.quick else 64)
    n_images = args.n_images or (240 if args.quick else 1200)
    n_published = args.n_published if args.n_published is not None else (1 if args.quick else 4)
    minutes = args.minutes if args.minutes is not None else (0.15 if args.quick else 10.0)
    n_test = args.n_test or (16 if args.quick else 100)
    work = Path(args.work) / ("quick" if args.quick else "full")
    t0 = time.perf_counter()
    cohort_url = str(work / f"cohort-{args.dataset}-{size}-n{n_images}-s{args.seed}")
    phantom_cohort(cohort_url, args.dataset, n_images, size=size, seed=args.seed)
    cohort = Cohort(cohort_url)
    epochs = 20 if args.quick else EPOCHS
    floor = 0.0 if args.quick else args.auroc_floor
    f, f_metrics = _classifier(cohort_url, f"{cohort_url}-clf-small_cnn2-s{args.seed}",
                               "small_cnn2", epochs, args.seed, args.device, floor)
    oracle, o_metrics = _classifier(cohort_url, f"{cohort_url}-oracle-small_cnn2-s{args.seed + 1}",
                                    "small_cnn2", epochs, args.seed + 1, args.device, floor)
    print(f"classifier ({f_metrics['epochs']} epochs) test {f_metrics['test']}  oracle "
          f"({o_metrics['epochs']} epochs) test {o_metrics['test']}", flush=True)

    import yaml

    search = yaml.safe_load(args.search) if args.search else None
    text = vars(args).get(args.family)  # --inpaint / --residual: that family's own options
    options = yaml.safe_load(text) if text else None
    # the search does not change what is trained (unless it is amortised): one in-filler for
    # every search variant, the variant (or today's defaults, with no --search) applied to the
    # loaded generator; a cached in-filler is never retrained because the search's defaults
    # or fields changed (session 15: `--search '{}'` did, and deleted the cached in-filler)
    late_search = _has_search(args.family) and not (options or {}).get("amortise")
    trained_with = None if late_search else search
    gc, tc = _configs(args.family, size, minutes, args.seed, args.device, args.quick,
                      trained_with, options)
    tag = run_tag(trained_with, options)
    out_url = str(work / f"gen-{args.family}-{args.dataset}-{size}px-s{args.seed}-{minutes:g}m"
                  f"{tag}")
    trained = Store(out_url).exists("manifest.json") and not args.retrain
    if trained:  # trained for another f, or of other configs (an older release): train again
        kept = Store(out_url).read_json("manifest.json")
        trained = trained_for(out_url, f)
        if not late_search:
            trained = trained and kept.get("train_config") == tc.model_dump(mode="json") and \
                kept.get("gan_config") == gc.model_dump(mode="json")
    if not trained:
        Store(out_url).delete("")
    t = time.perf_counter()
    if trained and late_search:  # the in-filler as trained (its search is replaced below)
        summary = {**Store(out_url).read_json("manifest.json"), "reused": True}
    else:
        summary = train_gan(cohort_url, f, out_url, gc, tc)
    train_s = time.perf_counter() - t
    G, meta = load_generator(out_url)
    G = G.to(args.device)
    if late_search:  # today's defaults with the given fields (the run was trained without any)
        from medxgan.config.inpaint import SearchConfig

        G.search = SearchConfig.model_validate(search or {})
    print(f"{args.family}: {summary['steps']} steps in {train_s:.0f} s, kept step {meta['step']}"
          + (" (trained before: reused)" if summary.get("reused") else ""), flush=True)
    distilled = _distil(G, cohort, f, yaml.safe_load(args.amortise), size, args.seed,
                        args.device, Path(out_url)) if args.amortise else None

    if args.quick:  # its weak 32 px classifier calls few positives positive: take them all
        ids, skipped = _test_ids(cohort, n_test, 1), 0
    else:
        ids, skipped = _called_positive_ids(cohort, f, n_test, args.device)
    scores, s_per_image, kept = _family_scores(cohort, f, G, ids, args.seed, args.device)
    base, base_s = explain_and_score(cohort, f, None, ids, ["gradcam", "ig"],
                                     faithfulness=False, seed=args.seed, device=args.device)
    negs = cohort.load(_test_ids(cohort, 100, 0)).images.to(args.device)
    with torch.no_grad():
        called_neg = negs[torch.sigmoid(f(negs).float()) < float(getattr(f, "threshold", 0.5))]
    twins = true_twins(cohort, ids)
    health = counterfactual_health(f, kept["x"].to(args.device), kept["x_neg"].to(args.device),
                                   kept["masks"], change=kept["change"].to(args.device),
                                   negatives=called_neg, twins=twins, oracle=oracle,
                                   seed=args.seed)
    filler = generator_family(args.family).infiller(G)  # None: the family has no in-filler
    if twins is not None:  # the oracle and f on the true twins: the ceilings of oracle_flip and
        with torch.no_grad():  # flip_rate
            thr_o = float(getattr(oracle, "threshold", 0.5))
            sel = torch.sigmoid(oracle(kept["x"].to(args.device)).float()) >= thr_o
            p_tw = torch.sigmoid(oracle(twins.to(args.device)).float())
            p_f_tw = torch.sigmoid(f(twins.to(args.device)).float())
        health["oracle_flip_true_twins"] = float((p_tw[sel] < thr_o).float().mean()) \
            if bool(sel.any()) else float("nan")
        health["flip_rate_true_twins"] = float(
            (p_f_tw < float(getattr(f, "threshold", 0.5))).float().mean())
        if filler is not None:  # a perfect mask: the in-filling of the true lesion support
            health.update(_true_support_ceiling(filler, f, oracle, kept["x"], twins, sel))
        health.update(_visible_recall(kept["x"], kept["x_neg"], twins, VISIBLE))
    if getattr(G, "mask_net", None) is not None:  # share of images the amortised mask flipped
        again = G.counterfactual(kept["x"], f)
        health["amortised_share"] = float(again.amortised.float().mean())
    elif getattr(getattr(G, "search", None), "start", "coarse") != "coarse":  # Grad-CAM start:
        again = G.counterfactual(kept["x"], f)                   # share of images it started
        health["started_share"] = float(again.started.float().mean())
    health["healthy_control"] = healthy_control(filler, called_neg, f, seed=args.seed) \
        if filler is not None else float("nan")
    s_published = _published_s_per_image(G, args.family, f, kept["x"][:n_published], size,
                                         args.seed) if n_published else float("nan")
    own, gcam, ig = _loc(scores), _loc(base, "gradcam"), _loc(base, "ig")
    line = {"change_similarity": health["change_similarity"],
            "universal_flip": health["universal_flip"], "oracle_flip": health["oracle_flip"],
            "counterfactual_ncc": health["counterfactual_ncc"],
            "counterfactual_ncc_shuffled": health["counterfactual_ncc_shuffled"],
            "mass_own": own["mass"], "mass_shuffled": own["mass_shuffled"],
            "pointing_own": own["pointing"], "pointing_shuffled": own["pointing_shuffled"],
            "gradcam_mass": gcam["mass"], "ig_mass": ig["mass"],
            "gradcam_pointing": gcam["pointing"], "ig_pointing": ig["pointing"],
            "recon_mse": float(kept["mse"].double().mean()), "explain_s_per_image": s_per_image,
            "size": float(size), "mask_dice": health["mask_dice"],
            "healthy_control": health["healthy_control"],
            "speedup_vs_published": s_published / s_per_image if s_per_image > 0
            else float("nan"),
            "flip_rate": health["flip_rate"],
            "area": float((kept["x"] - kept["x_neg"]).abs().flatten(1).ge(SUPPORT_TOL)
                          .double().mean())}
    assert list(line) == KEYS
    out = Path(args.out) if args.out else RESULTS / (
        f"generators_{args.family}_{args.dataset}_s{args.seed}"
        + (f"_{size}px" if size != 64 and not args.quick else "")
        + ("_quick" if args.quick else "") + ".json")
    write_results(out, {
        "bench": "generators", "command": " ".join(["python -m bench.generators"] + sys.argv[1:]),
        "family": args.family, "dataset": args.dataset, "seed": args.seed, "minutes": minutes,
        "size": size, "cohort": cohort.manifest["counts"], "n_test": len(ids),
        "n_called_negative_skipped": skipped,
        "n_negatives": int(len(called_neg)),
        "classifier": {k: f_metrics.get(k) for k in ("arch", "epochs", "val", "test",
                                                     "train_seconds")},
        "oracle": {k: o_metrics.get(k) for k in ("arch", "epochs", "val", "test",
                                                 "train_seconds")},
        "auroc_floor": floor,
        "train": {"steps": summary["steps"], "seconds": round(train_s, 1),
                  "kept_step": meta["step"], "val_health": meta["health"],
                  **({"amortise": distilled} if distilled else {}),
                  "gan_config": gc.model_dump(mode="json"),
                  "train_config": tc.model_dump(mode="json")},
        "test_health": health, "baseline_s_per_image": base_s,
        "published_s_per_image": s_published, "n_published": n_published,
        "search": G.search.model_dump(mode="json") if hasattr(G, "search") else None,
        "amortise": G.amortise.model_dump(mode="json") if distilled else None,
        "reused_generator": bool(summary.get("reused")), "result": line,
        "total_seconds": round(time.perf_counter() - t0, 1)})
    print(f"wrote {out}", flush=True)
    print(f"family={args.family} " + " ".join(
        f"{k}={v:.4f}" if math.isfinite(v) else f"{k}=nan" for k, v in line.items()))


if __name__ == "__main__":
    main()
