"""The shortcut finder (medxgan.metrics.shortcut): the three kinds of evidence on analytic
classifiers whose shortcut is known (a fixed tag, a band wider than any patch, a marker that
moves between corners, an image-wide noise level) and on a lesion-only classifier."""

import math

import numpy as np
import pytest
import torch

from medxgan import phantoms
from medxgan.metrics.shortcut import ShortcutFinding, dilate_masks, find_shortcut
from medxgan.metrics.shortcut_wide import (draw_donors, match_histogram, noise_sigma, set_noise,
                                          wide_transplants)
from tests.metrics.test_ablation import LesionDetector, TagDetector, lesion_batch, phantom_batch

S = 64


def _overlaps(a, b) -> bool:
    """Do boxes (x0, y0, x1, y1) a and b share a pixel?"""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def synthetic(n: int, *, size: int = 32, seed: int = 0, shortcut: str | None = None,
              rate: float = 0.9):
    """Background 0.2 + noise 0.02, every positive (first half) a dim 0.35 lesion square in
    its own cell (box given), and a shortcut on ``rate`` of the positives (and no negative):
    ``band`` (rows 0-3, full width, 0.9), ``marker`` (a 3 x 3 square of 0.9 in one of the four
    corners, by index), ``noise`` (noise 0.08 instead of 0.02).
    Returns images (n, 1, s, s), labels (n,), masks (n, s, s), carries (n,) bool."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.02 * torch.randn(n, 1, size, size, generator=g)
    labels = torch.tensor([1] * (n // 2) + [0] * (n - n // 2))
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    carries = torch.zeros(n, dtype=torch.bool)
    cells = [(10, 6), (10, 20), (20, 6), (20, 20), (14, 13)]
    for i in range(n // 2):
        r, c = cells[i % len(cells)]
        x[i, 0, r:r + 5, c:c + 5] = 0.35
        masks[i, r:r + 5, c:c + 5] = True
        carries[i] = (i % 10) < round(10 * rate)
        if not carries[i]:
            continue
        if shortcut == "band":
            x[i, 0, 0:4, :] = 0.9
        elif shortcut == "marker":
            k = i % 4
            rr = 1 if k < 2 else size - 4
            cc = 1 if k % 2 == 0 else size - 4
            x[i, 0, rr:rr + 3, cc:cc + 3] = 0.9
        elif shortcut == "noise":
            x[i] = 0.2 + 0.08 * torch.randn(1, size, size, generator=g)
            x[i, 0, r:r + 5, c:c + 5] = 0.35
    return x.clamp(0, 1), labels, masks, carries


class BandDetector(torch.nn.Module):
    """logit = 30 (mean of the top 4 rows over the whole width - 0.45): every part of the band
    counts, so no single patch removes enough of it."""

    threshold = 0.5

    def forward(self, x):
        return 30.0 * (x[:, 0, :4, :].mean((1, 2)) - 0.45)


class MarkerDetector(torch.nn.Module):
    """logit = 30 (largest mean over the four 3 x 3 corner squares - 0.5)."""

    threshold = 0.5

    def forward(self, x):
        s = x.shape[-1]
        corners = [x[:, 0, 1:4, 1:4], x[:, 0, 1:4, s - 4:s - 1], x[:, 0, s - 4:s - 1, 1:4],
                   x[:, 0, s - 4:s - 1, s - 4:s - 1]]
        return 30.0 * (torch.stack([c.mean((1, 2)) for c in corners], 1).amax(1) - 0.5)


class NoiseDetector(torch.nn.Module):
    """logit = 100 (robust noise level - 0.05): the second scanner, whatever the place."""

    threshold = 0.5

    def forward(self, x):
        return 100.0 * (noise_sigma(x) - 0.05)


@pytest.fixture(scope="module")
def tag_cohort():
    return phantom_batch(48, size=S, shortcut_rate=0.9)


def test_a_fixed_tag_is_found_by_all_three_kinds_of_evidence(tag_cohort):
    x, labels, masks, tagged = tag_cohort
    f = TagDetector(S)
    r = find_shortcut(f, x, masks, labels, method="mean", seed=0, n_boot=300)
    assert isinstance(r, ShortcutFinding) and r.infill == "mean" and r.dilate == 2
    pos = labels == 1
    # location-free: positives without their findings stay positive as often as they carry the tag
    assert r.residual["n"] == int((pos & masks.flatten(1).any(1)).sum())
    assert r.residual["rate"] == pytest.approx(float(tagged[pos & masks.flatten(1).any(1)].double().mean()))
    assert r.residual["control_rate"] < 0.1 and r.residual["effect_ci_low"] > 0.5
    # located: every region found is the tag; the cluster says where
    tag = phantoms.tag_box(S)
    assert r.located["found"] == r.located["searched"] > 10
    for m in r.masks[r.flipped]:
        ys, xs = np.nonzero(m)
        assert _overlaps((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), tag)
    c = r.located["clusters"][0]
    assert c["polarity"] == "bright" and c["size"] == "small" and c["place"] == "top-right corner"
    assert c["place_text"] == "in the top-right corner" and _overlaps(r.located["box"], tag)
    # transplant: a random positive's region (the tag, 90 % of them carry it) flips the
    # negatives; a random negative's (none has a region) does not
    assert r.located["transplant_rate"] >= 0.85 and r.located["control_rate"] < 0.05
    assert r.located["found_negatives"] == 0 and r.located["effect_ci_low"] > 0.7
    assert r.effect["ci_low"] > 0.5  # (the border intervention carries the corner tag along)
    s = r.summary()
    assert s["box"] == r.located["box"] and s["effect"] == r.effect["effect"]
    assert len(s["heatmap"]) == S and max(map(max, s["heatmap"])) > 0.5


def test_a_band_wider_than_any_patch_is_found_as_a_union_of_patches():
    x, labels, masks, carries = synthetic(40, shortcut="band")
    r = find_shortcut(BandDetector(), x, masks, labels, method="mean", seed=0, n_boot=300)
    assert r.residual["rate"] == pytest.approx(0.9) and r.residual["control_rate"] == 0
    assert r.located["found"] == r.located["searched"] == 18
    # a 8 px patch (H/4 at 32 px) covers a quarter of the band: the regions span more than it
    widths = [np.ptp(np.nonzero(m.any(0))[0]) + 1 for m in r.masks[r.flipped]]
    assert min(widths) > 8
    assert all(np.nonzero(m.any(1))[0].max() < 8 for m in r.masks[r.flipped])  # the top rows only
    c = r.located["clusters"][0]
    assert c["shape"] == "elongated" and c["polarity"] == "bright"
    assert r.located["effect_ci_low"] > 0.5


def test_a_marker_that_moves_between_corners_is_one_cluster_with_four_places():
    x, labels, masks, carries = synthetic(80, shortcut="marker")
    r = find_shortcut(MarkerDetector(), x, masks, labels, method="mean", seed=0, n_boot=300)
    c = r.located["clusters"][0]
    assert c["n_images"] == r.located["found"] == 36
    assert set(c["places"]) == {"top-left corner", "top-right corner", "bottom-left corner",
                                "bottom-right corner"}
    assert c["place_text"].startswith("in 4 places")
    assert c["share"] == pytest.approx(36 / 40)
    # each donor's own region at its own place: pasted into negatives, it transplants
    assert r.located["transplant_rate"] >= 0.8 and r.located["control_rate"] == 0  # 90 % carry it


def test_an_image_wide_noise_shortcut_is_found_without_a_place():
    x, labels, masks, carries = synthetic(60, shortcut="noise")
    r = find_shortcut(NoiseDetector(), x, masks, labels, method="mean", seed=0, n_boot=300)
    wide = {w["name"]: w for w in r.image_wide}
    assert set(wide) == {"noise", "histogram", "border"}
    assert wide["noise"]["rate"] > 0.7 and wide["noise"]["control_rate"] < 0.05
    assert wide["noise"]["ci_low"] > 0.5
    assert wide["border"]["effect"] < 0.2  # the border of a noisy image is only a little noisier
    assert r.residual["effect_ci_low"] > 0.5


def test_a_lesion_only_classifier_shows_no_shortcut():
    x, masks, _ = lesion_batch(n_pos=8, n_neg=8)
    labels = torch.tensor([1] * 8 + [0] * 8)
    r = find_shortcut(LesionDetector(), x, masks, labels, method="mean", seed=0, n_boot=300)
    assert r.residual["rate"] == 0 and r.residual["control_rate"] == 0
    assert r.located["searched"] == 0 and r.located["box"] is None and not len(r.top_images)
    assert all(abs(w["effect"]) < 0.05 for w in r.image_wide)
    assert r.effect["ci_high"] <= 0.05


def test_an_inpainter_module_is_used_and_named(tag_cohort):
    x, labels, masks, _ = (t[:24] for t in tag_cohort)

    class Fill(torch.nn.Module):  # a "healthy in-filler": the image's mean in the hole
        depth = 0

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, m):
            return x * (1 - m) + x.mean((1, 2, 3), keepdim=True) * m

    r = find_shortcut(TagDetector(S), x, masks, labels, inpainter=Fill(), seed=0, n_boot=100)
    assert r.infill == "inpaint" and r.located["found"] > 0


def test_the_seed_and_the_batch_size_do_not_change_the_evidence(tag_cohort):
    x, labels, masks, _ = (t[:24] for t in tag_cohort)
    a = find_shortcut(TagDetector(S), x, masks, labels, method="mean", seed=0, batch_size=37)
    b = find_shortcut(TagDetector(S), x, masks, labels, method="mean", seed=0)
    assert np.array_equal(a.masks, b.masks) and a.residual == b.residual
    assert a.located["transplant_rate"] == b.located["transplant_rate"]


def test_without_negatives_there_is_no_control():
    x, masks, _ = lesion_batch(n_pos=6, n_neg=0)
    r = find_shortcut(LesionDetector(), x, masks, torch.ones(6, dtype=torch.long), method="mean")
    assert math.isnan(r.residual["control_rate"]) and math.isnan(r.residual["effect"])
    assert r.image_wide == [] and math.isnan(r.located["transplant_rate"])


def test_bad_arguments_are_refused():
    x, masks, _ = lesion_batch()
    with pytest.raises(ValueError):
        find_shortcut(LesionDetector(), x, masks, torch.ones(3), seed=0)
    with pytest.raises(ValueError):
        find_shortcut(LesionDetector(), x[:, 0], masks, torch.ones(len(x)), seed=0)


def test_dilation_grows_masks_by_a_square():
    m = torch.zeros(1, 9, 9, dtype=torch.bool)
    m[0, 4, 4] = True
    assert int(dilate_masks(m, 2).sum()) == 25 and torch.equal(dilate_masks(m, 0), m)


def test_image_wide_interventions():
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.02 * torch.randn(2, 1, 32, 32, generator=g)
    s = noise_sigma(x)
    assert torch.allclose(s, torch.full((2,), 0.02), rtol=0.25)
    louder = set_noise(x, torch.tensor([3.0, 1.0]))
    assert noise_sigma(louder)[0] == pytest.approx(3 * float(s[0]), rel=0.1)
    ref = torch.rand(2, 1, 32, 32, generator=g)
    out = match_histogram(x, ref)
    assert torch.equal(out.flatten(1).sort(1).values, ref.flatten(1).sort(1).values)
    assert torch.equal(out.flatten(1).argsort(1), x.flatten(1).argsort(1))  # ranks kept


def test_donors_are_drawn_without_replacement_and_never_the_recipient_itself():
    g = torch.Generator().manual_seed(0)
    d = draw_donors(5, 10, 8, g)
    assert d.shape == (5, 8) and all(len(set(r.tolist())) == 8 for r in d)
    same = torch.zeros(5, 10, dtype=torch.bool)
    same[torch.arange(5), torch.arange(5)] = True          # recipient i is negative donor i
    d = draw_donors(5, 10, 12, g, exclude=same)             # more draws than the 9 allowed
    assert all(i not in r.tolist() and len(set(r.tolist())) == 9 for i, r in enumerate(d))


def test_several_donor_draws_steady_the_image_wide_effect():
    """Half the positive donors carry a noisy scanner: with one donor per recipient the noise
    effect moves with the draw; averaged over 8 draws it moves less, and its CI (recipients
    and donors resampled) keeps the donor pool's uncertainty."""
    g = torch.Generator().manual_seed(1)
    rec = 0.2 + 0.02 * torch.randn(24, 1, 32, 32, generator=g)
    neg = 0.2 + 0.02 * torch.randn(24, 1, 32, 32, generator=g)
    pos = 0.2 + torch.tensor([0.08, 0.02] * 12).view(24, 1, 1, 1) * torch.randn(24, 1, 32, 32, generator=g)
    keep = torch.ones(24, 32, 32, dtype=torch.bool)

    def noise(draws, seed):
        w = wide_transplants(NoiseDetector(), rec, pos, neg, keep_r=keep, keep_p=keep, keep_n=keep,
                             seed=seed, n_boot=300, draws=draws)
        return next(d for d in w if d["name"] == "noise")

    one = [noise(1, s)["effect"] for s in range(8)]
    many = [noise(8, s) for s in range(8)]
    assert float(np.std([d["effect"] for d in many])) < 0.5 * float(np.std(one))
    assert all(d["draws"] == 8 and d["ci_low"] <= 0.5 <= d["ci_high"] for d in many)
    # 24 positive donors, half noisy: the pool alone leaves the share uncertain by about
    # +-0.2 (95 %), which a CI over the recipients' 8-draw means (about +-0.07) would miss
    assert all(d["ci_high"] - d["ci_low"] > 0.3 for d in many)
    assert all(abs(d["effect"] - 0.5) < 0.1 for d in many)


def test_maps_that_show_the_tag_mark_the_found_regions(tag_cohort):
    from medxgan.metrics.shortcut_run import maps_on_shortcut

    x, labels, masks, _ = (t[:24] for t in tag_cohort)
    f = TagDetector(S)
    r = find_shortcut(f, x, masks, labels, method="mean", seed=0, n_boot=100)
    ids = [f"img{i}" for i in range(len(x))]
    out = maps_on_shortcut(r, x, f, None, ["ig", "random", "medxgan"], {"ig": {"n_steps": 8}},
                           ids=ids, k=6, n_boot=100)
    assert set(out) == {"ig"}  # floors and generator methods without a generator are skipped
    assert out["ig"]["marks"] and out["ig"]["mass"] > 0.9 and out["ig"]["n"] == 6
    assert 0 < out["ig"]["area"] < 0.05


def test_similarity_outside_a_region():
    from medxgan.metrics.counterfactual import similarity_outside

    g = torch.Generator().manual_seed(0)
    changes = 0.05 * torch.randn(12, 32, 32, generator=g)
    changes[:, 0:4, 28:32] = 1.0  # every change removes the same tag
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[0:4, 28:32] = True
    whole, outside = similarity_outside(changes, region)
    assert whole > 0.8 and abs(outside) < 0.1


def test_reconstruction_keeps_the_8_connected_parts_the_seed_touches():
    """reconstruct_masks against scikit-image's 8-connected labels: every part of ``within``
    that a seed pixel lies in, whole, and nothing else (random masks, batched)."""
    from skimage.measure import label

    from medxgan.generators.inpaint.complete import reconstruct_masks

    g = torch.Generator().manual_seed(0)
    within = torch.rand(4, 24, 24, generator=g) < 0.45
    seed = torch.rand(4, 24, 24, generator=g) < 0.01
    got = reconstruct_masks(seed, within)
    for b in range(4):
        lab = label(within[b].numpy(), connectivity=2)
        keep = set(np.unique(lab[(seed[b] & within[b]).numpy()])) - {0}
        want = np.isin(lab, sorted(keep)) & (lab > 0)
        assert np.array_equal(got[b].numpy(), want), b
    assert got.any() and not bool((got & ~within).any())


def test_the_location_free_evidence_uses_every_image_and_the_rest_only_the_core(tag_cohort):
    x, labels, masks, _ = tag_cohort
    core = torch.zeros(len(x), dtype=torch.bool)
    core[::3] = True
    f = TagDetector(S)
    r = find_shortcut(f, x, masks, labels, method="mean", seed=0, n_boot=300, core=core)
    full = find_shortcut(f, x, masks, labels, method="mean", seed=0, n_boot=300)
    boxed = (labels == 1) & masks.flatten(1).any(1)
    assert r.residual == full.residual and r.residual["n"] == int(boxed.sum())
    assert len(r.searched) and bool(core[torch.from_numpy(r.searched)].all())
    assert len(full.searched) > len(r.searched)
    core_neg = int((core & (labels == 0)).sum())
    assert 0 < r.located["n"] <= core_neg < full.located["n"]
    assert r.image_wide and all(0 < w["n"] <= core_neg for w in r.image_wide)
    assert r.core is not None and r.core.sum() == int(core.sum())
    with pytest.raises(ValueError, match="core"):
        find_shortcut(f, x, masks, labels, method="mean", core=core[:-1])


def test_the_cohort_search_nests_its_core_in_the_location_free_sample(tmp_path):
    from bench._common import write_phantom_cohort
    from medxgan.cohort import Cohort
    from medxgan.metrics.shortcut_run import cohort_shortcut, shortcut_json, shortcut_sample

    url = str(tmp_path / "cohort")
    write_phantom_cohort(url, "phantom-cxr", 90, size=32, shortcut_rate=0.9)
    cohort = Cohort(url)
    small, big = shortcut_sample(cohort, None, 24), shortcut_sample(cohort, None, 70)
    assert len(small) == 24 and len(big) == 70 and set(small) <= set(big)
    found, ids, batch = cohort_shortcut(cohort, TagDetector(32), split=None, cap=24, residual_cap=70,
                                        method="mean", n_boot=200)
    assert ids == big and len(batch.images) == 70
    assert {ids[i] for i in np.flatnonzero(found.core)} == set(small)
    js = shortcut_json(found, ids, batch.labels, None)
    assert js["n_images"] == 24 and js["n_residual_images"] == 70
    assert js["n_positives"] + js["n_negatives"] == 24
    assert js["residual"]["n"] + js["residual"]["control_n"] > 24
    only, ids2, _ = cohort_shortcut(cohort, TagDetector(32), split=None, cap=24, method="mean", n_boot=200)
    assert only.core is None and ids2 == small
    assert shortcut_json(only, ids2, _.labels, None)["n_residual_images"] == 24


def test_the_located_transplant_averages_over_several_donors(monkeypatch):
    """Each recipient gets DONOR_DRAWS positive and negative donors, so the effect no longer
    hangs on which few donors with a region a recipient happened to draw: over seeds its
    spread shrinks against one donor per recipient, and its CI resamples the donors."""
    from medxgan.metrics import shortcut as sc

    x, labels, masks, carries = synthetic(48, shortcut="marker", rate=0.3)
    f = MarkerDetector()

    def effects(draws: int) -> np.ndarray:
        monkeypatch.setattr(sc, "DONOR_DRAWS", draws)
        out = []
        for seed in range(6):
            r = find_shortcut(f, x, masks, labels, method="mean", seed=seed, n_boot=200)
            assert r.located["draws"] == draws and r.located["n"] > 0
            out.append(r.located["effect"])
        return np.asarray(out)

    one, many = effects(1), effects(8)
    assert many.std() < 0.6 * one.std()
    share = float(carries[labels == 1].double().mean())  # 9 of the 24 positives carry it
    assert abs(many.mean() - share) < 0.06
