"""A Grad-CAM start for the inpaint family's search (``search.start: gradcam``, the default
since session 14; ``coarse`` restores the coarse ranking).

The search's coarse ranking (step 2 of :mod:`medxgan.generators.inpaint.search`) in-fills
every coarse patch alone, about 100 in-fillings and classifier passes per image at 128 px and
two thirds of the search's time. Here one Grad-CAM pass of f (the audit's own
:class:`~medxgan.explain.gradcam.GradCAMExplainer` with its default config: captum's
``LayerGradCam`` on the classifier's Grad-CAM layer, ReLU, bilinear upsampling) proposes where
to look instead: its map is cut at the top ``start_areas`` shares of the image's pixels (tight
first); the first cut whose in-filling f calls negative starts the search, which then goes
through its later steps (pruning with ``start_prune``; trimming with ``start_trim`` where
the start covers more than ``start_trim_above`` of the image; completion, support cut,
restore as configured). Images no cut flips, and every image of a classifier Grad-CAM cannot hook
(TorchScript, or no convolution), are searched from the coarse ranking as before.

What it changes: which region the search starts from (where f's gradient points, not the
patch whose in-filling alone lowers f most). What it does not: x_neg is an in-filling of a
binary mask by the same in-filler, and f's decision is checked on it; a Grad-CAM region f does
not need does not flip f and is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["gradcam_counterfactual", "gradcam_cuts"]


def gradcam_cuts(images: torch.Tensor, classifier: nn.Module, areas: Sequence[float], *,
                 device: str | torch.device = "cpu", batch: int = 64
                 ) -> list[torch.Tensor] | None:
    """Cuts of f's Grad-CAM map at the top ``areas`` shares of each image's pixels.

    Args:
        images: (B, 1, H, W) in [0, 1].
        classifier: f(x) -> positive logit (B,).
        areas: shares of the image's pixels in (0, 1], tight first.
        device: where Grad-CAM runs.
        batch: images per Grad-CAM pass.

    Returns: one (B, 1, H, W) bool mask per area (the pixels at or above the image's
    (1 - area) quantile of the map, where the map is positive), or None where Grad-CAM cannot
    run on f (:func:`~medxgan.explain.gradcam.gradcam_unsupported`: TorchScript) or f has no
    layer to hook (no ``Conv2d`` and no ``target_layer()``).
    """
    from medxgan.explain.gradcam import (
        GradCAMExplainer,
        find_target_layer,
        gradcam_unsupported,
    )

    if gradcam_unsupported(classifier) is not None:
        return None
    try:
        find_target_layer(classifier)
    except ValueError:                                   # no Conv2d: nothing to hook
        return None
    x = images.detach().to(torch.float32)
    B, _, H, W = x.shape
    cam = GradCAMExplainer(classifier)                   # the audit's Grad-CAM, default config
    maps = [cam.explain(x[s:s + batch].to(device)).maps.cpu() for s in range(0, B, batch)]
    m = torch.cat(maps) if maps else x.cpu()[:, 0]                      # (B, H, W)
    flat = m.flatten(1)                                                 # (B, H W)
    out = []
    for a in areas:
        k = max(1, min(H * W, round(a * H * W)))
        kth = flat.topk(k, dim=1).values[:, -1:]                        # (B, 1)
        out.append(((flat >= kth) & (flat > 0)).reshape(B, 1, H, W))
    return out


def gradcam_counterfactual(G, images: torch.Tensor, classifier: nn.Module, search):
    """The inpaint family's counterfactual started from f's Grad-CAM (module docstring).

    Args:
        G: an :class:`~medxgan.generators.inpaint.inpainter.InpaintGenerator`; its ``search``
            (:class:`~medxgan.config.inpaint.SearchConfig`) names ``start_areas``,
            ``start_prune``, ``start_trim`` and ``start_trim_above``.
        images: (B, 1, H, W) in [0, 1] (CPU).
        classifier: f.
        search: ``search(images, init=masks, trim_init=bool or (B,) bool, prune_init=bool,
            p_x=(B,), init_fill=(fills, p)) -> SearchResult`` with G's search config.

    Returns: a :class:`~medxgan.generators.base.SearchResult` (CPU) with an extra attribute
    ``started`` (B,) bool: the mask started from a Grad-CAM cut.
    """
    from medxgan.explain._torch import probabilities
    from medxgan.generators.inpaint.amortised import first_flipping_cut

    x = images.detach().to(torch.float32).cpu()
    dev = next(G.inpainter.parameters()).device
    cuts = gradcam_cuts(x, classifier, G.search.start_areas, device=dev)
    if cuts is None:
        res = search(x)
        res.started = torch.zeros(x.shape[0], dtype=torch.bool)
        return res
    p_x = probabilities(classifier, x, device=dev)                      # (B,) once for both
    mask, started, fill = first_flipping_cut(G, x, classifier, cuts, p_x=p_x)
    cfg = G.search
    wide = mask.flatten(1).float().mean(1) > cfg.start_trim_above          # (B,) start area
    res = search(x, init=mask, trim_init=wide if cfg.start_trim else False,
                 prune_init=cfg.start_prune, p_x=p_x, init_fill=fill)
    res.started = started
    return res
