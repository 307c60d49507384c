"""An amortised mask for the inpaint family: one network pass instead of the search, where it
suffices (issue #14, the cost target).

The counterfactual search (:mod:`medxgan.generators.inpaint.search`) costs 100-150
in-fillings and classifier passes per image. A small U-Net (:class:`MaskNet`, the in-filler's
trunk on x alone) is distilled from the search's own masks on train images f calls positive
(:func:`train_mask_net`: binary cross-entropy, positives weighted by the masks' rarity). At
explanation time (:func:`amortised_counterfactual`) its probability map is cut at each of
``thresholds`` (tight first); the first cut whose in-filling makes f call the image negative,
within the area cap, is the start mask; the images no cut flips go to the search. The net
replaces the search's coarse ranking (step 2, most of its cost) only: a start mask is pruned
(``prune``), trimmed (``trim``) and completed, cut and restored as the search's config says
(steps 2b-7 of :mod:`medxgan.generators.inpaint.search`). x_neg is always an in-filling of a binary mask by
the same in-filler, and f's decision is checked on it, so the family's contract is unchanged;
what changes is which mask is found (a learned guess of where the search would look, not the
smallest one).

Off by default (``InpaintConfig.amortise.images`` = 0); docs/generator-families.md has its
measurements.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from medxgan.config.inpaint import AmortiseConfig
from medxgan.explain._torch import probabilities
from medxgan.generators.unet import UNet, budget_spent, draw_batch

__all__ = ["MaskNet", "amortised_counterfactual", "distil", "first_flipping_cut",
           "train_mask_net"]

log = logging.getLogger(__name__)


class MaskNet(UNet):
    """Mask predictor: a :class:`~medxgan.generators.unet.UNet` on x (B, 1, H, W) in [0, 1];
    ``forward`` gives the probability (B, 1, H, W) that the search would in-fill each pixel."""

    def __init__(self, base: int = 8, depth: int = 3):
        super().__init__(1, base, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.trunk(x))


def train_mask_net(images: torch.Tensor, masks: torch.Tensor, config: AmortiseConfig,
                   seed: int = 0, device: str | torch.device = "cpu"
                   ) -> tuple[MaskNet, dict[str, Any]]:
    """Distil the search's masks into a :class:`MaskNet`.

    Args:
        images: (N, 1, H, W) in [0, 1], train images f calls positive whose search flipped f.
        masks: (N, 1, H, W) bool / {0, 1}, their search masks.
        config: :class:`~medxgan.config.inpaint.AmortiseConfig` (architecture, steps/seconds,
            batch, lr).
        seed: seeds the weights and the batches (flips applied to image and mask alike).

    Returns: (the net in eval mode on ``device``, stats ``steps``, ``seconds``, ``n_images``,
    ``final_loss`` (mean of the last up to 50 steps), ``pos_weight``, ``fit_iou`` (IoU of its
    0.5 cut with the masks it was shown; under 0.2 is logged as a warning)).
    """
    if len(images) == 0 or images.shape != masks.shape:
        raise ValueError(f"need (N, 1, H, W) images and masks of one shape, N > 0; got "
                         f"{tuple(images.shape)} and {tuple(masks.shape)}")
    x = images.detach().to(torch.float32).cpu()
    m = masks.detach().to(torch.float32).cpu()
    share = float(m.mean())
    pos_weight = torch.tensor(min(config.max_pos_weight, (1 - share) / max(share, 1e-6)))
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MaskNet(config.base, config.depth)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    both = torch.cat([x, m], 1)                                         # flipped together
    recent: list[float] = []
    t0, step = time.perf_counter(), 0
    while not budget_spent(config.steps, config.seconds, step, t0):
        b = draw_batch(both, config.batch, True, g).to(device)          # (b, 2, H, W)
        loss = F.binary_cross_entropy_with_logits(net.trunk(b[:, :1]), b[:, 1:],
                                                  pos_weight=pos_weight.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        recent = (recent + [float(loss.detach())])[-50:]
    net.eval()
    iou = _fit_iou(net, x, m > 0.5, device)
    if not iou >= 0.2:
        log.warning("the mask net fits its own masks badly (IoU %.2f at the 0.5 cut): it will "
                    "start few searches", iou)
    return net, {"steps": step, "seconds": time.perf_counter() - t0, "n_images": len(x),
                 "final_loss": sum(recent) / len(recent) if recent else float("nan"),
                 "pos_weight": float(pos_weight), "fit_iou": iou}


@torch.no_grad()
def _fit_iou(net: MaskNet, x: torch.Tensor, m: torch.Tensor, device, n: int = 256) -> float:
    """IoU of the net's 0.5 cut with the masks it was trained on, pooled over the first ``n``
    images (a collapsed net, one map for every image, scores near 0)."""
    pred = torch.cat([net(x[s:s + 64].to(device)).cpu() > 0.5 for s in range(0, min(n, len(x)), 64)])
    true = m[:len(pred)]
    union = float((pred | true).sum())
    return float((pred & true).sum()) / union if union else float("nan")


def distil(G, f, pos: torch.Tensor, config: AmortiseConfig, seed: int, device: torch.device
           ) -> tuple[dict | None, dict[str, Any]]:
    """Distil the search's masks of up to ``config.images`` train images f calls positive
    (``pos`` (N, 1, H, W)) into a mask net and attach it to G (an ``InpaintGenerator`` without
    one); returns (its checkpoint record ``{"base", "depth", "state_dict"}`` or None when the
    search flipped none, stats)."""
    t0 = time.perf_counter()
    res = G.counterfactual(pos[:config.images], f)                # G has no mask net yet
    search_s = time.perf_counter() - t0
    ok = res.flipped
    if not bool(ok.any()):
        log.warning("the search flipped none of %d train positives: no amortised mask",
                    len(res.flipped))
        return None, {"n_images": 0, "search_seconds": search_s}
    net, st = train_mask_net(pos[:config.images][ok], res.mask[ok], config,
                             seed=seed, device=device)
    G.mask_net = net
    rec = {"base": config.base, "depth": config.depth,
           "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    return rec, {**st, "search_seconds": search_s, "searched": len(res.flipped)}


@torch.no_grad()
def amortised_counterfactual(G, images: torch.Tensor, classifier, search):
    """The inpaint family's counterfactual with ``G.mask_net`` (module docstring).

    Args:
        G: an :class:`~medxgan.generators.inpaint.inpainter.InpaintGenerator` with ``mask_net`` and
            ``amortise`` (:class:`~medxgan.config.inpaint.AmortiseConfig`).
        images: (B, 1, H, W) in [0, 1] (CPU).
        classifier: f.
        search: ``search(images, init=masks, trim_init=bool, prune_init=bool, p_x=(B,)) ->
            SearchResult`` (:func:`~medxgan.generators.inpaint.search.search_counterfactual`
            with G's search config): the images no cut flips are searched, the others start
            from the net's mask (pruned with ``amortise.prune``, trimmed with
            ``amortise.trim``, then completed / cut / restored as the search config says).

    Returns: a :class:`~medxgan.generators.base.SearchResult` (CPU) with an extra
    attribute ``amortised`` (B,) bool: the mask came from the net.
    """
    dev = next(G.inpainter.parameters()).device
    x = images.detach().to(torch.float32).cpu()
    B = x.shape[0]
    pm = torch.cat([G.mask_net(x[s:s + 256].to(dev)).cpu() for s in range(0, B, 256)]) \
        if B else x
    p_x = probabilities(classifier, x, device=dev)                      # (B,) once for both
    mask, amortised, fill = first_flipping_cut(G, x, classifier,
                                               [pm > cut for cut in G.amortise.thresholds], p_x)
    res = search(x, init=mask, trim_init=G.amortise.trim,   # the rest searched; all finished
                 prune_init=G.amortise.prune, p_x=p_x, init_fill=fill)
    res.amortised = amortised
    return res


def first_flipping_cut(G, images: torch.Tensor, classifier, cuts, p_x: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor,
                                  tuple[torch.Tensor, torch.Tensor]]:
    """Each image's first candidate mask whose in-filling by ``G.fill`` f calls negative.

    Args:
        G: the inpaint generator (``fill``, ``inpainter``, ``search.area_cap``).
        images: (B, 1, H, W) in [0, 1] (CPU).
        classifier: f.
        cuts: (B, 1, H, W) bool candidate masks per image, in the order to try (tight first);
            an empty candidate, or one above the search's area cap, is skipped.
        p_x: (B,) f's probability of the images (the caller hands the same to the search).

    Returns: (masks (B, 1, H, W) bool, the first flipping candidate or empty; started (B,)
    bool: f called the image positive and a candidate flipped it; (in-fillings (B, 1, H, W),
    f's probability (B,) of them) of the started images' masks, the image and ``p_x``
    elsewhere: the search's ``init_fill``, so that it does not in-fill them again).
    """
    dev = next(G.inpainter.parameters()).device
    thr = float(getattr(classifier, "threshold", 0.5))
    x = images.detach().to(torch.float32).cpu()
    B, _, H, W = x.shape
    cap = G.search.area_cap * H * W
    mask = torch.zeros(B, 1, H, W, dtype=torch.bool)
    fills, p_fill = x.clone(), p_x.detach().float().cpu().clone()
    done = p_x < thr                                                    # already negative
    for cand in cuts:                                                   # tight first
        idx = (~done).nonzero()[:, 0]
        if not len(idx):
            break
        m = cand[idx].reshape(len(idx), 1, H, W).to(torch.bool)         # (n, 1, H, W)
        ok = m.flatten(1).any(1) & (m.flatten(1).sum(1) <= cap)
        idx, m = idx[ok], m[ok]
        if not len(idx):
            continue
        filled = G.fill(x[idx], m)                                      # (n, 1, H, W)
        p = probabilities(classifier, filled, device=dev)               # (n,)
        win = p < thr
        mask[idx[win]], done[idx[win]] = m[win], True
        fills[idx[win]], p_fill[idx[win]] = filled[win].float().cpu(), p[win]
    return mask, done & (p_x >= thr), (fills, p_fill)
