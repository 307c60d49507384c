"""Sanity check by model randomisation (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018).

An explanation of a classifier must change when the classifier's learned weights are
destroyed. We compare, per image, the map of the trained model with the map of a copy
whose layers are re-initialised (each module's own ``reset_parameters``, under a seeded
RNG), by Spearman rank correlation rho of the maps as given.

Verdict: the method **fails** when the median over images of |rho| is >= 0.5
(``RHO_THRESHOLD``): the randomised model's maps still rank pixels like the trained
model's in a typical image, i.e. the map reflects the image (edges, intensity) or a
fixed prior rather than what the model learned. Adebayo et al. show passing methods
(plain gradients, Grad-CAM) drop to |rho| of about 0.1-0.3 after full randomisation;
0.5 leaves a margin for images with strong structure. An image whose maps are identical
before and after counts as |rho| = 1 (a constant map that does not change has undefined
rho otherwise); other undefined rho are left out of the median.

With ``cascading=True`` layers are also randomised cumulatively from the output to the
input (top-down, taken as the reverse of module registration order, which is forward
order for ``nn.Sequential`` and most hand-written classifiers), and rho is reported after
each step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from medxgan.metrics._ranks import spearman

RHO_THRESHOLD = 0.5
"""A method fails when median |rho| (trained vs randomised maps) >= this."""

ExplainFactory = Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules with their own parameters, input to output order."""
    return [(name, m) for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


@torch.no_grad()
def _reset(modules: list[nn.Module], seed: int) -> None:
    """Re-initialise each module: its ``reset_parameters`` where it has one, else (TorchScript
    modules keep no Python methods) each own parameter of 2 or more dimensions with PyTorch's
    default Conv/Linear init (Kaiming uniform, a = sqrt(5)) and each 1-d one as a random
    permutation of its values (a scale or bias keeps its magnitude, loses its learned order)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in modules:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
                continue
            for p in m.parameters(recurse=False):
                if p.ndim >= 2:
                    nn.init.kaiming_uniform_(p, a=5 ** 0.5)
                elif p.numel() > 1:
                    p.copy_(p.flatten()[torch.randperm(p.numel())].view_as(p))
                else:
                    p.normal_(0.0, 1.0)


def _rho(ref: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """(B,) Spearman of matching maps; 1.0 where the maps are identical."""
    B = ref.shape[0]
    a, b = ref.reshape(B, -1), maps.reshape(B, -1)
    rho = spearman(a, b)
    same = (a == b).all(1)
    return torch.where(same, torch.ones_like(rho), rho)


def _verdict(rho: torch.Tensor) -> tuple[float, bool]:
    med = float(torch.nanmedian(rho.abs())) if bool((~rho.isnan()).any()) else float("nan")
    return med, bool(med < RHO_THRESHOLD)


def model_randomisation(
    explain_fn_factory: ExplainFactory,
    model: nn.Module,
    images: torch.Tensor,
    *,
    seed: int = 0,
    cascading: bool = False,
) -> dict:
    """Spearman correlation between maps of the trained and of a re-initialised classifier.

    Args:
        explain_fn_factory: model -> explain_fn, explain_fn: images (B, 1, H, W) -> maps (B, h, w).
        model: the trained classifier (left unchanged; copies are randomised).
        images: (B, 1, H, W) float in [0, 1].
        seed: seed of the re-initialisation.
        cascading: also randomise layers cumulatively, output layer first.

    Returns:
        dict with ``rho`` ((B,) float64, all layers randomised), ``median_abs_rho`` (float),
        ``passed`` (bool: median |rho| < RHO_THRESHOLD), ``threshold``, ``n_layers``, and
        with ``cascading`` a list ``cascade`` of {``layer``: name randomised last,
        ``rho``: (B,), ``median_abs_rho``} in top-down order.
    """
    ref = explain_fn_factory(model)(images).detach()
    full = copy.deepcopy(model)
    layers = _layers(full)
    if not layers:
        raise ValueError("the model has no layer with parameters to re-initialise")
    _reset([m for _, m in layers], seed)
    rho = _rho(ref, explain_fn_factory(full)(images).detach())
    med, passed = _verdict(rho)
    out = {"rho": rho, "median_abs_rho": med, "passed": passed, "threshold": RHO_THRESHOLD, "n_layers": len(layers)}
    if cascading:
        casc = copy.deepcopy(model)
        steps = []
        for i, (name, m) in enumerate(reversed(_layers(casc))):
            _reset([m], seed + i)
            r = _rho(ref, explain_fn_factory(casc)(images).detach())
            steps.append({"layer": name, "rho": r, "median_abs_rho": _verdict(r)[0]})
        out["cascade"] = steps
    return out
