import pytest
import torch

from medxgan.metrics.faithfulness import deletion_auc, gaussian_blur, insertion_auc

H = W = 32
BOX = (slice(8, 16), slice(12, 22))  # rows, cols of the lesion


class BoxModel(torch.nn.Module):
    """f(x) = sigmoid(scale * (mean of x over BOX - c)): only the box matters."""

    def __init__(self, scale=20.0, c=0.5):
        super().__init__()
        self.scale, self.c = scale, c
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.scale * (x[:, 0, BOX[0], BOX[1]].mean((1, 2)) - self.c)


def _images(B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.05 * torch.rand(B, 1, H, W, generator=g)
    x[:, :, BOX[0], BOX[1]] = 0.9  # bright lesion
    return x


def _box_map(B):
    m = torch.zeros(B, H, W)
    m[:, BOX[0], BOX[1]] = 1.0
    return m


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_a_map_on_the_box_beats_a_map_off_the_box(baseline):
    x, f = _images(), BoxModel()
    on = _box_map(5) + 0.01 * torch.rand(5, H, W, generator=torch.Generator().manual_seed(1))
    off = 1.0 - _box_map(5)
    kw = dict(steps=10, baseline=baseline)
    d_on, d_off = deletion_auc(f, x, on, **kw), deletion_auc(f, x, off, **kw)
    i_on, i_off = insertion_auc(f, x, on, **kw), insertion_auc(f, x, off, **kw)
    assert d_on.dtype == torch.float64 and d_on.shape == (5,)
    assert (d_on < d_off - 0.3).all()
    assert (i_on > i_off + 0.3).all()
    for v in (d_on, d_off, i_on, i_off):
        assert ((v >= 0) & (v <= 1)).all()


def test_one_step_is_the_mean_of_the_end_points():
    x, f = _images(3), BoxModel()
    maps = torch.rand(3, H, W, generator=torch.Generator().manual_seed(2))
    px = torch.sigmoid(f(x).double())
    pb = torch.sigmoid(f(gaussian_blur(x, 5.0)).double())
    torch.testing.assert_close(deletion_auc(f, x, maps, steps=1), (px + pb) / 2)
    torch.testing.assert_close(insertion_auc(f, x, maps, steps=1), (px + pb) / 2)
    pm = torch.sigmoid(f(x.mean((1, 2, 3), keepdim=True).expand_as(x)).double())
    torch.testing.assert_close(deletion_auc(f, x, maps, steps=1, baseline="mean"), (px + pm) / 2)


def test_constant_model_gives_its_probability():
    x = _images(2)
    f = lambda z: torch.full((z.shape[0],), 0.3)  # noqa: E731
    auc = deletion_auc(f, x, torch.rand(2, H, W), steps=7)
    torch.testing.assert_close(auc, torch.sigmoid(torch.tensor([0.3, 0.3], dtype=torch.float64)))


def test_batched_forward_passes_and_batch_size_independence():
    x, maps = _images(6), torch.rand(6, H, W, generator=torch.Generator().manual_seed(3))
    f_big, f_small = BoxModel(), BoxModel()
    big = deletion_auc(f_big, x, maps, steps=10, batch_size=1000)
    small = deletion_auc(f_small, x, maps, steps=10, batch_size=5)
    assert f_big.calls == 1  # 6 images x 11 steps in one forward pass
    assert f_small.calls == -(-6 * 11 // 5)  # the flat (image, step) grid in chunks of 5
    torch.testing.assert_close(big, small, rtol=0, atol=1e-6)
    one_by_one = torch.cat([deletion_auc(BoxModel(), x[i : i + 1], maps[i : i + 1], steps=10) for i in range(6)])
    torch.testing.assert_close(big, one_by_one, rtol=0, atol=1e-6)
    assert torch.equal(big, deletion_auc(BoxModel(), x, maps, steps=10, batch_size=1000))


def test_small_maps_are_upsampled():
    x, f = _images(2), BoxModel()
    low = torch.zeros(2, 8, 8)
    low[:, 2:4, 3:5] = 1.0  # the box at 1/4 resolution (rows 8-16, cols 12-20)
    off = 1.0 - low
    assert (deletion_auc(f, x, low, steps=8) < deletion_auc(f, x, off, steps=8)).all()
    with pytest.raises(ValueError):
        deletion_auc(f, x, low, baseline="zeros")


def test_blur_preserves_constants_and_smooths():
    c = torch.full((1, 1, 16, 16), 0.4)
    torch.testing.assert_close(gaussian_blur(c, 2.0), c)
    d = torch.zeros(1, 1, 16, 16)
    d[0, 0, 8, 8] = 1.0
    b = gaussian_blur(d, 2.0)
    assert b.max() < 0.1 and b.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_one_blur_for_faithfulness_and_the_ig_baseline():
    import medxgan.explain.ig as ig
    import medxgan.metrics.faithfulness as fa

    assert ig.gaussian_blur is fa.gaussian_blur
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ig.baseline_images(x, "blur", 2.1), fa.gaussian_blur(x, 2.1),
                               rtol=0, atol=0)
