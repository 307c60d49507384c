"""Localisation metrics: does a saliency map point at the image's own lesion boxes?

Every metric has the signature ``name(maps, masks, *, absolute=False) -> (B,) float64``:

- ``maps``: (B, H, W) float (any dtype; computed in float64), scored **as given**: no
  normalisation across images; per-map min-max normalisation only where a threshold
  needs it (``iou_otsu``, ``iou_at``). ``absolute=True`` scores ``|maps|``.
- ``masks``: (B, H, W) bool, the union of the image's boxes at map resolution
  (``medxgan.metrics.masks.boxes_to_masks``).
- The result is NaN wherever the mask is empty (the metric is undefined there), and for
  a map holding a non-finite value (NaN/inf: a broken explanation is reported, not scored).
- Results are float64 and do not depend on the batch: every metric is computed per map.

Definitions (a = the flattened map, M = the mask, N pixels, K = |M|):

- ``pointing_game``: 1.0 if the maximum of a lies in M, else 0.0. Ties at the maximum
  are a hit only if **every** tied pixel lies in M; an all-constant map is never a hit.
- ``iou_otsu``: a is min-max normalised per map to [0, 1]; the Otsu threshold t is
  computed as ``skimage.filters.threshold_otsu`` (256 bins over the map's range,
  threshold = centre of the best bin); IoU of ``{a > t}`` with M. A constant map predicts
  nothing (IoU 0).
- ``iou_at(maps, masks, thresholds)``: IoU of ``{a_norm > t}`` with M for fixed
  thresholds on the min-max normalised map, (B, T).
- ``relevance_mass``: sum of max(a, 0) inside M / sum of max(a, 0) (Arras et al. 2022).
  A map with no positive attribution scores 0.0 (it puts no relevance on the lesion),
  not NaN, so that an explanation that says nothing is not dropped from the mean.
- ``relevance_rank``: share of the K highest pixels that lie in M (Arras et al. 2022).
  Tie-aware: pixels tied at the K-th value share the remaining slots in proportion
  (the expectation over random tie-breaking).
- ``auroc``: pixel-wise ROC AUC of a as a score for M (Mann-Whitney with average ranks
  for ties, equal to sklearn's ``roc_auc_score``); NaN also where M covers every pixel.
- ``auprc``: pixel-wise average precision (sklearn's ``average_precision_score``
  semantics: tied values form one threshold, a step function, no interpolation).

Differences from Quantus 0.6 (tests/metrics/test_quantus.py): its PointingGame counts a
constant map, any tie touching the mask, and an empty mask (NaN written into a bool array)
as hits; its RelevanceMassAccuracy divides by the signed sum; its RelevanceRankAccuracy
breaks ties by sort order. Where those cases do not arise the values agree to 1e-15.

``shuffled_masks`` (and ``localization_scores(shuffle_seed=...)``) derange masks *within one
batch*. The score stage and the benchmarks do not use it: their ``<metric>_shuffled`` control
pairs images run-wide (``medxgan.metrics.controls.shuffle_partners``), independent of batches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch

from medxgan.metrics._ranks import _tie_groups

_NAN = float("nan")


_CHUNK_ELEMENTS = 1 << 19
"""Rows are processed in chunks of about this many pixels (4 MiB of float64): the
temporaries then stay in cache instead of each costing fresh pages (2-4x faster on CPU).
Results do not depend on the chunking: every metric is computed row by row."""


def _prep(maps: torch.Tensor, masks: torch.Tensor, absolute: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten to (B, N) float64 maps and (B, N) bool masks, after shape checks.

    Returns also ``bad`` (B,) bool: maps with a non-finite value. Their rows are zeroed here
    and every metric reports NaN for them (one broken map must not stop a whole run).
    """
    if maps.dim() != 3 or masks.shape != maps.shape:
        raise ValueError(f"maps and masks must both be (B, H, W), got {tuple(maps.shape)} and {tuple(masks.shape)}")
    a = maps.detach().to(torch.float64).reshape(maps.shape[0], -1)  # (B, N)
    if absolute:
        a = a.abs()
    bad = ~torch.isfinite(a).all(1)
    if bool(bad.any()):
        a = torch.where(bad[:, None], torch.zeros_like(a), a)
    m = masks.to(torch.bool).reshape(masks.shape[0], -1)  # (B, N)
    return a, m, bad


def _nan_where_bad(score: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """NaN for the rows of (B, ...) ``score`` whose map was not finite."""
    b = bad.view(-1, *([1] * (score.dim() - 1)))
    return torch.where(b, torch.full_like(score, _NAN), score)


def _chunks(n_rows: int, n_cols: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, n_cols))
    return [slice(i, i + step) for i in range(0, n_rows, step)]


def _by_rows(
    kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, m: torch.Tensor, bad: torch.Tensor
) -> torch.Tensor:
    """Apply a row kernel (b, N), (b, N) -> (b, ...) chunk by chunk, concatenate, NaN bad rows."""
    if a.shape[0] == 0:
        return kernel(a, m)
    return _nan_where_bad(torch.cat([kernel(a[sl], m[sl]) for sl in _chunks(*a.shape)]), bad)


def _nan_where_empty(score: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(m.any(1), score, torch.full_like(score, _NAN))


# ------------------------------------------------------------------ row kernels
def _pointing_game(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    mx = a.max(1, keepdim=True).values  # (b, 1)
    miss = ((a == mx) & ~m).any(1)  # a tied maximum outside the mask
    hit = ~miss & (a.min(1).values < mx[:, 0])  # and never for a constant map
    return _nan_where_empty(hit.to(torch.float64), m)


def _minmax(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row min-max normalisation; returns (normalised (B, N), constant (B,) bool)."""
    lo = a.min(1, keepdim=True).values
    rng = a.max(1, keepdim=True).values - lo  # (B, 1)
    const = rng[:, 0] <= 0
    return (a - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)), const


def _otsu(u: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Batched ``skimage.filters.threshold_otsu`` of rows already normalised to [0, 1].

    Args:
        u: (B, N) float64 in [0, 1], each row spanning exactly [0, 1].

    Returns:
        (B,) float64 thresholds (centres of the chosen bins).
    """
    B, N = u.shape
    edges = torch.linspace(0, 1, nbins + 1, dtype=torch.float64, device=u.device)  # numpy's edges for range (0, 1)
    # np.histogram's bin of u: floor(u * nbins), the last bin closed. With nbins a power of two,
    # u * nbins and the edges k / nbins are exact, so numpy's edge corrections never apply.
    idx = (u * nbins).long().clamp_(max=nbins - 1)  # (B, N), u >= 0 so truncation is floor
    rows = torch.arange(B, device=u.device)[:, None] * nbins
    counts = torch.bincount((idx + rows).flatten(), minlength=B * nbins).view(B, nbins).to(torch.float64)  # (B, nbins)
    centres = (edges[:-1] + edges[1:]) / 2  # (nbins,)
    w1 = counts.cumsum(1)
    w2 = counts.flip(1).cumsum(1).flip(1)
    cm = counts * centres
    mean1 = cm.cumsum(1) / w1
    mean2 = (cm.flip(1).cumsum(1) / w2.flip(1)).flip(1)
    var12 = w1[:, :-1] * w2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2  # (B, nbins-1)
    var12 = torch.nan_to_num(var12, nan=-1.0)  # empty leading bins give 0/0
    return centres[var12.argmax(1)]


def _iou(pred: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """IoU of (..., N) bool predictions with (..., N) masks, float64 (0/0 -> 0)."""
    inter = (pred & m).sum(-1).to(torch.float64)
    union = (pred | m).sum(-1).to(torch.float64)
    return inter / union.clamp(min=1)


def _iou_otsu(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    u, const = _minmax(a)
    t = _otsu(u)  # (b,)
    pred = (u > t[:, None]) & ~const[:, None]  # (b, N)
    return _nan_where_empty(_iou(pred, m), m)


def _relevance_mass(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    pos = a.clamp(min=0)
    total = pos.sum(1)
    inside = torch.where(m, pos, torch.zeros_like(pos)).sum(1)
    score = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total))
    return _nan_where_empty(score, m)


def _argsort_desc(a: torch.Tensor) -> torch.Tensor:
    """Indices that sort each row of (B, N) float64 ``a`` in descending order.

    The order within ties is unspecified (every rank-based metric treats a tie group as one
    unit) but deterministic. On CPU numpy's SIMD argsort is about twice as fast as torch.sort.
    """
    if a.device.type == "cpu":
        return torch.from_numpy(np.argsort(-a.numpy(), axis=1))
    return torch.sort(a, dim=1, descending=True).indices


class _Sorted:
    """One descending sort of every map, shared by the rank-based metrics.

    Attributes (all (B, N) unless noted): ``s`` sorted values, ``ms`` the mask in sorted
    order (float64), ``cm`` its cumulative sum, ``start``/``end`` the first/last sorted
    position of each value's tie group, ``P`` (B,) mask sizes, ``N`` pixels per map.
    """

    def __init__(self, a: torch.Tensor, m: torch.Tensor):
        self.idx = _argsort_desc(a)  # (B, N)
        self.s = a.gather(1, self.idx)  # (B, N) sorted values
        self.start, self.end = _tie_groups(self.s)
        self.N = a.shape[1]
        self._set_mask(m)

    def _set_mask(self, m: torch.Tensor) -> None:
        self.m = m
        self.ms = m.gather(1, self.idx).to(torch.float64)  # (B, N)
        self.cm = self.ms.cumsum(1)  # (B, N)
        self.P = self.cm[:, -1]  # (B,)

    def with_mask(self, m: torch.Tensor) -> "_Sorted":
        """The same sorted maps scored against other (B, N) masks (no new sort)."""
        t = copy.copy(self)
        t._set_mask(m)
        return t

    def in_mask_before(self, pos: torch.Tensor) -> torch.Tensor:
        """Mask pixels among the first ``pos`` sorted positions, (B, k) for (B, k) pos."""
        c = self.cm.gather(1, (pos - 1).clamp(min=0))
        return torch.where(pos > 0, c, torch.zeros_like(c))

    # -------------------------------------------------------------- metrics
    def relevance_rank(self) -> torch.Tensor:
        K = self.P.long()  # (B,)
        k = (K - 1).clamp(min=0)[:, None]  # (B, 1) position of the K-th largest value
        g = self.start.gather(1, k)  # pixels strictly above it
        e = self.end.gather(1, k) + 1  # pixels above or tied with it
        g_in = self.in_mask_before(g)
        t_in = self.in_mask_before(e) - g_in
        share = (K[:, None] - g).to(torch.float64) * t_in / (e - g).to(torch.float64)
        return _nan_where_empty((g_in + share)[:, 0] / self.P.clamp(min=1), self.m)

    def auroc(self) -> torch.Tensor:
        # ascending average rank = N + 1 - descending average rank ((start + end) / 2 + 1)
        r = self.N - (self.start + self.end).to(torch.float64) / 2  # (B, N)
        P, Nn = self.P, self.N - self.P
        score = ((r * self.ms).sum(1) - P * (P + 1) / 2) / (P * Nn)
        return torch.where((P > 0) & (Nn > 0), score, torch.full_like(score, _NAN))

    def auprc(self) -> torch.Tensor:
        prec = self.cm / torch.arange(1, self.N + 1, dtype=torch.float64, device=self.cm.device)  # (B, N) at cut i
        prec_end = prec.gather(1, self.end)  # precision at the end of each pixel's tie group
        return _nan_where_empty((self.ms * prec_end).sum(1) / self.P.clamp(min=1), self.m)


# ------------------------------------------------------------------ public metrics
def pointing_game(maps: torch.Tensor, masks: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """Hit (1.0) if the map's maximum lies in the mask; strict on ties (module doc).

    Returns: (B,) float64 in {0, 1}, NaN for empty masks.
    """
    return _by_rows(_pointing_game, *_prep(maps, masks, absolute))


def iou_otsu(maps: torch.Tensor, masks: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """IoU between the Otsu-thresholded, min-max normalised map and the mask.

    Returns: (B,) float64 in [0, 1], NaN for empty masks; 0 for a constant map.
    """
    return _by_rows(_iou_otsu, *_prep(maps, masks, absolute))


def iou_at(
    maps: torch.Tensor, masks: torch.Tensor, thresholds: Sequence[float], *, absolute: bool = False
) -> torch.Tensor:
    """IoU of ``{min-max normalised map > t}`` with the mask for each fixed threshold t.

    Args:
        thresholds: T values in [0, 1].

    Returns: (B, T) float64, NaN rows for empty masks; a constant map predicts nothing.
    """
    a, m, bad = _prep(maps, masks, absolute)
    t = torch.as_tensor(list(thresholds), dtype=torch.float64, device=a.device)  # (T,)

    def kernel(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        u, const = _minmax(a)
        pred = (u[:, None, :] > t[None, :, None]) & ~const[:, None, None]  # (b, T, N)
        iou = _iou(pred, m[:, None, :])  # (b, T)
        return torch.where(m.any(1, keepdim=True), iou, torch.full_like(iou, _NAN))

    return _by_rows(kernel, a, m, bad)


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """Share of the positive attribution that lies inside the mask.

    Returns: (B,) float64 in [0, 1], NaN for empty masks, 0 for maps with no positive part.
    """
    return _by_rows(_relevance_mass, *_prep(maps, masks, absolute))


def relevance_rank(maps: torch.Tensor, masks: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """Share of the K = |mask| highest pixels that lie in the mask, ties shared (module doc).

    Returns: (B,) float64 in [0, 1], NaN for empty masks.
    """
    return _by_rows(lambda a, m: _Sorted(a, m).relevance_rank(), *_prep(maps, masks, absolute))


def auroc(maps: torch.Tensor, masks: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """Pixel-wise ROC AUC of the map as a score for the mask (ties count one half).

    Returns: (B,) float64 in [0, 1], NaN for empty masks and masks covering every pixel.
    """
    return _by_rows(lambda a, m: _Sorted(a, m).auroc(), *_prep(maps, masks, absolute))


def auprc(maps: torch.Tensor, masks: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """Pixel-wise average precision of the map as a score for the mask.

    AP = sum over distinct thresholds (descending) of (R_n - R_{n-1}) * P_n, tied values
    forming one threshold (sklearn ``average_precision_score``).

    Returns: (B,) float64 in [0, 1], NaN for empty masks.
    """
    return _by_rows(lambda a, m: _Sorted(a, m).auprc(), *_prep(maps, masks, absolute))


LOCALIZATION_METRICS: dict[str, Callable[..., torch.Tensor]] = {
    "pointing_game": pointing_game,
    "iou_otsu": iou_otsu,
    "relevance_mass": relevance_mass,
    "relevance_rank": relevance_rank,
    "auroc": auroc,
    "auprc": auprc,
}
"""Metric name (as in scores.parquet) -> function; ``<name>_shuffled`` is the control."""


def derangement(n: int, *, seed: int) -> torch.Tensor:
    """A seeded permutation of range(n) with no fixed point (one n-cycle), n >= 2.

    Returns: (n,) int64 ``d`` with ``d[i] != i``: item i takes item d[i]'s mask.
    """
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    g = torch.Generator().manual_seed(seed)
    p = torch.randperm(n, generator=g)  # visiting order of the cycle
    d = torch.empty(n, dtype=torch.long)
    d[p] = p.roll(-1)
    return d


def shuffled_masks(masks: torch.Tensor, *, seed: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Masks for the ``<metric>_shuffled`` control: each eligible image gets another's mask.

    Args:
        masks: (B, H, W) bool.
        seed: seed of the derangement.
        eligible: (B,) bool, the images that take part (default: those with a non-empty
            mask, i.e. the positives with boxes). They are deranged among themselves.

    Returns:
        (B, H, W) bool; empty (hence NaN scores) for ineligible images and when fewer than
        two images are eligible.
    """
    elig = masks.flatten(1).any(1) if eligible is None else eligible.to(torch.bool)
    out = torch.zeros_like(masks, dtype=torch.bool)
    ids = torch.nonzero(elig).flatten()  # (E,)
    if ids.numel() < 2:
        return out
    out[ids] = masks[ids[derangement(ids.numel(), seed=seed)]].to(torch.bool)
    return out


def _all(a: torch.Tensor, m: torch.Tensor, t: _Sorted) -> torch.Tensor:
    """Every metric, in ``LOCALIZATION_METRICS`` order, on prepared (b, N) rows: (b, 6)."""
    return torch.stack(
        [_pointing_game(a, m), _iou_otsu(a, m), _relevance_mass(a, m), t.relevance_rank(), t.auroc(), t.auprc()], 1
    )


def localization_scores(
    maps: torch.Tensor, masks: torch.Tensor, *, absolute: bool = False, shuffle_seed: int | None = None
) -> dict[str, torch.Tensor]:
    """Every metric of ``LOCALIZATION_METRICS`` (and, with a seed, its ``_shuffled`` control),
    equal to calling each function, but sorting each map once.

    Args:
        maps: (B, H, W) float; masks: (B, H, W) bool.
        shuffle_seed: seed of ``shuffled_masks``; None skips the control.

    Returns: metric name -> (B,) float64.
    """
    a, m, bad = _prep(maps, masks, absolute)
    names = list(LOCALIZATION_METRICS)
    sh = None if shuffle_seed is None else shuffled_masks(masks, seed=shuffle_seed).reshape(m.shape)
    own, other = [], []
    for sl in _chunks(*a.shape) if a.shape[0] else [slice(0, 0)]:
        t = _Sorted(a[sl], m[sl])
        own.append(_all(a[sl], m[sl], t))  # (b, 6)
        if sh is not None:
            other.append(_all(a[sl], sh[sl], t.with_mask(sh[sl])))
    out = dict(zip(names, _nan_where_bad(torch.cat(own), bad).T.contiguous().unbind(0)))
    if sh is not None:
        out.update({f"{k}_shuffled": v for k, v in zip(names, _nan_where_bad(torch.cat(other), bad).T.contiguous().unbind(0))})
    return out
