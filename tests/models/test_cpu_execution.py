"""How batched convolutions run on the CPU (:mod:`medxgan.cpu`): channels-last U-Nets and
cache-sized no-grad batches change how fast, never what is computed."""

from __future__ import annotations

import torch
from torch import nn

from medxgan.cpu import CPU_BATCH_PIXELS, cpu_batch, cpu_execution, fast_layout
from medxgan.explain._torch import probabilities
from medxgan.generators.inpaint.complete import fill_batches
from medxgan.generators.inpaint.inpainter import Inpainter
from medxgan.generators.inpaint.search import search_counterfactual
from tests.explain.test_counterfactual_search import S, BackgroundFill, WindowMean, _images


class Recording(nn.Module):
    """Wraps a module and records the batch size of every call."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.sizes = inner, []
        self.threshold = getattr(inner, "threshold", 0.5)

    def forward(self, x, *rest):
        self.sizes.append(x.shape[0])
        return self.inner(x, *rest)


def test_the_cpu_batch_is_a_pixel_budget_and_gpus_keep_theirs():
    assert CPU_BATCH_PIXELS == 1 << 18
    assert cpu_batch(256, (128, 128), "cpu") == 16
    assert cpu_batch(256, (64, 64), "cpu") == 64
    assert cpu_batch(256, (224, 224), "cpu") == 5
    assert cpu_batch(256, (1024, 1024), "cpu") == 1          # at least one image
    assert cpu_batch(8, (64, 64), "cpu") == 8                 # never more than asked
    assert cpu_batch(256, (128, 128), torch.device("cuda")) == 256
    with cpu_execution(batch_pixels=None):
        assert cpu_batch(256, (128, 128), "cpu") == 256
    assert cpu_batch(256, (128, 128), "cpu") == 16            # restored on exit


def test_fast_layout_is_channels_last_on_the_cpu_only_when_on():
    x = torch.rand(3, 2, 8, 8)
    y = fast_layout(x)
    assert y.stride(1) == 1 and torch.equal(y, x)             # channels innermost, same values
    with cpu_execution(channels_last=False):
        assert fast_layout(x) is x
    assert fast_layout(torch.rand(2, 8, 8)).stride(-1) == 1   # not 4-D: as it came


def test_the_u_net_runs_channels_last_and_gives_the_same_in_filling():
    torch.manual_seed(0)
    g = Inpainter(base=4, depth=2).eval()
    seen = []
    g.down[0][0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].stride(1)))
    x = torch.rand(5, 1, 32, 32)
    m = torch.zeros_like(x)
    m[..., 8:20, 10:24] = 1
    with torch.no_grad():
        a = g(x, m)
        with cpu_execution(channels_last=False):
            b = g(x, m)
    assert seen == [1, 32 * 32]                               # NHWC first, then NCHW
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(a[m == 0], x[m == 0])                  # still only the hole replaced


def test_no_grad_passes_on_the_cpu_take_at_most_the_budget_and_give_the_same_result():
    budget = 3 * S * S                                        # 3 images a pass
    x, _ = _images()
    x = torch.cat([x] * 4)                                    # (16, 1, S, S): 12 positives
    f, g = Recording(WindowMean().eval()), Recording(BackgroundFill())
    with cpu_execution(batch_pixels=budget):
        p = probabilities(f, x)
        r = search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.3)
        filled = fill_batches(g, x, r.mask[:, 0], 256)
    assert f.sizes and max(f.sizes) == 3 and max(g.sizes) == 3
    f.sizes.clear(), g.sizes.clear()
    with cpu_execution(batch_pixels=None):                    # the old 256-image passes
        p0 = probabilities(f, x)
        r0 = search_counterfactual(x, f, g, patch_sizes=(12, 8), area_cap=0.3)
        filled0 = fill_batches(g, x, r0.mask[:, 0], 256)
    assert max(f.sizes) > 3 and max(g.sizes) > 3
    assert torch.allclose(p, p0) and torch.equal(r.mask, r0.mask)
    assert torch.allclose(r.x_neg, r0.x_neg) and torch.allclose(filled, filled0)
    assert bool(r.flipped[x[:, 0].amax((1, 2)) > 0.5].all())


def test_a_batch_dependent_filler_keeps_its_batch():
    """The shortcut search's fixed infills (``_Infill``) draw ROAD's noise for the whole pass:
    cut into smaller passes an image would get other noise. They declare ``batch_dependent``
    and keep the caller's batch, so the CPU budget changes nothing they compute."""
    from medxgan.metrics.shortcut import _Infill

    x, _ = _images()
    x = torch.cat([x] * 4)                                    # (16, 1, S, S)
    m = torch.zeros(16, S, S, dtype=torch.bool)
    m[:, 8:20, 8:20] = True
    road = _Infill("noisy_linear", seed=3)
    assert cpu_batch(256, (S, S), "cpu", road) == 256
    with cpu_execution(batch_pixels=3 * S * S):
        small = fill_batches(road, x, m, 256)
        r = search_counterfactual(x, WindowMean().eval(), road, patch_sizes=(12, 8),
                                  area_cap=0.3)
    with cpu_execution(batch_pixels=None):
        whole = fill_batches(road, x, m, 256)
        r0 = search_counterfactual(x, WindowMean().eval(), road, patch_sizes=(12, 8),
                                   area_cap=0.3)
    assert torch.equal(small, whole)
    assert torch.equal(r.mask, r0.mask) and torch.equal(r.x_neg, r0.x_neg)
