"""The ``inpaint`` family (the default ``gan.model.family`` since issue #14): a healthy-anatomy
in-filler and the smallest region whose in-filling flips f (FIDO's generative in-filling, Chang
et al., ICLR 2019, with a binary mask).

- :mod:`.inpainter`: the in-filler, its training and :class:`InpaintGenerator`;
- :mod:`.search`: the counterfactual search; :mod:`.complete`: growing a found region to the
  whole object; :mod:`.amortised`: the optional amortised mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medxgan.generators.image_family import ImageFamily
from medxgan.generators.image_run import Fit
from medxgan.generators.inpaint.amortised import MaskNet, distil
from medxgan.generators.inpaint.inpainter import InpaintGenerator, Inpainter, train_inpainter


class InpaintFamily(ImageFamily):
    """``gan.model.family: inpaint``, configured by ``gan.train.inpaint``."""

    own_config = "inpaint"
    progress = "train inpainter (steps)"
    x_neg_text = ("the counterfactual x_neg (inpaint family: x with the smallest region whose "
                  "healthy in-filling flips f)")

    def fit(self, pos: torch.Tensor, neg: torch.Tensor, sides: dict[str, str], own: Any,
            f: nn.Module, gan_config, run: dict[str, Any], dev: torch.device, cohort_url: str,
            progress=None) -> Fit:
        """The in-filler on the negatives, then (``own.amortise.images`` > 0) the amortised
        mask distilled from the search on the positives."""
        net, stats = train_inpainter(neg, own, progress=progress, **run)
        G = InpaintGenerator(net.to(dev), gan_config.image_size,
                             own.search.model_dump(mode="json"),
                             amortise=own.amortise.model_dump(mode="json"))
        arch = {"inpainter": {"base": net.base, "depth": net.depth}}
        if own.amortise.images > 0 and len(pos):
            arch["mask_net"], stats["amortise"] = distil(G, f, pos, own.amortise, run["seed"],
                                                         dev)
        return Fit(net, G, arch, stats, f"{sides['negative']}_negative")

    def build(self, checkpoint: dict) -> InpaintGenerator:
        arch = checkpoint["inpainter"]
        net = Inpainter(int(arch["base"]), int(arch["depth"]))
        net.load_state_dict(checkpoint["generator"])
        ic = (checkpoint.get("train_config") or {}).get("inpaint", {})
        mask_net = None
        if checkpoint.get("mask_net") is not None:  # the optional amortised mask
            a = checkpoint["mask_net"]
            mask_net = MaskNet(int(a["base"]), int(a["depth"]))
            mask_net.load_state_dict(a["state_dict"])
            mask_net.eval()
        return InpaintGenerator(net.eval(), int(checkpoint["gan_config"]["image_size"]),
                                ic.get("search"), mask_net, ic.get("amortise")).eval()

    def infiller(self, G: nn.Module) -> nn.Module:
        return G
