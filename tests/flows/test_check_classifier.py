"""``medxgan check-classifier`` on a small phantom cohort: it prints the audited output,
AUROC, sensitivity / specificity, ECE, speed and the Grad-CAM layer; a constant classifier and
a finding not among the outputs are one clear line, also as the audit's first step."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from flows.cli import main as cli_main
from flows.ingest import ingest_flow
from medxgan.classifiers.check import check_classifier, expected_calibration_error, format_check
from medxgan.config.classifier import ClassifierLoadError
from medxgan.classifiers.small_cnn import SmallCNN
from tests.flows._configs import tiny


@pytest.fixture(scope="module")
def cohort64(prefect_harness, tmp_path_factory) -> str:
    """A 48-image, 64 px phantom chest cohort."""
    url = str(tmp_path_factory.mktemp("check") / "cohort")
    ingest_flow(source="phantom-cxr", out=url, n=48, size=64, seed=2, prevalence=0.5)
    return url


def _small_cnn_spec(tmp_path) -> str:
    torch.manual_seed(0)
    torch.save(SmallCNN(1, 1).state_dict(), tmp_path / "w.pt")
    (tmp_path / "spec.yaml").write_text("kind: small_cnn\npath: w.pt\ninput_size: 64\n")
    return str(tmp_path / "spec.yaml")


class _Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None] * 0 + 0.3


def test_cli_check_prints_the_numbers(cohort64, tmp_path, capsys):
    spec = _small_cnn_spec(tmp_path)
    assert cli_main(["check-classifier", "--spec", spec, "--cohort", cohort64, "--split", ""]) == 0
    out = capsys.readouterr().out
    r = check_classifier(spec, cohort64, None)
    assert r["n"] == 48 and r["n_labelled"] == 48 and r["target_layer"] == "features.10"
    assert np.isfinite([r["auroc"], r["sensitivity"], r["specificity"], r["ece"]]).all()
    assert 0 <= r["ece"] <= 1 and r["images_per_s"] > 0
    lines, want = out.strip().splitlines(), format_check(r)
    assert len(lines) == 6 and lines[:4] == want[:4] and lines[5] == want[5]  # [4]: speed
    for needle in ("audited output: column 0 of 1, activation logit", f"AUROC {r['auroc']:.3f}",
                   f"sensitivity {r['sensitivity']:.3f}", f"ECE {r['ece']:.3f} (15 bins)",
                   "images/s (cpu, 1 thread(s))", "Grad-CAM layer: features.10",
                   "input: cohort 64 px -> 64 px (stretch), 1 channel(s)"):
        assert needle in out, needle
    print(out)


def test_check_of_a_torchxrayvision_densenet(cohort64, tmp_path, capsys):
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(0)
    torch.save(xrv.models.DenseNet(weights=None).state_dict(), tmp_path / "xrv.pt")
    (tmp_path / "xrv.yaml").write_text("kind: torchxrayvision\narch: densenet121-res224-all\n"
                                       "path: xrv.pt\nfinding: pneumonia\n")
    assert cli_main(["check-classifier", "--spec", str(tmp_path / "xrv.yaml"), "--cohort",
                     cohort64, "--split", "", "--max-images", "8"]) == 0
    out = capsys.readouterr().out
    for needle in ("classifier: torchxrayvision densenet121-res224-all",
                   "audited output: 'Pneumonia' (column 8 of 18), finding 'pneumonia', "
                   "activation sigmoid", "cohort 64 px -> 224 px (crop), 1 channel(s), "
                   "normalisation mean 0.5 std 0.00048828125, preset torchxrayvision",
                   "all split: 8 images", "Grad-CAM layer: features.norm5"):
        assert needle in out, needle
    print(out)


def test_constant_output_and_missing_finding_are_one_line(cohort64, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Constant()), str(tmp_path / "c.ts"))
    (tmp_path / "c.yaml").write_text("kind: torchscript\npath: c.ts\ninput_size: 64\n")
    rc = cli_main(["check-classifier", "--spec", str(tmp_path / "c.yaml"), "--cohort", cohort64])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("medxgan: error:") and "\n" not in err
    assert "is constant" in err

    torch.save(SmallCNN(1, 3).state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.yaml").write_text("kind: small_cnn\npath: m.pt\ninput_size: 64\n"
                                     "outputs: [Atelectasis, Effusion, Nodule]\n"
                                     "activation: sigmoid\nfinding: Pneumothorax\n")
    rc = cli_main(["check-classifier", "--spec", str(tmp_path / "m.yaml"), "--cohort", cohort64])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "'Pneumothorax' is not among" in err
    from tasks.check import check_classifier_task  # the audit's first step says the same
    with pytest.raises(ClassifierLoadError, match="is constant"):
        check_classifier_task(cohort64, str(tmp_path / "c.yaml"))


def test_audit_runs_the_check_first(prefect_harness, tmp_path):
    from flows.audit import audit_flow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Constant()), str(tmp_path / "c.ts"))
    (tmp_path / "c.yaml").write_text("kind: torchscript\npath: c.ts\ninput_size: 32\n")
    store = str(tmp_path / "store")
    cfg = tiny(store, classifier={"spec": str(tmp_path / "c.yaml")},
               explain={"methods": ["gradcam", "random"], "max_images": 4})
    with pytest.raises(ClassifierLoadError, match="is constant"):
        audit_flow(config=cfg)
    assert not (tmp_path / "store" / "runs").exists()


def test_expected_calibration_error():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(p, np.array([0, 0, 1, 1])) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([1.0]), np.array([1])) == 0.0
    assert np.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_torchscript_has_no_grad_cam_and_an_audit_asking_for_it_stops_first(
        prefect_harness, cohort64, tmp_path):
    from flows.audit import audit_flow

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(SmallCNN(1, 1)), str(tmp_path / "s.ts"))
    (tmp_path / "s.yaml").write_text("kind: torchscript\npath: s.ts\ninput_size: 64\n")
    r = check_classifier(str(tmp_path / "s.yaml"), cohort64, None)
    assert r["target_layer"] is None and "no forward hooks" in r["gradcam_unsupported"]
    assert format_check(r)[-1].startswith("Grad-CAM: not available (TorchScript modules")
    cfg = tiny(str(tmp_path / "store"), cohort={"source": "existing", "url": cohort64},
               classifier={"spec": str(tmp_path / "s.yaml")},
               explain={"methods": ["gradcam", "ig"], "max_images": 4, "split": ""})
    with pytest.raises(ClassifierLoadError, match="drop gradcam from explain.methods") as e:
        audit_flow(config=cfg)
    assert "\n" not in str(e.value) and not (tmp_path / "store" / "runs").exists()
