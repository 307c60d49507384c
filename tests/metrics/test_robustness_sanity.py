import math

import pytest
import torch
from torch import nn

from medxgan.metrics.robustness import noise_stability
from medxgan.metrics.sanity import RHO_THRESHOLD, model_randomisation

H = W = 16


def _images(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 1, H, W, generator=g)


# ---------------------------------------------------------------- noise stability
def test_map_that_ignores_the_input_is_perfectly_stable():
    fixed = torch.rand(1, H, W, generator=torch.Generator().manual_seed(1))
    out = noise_stability(lambda x: fixed.expand(x.shape[0], H, W), _images(), k=3, seed=0)
    assert out.dtype == torch.float64 and out.shape == (4,)
    assert torch.equal(out, torch.ones(4, dtype=torch.float64))


def test_stability_of_the_image_itself_falls_with_sigma():
    x = _images()
    ident = lambda z: z[:, 0]  # noqa: E731  the map is the image
    lo = noise_stability(ident, x, k=4, sigma=0.01, seed=0)
    hi = noise_stability(ident, x, k=4, sigma=2.0, seed=0)
    assert (lo > 0.99).all()
    assert (hi < 0.5).all()
    # sigma is relative to each image's range: rescaling an image does not change its score
    x2 = x.clone()
    x2[0] = 0.1 + 0.1 * x2[0]
    r2 = noise_stability(ident, x2, k=4, sigma=0.3, seed=0)
    r1 = noise_stability(ident, x, k=4, sigma=0.3, seed=0)
    torch.testing.assert_close(r1, r2, rtol=0, atol=1e-9)


def test_seeded_and_constant_maps_are_undefined():
    x = _images()
    ident = lambda z: z[:, 0] ** 2  # noqa: E731
    assert torch.equal(noise_stability(ident, x, seed=3), noise_stability(ident, x, seed=3))
    assert not torch.equal(noise_stability(ident, x, seed=3), noise_stability(ident, x, seed=4))
    const = noise_stability(lambda z: torch.zeros(z.shape[0], H, W), x)
    assert torch.isnan(const).all()


# ---------------------------------------------------------------- model randomisation
def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * H * W, 1))
    with torch.no_grad():  # a "trained" model that looks at the top-left corner
        m[3].weight.zero_()
        m[3].weight.view(4, H, W)[:, :5, :5] = 1.0
    return m


def _gradient_factory(model):
    def explain(x):
        x = x.clone().requires_grad_(True)
        model(x).sum().backward()
        return x.grad[:, 0].abs()

    return explain


def test_gradients_pass_and_a_model_independent_map_fails():
    x = _images(6)
    grad = model_randomisation(_gradient_factory, _model(), x, seed=0)
    assert grad["rho"].shape == (6,) and grad["rho"].dtype == torch.float64
    assert grad["passed"] and grad["median_abs_rho"] < RHO_THRESHOLD
    edge = model_randomisation(lambda m: (lambda z: z[:, 0]), _model(), x, seed=0)  # the image itself
    assert not edge["passed"] and edge["median_abs_rho"] == 1.0
    const = model_randomisation(lambda m: (lambda z: torch.zeros(z.shape[0], H, W)), _model(), x, seed=0)
    assert not const["passed"]  # identical constant maps count as |rho| = 1


def test_model_is_left_untouched_and_cascade_is_top_down():
    m, x = _model(), _images(3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    out = model_randomisation(_gradient_factory, m, x, seed=1, cascading=True)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert [s["layer"] for s in out["cascade"]] == ["3", "0"] and out["n_layers"] == 2
    assert all(s["rho"].shape == (3,) for s in out["cascade"])
    again = model_randomisation(_gradient_factory, m, x, seed=1)
    assert torch.equal(out["rho"], again["rho"])
    with pytest.raises(ValueError):
        model_randomisation(_gradient_factory, nn.Identity(), x, seed=0)
    assert not math.isnan(out["median_abs_rho"])


def test_a_torchscript_model_is_randomised_too():
    """TorchScript modules keep no ``reset_parameters``: their weights are re-initialised
    directly, the scripted original is left untouched, and gradients pass the test."""
    m, x = _model(), _images(6)
    scripted = torch.jit.script(m)
    before = {k: v.clone() for k, v in scripted.state_dict().items()}
    out = model_randomisation(_gradient_factory, scripted, x, seed=0)
    assert out["n_layers"] == 2 and out["passed"]
    assert all(torch.equal(before[k], v) for k, v in scripted.state_dict().items())
    edge = model_randomisation(lambda mm: (lambda z: z[:, 0]), scripted, x, seed=0)
    assert not edge["passed"]
