"""Score one batch of maps of one method: what every caller of the metrics runs.

The score stage (``tasks/score.py``, one explanation part of a run) and the benchmarks in
``bench/`` both call :func:`score_batch`, so a figure measured by a benchmark describes the code
that ``medxgan audit`` runs. Reading maps, images and boxes and writing the table stay with the
caller; :func:`scoring_inputs` turns an explanation table (the explain stage's stored form) into
the maps and extras that are scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from medxgan.catalogue import GAN_METHODS, METRIC_CATALOGUE, SHUFFLED_SUFFIX
from medxgan.metrics.aggregate import long_scores
from medxgan.metrics.faithfulness import deletion_auc, insertion_auc
from medxgan.metrics.localization import localization_scores

EXTRA_METRICS: tuple[str, ...] = tuple(
    m.name for m in METRIC_CATALOGUE if m.family == "generator"
    and m.name not in ("counterfactual_similarity", "counterfactual_ncc", "counterfactual_dice"))
"""Per-image metrics medxgan's explanation carries as extras (``recon_mse``,
``counterfactual_flip``); ``counterfactual_similarity`` is run-level (the aggregate) and
``counterfactual_ncc`` and ``counterfactual_dice`` are computed here from the change and the
true change."""

NOISE_K, NOISE_SIGMA = 4, 0.05
"""noise_stability: noise draws and their std (fraction of each image's intensity range)."""


def score_batch(maps: torch.Tensor, masks: torch.Tensor, partner_masks: torch.Tensor,
                classifier: nn.Module | None, images: torch.Tensor | None,
                options: Mapping[str, Any] | None, *, method: str, ids: Sequence[str],
                extras: Mapping[str, Any] | None = None,
                changes: torch.Tensor | None = None, true_changes: torch.Tensor | None = None,
                partner_true_changes: torch.Tensor | None = None) -> pd.DataFrame:
    """Every metric of one method's maps of B images, as ``scores.parquet`` rows.

    Metrics, in row order: the localisation metrics against the image's own boxes
    (``localization_scores``), the same against the partner's boxes as ``<metric>_shuffled``
    (``controls.partner_masks``); with ``options["faithfulness"]`` (default True)
    ``deletion_auc`` and ``insertion_auc`` (blur baseline); with ``options["robustness"]``
    (default False) ``noise_stability`` (not for the generator methods; NaN for ``box_prior``);
    for ``method == "medxgan"`` the per-image extras ``recon_mse`` and ``counterfactual_flip``
    when given, and, where the true changes are known (phantom cohorts: ``x - healthy twin``),
    ``counterfactual_ncc`` and ``counterfactual_dice`` and their controls
    ``counterfactual_ncc_shuffled`` / ``counterfactual_dice_shuffled`` (against the partner's
    true change).

    Args:
        maps: (B, H, W) float raw maps, as stored by the explain stage (float16 values; see
            :func:`scoring_inputs`).
        masks: (B, H, W) bool, the union of each image's boxes at map resolution.
        partner_masks: (B, H, W) bool, the partner's boxes (empty: no partner, NaN control).
        classifier: the classifier contract (B, 1, H, W) -> (B,) logit; only needed for
            faithfulness and robustness.
        images: (B, 1, H0, W0) float in [0, 1]; only needed for faithfulness and robustness.
        options: ``faithfulness`` (bool), ``robustness`` (bool), ``seed`` (noise seed, int),
            ``method_options`` (method -> explainer config, used to re-explain noisy images).
        method: the method name written in the rows. ids: B image ids.
        extras: scalar extras of the explanation, name -> (B,) values (``recon_mse`` in GAN
            space [-1, 1] squared, ``counterfactual_flip`` 1.0 / 0.0).
        changes: (B, h, w) the generator's changes x_pos - x_neg (any pixel scale: NCC is
            scale- and offset-free). true_changes: (B, H0, W0) x - x_healthy in [0, 1] units,
            resized to (h, w) by area averaging when sizes differ. partner_true_changes: the
            same for each image's partner (NaN rows where an image has no partner).

    Returns:
        DataFrame ``image_id, method, metric, value`` (float64, NaN where undefined), one row
        per image and metric, metric-major.
    """
    options = options or {}
    values: dict[str, Any] = dict(localization_scores(maps, masks))
    shuffled = localization_scores(maps, partner_masks)
    values.update({f"{k}{SHUFFLED_SUFFIX}": v for k, v in shuffled.items()})
    if options.get("faithfulness", True):
        m = maps.to(images.device)  # the classifier's device (the score stage: CPU)
        with torch.no_grad():
            values["deletion_auc"] = deletion_auc(classifier, images, m)
            values["insertion_auc"] = insertion_auc(classifier, images, m)
    if options.get("robustness", False) and method not in GAN_METHODS:
        values["noise_stability"] = _noise_stability(method, classifier, images, ids, options)
    if method == "medxgan" and extras:
        for col in EXTRA_METRICS:
            if col in extras:
                values[col] = torch.as_tensor(extras[col]).detach().cpu().to(torch.float64)
    if method == "medxgan" and changes is not None and true_changes is not None:
        from medxgan.metrics.counterfactual import counterfactual_dice, counterfactual_ncc

        true = _at(true_changes, changes)
        values["counterfactual_ncc"] = counterfactual_ncc(changes, true)
        if partner_true_changes is not None:
            partner = _at(partner_true_changes, changes)
            values["counterfactual_ncc_shuffled"] = counterfactual_ncc(changes, partner)
        values["counterfactual_dice"] = counterfactual_dice(changes, true)
        if partner_true_changes is not None:
            values["counterfactual_dice_shuffled"] = counterfactual_dice(changes, partner)
    return long_scores(ids, method, values)


def _at(true: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``true`` (B, H0, W0) at ``like``'s (B, h, w) grid (area averaging), float32 CPU."""
    true = true.detach().float().cpu()
    if tuple(true.shape[-2:]) == tuple(like.shape[-2:]):
        return true
    import torch.nn.functional as F

    return F.interpolate(true[:, None], size=tuple(like.shape[-2:]), mode="area")[:, 0]


def scoring_inputs(table) -> tuple[list[str], torch.Tensor, dict[str, torch.Tensor]]:
    """``(ids, maps (B, H, W) float32, extras)`` of an explanation table
    (``medxgan.explain.serialize.explanation_table``): the maps as stored (float16 values)
    and the scalar columns of :data:`EXTRA_METRICS` as float64 (B,) tensors."""
    from medxgan.explain.serialize import read_maps

    ids, maps = read_maps(table)
    extras = {c: torch.tensor(table.column(c).to_numpy(), dtype=torch.float64)
              for c in EXTRA_METRICS if c in table.column_names}
    return ids, maps, extras


def _noise_stability(method: str, classifier: nn.Module, images: torch.Tensor,
                     ids: Sequence[str], options: Mapping[str, Any]) -> torch.Tensor:
    from medxgan.explain.base import make_explainer
    from medxgan.metrics.robustness import noise_stability

    if method == "box_prior":  # a fixed map: no explainer to re-run
        return torch.full((len(ids),), float("nan"), dtype=torch.float64)
    cfg = options.get("method_options", {}).get(method) or None
    ex = make_explainer(method, classifier, config=cfg)

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return ex.explain(x, ids=ids).maps
    return noise_stability(fn, images, k=NOISE_K, sigma=NOISE_SIGMA, seed=options.get("seed", 0))
