"""Cross-checks against Quantus 0.6 (test-only) and the divergences we keep on purpose.

What Quantus 0.6 does (read in quantus/metrics/localisation/*.py, evaluate_batch):
- PointingGame: ``hit = any(mask & (a == a.max()))``: any tied maximum in the mask is a hit,
  so a constant map is a hit whenever the mask is non-empty; for an empty mask it assigns
  ``np.nan`` into a *bool* array, which becomes True: empty masks count as hits.
- RelevanceMassAccuracy: ``sum(a * mask) / sum(a)`` on the signed map (no positive part).
- RelevanceRankAccuracy: ``np.argsort(-a)``: ties broken by sort order, not shared.
- AUC: sklearn ``roc_curve`` + ``auc``: tie-aware, same as ours.
- AttributionLocalisation(weighted=True): ``size_data = x_batch[2:].size`` slices the batch
  axis, so the weight depends on how many images are in the batch (inf for batches <= 2).
All are called with ``normalise=False`` (Quantus divides by the max by default).
"""

import warnings

import numpy as np
import pytest
import torch

quantus = pytest.importorskip("quantus")

from medxgan.metrics.localization import auroc, pointing_game, relevance_mass, relevance_rank  # noqa: E402


def _q(metric_cls, maps, masks, batch_size=64, **kw):
    a = maps.numpy()[:, None].astype(np.float64)
    s = masks.numpy()[:, None].astype(np.float64)
    metric = metric_cls(normalise=False, disable_warnings=True, display_progressbar=False, **kw)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        out = metric(
            model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(len(a), int), a_batch=a, s_batch=s,
            channel_first=True, batch_size=batch_size,
        )
    return np.asarray(out, dtype=np.float64)


def _random(seed, B=16, H=20, W=20, ties=False):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(B, H, W, generator=g, dtype=torch.float64)
    if ties:
        maps = (maps * 4).floor()
    masks = torch.zeros(B, H, W, dtype=torch.bool)
    for i in range(B):
        y0, x0 = torch.randint(0, H - 3, (2,), generator=g).tolist()
        h, w = torch.randint(2, 9, (2,), generator=g).tolist()
        masks[i, y0 : y0 + h, x0 : x0 + w] = True
    return maps, masks


def test_pointing_game_agrees_without_ties():
    maps, masks = _random(0)
    masks[:4] |= maps[:4] == maps[:4].amax((1, 2), keepdim=True)  # some hits
    np.testing.assert_array_equal(pointing_game(maps, masks).numpy(), _q(quantus.PointingGame, maps, masks))


def test_pointing_game_divergences_empty_mask_and_constant_map():
    maps, masks = _random(1, B=3)
    masks[0] = False  # empty mask
    maps[1] = 0.5  # constant map
    q = _q(quantus.PointingGame, maps, masks)
    ours = pointing_game(maps, masks)
    assert q[0] == 1.0 and torch.isnan(ours[0])  # Quantus: an empty mask is a hit
    assert q[1] == 1.0 and ours[1] == 0.0  # Quantus: a constant map is a hit


def test_relevance_mass_agrees_on_non_negative_maps_and_diverges_on_signed():
    maps, masks = _random(2)
    np.testing.assert_allclose(relevance_mass(maps, masks).numpy(), _q(quantus.RelevanceMassAccuracy, maps, masks), atol=1e-12)
    signed = maps - 0.5
    q = _q(quantus.RelevanceMassAccuracy, signed, masks)
    ours = relevance_mass(signed, masks).numpy()
    assert ((ours >= 0) & (ours <= 1)).all()
    assert not np.allclose(q, ours)  # Quantus uses the signed sum (can leave [0, 1])


def test_relevance_rank_agrees_without_ties_and_shares_ties():
    maps, masks = _random(3)
    np.testing.assert_allclose(relevance_rank(maps, masks).numpy(), _q(quantus.RelevanceRankAccuracy, maps, masks), atol=1e-12)
    a = torch.tensor([[[3.0, 2.0], [2.0, 0.0]]], dtype=torch.float64)
    m = torch.tensor([[[1, 0], [1, 0]]], dtype=torch.bool)
    assert _q(quantus.RelevanceRankAccuracy, a, m)[0] in (0.5, 1.0)  # whichever tie sorted first
    assert relevance_rank(a, m)[0] == 0.75


def test_auc_agrees_including_ties():
    for ties in (False, True):
        maps, masks = _random(4, ties=ties)
        np.testing.assert_allclose(auroc(maps, masks).numpy(), _q(quantus.AUC, maps, masks), atol=1e-12)


def test_quantus_weighted_attribution_localisation_depends_on_batch_size():
    maps, masks = _random(5, B=6)
    unweighted = _q(quantus.AttributionLocalisation, maps, masks, weighted=False)
    np.testing.assert_allclose(unweighted, relevance_mass(maps, masks).numpy(), atol=1e-8)
    w6 = _q(quantus.AttributionLocalisation, maps, masks, weighted=True, batch_size=6)
    w4 = _q(quantus.AttributionLocalisation, maps, masks, weighted=True, batch_size=4)
    assert not np.allclose(w6, w4)  # same images, different batch size, different scores
    assert np.isinf(_q(quantus.AttributionLocalisation, maps[:2], masks[:2], weighted=True)).all()
    ours = relevance_mass(maps, masks)
    assert torch.equal(ours[:4], relevance_mass(maps[:4], masks[:4]))
