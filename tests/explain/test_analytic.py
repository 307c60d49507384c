"""Analytic fixtures whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxgan.explain import make_explainer
from medxgan.explain.floors import box_mask, box_prior_map
from medxgan.explain.gradcam import find_target_layer
from medxgan.explain.ig import baseline_images, gaussian_blur
from tests.explain.conftest import BoxSum, LinearConv, SmallCNN, TinyGenerator

BOX = (8, 12, 20, 22)  # x0, y0, x1, y1


def _inside(maps):
    m = torch.zeros(32, 32, dtype=torch.bool)
    m[BOX[1]:BOX[3], BOX[0]:BOX[2]] = True
    return m


@pytest.mark.parametrize("method,cfg", [("ig", {"n_steps": 8}), ("gradcam", {}),
                                        ("smoothgrad", {"base": "ig", "nt_samples": 3})])
def test_box_sum_classifier_mass_inside_box(method, cfg, images):
    f = BoxSum(BOX).eval()
    out = make_explainer(method, f, config=cfg).explain(images)
    a = out.maps.abs()
    inside = a[:, _inside(a)].sum(1)
    assert (inside >= 0.999 * a.flatten(1).sum(1)).all()
    assert (inside > 0).all()
    if method == "ig":  # f is linear: IG = x ⊙ box exactly, completeness exact
        torch.testing.assert_close(out.maps, images[:, 0] * f.mask[0, 0])
        assert float(out.extras["completeness_error"].max()) < 1e-3


def test_ig_baselines_and_blur():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(baseline_images(x, "black"), torch.zeros_like(x))
    m = baseline_images(x, "mean")
    torch.testing.assert_close(m[:, :, 3, 7], x.mean((1, 2, 3))[:, None])
    c = torch.full((1, 1, 32, 32), 0.3)
    torch.testing.assert_close(gaussian_blur(c, 4.0), c)             # constants survive
    b = gaussian_blur(x, 2.0)
    assert b.shape == x.shape and b.std() < 0.5 * x.std()             # noise is smoothed


def test_ig_completeness_with_each_baseline(images):
    f = SmallCNN().eval()
    for base in ("black", "mean", "blur"):
        out = make_explainer("ig", f, config={"baseline": base, "n_steps": 64}).explain(images)
        x0 = baseline_images(images, base)
        with torch.no_grad():
            delta = f(images) - f(x0)
        torch.testing.assert_close(out.maps.flatten(1).sum(1), delta, atol=2e-2, rtol=2e-2)


def test_gradcam_layer_choice():
    lc = LinearConv()
    assert find_target_layer(lc) is lc.conv                           # last Conv2d
    cnn = SmallCNN()
    assert find_target_layer(cnn) is cnn.body[4]                      # target_layer()
    assert find_target_layer(cnn, "body.0") is cnn.body[0]            # by name
    with pytest.raises(ValueError):
        find_target_layer(cnn, "nope")
    with pytest.raises(ValueError):
        find_target_layer(torch.nn.Linear(3, 1))
    first = make_explainer("gradcam", cnn, config={"layer": "body.0"})
    out = first.explain(torch.rand(2, 1, 32, 32))
    assert out.extras["layer_size"].tolist() == [[32, 32]] * 2
    out = make_explainer("gradcam", cnn).explain(torch.rand(2, 1, 32, 32))
    assert out.extras["layer_size"].tolist() == [[16, 16]] * 2
    assert (out.maps >= 0).all()                                      # ReLU on


class _Curved(torch.nn.Module):
    """A clearly non-linear logit: 50 mean(tanh(conv(x))^2) - 1 (gradients vary along a path)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return 50 * torch.tanh(self.conv(x)).pow(2).mean((1, 2, 3)) - 1


def test_latent_ig_completeness_and_chunking():
    G, f = TinyGenerator().eval(), _Curved().eval()
    g = torch.Generator().manual_seed(4)
    z = (torch.randn(3, G.d_a, generator=g), 2 * torch.randn(3, G.d_p, generator=g))
    x = torch.rand(3, 1, 32, 32)
    e = make_explainer("latent_ig", f, generator=G, config={"n_points": 101, "batch_size": 1000})
    out = e.explain(x, latents=z)
    with torch.no_grad():
        delta = f((G(*z) + 1) / 2) - f((G(z[0], torch.zeros_like(z[1])) + 1) / 2)
    assert delta.abs().min() > 1e-2                                   # a real change to explain
    s = out.maps.flatten(1).sum(1)
    torch.testing.assert_close(out.extras["delta_logit"], delta, atol=1e-5, rtol=1e-4)
    assert ((s - delta).abs() <= 1e-3 * delta.abs() + 1e-6).all(), (s, delta)  # trapezoid
    torch.testing.assert_close(out.extras["completeness_error"], (s - delta).abs())
    assert out.extras["form"] == ["exact"] * 3 and out.extras["rule"] == ["trapezoid"] * 3
    # path points in chunks of 7 (stitched across chunk borders) give the same map
    small = make_explainer("latent_ig", f, generator=G, config={"n_points": 101, "batch_size": 7})
    torch.testing.assert_close(small.explain(x, latents=z).maps, out.maps, atol=1e-6, rtol=1e-4)
    right = make_explainer("latent_ig", f, generator=G,
                           config={"n_points": 101, "rule": "right"}).explain(x, latents=z)
    err = right.extras["completeness_error"]
    assert (err <= 0.05 * delta.abs() + 1e-4).all()                    # O(1/n)
    assert (out.extras["completeness_error"] <= err).all()
    # published form: (x_pos - x_neg) ⊙ mean gradient, same chunked or not
    pub = [make_explainer("latent_ig", f, generator=G,
                          config={"n_points": 11, "form": "published", "batch_size": b}
                          ).explain(x, latents=z) for b in (5, 1000)]
    torch.testing.assert_close(pub[0].maps, pub[1].maps, atol=1e-6, rtol=1e-4)
    assert pub[0].extras["form"] == ["published"] * 3
    xp, xn = pub[1].extras["x_pos"], pub[1].extras["x_neg"]
    xs = torch.stack([(G(z[0], a * z[1]) + 1) / 2 for a in torch.linspace(0, 1, 11)], 1)
    xs.requires_grad_(True)
    gr, = torch.autograd.grad(f(xs.reshape(-1, 1, 32, 32)).sum(), xs)
    torch.testing.assert_close(pub[1].maps, ((xp - xn) * gr.mean(1))[:, 0], atol=1e-6, rtol=1e-4)


class _Blind(torch.nn.Module):
    """A generator that ignores z_p: it cannot draw any finding (G(z_a, z_p) = G(z_a, 0))."""

    def __init__(self, G):
        super().__init__()
        self.G, self.d_a, self.d_p, self.image_size = G, G.d_a, G.d_p, G.image_size

    def forward(self, z_a, z_p):
        return self.G(z_a, torch.zeros_like(z_p))


def test_counterfactual_ig_attributes_what_the_generator_cannot_draw(images):
    """Box-sum classifier, a generator blind to z_p: latent IG has nothing to attribute (its
    path is constant), counterfactual IG runs from G(z_a, 0) to the real image and puts all of
    f(x) - f(x_neg) inside the box, exactly (f is linear)."""
    f, G = BoxSum(BOX).eval(), _Blind(TinyGenerator().eval())
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(len(images), G.d_a, generator=g), torch.randn(len(images), G.d_p, generator=g))
    lig = make_explainer("latent_ig", f, generator=G, config={"n_points": 11}).explain(
        images, latents=z)
    assert float(lig.maps.abs().max()) == 0.0
    cig = make_explainer("counterfactual_ig", f, generator=G, config={"n_points": 11}).explain(
        images, latents=z)
    with torch.no_grad():
        x_neg = (G(*z) + 1) / 2
        delta = f(images) - f(x_neg)
    assert cig.extras["path"] == ["residual"] * len(images)
    torch.testing.assert_close(cig.extras["x_pos"], images.clamp(0, 1))
    torch.testing.assert_close(cig.extras["delta_logit"], delta, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cig.maps.flatten(1).sum(1), delta, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cig.maps, ((images - x_neg) * f.mask)[:, 0], atol=1e-5, rtol=1e-4)
    a = cig.maps.abs()
    assert (a[:, ~_inside(a)] == 0).all() and (a[:, _inside(a)].sum(1) > 0).all()
    with pytest.raises(Exception):                                     # the path is fixed
        make_explainer("counterfactual_ig", f, generator=G, config={"path": "generator"})


def test_counterfactual_ig_completeness_with_a_curved_classifier():
    G, f = TinyGenerator().eval(), _Curved().eval()
    g = torch.Generator().manual_seed(4)
    z = (torch.randn(3, G.d_a, generator=g), 2 * torch.randn(3, G.d_p, generator=g))
    x = torch.rand(3, 1, 32, 32, generator=g)
    out = make_explainer("counterfactual_ig", f, generator=G,
                         config={"n_points": 101, "batch_size": 7}).explain(x, latents=z)
    with torch.no_grad():
        delta = f(x) - f((G(z[0], torch.zeros_like(z[1])) + 1) / 2)
    assert delta.abs().min() > 1e-2
    s = out.maps.flatten(1).sum(1)
    assert ((s - delta).abs() <= 2e-3 * delta.abs() + 1e-5).all(), (s, delta)


def test_medxgan_consistency_and_exact_latents():
    G, f = TinyGenerator().eval(), SmallCNN().eval()
    g = torch.Generator().manual_seed(8)
    z = (torch.randn(3, G.d_a, generator=g), torch.randn(3, G.d_p, generator=g))
    with torch.no_grad():
        x = ((G(*z) + 1) / 2).clamp(0, 1)
    out = make_explainer("medxgan", f, generator=G, config={"n_frames": 7}).explain(x, latents=z)
    ex = out.extras
    assert float(ex["recon_mse"].max()) < 1e-10                        # G drew x itself
    torch.testing.assert_close(ex["frames"][:, 0], ex["x_neg"][:, 0])
    torch.testing.assert_close(ex["frames"][:, -1], x[:, 0])
    torch.testing.assert_close(out.maps, (ex["x_pos"] - ex["x_neg"]).abs()[:, 0])
    torch.testing.assert_close(ex["change"], (ex["x_pos"] - ex["x_neg"])[:, 0])
    torch.testing.assert_close(ex["p_neg"], ex["frame_probs"][:, 0])
    torch.testing.assert_close(ex["p_pos"], ex["frame_probs"][:, -1])
    torch.testing.assert_close(ex["p_x"], ex["p_pos"])
    assert torch.equal(ex["counterfactual_flip"], (ex["p_neg"] < 0.4).float())  # f.threshold
    assert ex["frame_probs"].shape == (3, 7) and ex["frames"].shape == (3, 7, 32, 32)
    # the latents in the extras reproduce the explanation without re-inverting
    inv = make_explainer("medxgan", f, generator=G, config={"inversion": {"steps": 5}})
    first = inv.explain(x)
    again = inv.explain(x, latents=(first.extras["z_a"], first.extras["z_p"]))
    torch.testing.assert_close(again.maps, first.maps)


def test_box_prior_map_analytic():
    b1 = np.array([[0, 0, 4, 2]], np.float32)                         # cols 0-3, rows 0-1
    b2 = np.array([[2, 0, 6, 2], [0, 6, 1, 8]], np.float32)           # two boxes, unioned
    none = np.zeros((0, 4), np.float32)
    m = box_mask(b1, (8, 8))
    assert m.sum() == 8 and m[:2, :4].all()
    p = box_prior_map([b1, b2, none], (8, 8))                         # `none` is skipped
    assert p.shape == (8, 8) and p.dtype == torch.float32
    assert p[0, 2] == 1.0 and p[0, 0] == 0.5 and p[0, 5] == 0.5 and p[7, 0] == 0.5
    assert p[4, 4] == 0.0 and p[0, 6] == 0.0
    half = box_prior_map([b1], (8, 8), (4, 4))                        # scaled to 4 x 4
    assert half.sum() == 2 and half[0, :2].all()
    assert box_prior_map([none], (8, 8)).sum() == 0
    out = make_explainer("box_prior", None, box_prior=p).explain(torch.rand(2, 1, 16, 16))
    assert out.maps.shape == (2, 16, 16) and torch.equal(out.maps[0], out.maps[1])


def test_smoothgrad_noise_partitions_do_not_change_the_map(images):
    """Seeded noise is consumed in order across captum's partitions (4 = 3 + 1 samples)."""
    f = SmallCNN().eval()
    maps = [make_explainer("smoothgrad", f, config={"nt_samples": 4, "nt_samples_batch_size": b})
            .explain(images[:3]).maps for b in (None, 3, 1)]
    torch.testing.assert_close(maps[1], maps[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps[2], maps[0], atol=1e-6, rtol=1e-5)
    zero = make_explainer("smoothgrad", f, config={"nt_samples": 2, "stdevs": 0.0, "abs": False})
    sal = make_explainer("smoothgrad", f, config={"nt_samples": 1, "stdevs": 0.0, "abs": False})
    x = images[:2].clone().requires_grad_(True)
    grad, = torch.autograd.grad(f(x).sum(), x)                        # no noise: plain gradient
    torch.testing.assert_close(zero.explain(images[:2]).maps, grad[:, 0])
    torch.testing.assert_close(sal.explain(images[:2]).maps, grad[:, 0])
