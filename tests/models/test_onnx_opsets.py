"""ONNX files as today's PyTorch exports them (issue #23): ``torch.onnx.export(...,
dynamo=False)`` at the pinned torch's default opset (20 in torch 2.14, whose ``Constant``,
``Identity`` and ``ReduceMean`` onnx2torch 1.5 has no converter for) and at opset 17. A
multi-label, 3-channel, ImageNet-normalised model: both files pass ``check-classifier``, give
the TorchScript twin's logits and its IG maps through the audit's one pipeline
(``explain_batch``), and onnxruntime is compared with the *original* file."""

from __future__ import annotations

import warnings

import onnx
import pytest
import torch
from torch import nn

from flows.cli import main as cli_main
from medxgan.explain.batch import explain_batch
from medxgan.explain.gradcam import GradCAMExplainer
from medxgan.classifiers.check import check_classifier, format_check
from medxgan.classifiers import load_classifier
from medxgan.config.classifier import ClassifierLoadError, ClassifierSpec
from medxgan.classifiers.kinds import ONNX2TORCH_OPSET
from medxgan.classifiers.small_cnn import SmallCNN

NAMES = ["Atelectasis", "Effusion", "Infiltration", "Pneumonia", "Nodule"]


class _MultiLabel3(nn.Module):
    """A small 3-channel multi-label CNN (a CheXNet stand-in at 32 px)."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN(3, len(NAMES), widths=(4, 8, 8))
        self.pathologies = list(NAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _default_opset() -> int:
    from torch.onnx import _constants

    return int(_constants.ONNX_DEFAULT_OPSET)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """{"model", "ts", "default", "17"}: the eager model, its TorchScript file and two ONNX
    files (dynamic batch), one at the exporter's default opset and one at 17."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("opsets")
    m = _MultiLabel3().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    x0 = torch.zeros(1, 3, 32, 32)
    out = {"model": m, "ts": str(d / "ml.ts")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(m), out["ts"])
        for name, opset in (("default", None), ("17", 17)):
            path = str(d / f"ml-{name}.onnx")
            kw = {} if opset is None else {"opset_version": opset}
            torch.onnx.export(m, (x0,), path, dynamo=False, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                              **kw)
            out[name] = path
    return out


def _spec(path: str, kind: str = "onnx") -> ClassifierSpec:
    extra = {} if kind == "torchscript" else {"outputs": NAMES}
    return ClassifierSpec(kind=kind, path=path, preset="imagenet", input_size=32,
                          activation="sigmoid", finding="Lung Opacity", **extra)


def _opset(path: str) -> int:
    return next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))


def test_the_default_export_is_a_newer_opset_than_onnx2torch_takes(exported):
    """The case of the issue: without the conversion onnx2torch refuses the default export."""
    from onnx2torch import convert

    from medxgan.classifiers.kinds import _inline_identity_initializers

    assert _opset(exported["default"]) == _default_opset() > ONNX2TORCH_OPSET
    assert _opset(exported["17"]) == 17
    proto = onnx.load(exported["default"])
    _inline_identity_initializers(proto)
    with pytest.raises(NotImplementedError, match="Converter is not implemented"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert(proto)


@pytest.mark.parametrize("which", ["default", "17"])
def test_onnx_of_either_opset_gives_the_torchscript_logits_and_ig_maps(exported, which):
    ts = load_classifier(_spec(exported["ts"], "torchscript"))
    f = load_classifier(_spec(exported[which]))
    assert f.spec.output_name == ts.spec.output_name == "Pneumonia"
    want = {"file": _opset(exported[which]),
            "converted_to": None if which == "17" else ONNX2TORCH_OPSET}
    assert f.model.onnx_opset == want
    x = torch.rand(4, 1, 48, 48, generator=torch.Generator().manual_seed(1))  # cohort 48 px
    with torch.no_grad():
        torch.testing.assert_close(f(x), ts(x), atol=1e-5, rtol=1e-5)
    options = {"ig": {"n_steps": 8}}
    ids = [f"i{k}" for k in range(len(x))]
    a = explain_batch(x, f, None, ["ig"], options, ids=ids)["ig"].maps
    b = explain_batch(x, ts, None, ["ig"], options, ids=ids)["ig"].maps
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert a.abs().sum() > 0
    # Grad-CAM runs on the ONNX route; TorchScript stays refused, naming that route
    assert GradCAMExplainer(f).explain(x).maps.shape == (4, 48, 48)
    with pytest.raises(ValueError, match="as ONNX or a torchvision state_dict") as info:
        GradCAMExplainer(ts).explain(x)
    assert "\n" not in str(info.value)


def test_check_classifier_passes_the_default_export(exported, blob_cohort, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(_spec(exported["default"]).to_yaml())
    assert cli_main(["check-classifier", "--spec", str(spec), "--cohort", blob_cohort,
                     "--split", "", "--max-images", "32"]) == 0
    out = capsys.readouterr().out
    assert (f"ONNX: opset {_default_opset()}, converted to opset {ONNX2TORCH_OPSET} for "
            "onnx2torch; onnxruntime agrees on the original file") in out
    assert "audited output: 'Pneumonia' (column 3 of 5), finding 'Lung Opacity'" in out
    r = check_classifier(str(spec), blob_cohort, None, max_images=32)
    assert format_check(r)[1].startswith("ONNX: opset")
    assert check_classifier(_spec(exported["17"]), blob_cohort, None,
                            max_images=32)["onnx_opset"] == {"file": 17, "converted_to": None}


def test_onnxruntime_is_asked_about_the_original_file(exported, monkeypatch):
    """The agreement check feeds onnxruntime the file as given, not the converted copy."""
    import onnxruntime

    seen = []
    init = onnxruntime.InferenceSession.__init__

    def spy(self, path_or_bytes, *a, **k):
        seen.append(path_or_bytes)
        init(self, path_or_bytes, *a, **k)

    monkeypatch.setattr(onnxruntime.InferenceSession, "__init__", spy)
    load_classifier(_spec(exported["default"]))
    with open(exported["default"], "rb") as fh:
        assert seen == [fh.read()]


def test_a_model_no_route_converts_is_one_line(tmp_path):
    """An operator onnx2torch lacks at every opset: one line naming both attempts."""
    from onnx import TensorProto, helper

    node = helper.make_node("Hardmax", ["x"], ["y"], axis=1)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(model, tmp_path / "h.onnx")
    with pytest.raises(ClassifierLoadError) as info:
        load_classifier(ClassifierSpec(kind="onnx", path=str(tmp_path / "h.onnx"),
                                       num_outputs=2, activation="softmax", positive_index=1))
    msg = str(info.value)
    assert "\n" not in msg and "at opset 20" in msg and "to opset 17" in msg
    assert "opset_version=17" in msg and "h.onnx" in msg
