"""Table-driven invariants: every method x two tiny models (shape, finite, determinism,
batch-size independence), plus the registry's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medxgan.explain import METHODS, make_explainer
from medxgan.explain.floors import box_prior_map

FAST = {  # small but real configs: every code path runs
    "medxgan": {"inversion": {"steps": 8}, "n_frames": 5},
    "latent_ig": {"inversion": {"steps": 8}, "n_points": 21, "batch_size": 16},
    "counterfactual_ig": {"inversion": {"steps": 8}, "n_points": 21, "batch_size": 16},
    "gradcam": {},
    "ig": {"n_steps": 16, "internal_batch_size": 24},
    "smoothgrad": {"nt_samples": 4},
    "occlusion": {"window": 8, "stride": 8},
    "random": {},
    "box_prior": {},
}


def _explainer(method, model, generator):
    prior = box_prior_map([np.array([[4, 4, 12, 20]], np.float32)], (32, 32))
    return make_explainer(method, model, generator=generator, box_prior=prior,
                          config=FAST[method])


def test_every_method_is_tested():
    assert set(FAST) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_invariants(method, model, generator, images):
    x = images[:4]
    e = _explainer(method, model, generator)
    out = e.explain(x)
    assert out.maps.shape == (4, 32, 32) and out.maps.dtype == torch.float32
    assert torch.isfinite(out.maps).all()
    for k, v in out.extras.items():
        assert len(v) == 4, k
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            assert torch.isfinite(v).all(), k
    if method not in ("box_prior",):
        assert out.maps.flatten(1).std(1).gt(0).all()     # not a constant map
    # determinism: a fresh explainer, same config, same answer
    again = _explainer(method, model, generator).explain(x)
    assert torch.equal(out.maps, again.maps)
    # batch-size independence: together == one by one
    alone = torch.cat([e.explain(x[i:i + 1]).maps for i in range(4)])
    scale = float(out.maps.abs().max()) + 1e-12
    torch.testing.assert_close(alone, out.maps, rtol=1e-3, atol=2e-4 * scale)


@pytest.mark.parametrize("method", ["random", "smoothgrad", "medxgan"])
def test_seeded_methods_follow_ids_and_seed(method, generator, images):
    from tests.explain.conftest import SmallCNN
    f = SmallCNN().eval()
    x = images[:2]
    e = _explainer(method, f, generator)
    a = e.explain(x, ids=["a", "b"]).maps
    swapped = e.explain(x.flip(0), ids=["b", "a"]).maps.flip(0)  # order does not matter
    torch.testing.assert_close(a, swapped, rtol=1e-3, atol=1e-5)
    other = e.explain(x, ids=["c", "d"]).maps
    assert not torch.allclose(a, other)
    cfg = dict(FAST[method], seed=5)
    reseeded = make_explainer(method, f, generator=generator, config=cfg).explain(x, ids=["a", "b"])
    assert not torch.allclose(a, reseeded.maps)


def test_registry_errors(model, generator):
    with pytest.raises(ValueError, match="unknown method"):
        make_explainer("lime", model)
    with pytest.raises(ValueError, match="generator"):
        make_explainer("medxgan", model)
    with pytest.raises(ValueError, match="box_prior"):
        make_explainer("box_prior", model)
    with pytest.raises(ValidationError):
        make_explainer("ig", model, config={"n_stepz": 3})
    with pytest.raises(ValidationError):
        make_explainer("medxgan", model, generator=generator, config={"inversion": {"x": 1}})
    e = make_explainer("gradcam", model)
    with pytest.raises(ValueError, match="positive-class"):
        e.explain(torch.rand(2, 1, 32, 32), targets=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        e.explain(torch.rand(2, 32, 32))
    ones = torch.tensor([1, 1])
    assert e.explain(torch.rand(2, 1, 32, 32), targets=ones).maps.shape == (2, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method, images, monkeypatch):
    from tests.explain.conftest import SmallCNN, TinyGenerator
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)   # compare fp32 with fp32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    f, G = SmallCNN().eval(), TinyGenerator().eval()
    cpu = _explainer(method, f, G).explain(images[:3], ids=["a", "b", "c"])
    gpu = _explainer(method, f.cuda(), G.cuda()).explain(images[:3].cuda(), ids=["a", "b", "c"])
    assert gpu.maps.is_cuda
    scale = float(cpu.maps.abs().max()) + 1e-12
    torch.testing.assert_close(gpu.maps.cpu(), cpu.maps, rtol=1e-2, atol=1e-2 * scale)
