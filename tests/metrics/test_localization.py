import math

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu
from sklearn.metrics import average_precision_score, roc_auc_score

from medxgan.metrics.localization import (
    LOCALIZATION_METRICS,
    auprc,
    auroc,
    derangement,
    iou_at,
    iou_otsu,
    localization_scores,
    pointing_game,
    relevance_mass,
    relevance_rank,
    shuffled_masks,
)


def T(rows):
    return torch.tensor(rows, dtype=torch.float64)[None]


def M(rows):
    return torch.tensor(rows, dtype=torch.bool)[None]


def val(x):
    return float(x[0])


EMPTY = M([[0, 0], [0, 0]])


# ---------------------------------------------------------------- pointing game
def test_pointing_game_hand_cases():
    a = T([[1.0, 0.0], [0.0, 0.0]])
    assert val(pointing_game(a, M([[1, 0], [0, 0]]))) == 1.0
    assert val(pointing_game(a, M([[0, 1], [1, 1]]))) == 0.0
    ties = T([[1.0, 1.0], [0.0, 0.0]])
    assert val(pointing_game(ties, M([[1, 0], [0, 0]]))) == 0.0  # one tied max outside
    assert val(pointing_game(ties, M([[1, 1], [0, 0]]))) == 1.0  # every tied max inside
    assert val(pointing_game(T([[2.0, 2.0], [2.0, 2.0]]), M([[1, 1], [1, 1]]))) == 0.0  # constant: never
    assert math.isnan(val(pointing_game(a, EMPTY)))
    signed = T([[-5.0, 1.0], [0.0, 0.0]])
    assert val(pointing_game(signed, M([[1, 0], [0, 0]]))) == 0.0
    assert val(pointing_game(signed, M([[1, 0], [0, 0]]), absolute=True)) == 1.0


# ---------------------------------------------------------------- IoU
def test_iou_otsu_hand_cases():
    a = torch.zeros(1, 4, 4, dtype=torch.float64)
    a[0, :2, :2] = 1.0
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, :2, :2] = True
    assert val(iou_otsu(a, m)) == 1.0
    row = torch.zeros(1, 4, 4, dtype=torch.bool)
    row[0, 0, :] = True  # inter 2, union 6
    assert val(iou_otsu(a, row)) == pytest.approx(1 / 3)
    assert val(iou_otsu(torch.full((1, 4, 4), 3.0), m)) == 0.0  # constant map predicts nothing
    assert math.isnan(val(iou_otsu(a, torch.zeros_like(m))))
    # the map is scored as given: an affine change of one map leaves its own IoU unchanged
    assert val(iou_otsu(5 * a - 2, m)) == 1.0


def test_iou_otsu_threshold_matches_skimage_on_random_maps():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(8, 24, 24, generator=g, dtype=torch.float64) ** 3
    m = torch.rand(8, 24, 24, generator=g) > 0.6
    ours = iou_otsu(a, m).numpy()
    ref = []
    for x, s in zip(a.numpy(), m.numpy()):
        u = (x - x.min()) / (x.max() - x.min())
        p = u > threshold_otsu(u)
        ref.append((p & s).sum() / (p | s).sum())
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)


def test_iou_at_fixed_thresholds():
    a = T([[0.0, 0.25], [0.75, 1.0]])
    m = M([[0, 0], [1, 1]])
    out = iou_at(a, m, [0.0, 0.5, 1.0])
    assert out.shape == (1, 3) and out.dtype == torch.float64
    np.testing.assert_allclose(out[0].numpy(), [2 / 3, 1.0, 0.0])
    assert torch.isnan(iou_at(a, EMPTY, [0.5])).all()
    assert iou_at(T([[1.0, 1.0], [1.0, 1.0]]), m, [0.0, 0.5]).eq(0).all()


# ---------------------------------------------------------------- mass / rank
def test_relevance_mass_hand_cases():
    a = T([[3.0, 1.0], [-2.0, 0.0]])
    assert val(relevance_mass(a, M([[1, 0], [0, 0]]))) == 0.75  # negatives ignored
    assert val(relevance_mass(a, M([[1, 0], [1, 0]]), absolute=True)) == pytest.approx(5 / 6)
    assert val(relevance_mass(T([[-1.0, 0.0], [-3.0, 0.0]]), M([[1, 0], [0, 0]]))) == 0.0  # nothing positive
    assert math.isnan(val(relevance_mass(a, EMPTY)))


def test_relevance_rank_hand_cases_with_ties():
    a = T([[3.0, 2.0], [2.0, 0.0]])
    m = M([[1, 0], [1, 0]])  # K = 2: 3 is in; one slot shared by the tied 2s (one in, one out)
    assert val(relevance_rank(a, m)) == 0.75
    assert val(relevance_rank(T([[3.0, 2.0], [1.0, 0.0]]), m)) == 0.5
    assert val(relevance_rank(T([[1.0, 1.0], [1.0, 1.0]]), m)) == 0.5  # constant: chance level K/N
    assert val(relevance_rank(a, M([[1, 1], [1, 1]]))) == 1.0
    assert math.isnan(val(relevance_rank(a, EMPTY)))


# ---------------------------------------------------------------- AUROC / AUPRC
def test_auroc_auprc_hand_cases_with_ties():
    a = T([[3.0, 2.0], [2.0, 0.0]])
    m = M([[1, 0], [1, 0]])
    assert val(auroc(a, m)) == 0.875  # pairs: 1 + 1 + 0.5 + 1 over 4
    assert val(auprc(a, m)) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    const = T([[1.0, 1.0], [1.0, 1.0]])
    assert val(auroc(const, m)) == 0.5
    assert val(auprc(const, m)) == 0.5  # one threshold: precision = prevalence
    assert math.isnan(val(auroc(a, EMPTY))) and math.isnan(val(auprc(a, EMPTY)))
    assert math.isnan(val(auroc(a, M([[1, 1], [1, 1]]))))  # no negatives: undefined


def test_auroc_auprc_match_sklearn_on_tied_random_maps():
    g = torch.Generator().manual_seed(2)
    a = torch.randint(0, 6, (10, 12, 12), generator=g).double()  # many ties
    m = torch.rand(10, 12, 12, generator=g) > 0.7
    ra = [roc_auc_score(s.ravel(), x.ravel()) for x, s in zip(a.numpy(), m.numpy())]
    rp = [average_precision_score(s.ravel(), x.ravel()) for x, s in zip(a.numpy(), m.numpy())]
    np.testing.assert_allclose(auroc(a, m).numpy(), ra, atol=1e-12)
    np.testing.assert_allclose(auprc(a, m).numpy(), rp, atol=1e-12)


# ---------------------------------------------------------------- properties
def _fixture(seed=3, B=9, H=16, W=20):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(B, H, W, generator=g)
    maps[0] = maps[0].round()  # ties
    maps[1] = 1.0  # constant
    masks = torch.zeros(B, H, W, dtype=torch.bool)
    for i in range(B):
        y0, x0 = torch.randint(0, H - 4, (2,), generator=g).tolist()
        masks[i, y0 : y0 + 4, x0 : x0 + 5] = True
    masks[2] = False  # empty
    masks[3, :, -3:] = True  # touching the edge
    return maps, masks


@pytest.mark.parametrize("name", sorted(LOCALIZATION_METRICS))
def test_batch_size_independence_determinism_and_range(name):
    f = LOCALIZATION_METRICS[name]
    maps, masks = _fixture()
    full = f(maps, masks)
    assert full.dtype == torch.float64 and full.shape == (maps.shape[0],)
    single = torch.cat([f(maps[i : i + 1], masks[i : i + 1]) for i in range(maps.shape[0])])
    assert torch.equal(full.nan_to_num(-7.0), single.nan_to_num(-7.0))
    assert torch.equal(full.nan_to_num(-7.0), f(maps.clone(), masks.clone()).nan_to_num(-7.0))
    assert torch.isnan(full[2]) and not torch.isnan(full[[0, 1, 3, 4]]).any()
    ok = full[~full.isnan()]
    assert ((ok >= 0) & (ok <= 1)).all()


@pytest.mark.parametrize("name", sorted(LOCALIZATION_METRICS))
def test_the_mask_itself_is_a_perfect_map(name):
    _, masks = _fixture()
    keep = masks.flatten(1).any(1)
    maps = masks[keep].double() + 0.0
    assert (LOCALIZATION_METRICS[name](maps, masks[keep]) == 1.0).all()


def test_scores_are_not_normalised_across_images():
    maps, masks = _fixture()
    other = maps.clone()
    other[5] *= 1000.0  # another image's scale must not change image 4's scores
    for f in LOCALIZATION_METRICS.values():
        a, b = f(maps, masks), f(other, masks)
        assert torch.equal(a[4], b[4])


# ---------------------------------------------------------------- shuffled control
def test_derangement_has_no_fixed_point_and_is_seeded():
    for n in (2, 3, 7, 50):
        d = derangement(n, seed=n)
        assert sorted(d.tolist()) == list(range(n))
        assert (d != torch.arange(n)).all()
    assert torch.equal(derangement(20, seed=4), derangement(20, seed=4))
    assert not torch.equal(derangement(20, seed=4), derangement(20, seed=5))
    with pytest.raises(ValueError):
        derangement(1, seed=0)


def test_shuffled_masks_swap_only_among_images_with_masks():
    B, H, W = 6, 8, 8
    masks = torch.zeros(B, H, W, dtype=torch.bool)
    for i in (0, 2, 3, 5):
        masks[i, i, :] = True  # a distinct row per image
    sh = shuffled_masks(masks, seed=0)
    assert not sh[1].any() and not sh[4].any()
    rows = {i: int(sh[i].any(1).nonzero()[0]) for i in (0, 2, 3, 5)}
    assert sorted(rows.values()) == [0, 2, 3, 5] and all(rows[i] != i for i in rows)
    assert torch.equal(sh, shuffled_masks(masks, seed=0))
    lone = torch.zeros_like(masks)
    lone[0, 0, 0] = True
    assert not shuffled_masks(lone, seed=0).any()  # one positive: no control, NaN scores


def test_localization_scores_registry_and_shuffled_control():
    maps, masks = _fixture()
    out = localization_scores(maps, masks, shuffle_seed=1)
    assert set(out) == set(LOCALIZATION_METRICS) | {f"{k}_shuffled" for k in LOCALIZATION_METRICS}
    assert torch.isnan(out["pointing_game_shuffled"][2])
    sh = shuffled_masks(masks, seed=1)
    for k, f in LOCALIZATION_METRICS.items():  # the shared-sort path equals the single functions
        assert torch.equal(out[k].nan_to_num(-7.0), f(maps, masks).nan_to_num(-7.0))
        assert torch.equal(out[f"{k}_shuffled"].nan_to_num(-7.0), f(maps, sh).nan_to_num(-7.0))
    ab = localization_scores(-maps, masks, absolute=True)
    assert torch.equal(ab["auroc"].nan_to_num(-7.0), LOCALIZATION_METRICS["auroc"](maps.abs(), masks).nan_to_num(-7.0))
    # a map equal to its own mask wins against the shuffled control
    own = localization_scores(masks.double(), masks, shuffle_seed=1)
    keep = masks.flatten(1).any(1)
    assert (own["relevance_mass"][keep] > own["relevance_mass_shuffled"][keep]).all()


def test_results_do_not_depend_on_row_chunking(monkeypatch):
    import medxgan.metrics.localization as loc

    maps, masks = _fixture(B=7)
    whole = loc.localization_scores(maps, masks, shuffle_seed=2)
    monkeypatch.setattr(loc, "_CHUNK_ELEMENTS", 2 * maps[0].numel())  # 2 rows per chunk
    chunked = loc.localization_scores(maps, masks, shuffle_seed=2)
    for k in whole:
        assert torch.equal(whole[k].nan_to_num(-7.0), chunked[k].nan_to_num(-7.0))
        if k in loc.LOCALIZATION_METRICS:
            assert torch.equal(whole[k].nan_to_num(-7.0), loc.LOCALIZATION_METRICS[k](maps, masks).nan_to_num(-7.0))
    assert loc.iou_at(maps, masks, [0.2, 0.6]).shape == (7, 2)


def test_non_finite_maps_score_nan_and_float32_equals_float64():
    maps, masks = _fixture()
    broken = maps.clone()
    broken[4, 0, 0] = float("nan")
    broken[5, 3, 3] = float("inf")
    out = localization_scores(broken, masks, shuffle_seed=0)
    ref = localization_scores(maps, masks, shuffle_seed=0)
    for k, v in out.items():
        assert torch.isnan(v[[4, 5]]).all(), k
        keep = [0, 1, 3, 6, 7, 8]
        assert torch.equal(v[keep].nan_to_num(-7.0), ref[k][keep].nan_to_num(-7.0)), k
    assert torch.isnan(iou_at(broken, masks, [0.5])[4]).all()
    f32 = maps.float()
    for f in LOCALIZATION_METRICS.values():  # float32 maps are scored exactly, in float64
        assert torch.equal(f(f32, masks).nan_to_num(-7.0), f(f32.double(), masks).nan_to_num(-7.0))
