"""Scoring of explanations: masks from boxes, localisation, faithfulness, robustness,
sanity, medXGAN's counterfactual metrics and their bootstrap aggregation.

Plain PyTorch/NumPy; one concept per module:

- ``masks``: ``boxes_to_masks`` (boxes -> bool masks at map resolution)
- ``localization``: ``LOCALIZATION_METRICS``, ``shuffled_masks``, ``localization_scores``
- ``faithfulness``: ``deletion_auc``, ``insertion_auc``
- ``robustness``: ``noise_stability``
- ``sanity``: ``model_randomisation``
- ``counterfactual``: ``counterfactual_flip``, ``counterfactual_similarity``
- ``aggregate``: ``long_scores``, ``summarise``, ``compare``, ``shuffle_gap``; schemas
  ``SCORES``, ``SUMMARY``, ``COMPARISONS``
"""
