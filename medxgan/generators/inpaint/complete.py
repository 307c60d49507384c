"""Grow a found region to the whole object it is part of (the in-filler tells object from
anatomy).

The inpaint family's search stops at the smallest region that flips f: part of a lesion, of a
band, of a label. :func:`complete_regions` grows such a region ring by ring while the image
differs from its healthy in-filling there by more than the object's own contrast allows for
anatomy. The search uses it after trimming (``SearchConfig.complete``: the counterfactual
removes the finding, not just enough of it to cross f's threshold) and the shortcut search
(:mod:`medxgan.metrics.shortcut`) uses it on the regions it finds outside the findings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.cpu import cpu_batch

__all__ = ["complete_regions", "dilate_masks", "fill_batches", "reconstruct_masks"]


def dilate_masks(masks: torch.Tensor, px: int) -> torch.Tensor:
    """(B, H, W) bool masks grown by ``px`` pixels (a (2 px + 1) square)."""
    if px <= 0:
        return masks.clone()
    m = masks[:, None].float()
    return F.max_pool2d(m, 2 * px + 1, stride=1, padding=px)[:, 0] > 0


def reconstruct_masks(seed: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """Morphological reconstruction: the 8-connected parts of ``within`` (B, H, W) bool that
    ``seed`` (B, H, W) bool touches, grown one pixel at a time, batched over images."""
    cur = seed & within
    for _ in range(within.shape[-2] * within.shape[-1]):
        nxt = dilate_masks(cur, 1) & within
        if bool((nxt == cur).all()):
            break
        cur = nxt
    return cur


def fill_batches(filler: nn.Module, x: torch.Tensor, m: torch.Tensor, batch_size: int
                  ) -> torch.Tensor:
    """``filler(x, m)`` in batches on the filler's device (on the CPU fewer images a batch,
    :func:`medxgan.cpu.cpu_batch`); x (N, 1, H, W), m (N, H, W) bool; the result on the
    CPU."""
    dev = next(iter(filler.parameters())).device
    b = cpu_batch(batch_size, x.shape[-2:], dev, filler)
    out = [filler(x[s:s + b].to(dev), m[s:s + b, None].to(dev, x.dtype)).cpu()
           for s in range(0, len(x), b)]
    return torch.cat(out) if out else x.clone()


@torch.no_grad()
def complete_regions(x: torch.Tensor, masks: torch.Tensor, filler: nn.Module, *,
                     allowed: torch.Tensor | None = None, grow_px: int | None = None,
                     tol_abs: float = 0.1, tol_rel: float = 0.5, max_area: float = 0.3,
                     max_steps: int = 16, batch_size: int = 256) -> torch.Tensor:
    """Grow each found region to the whole object it is part of.

    The search stops at the smallest region that flips f: a part of a band, of a tube, of a
    frame, one letter of a label. The in-filler, which draws healthy anatomy from the context,
    tells the rest of the object from anatomy: repeatedly, the ring of ``grow_px`` px around the
    region is in-filled together with it, and a ring pixel joins the region when the image
    differs from the in-filling by more than ``max(tol_abs, tol_rel * m)``, ``m`` the 90th
    percentile of the difference inside the region first found: the object's own contrast
    (what the in-filler cannot draw from context is not anatomy it knows). Growth stops when no pixel joins, after ``max_steps`` steps, or, for
    an image, when its region would exceed ``max_area`` of the image (that image keeps its last
    region).

    Args:
        x: (N, 1, H, W) in [0, 1], the images the regions were found in.
        masks: (N, H, W) bool, the found regions (empty: left as they are).
        filler: ``(x, m) -> x_filled``.
        allowed: (N, H, W) bool, where a region may grow (outside the findings).
        grow_px: ring width, px (default ``max(1, round(H / 32))``).

    Returns: (N, H, W) bool, each region a superset of the given one.
    """
    H = x.shape[-2]
    m = masks.clone()
    has = m.flatten(1).any(1)
    if not bool(has.any()):
        return m
    idx = torch.nonzero(has).flatten()
    xs, cur = x[idx], m[idx]
    al = allowed[idx] if allowed is not None else torch.ones_like(cur)
    g = max(1, round(H / 32)) if grow_px is None else int(grow_px)
    d0 = (xs - fill_batches(filler, xs, cur, batch_size)).abs()[:, 0]          # (n, H, W)
    ref = torch.stack([d0[i][cur[i]].quantile(0.9) for i in range(len(idx))])  # (n,)
    tol = torch.clamp(tol_rel * ref, min=tol_abs)[:, None, None]
    live = torch.ones(len(idx), dtype=torch.bool)
    for _ in range(max_steps):
        ring = dilate_masks(cur, g) & ~cur & al & live[:, None, None]
        if not bool(ring.any()):
            break
        d = (xs - fill_batches(filler, xs, cur | ring, batch_size)).abs()[:, 0]
        grown = cur | (ring & (d > tol))
        too_big = grown.flatten(1).float().mean(1) > max_area
        changed = (grown != cur).flatten(1).any(1) & ~too_big
        live &= changed
        cur = torch.where(changed[:, None, None], grown, cur)
        if not bool(live.any()):
            break
    m[idx] = cur
    return m
