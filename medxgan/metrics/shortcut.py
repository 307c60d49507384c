"""The shortcut finder: does anything outside the findings drive f? (issue #20, question 2)

A classifier can rely on the findings, on a shortcut, or on both; the regulator's question is
whether anything **outside** the findings drives f, whatever the findings' own effect. Three
kinds of evidence, each an effect with its own control (``p = sigmoid(f(x))``, f's decision
threshold ``t``):

1. **Location-free** (:attr:`ShortcutFinding.residual`). Every positive's findings (its boxes,
   dilated by ``dilate`` px) are removed by the infill (the run's healthy-anatomy in-filler by
   default: it leaves neither a blurred opacity nor noise texture behind). The *residual rate*
   is the share of the positives that f calls positive without their findings (all positives
   with boxes: conditioning on "f called it positive" would select subjects that f scores high
   for reasons other than the findings, and the negatives cannot be selected alike). Its
   control:
   every negative gets the dilated boxes of a random positive in-filled the same way (same
   in-filler, same amount of in-filling, no finding to remove), and the *control rate* is the
   share f then calls positive. A classifier that relies on the findings alone calls the
   finding-free positives (which, but for the findings, are drawn like the negatives) no more
   often positive than the negatives; the effect is the
   difference of the two rates (percentile bootstrap of each group). This needs no place: it
   answers "something outside the findings drives f" even where the search below cannot
   point at it. ``residual_auroc`` is f's AUROC between the two finding-free groups. It uses
   every image given (one in-filling and one pass of f each), the located and image-wide
   evidence only the ``core`` ones: a clean classifier's small residual (an in-filler's
   traces where a finding sat: 0.06 on one panel control's 399 test images) crossed the
   minimum effect by sampling noise on 128 images and not on 399 (docs/benchmarks.md).
2. **Located** (:attr:`ShortcutFinding.located`). On each image f still calls positive with
   its findings removed (positives, and negatives with their borrowed boxes in-filled: both
   classes are searched alike; at most ``max_search`` each), the smallest region **outside**
   the dilated boxes whose in-filling makes f call it negative: the counterfactual search of
   the inpaint family (:func:`medxgan.generators.inpaint.search.search_counterfactual`)
   restricted to that area, coarse-to-fine from patches of side H/4 (stride H/8) trimmed by
   H/8 and H/16, area cap 0.3; a band wider than any patch is a union of patches. Per image:
   the mask, or none within the cap. The positives' masks give the cohort **heatmap** (share of
   the searched positives whose region covers a pixel) and the **clusters**
   (:func:`medxgan.metrics.shortcut_regions.cluster_regions`: by appearance, then by place).
   **Transplant**, with donors that are not selected by f: each negative f calls negative
   (findings-free as in 1) receives the found region of each of ``DONOR_DRAWS`` (8) random
   positives, copied at the donor's place (nothing from a positive without one); control: the
   same with 8 random other negatives as the donors. A region that decides f only because the
   search selected it (any classifier has such regions in its few false positives) is found
   as often in negatives, so only a driver that positives carry more often than negatives
   transplants more from them. The effect is the paired difference of "f calls it positive"; its CI resamples the
   recipients and both donor pools (:func:`medxgan.metrics.aggregate.crossed_bootstrap_ci`:
   each rate rests on the few donors that have a region, a sample too); it grows with the
   share of positives that carry the driver. Its **strength** is the rate among the
   recipient-donor pairs whose positive donor had a region, minus the control rate: how surely
   the driver alone makes an image positive, whatever its prevalence (what grades a shortcut
   strong or weak).
   Before any of this, each found region is **completed** (:func:`complete_regions`, with a
   healthy in-filler only): the search stops at the smallest region that flips f, a part of a
   band, of a tube, of a frame; the ring around it joins while the image differs from the
   in-filler's healthy prediction there. The *drop* is p(x') - p(x' with its region in-filled)
   over the positives with a region (descriptive: the search stops once f flips).
3. **Image-wide** (:attr:`ShortcutFinding.image_wide`,
   :mod:`medxgan.metrics.shortcut_wide`): noise level, intensity histogram and border of each
   negative moved to a positive donor's vs to a negative donor's (findings removed in both).

:attr:`ShortcutFinding.effect` is the evidence with the largest lower CI bound; the verdict
(``medxgan.report.answers.shortcut_answer``) decides on the three. Everything is batched on the
classifier's device; the search runs on the in-filler's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medxgan.generators.inpaint.complete import complete_regions, dilate_masks, fill_batches
from medxgan.metrics.ablation import (classifier_device, infill, positive_probability,
                                      threshold_of)
from medxgan.metrics.aggregate import bootstrap_ci, crossed_bootstrap_ci
from medxgan.metrics.shortcut_regions import cluster_regions
from medxgan.metrics.shortcut_wide import DONOR_DRAWS, draw_donors, wide_transplants

EVIDENCE_KINDS: tuple[str, ...] = ("location_free", "located", "image_wide")
nan = float("nan")


@dataclass(frozen=True)
class ShortcutFinding:
    """What the shortcut finder found in one cohort (module docstring for the definitions).

    Attributes:
        residual: location-free evidence: ``rate``, ``ci_low``, ``ci_high``, ``n`` (positives
            f called positive), ``control_rate`` (+ CI, ``control_n``: negatives), ``effect``
            (+ CI), ``auroc``.
        located: ``searched`` (positives still positive without their findings, searched),
            ``found`` (of them, with a region within the cap), ``found_share`` (found /
            positives), the same for the negatives (``searched_negatives``,
            ``found_negatives``, ``found_share_negatives``), ``drop`` (+ CI, ``drop_n``),
            ``transplant_rate``, ``control_rate``, ``effect`` (+ CI, ``n``: recipients),
            ``draws`` (donors of each class per recipient), ``strength`` (+ CI,
            ``strength_n``: recipient-donor pairs whose positive donor had a region),
            ``clusters`` (``cluster_regions``), ``box`` (the main cluster's region at its
            most frequent place, or None).
        image_wide: one dict per intervention (``shortcut_wide.wide_transplants``).
        effect: the strongest evidence: ``kind`` (one of :data:`EVIDENCE_KINDS`), ``name``,
            ``effect``, ``ci_low``, ``ci_high``, ``n``; ``kind`` None when no evidence could
            be computed.
        heatmap: (H, W) float64, share of the searched positives whose region covers each pixel.
        masks: (S, H, W) bool, the found region of each searched positive (empty: none).
        searched: (S,) int64 indices into the input batch of the searched positives.
        flipped: (S,) bool, the search made f call the image negative within the cap.
        top_images: (k,) int64 indices into the input batch, the images with a region, largest
            drop first (the gallery); ``top_boxes`` their region's bounding box.
        dilate: px the boxes were dilated by; infill: ``inpaint`` (an in-filler) or the
            ``medxgan.metrics.ablation`` method; threshold: f's decision threshold.
        core: (B,) bool, the images of the located and image-wide evidence (None: all); the
            location-free evidence used every image.
    """

    residual: dict[str, Any]
    located: dict[str, Any]
    image_wide: list[dict[str, Any]]
    effect: dict[str, Any]
    heatmap: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    searched: np.ndarray = field(repr=False)
    flipped: np.ndarray = field(repr=False)
    top_images: np.ndarray = field(repr=False)
    top_boxes: list = field(repr=False)
    dilate: int = 0
    infill: str = "inpaint"
    threshold: float = 0.5
    core: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """The JSON of ``shortcut.json`` (design: "Data contracts"): the three kinds of
        evidence (``residual``, ``located``, ``image_wide``), the ``strongest``, flat keys of
        each kind's effect for the acceptance criteria (``effect``, ``residual_effect``,
        ``transplant_effect``, ``wide_effect``, each with ``_ci_low`` / ``_ci_high`` and an
        ``n``), the heatmap as a list of rows (at most 64 x 64: block means), the gallery, and
        the keys of the main located region (``box``, ``drop`` (+ CI, ``n``),
        ``transplant_rate`` (+ CI, ``transplant_n``), ``control_rate`` (+ CI))."""
        loc = {k: v for k, v in self.located.items() if k != "clusters"}
        clusters = [{k: v for k, v in c.items() if k not in ("images", "boxes")}
                    for c in self.located.get("clusters", [])]
        st, r, lo = self.effect, self.residual, self.located
        wide = max(self.image_wide, key=lambda w: (w["ci_low"], w["effect"]), default=None)
        return {
            "strongest": dict(st), "residual": dict(r),
            "located": {**loc, "clusters": clusters}, "image_wide": [dict(d) for d in self.image_wide],
            "effect": st["effect"], "effect_ci_low": st["ci_low"], "effect_ci_high": st["ci_high"],
            "effect_n": st["n"], "effect_kind": st["kind"],
            "residual_effect": r["effect"], "residual_effect_ci_low": r["effect_ci_low"],
            "residual_effect_ci_high": r["effect_ci_high"], "residual_n": r["n"],
            "transplant_effect": lo.get("effect"), "transplant_effect_ci_low": lo.get("effect_ci_low"),
            "transplant_effect_ci_high": lo.get("effect_ci_high"),
            "wide_effect": None if wide is None else wide["effect"],
            "wide_effect_ci_low": None if wide is None else wide["ci_low"],
            "wide_effect_ci_high": None if wide is None else wide["ci_high"],
            "wide_n": 0 if wide is None else wide["n"], "wide_name": None if wide is None else wide["name"],
            "heatmap": _small(self.heatmap).round(4).tolist(),
            "top_images": [int(i) for i in self.top_images],
            "top_boxes": [list(map(int, b)) for b in self.top_boxes],
            "dilate": self.dilate, "method": self.infill, "threshold": self.threshold,
            "box": lo.get("box"), "drop": lo.get("drop"), "drop_ci_low": lo.get("drop_ci_low"),
            "drop_ci_high": lo.get("drop_ci_high"), "n": lo.get("drop_n", 0),
            "transplant_rate": lo.get("transplant_rate"),
            "transplant_ci_low": lo.get("transplant_ci_low"),
            "transplant_ci_high": lo.get("transplant_ci_high"), "transplant_n": lo.get("n", 0),
            "control_rate": lo.get("control_rate"), "control_ci_low": lo.get("control_ci_low"),
            "control_ci_high": lo.get("control_ci_high"),
        }


def _small(a: np.ndarray, most: int = 64) -> np.ndarray:
    """Block means of a (H, W) array down to at most ``most`` x ``most``."""
    H, W = a.shape
    k = max(1, -(-max(H, W) // most))
    if k == 1:
        return a.astype(np.float64)
    h, w = H // k * k, W // k * k
    return a[:h, :w].reshape(h // k, k, w // k, k).mean((1, 3))


class _Infill(nn.Module):
    """A fixed infill (``medxgan.metrics.ablation.infill``) as an in-filler ``(x, m) -> x'``.

    ``batch_dependent``: ``noisy_linear`` draws its noise for the whole pass and stops its
    solver on the pass's worst image, so the callers keep their batch on the CPU too
    (:func:`medxgan.cpu.cpu_batch`)."""

    batch_dependent = True

    def __init__(self, method: str, seed: int = 0):
        super().__init__()
        self.method, self.seed = method, seed
        self._anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # device marker

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return infill(x, m.reshape(len(x), *x.shape[-2:]).bool(), self.method, seed=self.seed)


def _rate(v: torch.Tensor, n_boot: int, seed: int) -> tuple[float, float, float, int]:
    return bootstrap_ci(v.double().cpu().numpy(), n_boot=n_boot, seed=seed)


def _diff_ci(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean(a) - mean(b) of two independent groups with a percentile bootstrap CI."""
    if len(a) == 0 or len(b) == 0:
        return nan, nan, nan
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
    mb = b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    lo, hi = np.quantile(ma - mb, [0.025, 0.975])
    return float(a.mean() - b.mean()), float(lo), float(hi)


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    if len(pos) == 0 or len(neg) == 0:
        return nan
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def driver_search_options(side: int, multiple: int = 8) -> dict[str, Any]:
    """The located search's options at ``side`` px: patches H/4 (stride H/8), trimmed by H/8 and
    H/16; area cap 0.3; a crop of 3/4 of the side for ranking."""
    from medxgan.config.inpaint import SearchConfig

    cfg = SearchConfig(patch_sizes=(16, 8, 4), stride=8, area_cap=0.3, max_patches=32, crop=48,
                       complete=False,  # completed afterwards, with an object's tolerances
                       trim="exact")    # validated on the shortcut panel with this trim
    return cfg.for_size(side, multiple)


def find_shortcut(classifier, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, *,
                  inpainter: nn.Module | None = None, method: str = "blur",
                  dilate: int | None = None, max_search: int = 64, search: dict | None = None,
                  seed: int = 0, top_k: int = 8, n_boot: int = 1000,
                  batch_size: int = 256, core: torch.Tensor | None = None) -> ShortcutFinding:
    """The three kinds of shortcut evidence of one cohort (module docstring).

    Args:
        classifier: images (N, 1, H, W) in [0, 1] -> positive logit (N,); ``threshold``
            attribute on the probability (default 0.5).
        images: (B, 1, H, W) float in [0, 1]: positives and negatives of one cohort.
        masks: (B, H, W) bool, the union of each image's own boxes (empty for negatives).
        labels: (B,) int, 1 positive / 0 negative (others are ignored).
        inpainter: ``(x, m) -> x_filled`` (B, 1, H, W), m (B, 1, H, W) in {0, 1}: the healthy
            in-filler (``medxgan.generators.inpaint.inpainter.Inpainter`` or an ``InpaintGenerator``); None:
            the fixed infill ``method`` (``blur``, ``mean``, ``noisy_linear``).
        dilate: px the boxes grow by before in-filling (default ``max(1, round(H / 32))``).
        max_search: most residual positives searched (in input order).
        search: options of the located search (default :func:`driver_search_options`).
        seed: partners, donors, bootstrap.
        top_k: gallery size.
        n_boot: bootstrap resamples.
        batch_size: most images per forward pass.
        core: (B,) bool, the images of the located and image-wide evidence (default: all).
            The location-free evidence uses every image: it costs one in-filling and one pass
            of f per image, and its CI narrows with the sample; the located search and the
            image-wide transplants cost far more per image.

    Returns: a :class:`ShortcutFinding`.
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got {tuple(images.shape)}")
    B, _, H, W = images.shape
    if tuple(masks.shape) != (B, H, W) or tuple(labels.shape) != (B,):
        raise ValueError(f"masks must be (B, H, W) = {(B, H, W)} and labels (B,), got "
                         f"{tuple(masks.shape)}, {tuple(labels.shape)}")
    if core is not None and tuple(core.shape) != (B,):
        raise ValueError(f"core must be (B,) = ({B},), got {tuple(core.shape)}")
    d = max(1, round(H / 32)) if dilate is None else int(dilate)
    dev = classifier_device(classifier, images.device)
    thr = threshold_of(classifier)
    g = torch.Generator().manual_seed(int(seed))
    filler = inpainter if inpainter is not None else _Infill(method, seed)
    infill_name = "inpaint" if inpainter is not None else method

    def fill(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # (N, 1, H, W), (N, H, W)
        return fill_batches(filler, x, m, batch_size).to(dev)

    x = images.to(dev, torch.float32)
    y = labels.to(dev).long()
    own = dilate_masks(masks.to(dev, torch.bool), d)                    # (B, H, W)
    has_box = own.flatten(1).any(1)
    pos = torch.nonzero((y == 1) & has_box).flatten()
    neg = torch.nonzero(y == 0).flatten()
    removal = own.clone()
    if len(pos) and len(neg):  # each negative gets a random positive's dilated boxes
        removal[neg] = own[pos[torch.randint(len(pos), (len(neg),), generator=g).to(dev)]]
    with torch.no_grad():
        base = fill(x, removal)                                         # findings removed
    p0 = positive_probability(classifier, x, batch_size)
    pb = positive_probability(classifier, base, batch_size)

    # --- 1. location-free (all positives with boxes: conditioning on "f called it positive"
    # would select subjects f scores high for reasons other than the findings)
    called = pos
    res = (pb[called] >= thr).double().cpu().numpy()
    ctl = (pb[neg] >= thr).double().cpu().numpy()
    r_stats = bootstrap_ci(res, n_boot=n_boot, seed=seed)
    c_stats = bootstrap_ci(ctl, n_boot=n_boot, seed=seed + 1)
    e = _diff_ci(res, ctl, n_boot, seed + 2)
    residual = {"rate": r_stats[0], "ci_low": r_stats[1], "ci_high": r_stats[2], "n": r_stats[3],
                "control_rate": c_stats[0], "control_ci_low": c_stats[1],
                "control_ci_high": c_stats[2], "control_n": c_stats[3],
                "effect": e[0], "effect_ci_low": e[1], "effect_ci_high": e[2],
                "auroc": _auroc(pb[pos].cpu().numpy(), pb[neg].cpu().numpy()),
                "called_rate": float((p0[pos] >= thr).double().mean()) if len(pos) else nan,
                "p_positives": float(pb[called].mean()) if len(called) else nan,
                "p_negatives": float(pb[neg].mean()) if len(neg) else nan}

    # --- 2. located: per-image search outside the dilated boxes (the core images)
    if core is not None:
        keep = core.to(dev, torch.bool)
        pos, neg = pos[keep[pos]], neg[keep[neg]]
    located, heat, fmasks, searched, flipped, top, top_boxes = _located(
        classifier, filler, base, removal, pb, pos, neg, thr, max_search,
        search or driver_search_options(H, 2 ** _depth(filler)), g, seed, n_boot, top_k,
        batch_size, dev, complete=inpainter is not None)

    # --- 3. image-wide
    rec = neg[pb[neg] < thr]
    wide = wide_transplants(classifier, base[rec], base[pos], base[neg], keep_r=~removal[rec],
                            keep_p=~removal[pos], keep_n=~removal[neg], recipient_ids=rec.cpu(),
                            neg_ids=neg.cpu(), threshold=thr, seed=seed, n_boot=n_boot,
                            batch_size=batch_size) if len(rec) and len(pos) and len(neg) > 1 else []

    cands = [("location_free", "residual", residual["effect"], residual["effect_ci_low"],
              residual["effect_ci_high"], residual["n"]),
             ("located", "transplant", located.get("effect", nan), located.get("effect_ci_low", nan),
              located.get("effect_ci_high", nan), located.get("n", 0))]
    cands += [("image_wide", w["name"], w["effect"], w["ci_low"], w["ci_high"], w["n"]) for w in wide]
    cands = [c for c in cands if c[3] == c[3]]  # a NaN lower bound: not computed
    if cands:
        k, name, m, lo, hi, n = max(cands, key=lambda c: (c[3], c[2]))
        effect = {"kind": k, "name": name, "effect": m, "ci_low": lo, "ci_high": hi, "n": n}
    else:
        effect = {"kind": None, "name": None, "effect": nan, "ci_low": nan, "ci_high": nan, "n": 0}
    return ShortcutFinding(residual=residual, located=located, image_wide=wide, effect=effect,
                           heatmap=heat, masks=fmasks, searched=searched, flipped=flipped,
                           top_images=top, top_boxes=top_boxes, dilate=d, infill=infill_name,
                           threshold=thr,
                           core=None if core is None else core.cpu().numpy().astype(bool))


def _located(classifier, filler, base, removal, pb, pos, neg, thr, max_search, opts, g, seed,
             n_boot, top_k, batch_size, dev, complete: bool = True):
    """Step 2 of the module docstring; returns (located dict, heatmap, masks, searched indices,
    flipped, top image indices, their boxes); masks / searched / flipped are of the searched
    positives."""
    from medxgan.generators.inpaint.search import search_counterfactual

    B, _, H, W = base.shape
    sp = pos[pb[pos] >= thr][:max_search]                              # residual positives
    sn = neg[pb[neg] >= thr][:max_search]                              # negatives f calls positive
    S = torch.cat([sp, sn])
    n_pos, n_neg = len(pos), len(neg)
    out = {"searched": len(sp), "found": 0, "found_share": 0.0 if n_pos else nan,
           "searched_negatives": len(sn), "found_negatives": 0,
           "found_share_negatives": 0.0 if n_neg else nan,
           "drop": nan, "drop_ci_low": nan, "drop_ci_high": nan, "drop_n": 0,
           "transplant_rate": nan, "transplant_ci_low": nan, "transplant_ci_high": nan,
           "control_rate": nan, "control_ci_low": nan, "control_ci_high": nan,
           "effect": nan, "effect_ci_low": nan, "effect_ci_high": nan, "n": 0,
           "strength": nan, "strength_ci_low": nan, "strength_ci_high": nan, "strength_n": 0,
           "draws": 0, "clusters": [], "box": None}
    heat = np.zeros((H, W))
    found = torch.zeros(B, H, W, dtype=torch.bool)                      # every image's region
    none = (out, heat, np.zeros((0, H, W), bool), np.zeros(0, np.int64), np.zeros(0, bool),
            np.zeros(0, np.int64), [])
    if not len(S):
        return none
    with torch.no_grad():
        r = search_counterfactual(base[S].cpu(), classifier, filler, threshold=thr,
                                  allowed=~removal[S].cpu(), **opts)
    ok = r.flipped & r.mask[:, 0].flatten(1).any(1)
    m = r.mask[:, 0] & ok[:, None, None]                                # (s, H, W) bool
    if complete:  # the minimal region that flipped f, completed to the whole object
        m = complete_regions(base[S].cpu(), m, filler, allowed=~removal[S].cpu(),
                             batch_size=batch_size)
    found[S.cpu()[ok]] = m[ok]
    k = len(sp)
    mp, okp = m[:k], ok[:k]
    fmask = torch.where(okp[:, None, None], mp, torch.zeros_like(mp))   # positives' regions
    heat = mp.double().mean(0).numpy() if k else heat
    sp_np = sp.cpu().numpy().astype(np.int64)
    out.update(found=int(okp.sum()), found_negatives=int(ok[k:].sum()))
    out["found_share"] = out["found"] / n_pos if n_pos else nan
    out["found_share_negatives"] = out["found_negatives"] / n_neg if n_neg else nan
    top, boxes = np.zeros(0, np.int64), []
    if bool(okp.any()):
        fi = torch.nonzero(okp).flatten()                               # rows with a region
        drop = (r.p_x[fi] - r.p_neg[fi]).double().numpy()
        out["drop"], out["drop_ci_low"], out["drop_ci_high"], out["drop_n"] = bootstrap_ci(
            drop, n_boot=n_boot, seed=seed + 3)
        order = fi[np.argsort(-drop, kind="stable")]
        top = sp_np[order.numpy()][:top_k]
        boxes = [_bbox(mp[i].numpy()) for i in order[:top_k].tolist()]
        with torch.no_grad():
            xf = fill_batches(filler, base[sp].cpu(), mp, batch_size)  # the whole regions
        change = (base[sp].cpu() - xf)[:, 0]                            # (k, H, W) removed
        clusters = cluster_regions(mp[fi].numpy(), change[fi].numpy(), sp_np[fi.numpy()], n_pos)
        out["clusters"] = clusters
        out["box"] = clusters[0]["box"] if clusters else None

    # transplant with unselected donors: every negative f calls negative (findings-free)
    # receives the found region of each of DONOR_DRAWS random positives and, as the control,
    # of as many random other negatives (searched alike); a donor without a region gives
    # nothing. Each rate rests on the few donors that have a region: one donor per recipient
    # let the draw decide weak classifiers' answers (docs/benchmarks.md, session 23)
    rec = neg[pb[neg] < thr]
    if len(rec) and n_pos and n_neg >= 2 and bool(ok.any()):
        R, K = len(rec), DONOR_DRAWS
        ip = draw_donors(R, n_pos, K, g).to(dev)                        # (R, K) places in pos
        iN = draw_donors(R, n_neg, K, g, exclude=(rec[:, None] == neg[None, :]).cpu()).to(dev)
        dp, dn = pos[ip].flatten(), neg[iN].flatten()                   # (R K,)
        fd = found.to(dev)
        own = base[rec].repeat_interleave(K, 0)                         # (R K, 1, H, W)
        t_img = torch.where(fd[dp][:, None], base[dp], own)
        c_img = torch.where(fd[dn][:, None], base[dn], own)
        p = positive_probability(classifier, torch.cat([t_img, c_img]), batch_size)
        p = p.view(2, R, K).cpu()
        tr, ct = (p[0] >= thr).double(), (p[1] >= thr).double()         # (R, K)
        t_stats, c_stats = _rate(tr.mean(1), n_boot, seed + 4), _rate(ct.mean(1), n_boot, seed + 5)
        # the donors are a sample too: recipients and both donor pools resampled
        e = crossed_bootstrap_ci(tr.numpy(), ip.cpu().numpy(), n_pos, ct.numpy(), iN.cpu().numpy(),
                                 n_neg, n_boot=n_boot, seed=seed + 6)
        # per-image strength: among the recipient-donor pairs whose positive donor had a region
        got = fd[dp].flatten(1).any(1).view(R, K).cpu()
        st = bootstrap_ci(tr[got].numpy() - c_stats[0], n_boot=n_boot, seed=seed + 7) \
            if bool(got.any()) else (nan, nan, nan, 0)
        out.update(transplant_rate=t_stats[0], transplant_ci_low=t_stats[1],
                   transplant_ci_high=t_stats[2], control_rate=c_stats[0],
                   control_ci_low=c_stats[1], control_ci_high=c_stats[2],
                   effect=e[0], effect_ci_low=e[1], effect_ci_high=e[2], n=e[3],
                   strength=st[0], strength_ci_low=st[1], strength_ci_high=st[2], strength_n=st[3],
                   draws=K)
    return out, heat, fmask.numpy(), sp_np, okp.numpy(), top, boxes


def _depth(filler: nn.Module) -> int:
    """The in-filler's number of down-samplings (its crops must be multiples of 2**depth)."""
    return int(getattr(getattr(filler, "inpainter", filler), "depth", 0) or 0)


def _bbox(m: np.ndarray) -> list[int]:
    rows, cols = np.nonzero(m)
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


__all__ = ["EVIDENCE_KINDS", "ShortcutFinding", "dilate_masks", "driver_search_options",
           "find_shortcut"]
