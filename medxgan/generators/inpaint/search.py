"""Counterfactual by in-filling: the smallest region whose healthy in-filling flips f.

For a positive image x, the counterfactual x_neg is the inpainting (by a healthy-anatomy
:class:`~medxgan.generators.inpaint.inpainter.Inpainter`) of a binary mask M found by a batched, coarse-to-fine
occlusion search with an area cap. This is FIDO (Chang et al., "Explaining image classifiers by
counterfactual generation", ICLR 2019) with a discrete search instead of an optimised soft mask:
a soft mask leaks the lesion into the in-filler, which copies it back (``docs/findings.md``,
"Image-conditioned prototypes"), so masks here are binary at every step.

Algorithm (every step batched over images and candidates, ``batch`` inpaintings at a time):

1. ``p_x = sigmoid(f(x))``. Images with ``p_x < threshold`` keep ``x_neg = x``, empty mask.
2. **Coarse**: every square patch of side ``patch_sizes[0]`` (stride ``stride``, last row /
   column flush with the border) is in-filled alone (optionally in a ``crop`` window around
   it, for speed); patches are ranked by f's probability after in-filling (lowest first).
   Following the ranking, each patch is added to a running union (skipped when the union
   would exceed ``area_cap``), the union is in-filled and scored, until ``p < threshold`` or
   ``max_patches`` patches were tried. Unflipped images keep the union with the lowest
   probability seen (empty if none lowered it).
   Images given a start mask (``init``: the amortised mask net's,
   :mod:`medxgan.generators.inpaint.amortised`, or a cut of f's Grad-CAM,
   :mod:`medxgan.generators.inpaint.start`) skip this step and start from it.
   **Prune** (``prune_init``, started images only): the start mask's 8-connected parts are
   dropped one at a time, least finding-like first (the smallest mean |image - in-filling|
   over the part, from one in-filling of the whole start mask), each drop kept if f still
   calls the in-filling negative: a learned mask marks places f never needed.
3. **Trim**, for each finer side in ``patch_sizes[1:]`` (stride half the side), on flipped
   images only (started images only with ``trim_init``): every fine patch touching the mask
   is removed from it alone and scored; in order of that score (least needed first, only
   those whose removal alone keeps ``p < threshold``) each removal is tried on the current
   mask and kept if f still calls the in-filling negative.
   That is ``trim: exact``: P in-fillings to rank P touching patches, then one per removal
   tried. ``trim: bisect`` ranks the touching patches instead by the mean |image -
   in-filling| of the whole mask over each patch's part of it (one in-filling: the patches
   the in-filling redraws faithfully first, the finding last) and removes the longest prefix
   of that ranking whose removal, all at once, still flips f, found by bisection (about
   log2 P + 2 in-fillings per image instead of about 2 P): it stops at the first removal f
   needs in the ranking's order, so it keeps more of the finding. ``trim: ranked`` (the
   configured default at 128 px and above since session 15, ``SearchConfig.trim: auto``)
   does the same and then tries each later patch of the ranking in turn, kept where f still
   flips (as ``exact`` does with its own ranking); where the search completes its masks
   (step 4) it skips the patches whose pixels in the mask are at least half the finding's
   (:data:`FINDING_SHARE`; completion's cut on the whole mask's in-filling): f needs them, or
   completion adds them back.
   With ``margin`` > 0, both stages aim at ``p < threshold - margin`` instead.
4. **Complete** (``complete``, on flipped images only; the configured default at 128 px and
   above since session 16, ``SearchConfig.complete: auto``): the mask is grown to the whole
   finding it touches (:func:`_complete`): the mask's neighbourhood (``complete_steps`` rings of
   ``max(1, H/32)`` px) is in-filled with it in one pass; the finding's pixels there are those
   where the image differs from that in-filling in the finding's direction by more than
   ``max(complete_tol, complete_rel m)``, m the 90th percentile of that difference inside the
   mask; the ones connected to the mask, grown by ``max(1, H/64)`` px (the lesion's faint rim),
   join it, up to ``area_cap``, where that lowers f's logit. With ``complete_both_signs`` the
   absolute difference replaces the signed one (m then of |d|). The search alone stops as
   soon as f crosses its threshold, so part of a lesion often stays and a second classifier
   still sees it; completion removes the finding, not just enough of it. A finding the mask
   does not touch (a second lesion) is not added: f did not need it to flip.
5. **Support** (``support``, on flipped images only): the square-edged mask is cut to the
   finding's own pixels: those where the image differs from the in-filling in the finding's
   direction by more than ``max(complete_tol, support_rel m)`` (m and the direction as in
   step 4), grown by ``max(1, H/64)`` px and kept inside the mask (:func:`_support`). The cut
   mask replaces the mask only where its own in-filling still flips f. A square patch covers
   healthy pixels around the lesion too; in-filling them changes the image where nothing is
   wrong (lower counterfactual Dice and NCC).
6. ``x_neg = inpainter(x, M)``, ``p_neg = f(x_neg)``: the in-filling of the final mask that the
   step which kept M computed (the search remembers each image's current mask, its in-filling
   and f's probability, :meth:`_Scorer.current`; a caller's start, ``init_fill``, too), so no
   mask is in-filled twice for its answer.
7. **Restore** (``restore``, on flipped images only): the pixels of M where the in-filling
   differs from the image by no more than the in-filler's own error are given back their
   values (:func:`_restore`). With d = x - x_neg, both signs (a ring-enhancing lesion is a
   bright rim, a dark core and a dark halo): the core is ``|d| > max(complete_tol,
   complete_rel m)``, m the 90th percentile of |d| in M; the in-filler's error sigma is the
   MAD-based sd of d over M's pixels farther than H/32 px from the core; the finding is the
   core, the pixels connected to it where ``|d| > max(restore_k sigma, 1/255)`` and every
   pixel where ``|d| > complete_tol`` (what reads as a finding is never given back), grown by
   ``max(1, H/128)`` px. x_neg keeps its in-filled values there and is x elsewhere. Unlike
   step 5 nothing is in-filled again (a tight mask lets the in-filler copy the lesion's rim
   back from its context). Kept where f still calls it negative; the returned mask is then
   the restored region.

The classifier contract is the repo's (``medxgan.classifiers.wrapper``): ``f(x (B, 1, H, W) in
[0, 1]) -> positive logit (B,)`` with an optional ``threshold`` attribute on the probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from medxgan.cpu import cpu_batch, inference_copy
from medxgan.explain._torch import probabilities
from medxgan.generators.base import SearchResult

__all__ = ["SearchResult", "search_counterfactual"]


def _positions(n: int, side: int, stride: int) -> list[int]:
    """Top-left offsets of patches of ``side`` px along an axis of ``n`` px, the last flush with
    the border."""
    if side >= n:
        return [0]
    pos = list(range(0, n - side + 1, stride))
    if pos[-1] != n - side:
        pos.append(n - side)
    return pos


def _patch_masks(H: int, W: int, side: int, stride: int) -> torch.Tensor:
    """(K, 1, H, W) bool: every patch of the grid."""
    ys, xs = _positions(H, side, stride), _positions(W, side, stride)
    m = torch.zeros(len(ys) * len(xs), 1, H, W, dtype=torch.bool)
    k = 0
    for y in ys:
        for x in xs:
            m[k, 0, y:y + side, x:x + side] = True
            k += 1
    return m


class _Scorer:
    """f's probability of in-filled images, ``batch`` at a time, no gradients."""

    def __init__(self, images: torch.Tensor, classifier: nn.Module, inpainter: nn.Module,
                 batch: int, allowed: torch.Tensor | None = None):
        self.dev = next(iter(inpainter.parameters())).device
        self.x = images
        # on the CPU fewer images per pass than ``batch`` (medxgan.cpu.cpu_batch) and f's
        # no-grad passes through a channels-last copy of it (medxgan.cpu.inference_copy)
        self.batch = cpu_batch(batch, images.shape[-2:], self.dev, inpainter)
        self.f = inference_copy(classifier, images[:2].to(self.dev))
        self.g = inpainter
        self.allowed = allowed  # (B, 1, H, W) bool or None: where masks may lie
        # image index -> (mask (1, H, W) bool, its in-filling (1, H, W), f's probability):
        # the in-filling of each image's current mask, so that a later step (completion,
        # the final in-filling) does not in-fill the same mask again
        self.memo: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}

    def remember(self, idx: torch.Tensor, masks: torch.Tensor, fills: torch.Tensor,
                 probs: torch.Tensor) -> None:
        """Keep the in-fillings ``fills`` (N, 1, H, W) of images ``x[idx]`` (N,) with
        ``masks`` (N, 1, H, W) bool and f's probability ``probs`` (N,) of them: each image's
        current mask (a step keeps a candidate mask), replacing the image's earlier one."""
        for i, m, xf, p in zip(idx.tolist(), masks, fills, probs.tolist()):
            self.memo[i] = (m.clone(), xf.clone(), p)

    def current(self, idx: torch.Tensor, masks: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The in-fillings (N, 1, H, W) of images ``x[idx]`` (N,) with ``masks`` (N, 1, H, W)
        bool and f's probability (N,) of them: remembered where the image's remembered mask is
        this one, else in-filled (and remembered)."""
        fills = self.x[idx].clone() if len(idx) else self.x[:0]
        probs = torch.zeros(len(idx))
        miss = []
        for j, (i, m) in enumerate(zip(idx.tolist(), masks)):
            hit = self.memo.get(i)
            if hit is not None and torch.equal(hit[0], m):
                fills[j], probs[j] = hit[1], hit[2]
            else:
                miss.append(j)
        if miss:
            miss_t = torch.tensor(miss)
            f_, p_ = self.fill_and_prob(idx[miss_t], masks[miss_t])
            fills[miss_t], probs[miss_t] = f_, p_
            self.remember(idx[miss_t], masks[miss_t], f_, p_)
        return fills, probs

    def keep_if(self, ok: torch.Tensor, idx: torch.Tensor, masks: torch.Tensor
                ) -> torch.Tensor:
        """In-fill images ``x[idx]`` (N,) with candidate ``masks`` (N, 1, H, W) bool, remember
        the candidates ``ok(p)`` accepts ((N,) probabilities -> (N,) bool) and return that
        (N,) bool."""
        fills, p = self.fill_and_prob(idx, masks)
        good = ok(p)
        if bool(good.any()):
            self.remember(idx[good], masks[good], fills[good], p[good])
        return good

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return probabilities(self.f, x, self.batch, self.dev)

    def fill(self, idx: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """In-fill images ``x[idx]`` (N,) with ``masks`` (N, 1, H, W) bool -> (N, 1, H, W)."""
        out = []
        for s in range(0, len(idx), self.batch):
            xb = self.x[idx[s:s + self.batch]].to(self.dev)
            mb = masks[s:s + self.batch].to(self.dev, xb.dtype)
            out.append(self.g(xb, mb).cpu())
        return torch.cat(out) if out else self.x[:0]

    def filled_prob(self, idx: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """f's probability (N,) after in-filling images ``x[idx]`` (N,) with ``masks``
        (N, 1, H, W) bool."""
        return self._filled(idx, masks, keep=False)[1]

    def fill_and_prob(self, idx: torch.Tensor, masks: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The in-fillings (N, 1, H, W) of images ``x[idx]`` (N,) with ``masks`` and f's
        probability (N,) of them, one in-filler pass."""
        return self._filled(idx, masks, keep=True)

    def _filled(self, idx: torch.Tensor, masks: torch.Tensor, keep: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        fills, probs = [], []
        for s in range(0, len(idx), self.batch):
            xb = self.x[idx[s:s + self.batch]].to(self.dev)
            xf = self.g(xb, masks[s:s + self.batch].to(self.dev, xb.dtype))
            probs.append(torch.sigmoid(self.f(xf).float()).cpu())
            if keep:   # the search's hot paths need only f's probability
                fills.append(xf.cpu())
        return (torch.cat(fills) if fills else self.x[:0],
                torch.cat(probs) if probs else torch.zeros(0))


@torch.no_grad()
def search_counterfactual(images: torch.Tensor, classifier: nn.Module, inpainter: nn.Module, *,
                          threshold: float | None = None, patch_sizes: Sequence[int] = (12, 8),
                          stride: int | None = None, area_cap: float = 0.15, batch: int = 256,
                          max_patches: int = 32, crop: int | None = None,
                          margin: float = 0.0, allowed: torch.Tensor | None = None,
                          complete: bool = False, complete_tol: float = 0.06,
                          complete_rel: float = 0.5, complete_steps: int = 2,
                          complete_both_signs: bool = False,
                          support: bool = False, support_rel: float = 0.25,
                          restore: bool = False, restore_k: float = 3.0,
                          init: torch.Tensor | None = None,
                          trim_init: bool | torch.Tensor = False,
                          prune_init: bool = False, trim: str = "exact",
                          tail: int | None = None,
                          p_x: torch.Tensor | None = None,
                          init_fill: tuple[torch.Tensor, torch.Tensor] | None = None
                          ) -> SearchResult:
    """Smallest in-filled region that makes f call each image negative (see module docstring).

    Args:
        images: (B, 1, H, W) float in [0, 1].
        classifier: f(x) -> positive logit (B,); its ``threshold`` attribute (probability) is the
            default threshold (else 0.5).
        inpainter: ``inpainter(x, m) -> x_fill`` (B, 1, H, W), m (B, 1, H, W) float in {0, 1}
            (:class:`~medxgan.generators.inpaint.inpainter.Inpainter`); its device is used.
        threshold: decision threshold on f's probability (default: the classifier's).
        patch_sizes: square patch sides in pixels, coarse first; later ones trim the mask.
        stride: stride of the coarse patches in pixels (default: half the coarse side); the
            trimming patches use half their side.
        area_cap: largest share of the image the mask may cover, in (0, 1].
        batch: in-fillings per forward pass.
        max_patches: most ranked coarse patches tried per image.
        crop: side (px) of the window the in-filler sees when ranking single coarse patches
            (None: the whole image); must suit the in-filler (a multiple of ``2**depth``).
            Unions, trimming and the final in-filling always use the whole image.
        margin: the search aims at f's probability below ``threshold - margin`` (coarse stop
            and trimming); 0 stops just below the threshold, a larger margin keeps more of what
            makes f positive (recall) at the price of area. ``flipped`` still uses
            ``threshold``.
        allowed: (B, 1, H, W) or (B, H, W) bool, where each image's mask may lie (None:
            everywhere); every patch is cut to it, so the mask never leaves it (the shortcut
            search: outside the findings).
        complete: grow each flipped image's mask to the whole finding (step 4).
        complete_tol: the smallest image-minus-in-filling difference (intensity in [0, 1])
            that joins a pixel to the mask while completing: above the in-filler's own error on
            healthy anatomy.
        complete_rel: the share of the finding's own contrast (the 90th percentile of the
            signed difference inside the searched mask) a ring pixel must reach to join.
        complete_both_signs: completion follows |image - in-filling| instead of the
            finding's sign (a mask that started on a tumour's dark oedema grows to its
            bright core too).
        complete_steps: how far around the mask the finding is looked for, in rings of
            ``max(1, H/32)`` px.
        support: cut each flipped image's mask to the finding's own pixels (step 5).
        support_rel: the share of the finding's contrast a pixel must reach to stay in the
            cut mask (and above ``complete_tol``).
        restore: give the pixels the in-filling only redrew back their values (step 7).
        restore_k: how many of the in-filler's error sigmas |image - in-filling| must pass
            to stay changed (step 7).
        init: (B, 1, H, W) or (B, H, W) bool start masks (the amortised mask net's,
            :mod:`medxgan.generators.inpaint.amortised`), or None. An image f calls positive with
            a non-empty start mask skips step 2 (the coarse ranking, most of the search's cost)
            and starts from it; steps 4-7 follow as configured.
        trim_init: whether started images go through step 3 (trimming) too: one bool for
            all, or (B,) bool per image.
        prune_init: started images drop the parts of their start mask f does not need
            (step 2b, :func:`_prune`) before step 3.
        trim: how step 3 ranks and removes fine patches: ``exact`` (each removal in-filled
            alone to rank, then tried in turn), ``bisect`` (ranked by the whole mask's
            in-filling change, the longest removable prefix found by bisection) or
            ``ranked`` (``bisect``, then each later patch tried in turn); the module
            docstring, step 3.
        tail: ``ranked`` only: the most patches its one-at-a-time tail tries per image (the
            first ``tail`` candidates of the ranking after the prefix); None: every candidate.
        p_x: (B,) f's probability of ``images`` where the caller computed it (a start: the
            Grad-CAM cuts or the amortised net), else None: f runs on them first (step 1).
        init_fill: (in-fillings (B, 1, H, W), f's probability of them (B,)) of the ``init``
            masks where the caller in-filled them (:func:`~medxgan.generators.inpaint.
            amortised.first_flipping_cut`), read only for started images: the search does not
            in-fill them again.

    Returns: :class:`SearchResult` on the CPU.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got {tuple(images.shape)}")
    if not patch_sizes:
        raise ValueError("patch_sizes must name at least one patch side")
    if not 0 < area_cap <= 1:
        raise ValueError(f"area_cap must be in (0, 1], got {area_cap}")
    if trim not in ("exact", "ranked", "bisect"):
        raise ValueError(f"trim must be exact, ranked or bisect, got {trim!r}")
    thr = float(threshold if threshold is not None else getattr(classifier, "threshold", 0.5))
    x = images.detach().to(torch.float32).cpu()
    B, _, H, W = x.shape
    cap = area_cap * H * W  # pixels
    if allowed is not None:
        allowed = allowed.detach().to(torch.bool).cpu().reshape(B, 1, H, W)
    sc = _Scorer(x, classifier, inpainter, batch, allowed)
    p_x = sc.prob(x) if p_x is None else p_x.detach().float().cpu()   # (B,)
    mask = torch.zeros(B, 1, H, W, dtype=torch.bool)
    todo = (p_x >= thr).nonzero()[:, 0]                               # (n,)
    started = torch.zeros(B, dtype=torch.bool)
    if init is not None:
        init = init.detach().to(torch.bool).cpu().reshape(B, 1, H, W)
        if allowed is not None:
            init = init & allowed
        started = (p_x >= thr) & init.flatten(1).any(1)
        mask[started] = init[started]
        if init_fill is not None and allowed is None and bool(started.any()):
            rows = started.nonzero()[:, 0]
            sc.remember(rows, mask[rows], init_fill[0][rows].detach().float().cpu(),
                        init_fill[1][rows].detach().float().cpu())
    if len(todo):
        cold = todo[~started[todo]]
        if len(cold):
            mask[cold] = _coarse(sc, cold, thr - margin, cap, patch_sizes[0],
                                 stride or max(1, patch_sizes[0] // 2), max_patches, crop)
        warm = todo[started[todo]]
        if prune_init and len(warm):
            mask[warm] = _prune(sc, warm, mask[warm], thr - margin)
        if isinstance(trim_init, torch.Tensor):
            trimmed = todo[trim_init.to(torch.bool).cpu()[todo] | ~started[todo]]
        else:
            trimmed = todo if trim_init else cold
        for side in patch_sizes[1:] if len(trimmed) else ():
            mask[trimmed] = _trim(sc, trimmed, mask[trimmed], thr - margin, side,
                                  max(1, side // 2), trim,
                                  (complete_tol, complete_rel, complete_both_signs)
                                  if complete else None, tail)
        if complete:
            mask[todo] = _complete(sc, todo, mask[todo], thr, area_cap, complete_tol,
                                   complete_rel, complete_steps, complete_both_signs)
        if support:
            mask[todo] = _support(sc, todo, mask[todo], thr, complete_tol, support_rel)
    x_neg = x.clone()
    p_neg = p_x.clone()
    has = mask.flatten(1).any(1).nonzero()[:, 0]
    if len(has):
        x_neg[has], p_neg[has] = sc.current(has, mask[has])   # remembered: no second pass
        if restore:
            rows = has[p_neg[has] < thr]
            if len(rows):
                x_neg[rows], mask[rows], p_neg[rows] = _restore(
                    sc, x[rows], x_neg[rows], mask[rows], p_neg[rows], thr, complete_tol,
                    complete_rel, restore_k)
    area = mask.flatten(1).float().mean(1)
    return SearchResult(x_neg, mask, p_x, p_neg, area, thr)


def _single_patch_probs(sc: _Scorer, idx: torch.Tensor, side: int, stride: int,
                        crop: int | None) -> torch.Tensor:
    """f's probability (n, K) after in-filling each grid patch alone in images ``idx`` (n,).

    With ``crop`` the in-filler sees only a ``crop`` x ``crop`` window around the patch (clamped
    to the image) and the filled window is pasted back before f sees the whole image: about
    (H W / crop^2) times less in-filling work, at the price of less context (ranking only)."""
    H, W = sc.x.shape[-2:]
    ys, xs = _positions(H, side, stride), _positions(W, side, stride)
    ch, cw = (H, W) if crop is None else (min(crop, H), min(crop, W))
    wins = []  # (patch y, patch x, window y, window x)
    for y in ys:
        for x in xs:
            wy = min(max(y + side // 2 - ch // 2, 0), H - ch)
            wx = min(max(x + side // 2 - cw // 2, 0), W - cw)
            wins.append((y, x, wy, wx))
    K, out = len(wins), []
    for s0 in range(0, len(idx), sc.batch):
        xi = sc.x[idx[s0:s0 + sc.batch]]                              # (n, 1, H, W)
        n = len(xi)
        per = max(1, sc.batch // n)                                   # patches per pass
        rows = []
        for k0 in range(0, K, per):
            ks = wins[k0:k0 + per]
            crops = torch.cat([xi[..., wy:wy + ch, wx:wx + cw] for _, _, wy, wx in ks])
            m = torch.zeros(len(ks), 1, 1, ch, cw)
            for j, (y, x, wy, wx) in enumerate(ks):
                m[j, ..., y - wy:y - wy + side, x - wx:x - wx + side] = 1.0
            m = m.expand(len(ks), n, 1, ch, cw)                       # (k, n, 1, ch, cw)
            if sc.allowed is not None:
                al = sc.allowed[idx[s0:s0 + sc.batch]]                # (n, 1, H, W)
                m = m * torch.stack([al[..., wy:wy + ch, wx:wx + cw] for _, _, wy, wx in ks])
            m = m.reshape(-1, 1, ch, cw)                              # (k n, 1, ch, cw)
            filled = sc.g(crops.to(sc.dev), m.to(sc.dev)).cpu()       # (k n, 1, ch, cw)
            full = xi.repeat(len(ks), 1, 1, 1)                        # (k n, 1, H, W)
            for j, (_, _, wy, wx) in enumerate(ks):
                full[j * n:(j + 1) * n, :, wy:wy + ch, wx:wx + cw] = filled[j * n:(j + 1) * n]
            p = torch.sigmoid(sc.f(full.to(sc.dev)).float()).cpu()    # (k n,)
            rows.append(p.view(len(ks), n))
        out.append(torch.cat(rows).T)                                 # (n, K)
    return torch.cat(out)


def _coarse(sc: _Scorer, idx: torch.Tensor, thr: float, cap: float, side: int, stride: int,
            max_patches: int, crop: int | None = None) -> torch.Tensor:
    """Greedy union of ranked patches for images ``idx`` (n,) -> masks (n, 1, H, W) bool."""
    n = len(idx)
    H, W = sc.x.shape[-2:]
    patches = _patch_masks(H, W, side, stride)                        # (K, 1, H, W)
    ok = patches.flatten(1).sum(1) <= cap                             # (K,) fits the cap alone
    p_single = _single_patch_probs(sc, idx, side, stride, crop)       # (n, K)
    p_single[:, ~ok] = float("inf")
    if sc.allowed is not None:  # a patch wholly outside an image's allowed region is no patch
        inside = sc.allowed[idx].flatten(1).float() @ patches.flatten(1).float().T  # (n, K)
        p_single[inside == 0] = float("inf")
    order = p_single.argsort(1)[:, :max_patches]                      # (n, T) best first
    cur = torch.zeros(n, 1, H, W, dtype=torch.bool)
    best = cur.clone()
    best_p = sc.prob(sc.x[idx])                                       # an empty mask's p
    done = torch.zeros(n, dtype=torch.bool)
    for t in range(order.shape[1]):
        cand = cur | patches[order[:, t]]                             # (n, 1, H, W)
        if sc.allowed is not None:
            cand &= sc.allowed[idx]
        area = cand.flatten(1).sum(1)
        grows = area > cur.flatten(1).sum(1)
        fits = torch.isfinite(p_single.gather(1, order[:, t:t + 1])[:, 0])
        live = (~done & grows & (area <= cap) & fits).nonzero()[:, 0]
        if not len(live):
            if bool(done.all()):
                break
            continue
        fills, p = sc.fill_and_prob(idx[live], cand[live])            # (m, 1, H, W), (m,)
        cur[live] = cand[live]
        better = p < best_p[live]
        sc.remember(idx[live[better]], cand[live[better]], fills[better], p[better])
        best[live[better]] = cand[live[better]]
        best_p[live[better]] = p[better]
        done[live[p < thr]] = True
        if bool(done.all()):
            break
    return best


def _flipped_rows(sc: _Scorer, idx: torch.Tensor, mask: torch.Tensor, thr: float,
                  keep_fills: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rows of ``mask`` (n, 1, H, W) bool, non-empty, whose in-filling of images ``idx`` (n,)
    f calls negative (p < ``thr``), f's probability (r,) of those in-fillings and, with
    ``keep_fills``, the in-fillings themselves (r, 1, H, W) (else None)."""
    has = mask.flatten(1).any(1).nonzero()[:, 0]
    if not len(has):
        return has, torch.zeros(0), sc.x[:0] if keep_fills else None
    fills, p = sc.current(idx[has], mask[has])                        # remembered or in-filled
    return has[p < thr], p[p < thr], fills[p < thr] if keep_fills else None


FINDING_SHARE = 0.5
"""The ranked trim's tail does not try a patch whose pixels in the mask are at least this share
the finding's (completion's cut, :func:`_finding_cut`): f needs it, or completion adds it back
(measured, session 20: 3 of 136 such removals kept on cxr, 23 of 151 on brain, with the same
counterfactuals within 0.007 on every quality number)."""


def _trim(sc: _Scorer, idx: torch.Tensor, mask: torch.Tensor, thr: float, side: int,
          stride: int, how: str = "exact",
          finding: tuple[float, float, bool] | None = None,
          tail: int | None = None) -> torch.Tensor:
    """Remove fine patches from flipping masks while f still calls the in-filling negative.

    Args: idx (n,) image indices, mask (n, 1, H, W) bool; how: ``exact``, ``ranked`` or
    ``bisect`` (the module docstring, step 3); finding: completion's (tol, rel, both signs)
    where the search completes its masks: ``ranked`` then skips, after its prefix, the
    patches at least :data:`FINDING_SHARE` finding (completion's cut on the whole mask's
    in-filling), or None; tail: ``ranked`` tries at most this many patches in turn per image
    (None: all). Returns the trimmed masks."""
    H, W = mask.shape[-2:]
    patches = _patch_masks(H, W, side, stride)                        # (K, 1, H, W)
    mask = mask.clone()
    rows, _, fills = _flipped_rows(sc, idx, mask, thr, keep_fills=how != "exact")
    if not len(rows):
        return mask
    m = mask[rows].flatten(1).float()                                 # (r, H W)
    pf = patches.flatten(1).float()                                   # (K, H W)
    overlap = m @ pf.T                                                # (r, K) pixels shared
    touch = overlap > 0                                               # (r, K)
    if how != "exact":  # rank by the whole mask's in-filling change under each patch
        d = (sc.x[idx[rows]] - fills)[:, 0]                           # (r, H, W)
        change = ((d.abs().flatten(1) * m) @ pf.T) / overlap.clamp_min(1)  # (r, K) mean |d|
        change[~touch] = float("inf")
        order = change.argsort(1)                                     # (r, K) lowest first
        n = touch.sum(1)                                              # (r,) candidates
        lo = _remove_prefix(sc, idx, mask, thr, rows, order, n, patches)
        if how == "ranked":  # the rest in turn; the one after the prefix f needed
            tried = touch
            if finding is not None:  # not the finding's own patches: completion adds them back
                before = (m > 0).reshape(d.shape)                         # fills' masks
                is_finding = _finding_test(d, before, *finding)
                core = (is_finding(d).flatten(1).float() * m) @ pf.T      # (r, K) pixels
                tried = touch & (core < FINDING_SHARE * overlap)
            _remove_in_turn(sc, idx, mask, thr, {
                int(r): [patches[k] for k in order[j, int(lo[j]) + 1:int(n[j])].tolist()
                         if bool(tried[j, k])][:tail]
                for j, r in enumerate(rows.tolist())})
        return mask
    pairs = touch.nonzero()                                           # (P, 2): row, patch
    if not len(pairs):
        return mask
    r_of, k_of = rows[pairs[:, 0]], pairs[:, 1]
    p_rm = sc.filled_prob(idx[r_of], mask[r_of] & ~patches[k_of])     # (P,)
    keep = p_rm < thr                                                 # removal alone keeps the flip
    r_of, k_of, p_rm = r_of[keep], k_of[keep], p_rm[keep]
    if not len(r_of):
        return mask
    # per image: candidate removals in ascending order of p_rm (least needed first)
    lists: dict[int, list[torch.Tensor]] = {}
    for j in torch.argsort(p_rm).tolist():
        lists.setdefault(int(r_of[j]), []).append(patches[k_of[j]])
    _remove_in_turn(sc, idx, mask, thr, lists)
    return mask


def _remove_prefix(sc: _Scorer, idx: torch.Tensor, mask: torch.Tensor, thr: float,
                   rows: torch.Tensor, order: torch.Tensor, n: torch.Tensor,
                   patches: torch.Tensor) -> torch.Tensor:
    """Remove from each row of ``mask`` (n_all, 1, H, W) bool, in place, the longest prefix of
    its ranked patches whose removal at once keeps f calling the in-filling of image
    ``idx[row]`` negative (p < ``thr``) and the mask non-empty, found by bisection over the
    prefix length, batched over rows.

    Args: rows (r,) rows of ``mask`` that flip now; order (r, K) patch indices, first to
    remove first; n (r,) how many of them are candidates; patches (K, 1, H, W) bool.
    Only tested prefixes are kept, so every row still flips afterwards.

    Returns: (r,) the prefix length removed per row; where it is below ``n`` the prefix one
    longer was tested and did not flip f."""
    H, W = mask.shape[-2:]
    pf = patches.flatten(1)                                           # (K, H W) bool
    base = mask[rows].flatten(1)                                      # (r, H W)
    lo = torch.zeros(len(rows), dtype=torch.long)                     # removable (tested)
    hi = n.clone()                                                    # not above this

    def without(j: torch.Tensor, k: torch.Tensor) -> torch.Tensor:    # (m,) rows, (m,) lengths
        first = torch.arange(order.shape[1])[None] < k[:, None]      # (m, K)
        sel = torch.zeros(len(j), pf.shape[0], dtype=torch.bool)
        sel.scatter_(1, order[j], first)
        removed = (sel.float() @ pf.float()) > 0                      # (m, H W)
        return base[j] & ~removed

    while True:
        live = (lo < hi).nonzero()[:, 0]
        if not len(live):
            break
        mid = (lo[live] + hi[live] + 1) // 2
        cand = without(live, mid)                                     # (m, H W)
        ok = torch.zeros(len(live), dtype=torch.bool)
        has = cand.any(1)
        if bool(has.any()):
            ok[has] = sc.keep_if(lambda p: p < thr, idx[rows[live[has]]],
                                 cand[has].reshape(-1, 1, H, W))
        lo[live[ok]] = mid[ok]
        hi[live[~ok]] = mid[~ok] - 1
    mask[rows] = without(torch.arange(len(rows)), lo).reshape(-1, 1, H, W)
    return lo


def _remove_in_turn(sc: _Scorer, idx: torch.Tensor, mask: torch.Tensor, thr: float,
                    removals: dict[int, list[torch.Tensor]]) -> None:
    """Try each row's ``removals`` (row of ``mask`` -> (1, H, W) bool regions, in the order to
    try) on ``mask`` (n, 1, H, W) bool, in place: round t tries every row's t-th removal at
    once (one batch of in-fillings), skipping one that would empty the mask or change nothing,
    and keeps it where f still calls the in-filling of image ``idx[row]`` negative (p <
    ``thr``). Shared by trimming (fine patches) and pruning (connected parts)."""
    for t in range(max((len(v) for v in removals.values()), default=0)):
        rr = torch.tensor([r for r, v in removals.items() if t < len(v)])
        cand = mask[rr] & ~torch.stack([removals[r][t] for r in rr.tolist()])  # (m, 1, H, W)
        nonempty = cand.flatten(1).any(1) & (cand != mask[rr]).flatten(1).any(1)
        if not bool(nonempty.any()):
            continue
        rr, cand = rr[nonempty], cand[nonempty]
        ok = sc.keep_if(lambda p: p < thr, idx[rr], cand)
        mask[rr[ok]] = cand[ok]


def _prune(sc: _Scorer, idx: torch.Tensor, mask: torch.Tensor, thr: float) -> torch.Tensor:
    """Drop the 8-connected parts of flipping masks that f does not need (step 2b).

    The parts of each mask are tried for removal in ascending order of the mean |image -
    in-filling| over the part (the in-filling of the whole mask; healthy anatomy the in-filler
    redraws first, the finding last), one part per image per round, batched over images; a
    removal is kept where f still calls the in-filling negative (p < ``thr``).

    Args: idx (n,) image indices, mask (n, 1, H, W) bool. Returns the pruned masks."""
    from skimage.measure import label

    mask = mask.clone()
    rows, _, fills = _flipped_rows(sc, idx, mask, thr, keep_fills=True)
    if not len(rows):
        return mask
    d = (sc.x[idx[rows]] - fills).abs()[:, 0]                          # (r, H, W)
    parts: dict[int, list[torch.Tensor]] = {}
    for j, r in enumerate(rows.tolist()):
        lab = torch.from_numpy(label(mask[r, 0].numpy(), connectivity=2)).long()
        if int(lab.max()) < 2:
            continue
        onehot = lab[None] == torch.arange(1, int(lab.max()) + 1)[:, None, None]  # (c, H, W)
        score = (onehot * d[j]).flatten(1).sum(1) / onehot.flatten(1).sum(1)
        parts[r] = [onehot[k][None] for k in torch.argsort(score).tolist()]
    _remove_in_turn(sc, idx, mask, thr, parts)                         # never the last part
    return mask


def _finding_cut(d: torch.Tensor, cur: torch.Tensor, tol: float, rel: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The finding's direction and the difference a pixel must pass, from d = image -
    in-filling (r, H, W) inside the masks cur (r, H, W) bool: (sign (r, 1, 1), the sign of the
    median difference, +1 when 0; cut (r, 1, 1) = ``max(tol, rel m)``, m the 90th percentile
    of the signed difference)."""
    inside = torch.where(cur, d, float("nan")).flatten(1)             # (r, H W), NaN outside
    sign = inside.nanmedian(1).values.sign()
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)[:, None, None]
    ref = (sign[:, :, 0] * inside).nanquantile(0.9, dim=1)           # (r,)
    return sign, torch.clamp(rel * ref, min=tol)[:, None, None]


def _finding_test(d: torch.Tensor, cur: torch.Tensor, tol: float, rel: float,
                  both_signs: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The test a pixel passes when it is the finding's, fixed on d = image - in-filling
    (r, H, W) inside the masks cur (r, H, W) bool (:func:`_finding_cut`): the returned
    function maps a difference d' (r, H, W) to ``sign d' > cut`` (r, H, W) bool; with
    ``both_signs`` |d| and |d'| replace d and d' (the sign is then +1). Shared by the trim's
    tail, completion, the support cut and restore."""
    fold = torch.abs if both_signs else (lambda t: t)
    sign, cut = _finding_cut(fold(d), cur, tol, rel)
    return lambda d2: sign * fold(d2) > cut


def _support(sc: _Scorer, idx: torch.Tensor, mask: torch.Tensor, thr: float, tol: float,
             rel: float) -> torch.Tensor:
    """Cut the flipping masks of images ``idx`` (n,) to the finding's own pixels (step 5).

    A pixel of the mask stays where the image differs from the mask's in-filling in the
    finding's direction by more than ``max(tol, rel m)`` (:func:`_finding_cut`), grown by
    ``max(1, H/64)`` px and kept inside the mask; the cut mask replaces the mask only where its
    own in-filling still flips f (p < ``thr``). mask (n, 1, H, W) bool."""
    from medxgan.generators.inpaint.complete import dilate_masks

    mask = mask.clone()
    rows, _, fills = _flipped_rows(sc, idx, mask, thr, keep_fills=True)
    if not len(rows):
        return mask
    H = mask.shape[-2]
    cur = mask[rows][:, 0]                                            # (r, H, W)
    d = (sc.x[idx[rows]] - fills)[:, 0]                               # (r, H, W)
    core = cur & _finding_test(d, cur, tol, rel)(d)                   # (r, H, W)
    tight = dilate_masks(core, max(1, round(H / 64))) & cur
    smaller = tight.flatten(1).any(1) & (tight != cur).flatten(1).any(1)
    r = smaller.nonzero()[:, 0]
    if not len(r):
        return mask
    ok = sc.keep_if(lambda p: p < thr, idx[rows[r]], tight[r][:, None])  # still flips f
    mask[rows[r[ok]]] = tight[r[ok]][:, None]
    return mask


def _complete(sc: _Scorer, idx: torch.Tensor, mask: torch.Tensor, thr: float, area_cap: float,
              tol: float, rel: float = 0.5, steps: int = 2, both_signs: bool = False
              ) -> torch.Tensor:
    """Grow the flipping masks of images ``idx`` (n,) to the whole finding they touch (step 4).

    The neighbourhood of the mask (``steps * max(1, H/32)`` px around it) is in-filled with it
    in one pass; the finding's pixels there are those where the image differs from that
    in-filling **in the finding's direction** (the sign of the median difference inside the
    searched mask: a bright lesion is brighter than the healthy in-filling) by more than
    ``max(tol, rel m)``, m the 90th percentile of that signed difference inside the searched
    mask (:func:`_finding_cut`). The parts of them connected to the mask
    (:func:`~medxgan.generators.inpaint.complete.reconstruct_masks`), grown by
    ``max(1, H/64)`` px (a lesion's faint rim) and kept in the neighbourhood, join it; the
    grown mask is kept where it lowers f's logit (the finding's evidence still falls) and
    stays within ``area_cap``. With ``both_signs`` the absolute difference replaces the signed
    one. mask (n, 1, H, W) bool."""
    from medxgan.generators.inpaint.complete import dilate_masks, reconstruct_masks

    mask = mask.clone()
    rows, p_rows, fills = _flipped_rows(sc, idx, mask, thr, keep_fills=True)
    if not len(rows):
        return mask
    H, W = mask.shape[-2:]
    x = sc.x[idx[rows]][:, 0]                                         # (r, H, W)
    cur = mask[rows][:, 0]                                            # (r, H, W)
    allowed = sc.allowed[idx[rows]][:, 0] if sc.allowed is not None else torch.ones_like(cur)
    is_finding = _finding_test(x - fills[:, 0], cur, tol, rel, both_signs)
    near = (dilate_masks(cur, steps * max(1, round(H / 32))) & allowed) | cur
    filled = sc.fill(idx[rows], near[:, None])[:, 0]
    finding = near & is_finding(x - filled)                           # (r, H, W)
    joined = reconstruct_masks(finding & cur, finding)
    grown = cur | (dilate_masks(joined, max(1, round(H / 64))) & near)
    grows = (grown != cur).flatten(1).any(1) & (grown.flatten(1).sum(1) <= area_cap * H * W)
    r = grows.nonzero()[:, 0]
    if not len(r):
        return mask
    before = torch.logit(p_rows[r], eps=1e-6)                         # the evidence still falls
    ok = sc.keep_if(lambda p: torch.logit(p, eps=1e-6) < before, idx[rows[r]], grown[r][:, None])
    mask[rows[r[ok]]] = grown[r[ok]][:, None]
    return mask


def _restore(sc: _Scorer, x: torch.Tensor, x_neg: torch.Tensor, mask: torch.Tensor,
             p_neg: torch.Tensor, thr: float, tol: float, rel: float, k: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Give back the pixels the in-filling only redrew (step 7) on r flipped images.

    Both signs count: a ring-enhancing lesion has a bright rim, a dark core and a dark halo,
    and all three are the finding. With d = x - x_neg inside the mask, the core is
    ``|d| > max(tol, rel m)`` (m the 90th percentile of |d| in the mask), the in-filler's error
    sigma the MAD-based sd (1.4826 MAD) of d over the mask's pixels farther than
    ``max(1, H/32)`` px from the core (0 where there are none), and the finding the core, the
    pixels connected to it where ``|d| > max(k sigma, 1/255)``, and every pixel where
    ``|d| > tol``; it is grown by ``max(1, H/128)`` px and kept inside the mask.

    Args:
        x, x_neg: (r, 1, H, W) images and their in-fillings of ``mask`` (r, 1, H, W) bool;
            p_neg (r,) f's probability of x_neg.
        thr: f's threshold; tol, rel: the core's cut as in step 4, intensity in [0, 1] and a
            share of m; k: sigmas of the in-filler's error a difference must pass.

    Returns: (x_neg, mask, p_neg), each replaced by the restored one where f still calls it
    negative (p < ``thr``).
    """
    from medxgan.generators.inpaint.complete import dilate_masks, reconstruct_masks

    H = x.shape[-2]
    cur = mask[:, 0]                                                  # (r, H, W)
    d = (x - x_neg)[:, 0]                                             # (r, H, W)
    a = d.abs()
    core = cur & _finding_test(d, cur, tol, rel, both_signs=True)(d)  # on |d|: both signs
    away = torch.where(cur & ~dilate_masks(core, max(1, round(H / 32))), d, float("nan")
                       ).flatten(1)
    med = away.nanmedian(1).values                                    # (r,), NaN: none away
    sigma = 1.4826 * (away - med[:, None]).abs().nanmedian(1).values
    low = torch.clamp(k * torch.nan_to_num(sigma, nan=0.0), min=1 / 255)[:, None, None]
    finding = reconstruct_masks(core, core | (cur & (a > low))) | (cur & (a > tol))
    keep = dilate_masks(finding, max(1, round(H / 128))) & cur
    smaller = keep.flatten(1).any(1) & (keep != cur).flatten(1).any(1)
    r = smaller.nonzero()[:, 0]
    if not len(r):
        return x_neg, mask, p_neg
    cand = torch.where(keep[r, None], x_neg[r], x[r])                 # (m, 1, H, W)
    p = sc.prob(cand)
    ok = p < thr
    x_neg, mask, p_neg = x_neg.clone(), mask.clone(), p_neg.clone()
    x_neg[r[ok]], mask[r[ok]], p_neg[r[ok]] = cand[ok], keep[r[ok], None], p[ok]
    return x_neg, mask, p_neg
