"""The shortcut finder: what outside the findings drives f? (issue #15, question 2)

Occlusion sensitivity of f **outside the annotated boxes**, one map per cohort.

1. Every image's own findings are first removed (:func:`medxgan.metrics.ablation.infill` of its
   boxes; negatives have none), so what is left to drive f is not the findings.
2. A square patch (side ``patch`` px, default H/8) slides over the image with step ``stride``
   (default H/16); at each position the patch is infilled (blur by default) and the drop
   ``p(x') - p(x' with the patch infilled)`` recorded, ``p = sigmoid(f)``, ``x'`` the image with
   its findings removed. Patches that overlap the image's own boxes are skipped (they are the
   findings' business: ``ablation_drop``).
3. Per position the drops are averaged over the images that were scored there: the cohort map
   (Hp, Wp) with per-position counts.
4. The **strongest region** is the position with the largest mean drop among those scored on
   at least ``min_count`` images: its box in pixel coordinates, the mean drop with a 95 %
   percentile bootstrap CI over images (``aggregate.bootstrap_ci``), n, and the images where
   it matters most (largest drop: a gallery). The CI describes the images at that position; it
   does not account for the choice of the position among Hp x Wp (the transplant check below
   is the causal test).
5. **Transplant check**: the region is pasted (pixel copy) from a random positive (findings
   removed as in 1) into each negative that f calls negative; the share that f then calls
   positive, with a bootstrap CI. **Control**: the same donors, a random region of the same
   size that does not overlap the found one. A shortcut gives transplant >> control.

Everything runs on the classifier's device, batched over (image, patch position) pairs in
chunks of ``batch_size`` forward passes (no Python loop over images).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from medxgan.metrics.ablation import (
    InfillMethod,
    classifier_device,
    fill_source,
    infill,
    noisy_linear_infill,
    positive_probability,
    threshold_of,
)
from medxgan.metrics.aggregate import bootstrap_ci


@dataclass(frozen=True)
class ShortcutFinding:
    """What the shortcut finder found in one cohort.

    Attributes:
        drop_map: (Hp, Wp) float64, mean drop of p (probability units, [-1, 1]) when the patch
            at that position is infilled; NaN where no image was scored.
        counts: (Hp, Wp) int64, images scored at each position (patches overlapping an
            image's boxes are not).
        patch, stride: patch side and step, pixels. Position (i, j) covers rows
            ``ys[i] .. ys[i] + patch`` and columns ``xs[j] .. xs[j] + patch``.
        ys, xs: (Hp,), (Wp,) int64 top / left pixel of each position.
        box: strongest region ``(x0, y0, x1, y1)``, pixel-edge coordinates (x1, y1 exclusive);
            None when no position was scored on ``min_count`` images.
        drop, drop_ci_low, drop_ci_high, n: mean drop at the strongest region, its 95 %
            bootstrap CI over images and the number of images scored there.
        region_drops: (B,) float64 per-image drop at the strongest region (NaN: not scored).
        top_images: (k,) int64 indices into the input batch, largest drop at the region first.
        transplant_rate, transplant_ci_low, transplant_ci_high, transplant_n: share of the
            negatives f called negative that it calls positive after the region is pasted in
            from a positive; its CI and the number of negatives.
        control_rate, control_ci_low, control_ci_high: the same with a random region of the
            same size (not overlapping ``box``) from the same donors.
        method: infill method; threshold: f's decision threshold.
    """

    drop_map: np.ndarray
    counts: np.ndarray
    patch: int
    stride: int
    ys: np.ndarray
    xs: np.ndarray
    box: tuple[int, int, int, int] | None
    drop: float
    drop_ci_low: float
    drop_ci_high: float
    n: int
    region_drops: np.ndarray = field(repr=False)
    top_images: np.ndarray
    transplant_rate: float
    transplant_ci_low: float
    transplant_ci_high: float
    transplant_n: int
    control_rate: float
    control_ci_low: float
    control_ci_high: float
    method: str
    threshold: float

    def summary(self) -> dict:
        """Scalars and the box as a JSON-friendly dict (no arrays but ``top_images``)."""
        d = asdict(self)
        for k in ("drop_map", "counts", "ys", "xs", "region_drops"):
            d.pop(k)
        d["top_images"] = [int(i) for i in self.top_images]
        d["box"] = list(self.box) if self.box is not None else None
        return d


def _positions(n: int, patch: int, stride: int) -> torch.Tensor:
    """Start pixels 0, stride, ... of a patch along an axis of n pixels; the last one ends at n."""
    starts = list(range(0, n - patch + 1, stride))
    if starts[-1] != n - patch:
        starts.append(n - patch)
    return torch.tensor(starts, dtype=torch.long)


def _box_overlap(masks: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, patch: int) -> torch.Tensor:
    """Does the patch at each position contain a masked pixel? (B, Hp, Wp) bool.

    Args:
        masks: (B, H, W) bool. ys, xs: (Hp,), (Wp,) start pixels on the same device.
    """
    B, H, W = masks.shape
    ii = torch.zeros(B, H + 1, W + 1, dtype=torch.float64, device=masks.device)
    ii[:, 1:, 1:] = masks.to(torch.float64).cumsum(1).cumsum(2)  # integral image
    y0, y1 = ys[:, None], ys[:, None] + patch  # (Hp, 1)
    x0, x1 = xs[None, :], xs[None, :] + patch  # (1, Wp)
    s = ii[:, y1, x1] - ii[:, y0, x1] - ii[:, y1, x0] + ii[:, y0, x0]  # (B, Hp, Wp)
    return s > 0


def _patch_masks(rows: torch.Tensor, cols: torch.Tensor, H: int, W: int, patch: int) -> torch.Tensor:
    """Masks (n, H, W) bool of patches with top-left pixels (rows, cols), each (n,)."""
    r = torch.arange(H, device=rows.device)
    c = torch.arange(W, device=cols.device)
    in_r = (r[None] >= rows[:, None]) & (r[None] < rows[:, None] + patch)  # (n, H)
    in_c = (c[None] >= cols[:, None]) & (c[None] < cols[:, None] + patch)  # (n, W)
    return in_r[:, :, None] & in_c[:, None, :]


def _occlude(x: torch.Tensor, pm: torch.Tensor, fill: torch.Tensor | None,
             seed: int) -> torch.Tensor:
    """``x`` (n, 1, H, W) with the pixels of ``pm`` (n, H, W) infilled: taken from ``fill``
    (n, 1, H, W) for the mask-independent methods, ROAD's imputation for ``noisy_linear``."""
    if fill is None:
        return noisy_linear_infill(x, pm, seed=seed)
    return torch.where(pm[:, None], fill, x)


def _rate(values: torch.Tensor, n_boot: int, seed: int) -> tuple[float, float, float, int]:
    return bootstrap_ci(values.cpu().numpy().astype(np.float64), n_boot=n_boot, seed=seed)


def find_shortcut(classifier, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, *,
                  patch: int | None = None, stride: int | None = None,
                  method: InfillMethod = "blur", seed: int = 0, twin: torch.Tensor | None = None,
                  min_count: int | None = None, top_k: int = 8, n_boot: int = 1000,
                  batch_size: int = 256) -> ShortcutFinding:
    """Occlusion sensitivity of f outside the boxes, the strongest region and its transplant.

    Args:
        classifier: images (N, 1, H, W) in [0, 1] -> positive logit (N,); ``threshold``
            attribute on the probability (default 0.5).
        images: (B, 1, H, W) float in [0, 1]: positives and negatives of one cohort.
        masks: (B, H, W) bool, union of each image's own boxes at image resolution (empty for
            negatives and for positives without boxes).
        labels: (B,) int, 1 positive / 0 negative (transplant donors and recipients).
        patch: patch side, pixels (default ``max(2, round(H / 8))``).
        stride: step between positions, pixels (default ``max(1, round(H / 16))``).
        method: infill of the findings and of the patches (``blur``, ``mean``,
            ``noisy_linear``; ``twin`` with ``twin`` images).
        seed: seeds the noisy_linear noise (drawn per chunk, so with ``noisy_linear`` the map
            also depends on ``batch_size``), the donors, the control regions and the bootstrap.
        twin: (B, 1, H, W) counterfactual images for ``method="twin"``.
        min_count: fewest images a position needs to be the strongest region (default
            ``max(2, ceil(B / 4))``).
        top_k: images returned for the gallery.
        n_boot: bootstrap resamples of the CIs.
        batch_size: most images per forward pass.

    Returns: a :class:`ShortcutFinding`.
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got {tuple(images.shape)}")
    B, _, H, W = images.shape
    if tuple(masks.shape) != (B, H, W) or tuple(labels.shape) != (B,):
        raise ValueError(f"masks must be (B, H, W) = {(B, H, W)} and labels (B,), got "
                         f"{tuple(masks.shape)}, {tuple(labels.shape)}")
    P = int(patch) if patch is not None else max(2, round(H / 8))
    S = int(stride) if stride is not None else max(1, round(H / 16))
    if not (1 <= P <= min(H, W)) or S < 1:
        raise ValueError(f"patch must be in 1..{min(H, W)} and stride >= 1, got {P}, {S}")
    min_count = max(2, -(-B // 4)) if min_count is None else int(min_count)
    dev = classifier_device(classifier, images.device)
    thr = threshold_of(classifier)
    own = masks.to(dev, torch.bool)
    y = labels.to(dev).long()
    tw = twin.to(dev, torch.float32) if twin is not None else None
    base = infill(images.to(dev, torch.float32), own, method, seed=seed, twin=tw)  # findings removed
    p0 = positive_probability(classifier, base, batch_size)  # (B,)

    # --- occlusion of every (image, position) pair outside the image's boxes
    ys, xs = _positions(H, P, S).to(dev), _positions(W, P, S).to(dev)
    Hp, Wp = len(ys), len(xs)
    ok = ~_box_overlap(own, ys, xs, P).flatten(1)  # (B, Hp*Wp)
    # position-major order: a chunk holds few neighbouring positions (noisy_linear solves on
    # the union bounding box of a chunk's patches)
    pair_k, pair_b = torch.nonzero(ok.T, as_tuple=True)  # (n_pairs,)
    fill = None if method == "noisy_linear" else fill_source(base, method, twin=tw)
    drops = torch.full((B, Hp * Wp), float("nan"), dtype=torch.float64, device=dev)
    for c, s in enumerate(range(0, len(pair_b), batch_size)):
        b, k = pair_b[s:s + batch_size], pair_k[s:s + batch_size]
        pm = _patch_masks(ys[k // Wp], xs[k % Wp], H, W, P)  # (n, H, W)
        xo = _occlude(base[b], pm, None if fill is None else fill[b], seed + 1 + c)
        drops[b, k] = p0[b] - positive_probability(classifier, xo, batch_size)
    counts = (~drops.isnan()).sum(0)  # (Hp*Wp,)
    mean = torch.nansum(drops, 0) / counts.clamp(min=1)
    mean = torch.where(counts > 0, mean, torch.full_like(mean, float("nan")))
    drop_map = mean.view(Hp, Wp).cpu().numpy()
    counts_np = counts.view(Hp, Wp).cpu().numpy().astype(np.int64)

    nan = float("nan")
    eligible = counts >= min_count
    if not bool(eligible.any()):
        return ShortcutFinding(drop_map, counts_np, P, S, ys.cpu().numpy(), xs.cpu().numpy(),
                               None, nan, nan, nan, 0, np.full(B, nan), np.zeros(0, np.int64),
                               nan, nan, nan, 0, nan, nan, nan, method, thr)
    best = int(torch.where(eligible, mean, torch.full_like(mean, -float("inf"))).argmax())
    by, bx = int(ys[best // Wp]), int(xs[best % Wp])
    box = (bx, by, bx + P, by + P)
    region = drops[:, best].cpu()  # (B,)
    d_mean, d_lo, d_hi, d_n = bootstrap_ci(region.numpy(), n_boot=n_boot, seed=seed)
    scored = torch.nonzero(~region.isnan()).flatten()
    order = scored[torch.argsort(region[scored], descending=True, stable=True)]
    top = order[:top_k].numpy().astype(np.int64)

    # --- transplant: the region from a random positive into each negative f calls negative
    rec = torch.nonzero((y == 0) & (p0 < thr)).flatten()  # recipients
    donors = torch.nonzero(y == 1).flatten()
    t_stats = c_stats = (nan, nan, nan, 0)
    if len(rec) and len(donors):
        g = torch.Generator().manual_seed(int(seed))
        d = donors[torch.randint(len(donors), (len(rec),), generator=g).to(dev)]  # (R,)
        # control: a random position whose patch does not overlap the found region
        far = ~((ys[:, None] < by + P) & (ys[:, None] + P > by)
                & (xs[None, :] < bx + P) & (xs[None, :] + P > bx)).flatten()  # (Hp*Wp,)
        cand = torch.nonzero(far).flatten()
        R = len(rec)
        pm_t = _patch_masks(torch.full((R,), by, device=dev), torch.full((R,), bx, device=dev),
                            H, W, P)
        parts = [torch.where(pm_t[:, None], base[d], base[rec])]
        if len(cand):
            ck = cand[torch.randint(len(cand), (R,), generator=g).to(dev)]
            pm_c = _patch_masks(ys[ck // Wp], xs[ck % Wp], H, W, P)
            parts.append(torch.where(pm_c[:, None], base[d], base[rec]))
        pos = (positive_probability(classifier, torch.cat(parts), batch_size) >= thr)
        pos = pos.to(torch.float64).view(len(parts), R)
        t_stats = _rate(pos[0], n_boot, seed)
        if len(cand):
            c_stats = _rate(pos[1], n_boot, seed)
    return ShortcutFinding(
        drop_map=drop_map, counts=counts_np, patch=P, stride=S, ys=ys.cpu().numpy(),
        xs=xs.cpu().numpy(), box=box, drop=d_mean, drop_ci_low=d_lo, drop_ci_high=d_hi, n=d_n,
        region_drops=region.numpy(), top_images=top,
        transplant_rate=t_stats[0], transplant_ci_low=t_stats[1],
        transplant_ci_high=t_stats[2], transplant_n=t_stats[3],
        control_rate=c_stats[0], control_ci_low=c_stats[1], control_ci_high=c_stats[2],
        method=method, threshold=thr)
