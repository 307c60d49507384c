"""ClassifierSpec / load_classifier / AuditedClassifier: every input kind gives the raw model's
probabilities; mismatches and unsafe files are refused with one-line errors."""

from __future__ import annotations

import os
import pickle

import pydantic
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from medxgan.classifiers import AuditedClassifier, default_target_layer, load_classifier
from medxgan.config.classifier import ClassifierLoadError, ClassifierSpec
from medxgan.classifiers.small_cnn import SmallCNN, build_model, resnet18_1ch


def _save_state(model: nn.Module, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


def _save_script(model: nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    return str(path)


class _Softmax(nn.Module):
    def __init__(self, net: nn.Module, sigmoid: bool = False):
        super().__init__()
        self.net, self.sigmoid = net, sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return torch.sigmoid(out) if self.sigmoid else torch.softmax(out, 1)


def _raw_prob(net: nn.Module, x01: torch.Tensor, *, channels: int, size: int, mean: float,
              std: float, output: str, pos: int) -> torch.Tensor:
    """What the raw network says for the positive class, computed by hand."""
    x = x01
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    x = ((x - mean) / std).repeat(1, channels, 1, 1)
    with torch.no_grad():
        out = net.eval()(x)
    if output == "one_logit":
        return torch.sigmoid(out[:, 0])
    if output == "two_logits":
        return torch.softmax(out, 1)[:, pos]
    return out[:, pos]


CASES = [
    # kind, arch, channels, input size, output, columns, positive index, normalisation
    ("torchscript", None, 1, 32, "one_logit", 1, 0, "unit"),
    ("torchscript", None, 1, 32, "two_logits", 2, 1, {"mean": 0.4, "std": 0.2}),
    ("torchscript", None, 1, 32, "two_logits", 2, 0, "unit"),
    ("torchscript", None, 3, 32, "probabilities", 2, 1, "minus_one_one"),
    ("torchscript", None, 1, 16, "probabilities", 1, 0, "unit"),   # cohort 32 px resized
    ("torchvision", "resnet18", 1, 32, "one_logit", 1, 0, "unit"),
    ("torchvision", "resnet18", 3, 32, "two_logits", 2, 1, {"mean": 0.5, "std": 0.25}),
    ("small_cnn", "small_cnn", 1, 32, "one_logit", 1, 0, "minus_one_one"),
]


@pytest.mark.parametrize("kind,arch,ch,size,output,cols,pos,norm", CASES)
def test_every_kind_gives_the_raw_models_probability(tmp_path, kind, arch, ch, size, output,
                                                     cols, pos, norm):
    torch.manual_seed(0)
    if kind == "torchscript":
        net = SmallCNN(ch, cols, widths=(4, 8, 8))
        if output == "probabilities":
            net = _Softmax(net, sigmoid=cols == 1)
        path = _save_script(net, tmp_path / "m.ts")
    else:
        net = build_model(arch, ch, cols)
        with torch.no_grad():  # non-trivial BatchNorm statistics
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        path = _save_state(net, tmp_path / "m.pt")
    spec = ClassifierSpec(kind=kind, path=path, arch=arch, in_channels=ch, input_size=size,
                          normalisation=norm, output=output, positive_index=pos)
    f = load_classifier(spec)
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    mean, std = ((norm["mean"], norm["std"]) if isinstance(norm, dict)
                 else ((0.5, 0.5) if norm == "minus_one_one" else (0.0, 1.0)))
    want = _raw_prob(net, x, channels=ch, size=size, mean=mean, std=std, output=output, pos=pos)
    got = f.prob(x)
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    assert f.spec.num_outputs == cols
    assert len(f.sha256) == 64
    with open(path, "rb") as fh:
        import hashlib
        assert f.sha256 == hashlib.sha256(fh.read()).hexdigest()


def test_spec_from_yaml_resolves_relative_paths_and_forbids_unknown_keys(tmp_path):
    torch.manual_seed(0)
    _save_state(SmallCNN(1, 1), tmp_path / "w.pt")
    (tmp_path / "spec.yaml").write_text(
        "kind: small_cnn\npath: w.pt\ninput_size: 32\nthreshold: 0.3\n")
    f = load_classifier(str(tmp_path / "spec.yaml"))
    assert f.threshold == 0.3 and f.spec.path == f"{tmp_path}/w.pt"
    text = ClassifierSpec.from_yaml(f.spec.to_yaml())
    assert text == f.spec
    with pytest.raises(pydantic.ValidationError):
        ClassifierSpec.from_yaml("kind: small_cnn\npath: w.pt\ncolour: blue\n")
    with pytest.raises(pydantic.ValidationError):
        ClassifierSpec(kind="torchvision", path="x.pt")           # arch missing


def test_wrapper_is_frozen_and_passes_gradients_to_inputs(tmp_path):
    torch.manual_seed(0)
    f = load_classifier(ClassifierSpec(kind="small_cnn", path=_save_state(
        SmallCNN(1, 1), tmp_path / "w.pt"), input_size=32))
    assert not any(p.requires_grad for p in f.parameters())
    f.train()
    assert not f.training and not f.model.training
    x = torch.rand(3, 1, 32, 32, requires_grad=True)
    f(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in f.parameters())
    assert f.target_layer() is f.model.features[-1]               # last block's ReLU


def test_target_layer_by_name_and_torchvision_default(tmp_path):
    torch.manual_seed(0)
    path = _save_state(resnet18_1ch(2), tmp_path / "r.pt")
    f = load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18", path=path,
                                       input_size=32, output="two_logits"))
    assert f.target_layer() is f.model.layer4[1]          # the last block's output (post-ReLU)
    f2 = load_classifier(ClassifierSpec(kind="torchvision", arch="resnet18", path=path,
                                        input_size=32, output="two_logits",
                                        target_layer="layer3"))
    assert f2.target_layer() is f2.model.layer3


def test_default_target_layer_is_the_last_blocks_activation():
    cnn = SmallCNN(1, 1, widths=(4, 8, 8), convs_per_block=2)
    assert default_target_layer(cnn) is cnn.features[-1]
    assert isinstance(cnn.features[-1], nn.ReLU)
    # no ``features`` / ``layer4``: the activation chain right after the last Conv2d
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 1))
    assert default_target_layer(plain) is plain[5]
    bare = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert default_target_layer(bare) is bare[0]
    assert default_target_layer(nn.Linear(3, 1)) is None


class _FlatNet(nn.Module):
    """Conv + flatten + linear: only works at 32 px and 1 channel."""

    def __init__(self, outputs: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 32 * 32, outputs)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@pytest.mark.parametrize("change,needle", [
    ({"input_size": 64}, "input"),
    ({"in_channels": 3}, "input"),
    ({"output": "two_logits"}, "output"),
    ({"output": "probabilities"}, "outside [0, 1]"),
])
def test_mismatch_is_one_clear_line_before_any_work(tmp_path, change, needle):
    torch.manual_seed(0)
    path = _save_script(_FlatNet(1), tmp_path / "flat.ts")
    spec = ClassifierSpec(**{"kind": "torchscript", "path": path, "input_size": 32, **change})
    with pytest.raises(ValueError) as info:
        load_classifier(spec)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and path in msg


def test_state_dict_of_another_architecture_is_refused(tmp_path):
    path = _save_state(SmallCNN(1, 1), tmp_path / "w.pt")
    with pytest.raises(ClassifierLoadError, match="does not fit") as info:
        load_classifier(ClassifierSpec(kind="small_cnn", path=path, in_channels=3))
    assert "\n" not in str(info.value)
    with pytest.raises(ClassifierLoadError, match="does not exist"):
        load_classifier(ClassifierSpec(kind="small_cnn", path=str(tmp_path / "nope.pt")))


class _Evil:
    """Unpickling this would create a marker folder (it must never happen)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("how", ["torch_save", "plain_pickle", "full_module"])
def test_pickled_full_model_is_refused_without_unpickling(tmp_path, how):
    marker = tmp_path / "MARKER"
    path = tmp_path / "model.pt"
    if how == "torch_save":
        torch.save({"conv.weight": torch.zeros(1), "payload": _Evil(str(marker))}, path)
    elif how == "plain_pickle":
        path.write_bytes(pickle.dumps(_Evil(str(marker))))
    else:
        torch.save(SmallCNN(1, 1), path)
    assert not marker.exists()
    with pytest.raises(ClassifierLoadError, match="refused") as info:
        load_classifier(ClassifierSpec(kind="small_cnn", path=str(path)))
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_torchscript_kind_rejects_a_state_dict(tmp_path):
    path = _save_state(SmallCNN(1, 1), tmp_path / "w.pt")
    with pytest.raises(ClassifierLoadError, match="not a TorchScript"):
        load_classifier(ClassifierSpec(kind="torchscript", path=path))


def test_loads_through_a_store_url(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN(1, 1)
    _save_state(net, tmp_path / "w.pt")
    f = load_classifier(ClassifierSpec(kind="small_cnn", path=f"file://{tmp_path}/w.pt",
                                       input_size=32))
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(f(x), net.eval()(x)[:, 0])
    assert isinstance(f, AuditedClassifier) and isinstance(torchvision.__version__, str)
