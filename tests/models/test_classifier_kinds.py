"""The classifiers hospitals deploy (issue #16): real architectures built without downloaded
weights (torchvision DenseNet-121 / ResNet-18 with ImageNet normalisation, TorchXRayVision's
DenseNet with its preset), named multi-label outputs chosen by finding (with synonyms), ONNX
through onnx2torch checked against onnxruntime, resize modes, and one-line refusals."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pydantic
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from medxgan.explain.gradcam import GradCAMExplainer, find_target_layer
from medxgan.explain.ig import IGExplainer
from medxgan.findings import FindingError, match_finding
from medxgan.classifiers import IMAGENET_MEAN, IMAGENET_STD, AuditedClassifier, load_classifier
from medxgan.config.classifier import ClassifierLoadError, ClassifierSpec
from medxgan.classifiers.small_cnn import SmallCNN

NIH = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
       "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
       "Hernia"]                                                       # CheXNet's 14 outputs


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _bn_stats(net: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so eval mode matters."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _imagenet_input(x: torch.Tensor) -> torch.Tensor:
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.repeat(1, 3, 1, 1) - mean) / std


# ----------------------------------------------------------------------------- findings
def test_finding_synonyms_and_exact_names_win():
    assert match_finding("Lung Opacity", NIH) == NIH.index("Pneumonia")       # RSNA -> NIH
    assert match_finding("pneumonia", NIH) == NIH.index("Pneumonia")
    assert match_finding("Pleural Effusion", NIH) == NIH.index("Effusion")    # CheXpert -> NIH
    assert match_finding("effusion", ["Pleural Effusion", "Edema"]) == 0      # NIH -> CheXpert
    assert match_finding("infiltrate", NIH) == NIH.index("Infiltration")
    assert match_finding("pleural thickening", NIH) == NIH.index("Pleural_Thickening")
    xrv = ["Pneumonia", "Lung Opacity"]                                         # both present
    assert match_finding("lung opacity", xrv) == 1 and match_finding("PNEUMONIA", xrv) == 0
    with pytest.raises(FindingError) as info:
        match_finding("Covid", NIH)
    assert "not among" in str(info.value) and "\n" not in str(info.value)


def test_findings_module_is_torch_free():
    code = "import sys, medxgan.findings; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- spec keys
def test_presets_and_legacy_output_keys_map_onto_the_new_ones():
    s = ClassifierSpec(kind="torchvision", arch="resnet18", path="w.pt", preset="imagenet",
                       activation="softmax", num_classes=3, positive_index=0)
    assert (s.in_channels, s.input_size, s.num_outputs) == (3, 224, 3)
    assert s.normalisation.mean == list(IMAGENET_MEAN)
    x = ClassifierSpec(kind="torchxrayvision", arch="densenet121-res224-all")
    assert (x.preset, x.in_channels, x.input_size, x.resize, x.activation) == \
        ("torchxrayvision", 1, 224, "crop", "sigmoid")
    assert x.normalisation.mean == 0.5 and x.normalisation.std == 1 / 2048
    assert ClassifierSpec(kind="torchxrayvision", arch="densenet121-res224-all",
                          input_size=512).input_size == 512           # the spec's own key wins
    for output, act, cols in (("one_logit", "logit", 1), ("two_logits", "softmax", 2)):
        s = ClassifierSpec(kind="torchscript", path="m.ts", output=output)
        assert (s.activation, s.num_outputs, s.positive_index) == (act, cols, cols - 1)
        assert ClassifierSpec.from_yaml(s.to_yaml()) == s
    assert ClassifierSpec(kind="torchscript", path="m.ts").output == "one_logit"
    s = ClassifierSpec(kind="onnx", path="m.onnx", outputs=NIH, finding="Lung Opacity",
                       activation="sigmoid")
    assert s.positive_index == 6 and s.output_name == "Pneumonia"
    assert ClassifierSpec.from_yaml(s.to_yaml()) == s
    bad = [dict(outputs=NIH, finding="Covid", activation="sigmoid"),           # not a name
           dict(outputs=NIH, activation="sigmoid"),                            # no choice
           dict(outputs=NIH),                                                  # no activation
           dict(outputs=NIH, finding="Effusion", positive_index=0, activation="sigmoid"),
           dict(output="two_logits", activation="sigmoid"),
           dict(normalisation={"mean": [0.1, 0.2, 0.3], "std": 1.0}),          # 1 channel
           dict(activation="softmax", num_outputs=1)]
    for kw in bad:
        with pytest.raises(pydantic.ValidationError):
            ClassifierSpec(kind="onnx", path="m.onnx", **kw)


# ----------------------------------------------------------------------------- torchvision
@pytest.mark.parametrize("arch", ["densenet121", "resnet18"])
def test_torchvision_imagenet_models_with_named_outputs(tmp_path, arch):
    torch.manual_seed(0)
    if arch == "densenet121":   # CheXNet: DenseNet-121, 14 sigmoid outputs, NIH names
        net = _bn_stats(torchvision.models.densenet121(weights=None, num_classes=14))
        extra = dict(outputs=NIH, finding="Pleural Effusion", activation="sigmoid")
        k, layer = NIH.index("Effusion"), "features.norm5"
    else:                        # a 3-class softmax model; class 2 against the rest
        net = _bn_stats(torchvision.models.resnet18(weights=None, num_classes=3))
        extra = dict(num_classes=3, positive_index=2, activation="softmax")
        k, layer = 2, "layer4.1"
    torch.save(net.state_dict(), tmp_path / "w.pt")
    f = load_classifier(ClassifierSpec(kind="torchvision", arch=arch, path=str(tmp_path / "w.pt"),
                                       preset="imagenet", **extra))
    x = _images(3, 32)
    with torch.no_grad():
        raw = net(_imagenet_input(x))
    if arch == "densenet121":
        want = raw[:, k]
    else:
        p = torch.softmax(raw.double(), 1)[:, k]
        want = (torch.log(p) - torch.log1p(-p)).float()
    torch.testing.assert_close(f(x), want, atol=1e-4, rtol=1e-4)
    assert f.spec.in_channels == 3 and f.target_layer_name() == layer
    if arch == "resnet18":  # Grad-CAM's layer option takes the spec's naming and the wrapper's
        a = GradCAMExplainer(f, {"layer": layer}).explain(x).maps
        b = GradCAMExplainer(f, {"layer": f"model.{layer}"}).explain(x).maps
        torch.testing.assert_close(a, b)
        assert find_target_layer(f, layer) is f.model.layer4[1]


def test_one_channel_stem_is_taken_from_the_weights(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=1)
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    f = load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18",
                                       path=str(tmp_path / "w.pt"), input_size=32))
    assert f.spec.in_channels == 1
    x = _images(2, 32)
    torch.testing.assert_close(f(x), net.eval()(x)[:, 0])
    with pytest.raises(ClassifierLoadError, match="first conv takes 1") as info:
        load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18", preset="imagenet",
                                       path=str(tmp_path / "w.pt")))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- TorchScript / ONNX
class _MultiLabel(nn.Module):
    """A small multi-label CNN with named sigmoid outputs (NIH names)."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN(1, 5, widths=(4, 8, 8))
        self.pathologies = ["Atelectasis", "Effusion", "Infiltration", "Pneumonia", "Nodule"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    """(eager model, TorchScript path, ONNX path with a dynamic batch, ONNX path with batch 1)."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ml")
    m = _bn_stats(_MultiLabel())
    x0 = torch.zeros(1, 1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(m), str(d / "ml.ts"))
        torch.onnx.export(m, (x0,), str(d / "ml.onnx"), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
        torch.onnx.export(m, (x0,), str(d / "ml1.onnx"), dynamo=False, opset_version=17)
    return m, str(d / "ml.ts"), str(d / "ml.onnx"), str(d / "ml1.onnx")


def test_multilabel_torchscript_names_and_onnx_give_the_same_logits_and_maps(multilabel):
    m, ts_path, onnx_path, onnx1_path = multilabel
    names = list(m.pathologies)
    ts = load_classifier(ClassifierSpec(kind="torchscript", path=ts_path, input_size=32,
                                        activation="sigmoid", finding="Lung Opacity"))
    assert ts.spec.outputs == names and ts.spec.output_name == "Pneumonia"   # from the model
    on = load_classifier(ClassifierSpec(kind="onnx", path=onnx_path, input_size=32,
                                        activation="sigmoid", outputs=names,
                                        finding="pneumonia"))
    on1 = load_classifier(ClassifierSpec(kind="onnx", path=onnx1_path, input_size=32,
                                         activation="sigmoid", outputs=names,
                                         finding="pneumonia"))
    x = _images(4, 48)                                   # cohort 48 px, model 32 px
    with torch.no_grad():
        want = m(F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False,
                               antialias=True))[:, 3]
    for f in (ts, on, on1):
        torch.testing.assert_close(f(x), want, atol=1e-5, rtol=1e-5)
    # gradients flow through the conversion: IG maps equal the TorchScript path's
    ig = {"n_steps": 8}
    torch.testing.assert_close(IGExplainer(on, ig).explain(x).maps,
                               IGExplainer(ts, ig).explain(x).maps, atol=1e-5, rtol=1e-4)
    # Grad-CAM (a hook on the last ReLU; ScriptModules take no hooks, so the eager model
    # stands for the TorchScript one): the same maps
    eager = AuditedClassifier(m, on.spec.model_copy(update={"kind": "torchscript"}))
    assert on.target_layer_name().endswith("features/10/Relu")
    assert eager.target_layer_name() == "net.features.10"
    torch.testing.assert_close(GradCAMExplainer(on).explain(x).maps,
                               GradCAMExplainer(eager).explain(x).maps, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="TorchScript modules take no forward hooks") as info:
        GradCAMExplainer(ts).explain(x)                 # one line, not a RuntimeError deep down
    assert "\n" not in str(info.value)
    x.requires_grad_(True)
    on(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_onnx_that_differs_from_onnxruntime_is_refused(multilabel, monkeypatch):
    import onnxruntime

    _, _, onnx_path, _ = multilabel
    run = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run",
                        lambda self, *a, **k: [o + 1e-3 for o in run(self, *a, **k)])
    spec = ClassifierSpec(kind="onnx", path=onnx_path, input_size=32, activation="sigmoid",
                          outputs=["a", "b", "c", "d", "e"], positive_index=3)
    with pytest.raises(ClassifierLoadError, match="differs from onnxruntime") as info:
        load_classifier(spec)
    assert "\n" not in str(info.value) and "tolerance 0.0001" in str(info.value)
    load_classifier(spec.model_copy(update={"onnx_tolerance": 1e-2}))     # a stated tolerance
    with pytest.raises(ClassifierLoadError, match="input_size=64") as info:
        load_classifier(ClassifierSpec(kind="onnx", path=onnx_path, input_size=64,
                                       activation="sigmoid", num_outputs=5, positive_index=3))
    with pytest.raises(ClassifierLoadError, match="not an ONNX model"):
        load_classifier(ClassifierSpec(kind="onnx", path=multilabel[1], activation="sigmoid",
                                       num_outputs=5, positive_index=3, input_size=32))


def test_finding_not_among_the_model_names_is_one_line(multilabel):
    _, ts_path, _, _ = multilabel
    with pytest.raises(ClassifierLoadError, match="not among the classifier's outputs") as info:
        load_classifier(ClassifierSpec(kind="torchscript", path=ts_path, input_size=32,
                                       activation="sigmoid", finding="Cardiomegaly"))
    assert "\n" not in str(info.value)
    with pytest.raises(ClassifierLoadError, match="the model names 5 outputs, the spec 3"):
        load_classifier(ClassifierSpec(kind="torchscript", path=ts_path, input_size=32,
                                       activation="sigmoid", outputs=["a", "b", "c"],
                                       positive_index=0))
    with pytest.raises(ClassifierLoadError, match="model gives 5 output column"):
        load_classifier(ClassifierSpec(kind="onnx", path=multilabel[2], input_size=32,
                                       activation="sigmoid", outputs=["a", "b", "c"],
                                       positive_index=0))


# ----------------------------------------------------------------------------- TorchXRayVision
def _xrv_densenet():
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(0)
    m = xrv.models.DenseNet(weights=None)
    # a state_dict saved from a model with weights loaded carries its op_threshs
    m.op_threshs = torch.tensor(xrv.models.model_urls["all"]["op_threshs"])
    return xrv, m


def test_torchxrayvision_densenet_with_its_preset(tmp_path):
    xrv, m = _xrv_densenet()
    torch.save(m.state_dict(), tmp_path / "xrv.pt")
    spec = ClassifierSpec(kind="torchxrayvision", arch="densenet121-res224-all",
                          path=str(tmp_path / "xrv.pt"), finding="Lung Opacity")
    f = load_classifier(spec)
    labels = xrv.models.model_urls["all"]["labels"]
    assert f.spec.outputs == labels and f.spec.output_name == "Lung Opacity"
    assert f.target_layer_name() == "features.norm5"
    x = _images(2, 64)
    m.op_threshs = None                                  # the raw logits
    with torch.no_grad():
        xx = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        want = m.eval()(xx * 2048 - 1024)[:, labels.index("Lung Opacity")]
    torch.testing.assert_close(f(x), want, atol=1e-3, rtol=1e-4)
    # non-square: TorchXRayVision's centre crop of the long side
    wide = torch.rand(1, 1, 64, 96)
    torch.testing.assert_close(f.preprocess(wide), f.preprocess(wide[..., 16:80]))
    with pytest.raises(ClassifierLoadError, match="not a TorchXRayVision DenseNet name"):
        load_classifier(spec.model_copy(update={"arch": "resnet50-res512-all"}))


def test_torchxrayvision_cache_file_never_downloads_and_refuses_code(tmp_path, monkeypatch):
    import os
    import pickle

    xrv, m = _xrv_densenet()
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path) + "/")
    spec = ClassifierSpec(kind="torchxrayvision", arch="densenet121-res224-nih",
                          finding="Effusion")
    with pytest.raises(ClassifierLoadError, match="never downloaded") as info:
        load_classifier(spec)
    assert "\n" not in str(info.value)
    name = os.path.basename(xrv.models.model_urls["densenet121-res224-nih"]["weights_url"])
    torch.save(m, tmp_path / name)                  # the package's cache holds a full model
    f = load_classifier(spec)
    assert f.spec.path == str(tmp_path / name) and f.spec.output_name == "Effusion"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "MARKER"),))

    (tmp_path / name).write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ClassifierLoadError, match="refused"):
        load_classifier(spec)
    assert not (tmp_path / "MARKER").exists()


# ----------------------------------------------------------------------------- resize
@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
def test_resize_modes_are_differentiable(mode):
    net = SmallCNN(1, 1, widths=(4, 8, 8)).eval()
    f = AuditedClassifier(net, ClassifierSpec(kind="small_cnn", path="memory://x",
                                              input_size=16, resize=mode))
    x = torch.rand(2, 1, 16, 32, requires_grad=True)
    net_in = f.preprocess(x)
    assert net_in.shape == (2, 1, 16, 16)
    if mode == "pad":       # black bands above and below
        ref = F.interpolate(F.pad(x, (0, 0, 8, 8)), size=(16, 16), mode="bilinear",
                            align_corners=False, antialias=True)
    elif mode == "crop":    # the centre 16 x 16
        ref = x[..., 8:24]
    else:
        ref = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False,
                            antialias=True)
    torch.testing.assert_close(net_in, ref)
    f(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_onnx_with_deduplicated_weights_converts(tmp_path):
    """Default BatchNorm statistics fold into equal zero conv biases, which the exporter
    shares through Identity nodes; they are inlined before onnx2torch."""
    torch.manual_seed(0)
    m = _MultiLabel().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 1, 32, 32),), str(tmp_path / "d.onnx"),
                          dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "b"}})
    f = load_classifier(ClassifierSpec(kind="onnx", path=str(tmp_path / "d.onnx"),
                                       input_size=32, activation="sigmoid",
                                       outputs=list(m.pathologies), finding="Nodule"))
    x = _images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(f(x), m(x)[:, 4], atol=1e-5, rtol=1e-5)
