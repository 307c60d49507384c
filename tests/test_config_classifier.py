"""The classifier spec is a torch-free config (``medxgan.config.classifier``): parsing and
validating a spec never imports torch, and ``medxgan.classifiers`` re-exports the very same
classes (as the deprecated ``medxgan.models.classifier`` does until 0.2.0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_classifier_spec_does_not_import_torch(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: torchvision\narch: resnet18\npath: weights.pt\npreset: imagenet\n"
                    "outputs: [Atelectasis, Effusion, Pneumonia]\nfinding: pneumonia\n"
                    "activation: sigmoid\n")
    code = ("import sys; from medxgan.config import ClassifierSpec, MeanStd; "
            "import medxgan.config.classifier; "
            f"s = ClassifierSpec.from_yaml({str(spec)!r}); "
            "assert s.positive_index == 2 and s.in_channels == 3, s; "
            "assert isinstance(s.normalisation, MeanStd); "
            "assert s.path.endswith('/weights.pt'), s.path; "
            "t = ClassifierSpec.from_yaml(s.to_yaml()); assert t == s; "
            "ClassifierSpec(kind='torchxrayvision', arch='densenet121-res224-all'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_classifiers_reexports_the_spec():
    import medxgan.classifiers as clf
    import medxgan.config as config
    import medxgan.config.classifier as spec_module

    for name in ("ClassifierSpec", "MeanStd", "ClassifierLoadError", "PRESETS",
                 "IMAGENET_MEAN", "IMAGENET_STD"):
        assert getattr(clf, name) is getattr(spec_module, name) is getattr(config, name), name
    assert issubclass(clf.ClassifierLoadError, ValueError)
