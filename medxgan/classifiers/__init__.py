"""The classifier under audit and the baseline classifier (docs/design.md, "Classifier spec").

Modules:
  - :mod:`wrapper`: :class:`AuditedClassifier` (one positive logit of the cohort's pixels)
    and :func:`default_target_layer` (Grad-CAM's layer);
  - :mod:`load`: :func:`load_classifier` (spec -> checked ``AuditedClassifier``);
  - :mod:`kinds`: one safe loader per kind (torchscript, torchvision / small_cnn, onnx,
    torchxrayvision);
  - :mod:`check`: ``medxgan check-classifier`` (:func:`~check.check_classifier`);
  - :mod:`small_cnn`: the baseline architectures; :mod:`train`: training one on a cohort.

The spec itself is torch-free: :mod:`medxgan.config.classifier`, re-exported here.
"""

from medxgan.classifiers.load import load_classifier
from medxgan.classifiers.wrapper import AuditedClassifier, default_target_layer
from medxgan.config.classifier import (IMAGENET_MEAN, IMAGENET_STD, PRESETS, ClassifierLoadError,
                                       ClassifierSpec, MeanStd)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PRESETS", "AuditedClassifier", "ClassifierLoadError",
           "ClassifierSpec", "MeanStd", "default_target_layer", "load_classifier"]
