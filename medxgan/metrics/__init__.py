"""Scoring of explanations: masks from boxes, localisation, faithfulness, robustness,
sanity, medXGAN's counterfactual metrics and their bootstrap aggregation.

Plain PyTorch/NumPy; one concept per module:

- ``batch``: ``score_batch`` (every metric of one method on one batch: what the score stage
  and the benchmarks run), ``scoring_inputs`` (maps and extras of a stored explanation)
- ``controls``: ``shuffle_partners`` (the run-wide partner of each boxed image for the
  ``<metric>_shuffled`` control), ``partner_masks``
- ``masks``: ``boxes_to_masks`` (boxes -> bool masks at map resolution)
- ``localization``: ``LOCALIZATION_METRICS``, ``localization_scores``, ``derangement``
- ``faithfulness``: ``deletion_auc``, ``insertion_auc``, ``gaussian_blur``
- ``robustness``: ``noise_stability``
- ``sanity``: ``model_randomisation``
- ``counterfactual``: ``counterfactual_flip``, ``counterfactual_similarity``
- ``aggregate``: ``long_scores``, ``summarise``, ``compare``, ``shuffle_gap``; schemas
  ``SCORES``, ``SUMMARY``, ``COMPARISONS``
"""

from medxgan.metrics.batch import score_batch, scoring_inputs
from medxgan.metrics.controls import partner_boxes, partner_masks, shuffle_partners

__all__ = ["score_batch", "scoring_inputs", "shuffle_partners", "partner_boxes",
           "partner_masks"]
