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


class SquaredWindow(nn.Module):
    """logit = 40 (mean of x^2 in f's window - 0.1) plus a small random CNN's logit: the
    squares of :func:`_images` are positive, the background negative; non-linear, so every
    image's gradient is its own."""

    threshold = 0.5

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.window = WindowMean()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(),
                                 nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 1))

    def forward(self, x):
        sq = self.window(x * x) / 40 + 0.26                   # the window's mean of x^2
        return 40 * (sq - 0.1) + 0.1 * self.net(x)[:, 0]


def test_gradient_and_curve_passes_keep_to_the_budget_and_give_the_same_maps():
    """IG, SmoothGrad (saliency and IG), occlusion, Grad-CAM, counterfactual IG (its search
    starts from Grad-CAM) and the deletion / insertion curves put at most the budget's images
    through f per pass on the CPU, forward and backward, and give the maps and AUCs of the
    configured passes."""
    from medxgan.explain.base import make_explainer
    from medxgan.generators.inpaint.family import InpaintGenerator
    from medxgan.metrics.faithfulness import deletion_auc, insertion_auc

    x, _ = _images()
    x = torch.cat([x] * 3)                                    # (12, 1, S, S)
    f = Recording(SquaredWindow().eval())
    G = InpaintGenerator(BackgroundFill(), S)
    methods = {"ig": {"n_steps": 8}, "smoothgrad": {"nt_samples": 4, "nt_samples_batch_size": 2},
               "occlusion": {"window": 8, "stride": 8, "perturbations_per_eval": 4},
               "counterfactual_ig": {"n_points": 9, "batch_size": 64}, "gradcam": {}}
    sg_ig = {"base": "ig", "nt_samples": 2, "ig_steps": 4}
    m = torch.rand(12, S, S)

    def run():
        out = {k: make_explainer(k, f, generator=G if k == "counterfactual_ig" else None,
                                 config=c).explain(x).maps for k, c in methods.items()}
        out["smoothgrad_ig"] = make_explainer("smoothgrad", f, config=sg_ig).explain(x).maps
        out["curves"] = torch.stack([deletion_auc(f, x, m, steps=6),
                                     insertion_auc(f, x, m, steps=6)])
        return out

    with cpu_execution(batch_pixels=3 * S * S):
        small = run()
    assert max(f.sizes) == 3
    f.sizes.clear()
    with cpu_execution(batch_pixels=None):
        whole = run()
    assert max(f.sizes) > 3
    for k in small:
        assert torch.allclose(small[k], whole[k], atol=1e-6, rtol=1e-5), k
    assert small["ig"].abs().sum() > 0 and small["counterfactual_ig"].abs().sum() > 0


def test_the_classifier_evaluation_keeps_to_the_budget(tmp_path):
    """``evaluate`` (every epoch's validation and the final val / test metrics) reads 256
    images at a time but puts at most the budget's images through the model per pass, with
    the same AUROC and accuracy."""
    from bench._common import phantom_cohort
    from medxgan.classifiers.small_cnn import build_model
    from medxgan.classifiers.train import evaluate
    from medxgan.cohort.reader import Cohort

    phantom_cohort(str(tmp_path / "c"), "phantom-cxr", 60, size=32, seed=0)
    cohort = Cohort(str(tmp_path / "c"))
    torch.manual_seed(0)
    model = Recording(build_model("small_cnn", in_channels=1, num_outputs=1))
    # the model's own passes (with channels-last on they go through its copy, recorded there)
    with cpu_execution(channels_last=False, batch_pixels=5 * 32 * 32):
        small = evaluate(model, cohort, "test", 32)
    assert max(model.sizes) == 5
    model.sizes.clear()
    with cpu_execution(channels_last=False, batch_pixels=None):
        whole = evaluate(model, cohort, "test", 32)
    assert max(model.sizes) == whole["n"] > 5
    assert small == whole


def test_an_in_filler_training_step_in_passes_has_the_batch_loss_and_gradient():
    """``train_inpainter``'s step on the CPU: a batch larger than the budget goes through the
    U-Net in budget-sized passes, with the loss, its parts and the gradient of the whole batch
    (up to float rounding)."""
    from medxgan.generators.inpaint.inpainter import _step_loss

    torch.manual_seed(0)
    net = Inpainter(base=4, depth=2)
    sizes = []
    net.down[0][0].register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]))
    x = torch.rand(7, 1, 32, 32)
    m = (torch.rand(7, 1, 32, 32) > 0.7).float()
    got = {}
    for name, budget in (("passes", 3 * 32 * 32), ("whole", None)):
        net.zero_grad()
        sizes.clear()
        with cpu_execution(batch_pixels=budget):
            loss, parts = _step_loss(net, x, m, 0.1)
        got[name] = (loss, parts, [p.grad.clone() for p in net.parameters()], max(sizes))
    assert got["passes"][3] == 3 and got["whole"][3] == 7
    assert abs(got["passes"][0] - got["whole"][0]) < 1e-6
    for k in ("l1_in", "l1_out"):
        assert abs(got["passes"][1][k] - got["whole"][1][k]) < 1e-6
    for a, b in zip(got["passes"][2], got["whole"][2]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in got["whole"][2])


class SmallConvNet(nn.Module):
    """conv - BN - ReLU - conv - pool - linear: a classifier with 4-D weights to convert."""

    threshold = 0.5

    def __init__(self, view_head: bool = False, layout_flag: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                                      nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Linear(4, 1)
        self.view_head, self.layout_flag = view_head, layout_flag

    def forward(self, x):
        h = self.features(x)                                  # (B, 4, H, W)
        if self.view_head:   # .view of the activations: NCHW only (channels-last raises)
            return h.view(len(x), -1).mean(1)
        out = self.head(h.mean((2, 3)))[:, 0]
        return out + float(h.is_contiguous()) if self.layout_flag else out


def _is_channels_last(w: torch.Tensor) -> bool:
    return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def test_the_inference_copy_is_channels_last_computes_what_f_does_and_leaves_f_alone():
    from medxgan.cpu import inference_copy

    x, _ = _images()
    f = SmallConvNet().eval()
    g = inference_copy(f, x)
    assert g is not f and _is_channels_last(g.features[3].weight)
    assert not _is_channels_last(f.features[3].weight)
    with torch.no_grad():
        assert torch.allclose(g(x), f(x), atol=1e-6)
    assert not g.training and g.threshold == f.threshold
    assert inference_copy(g, x) is g                          # a copy of a copy is the copy
    assert inference_copy(f, x) is g                          # made once per classifier
    with torch.no_grad():
        f.head.weight.add_(1.0)                               # changed in place: copied again
        g2 = inference_copy(f, x)
        assert g2 is not g and torch.allclose(g2(x), f(x), atol=1e-6)
    fresh = SmallConvNet().eval()
    g3 = inference_copy(fresh, x)
    fresh.head.weight.data = fresh.head.weight.data + 1.0    # replaced, not changed in place
    with torch.no_grad():
        g4 = inference_copy(fresh, x)
        assert g4 is not g3 and torch.allclose(g4(x), fresh(x), atol=1e-6)
    with cpu_execution(channels_last=False):
        assert inference_copy(f, x) is f                      # the tuning off
    f.train()
    assert inference_copy(f, x) is f                          # train mode: BN updates f's own
    f.eval()
    assert inference_copy(WindowMean(), x).__class__ is WindowMean   # no weights: as it came
    broken = SmallConvNet(view_head=True).eval()              # the copy raises
    assert inference_copy(broken, x) is broken
    sensitive = SmallConvNet(layout_flag=True).eval()         # the copy computes otherwise
    assert inference_copy(sensitive, x) is sensitive


def test_the_search_passes_go_through_the_copy_and_give_the_same_counterfactuals():
    """With the tuning on, f itself sees only the copy's probe; the masks and in-fillings are
    those of the search through f (the copy differs by float rounding only)."""
    x, _ = _images()
    f = clf = Recording(SquaredWindow()).eval()
    r = search_counterfactual(x, clf, BackgroundFill(), patch_sizes=(12, 8), area_cap=0.3)
    seen_on = list(f.sizes)
    f.sizes.clear()
    with cpu_execution(channels_last=False):
        r0 = search_counterfactual(x, clf, BackgroundFill(), patch_sizes=(12, 8), area_cap=0.3)
    assert len(seen_on) == 1 and len(f.sizes) > 1             # on: the probe only
    assert torch.equal(r.mask, r0.mask) and torch.allclose(r.x_neg, r0.x_neg)
    assert torch.allclose(r.p_neg, r0.p_neg, atol=1e-6) and bool(r.flipped[:3].all())


def test_no_grad_classifier_passes_go_through_the_copy_with_the_same_values():
    """``probabilities``, ``positive_probability`` and the deletion / insertion curves put
    their passes through f's copy (f itself sees the probe only) and give f's values."""
    from medxgan.metrics.ablation import positive_probability
    from medxgan.metrics.faithfulness import deletion_auc, insertion_auc

    x, _ = _images()
    x = torch.cat([x] * 4)                                    # (16, 1, S, S)
    f = Recording(SmallConvNet()).eval()
    m = torch.rand(16, S, S)

    def run():
        return torch.cat([probabilities(f, x).double(), positive_probability(f, x),
                          deletion_auc(f, x, m, steps=4), insertion_auc(f, x, m, steps=4)])

    on = run()
    assert f.sizes and max(f.sizes) <= 2                      # the probe, once per copy made
    f.sizes.clear()
    with cpu_execution(channels_last=False):
        off = run()
    assert max(f.sizes) > 2
    assert torch.allclose(on, off, atol=1e-6)
