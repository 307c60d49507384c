"""Every configuration of medXGAN Audit: torch-free pydantic models with ``extra="forbid"``.

- :mod:`~medxgan.config.audit`: the audit YAML (:class:`AuditConfig` and its sections, the
  acceptance :class:`Criterion`),
  :func:`stable_hash`, :func:`error_line`, :func:`field_default`;
- :mod:`~medxgan.config.models`: :class:`GanConfig`, :class:`GanTrainConfig`,
  :class:`EncoderConfig`, :class:`ClassifierTrainConfig`;
- :mod:`~medxgan.config.classifier`: :class:`ClassifierSpec` (the spec YAML of the
  classifier under audit), :class:`MeanStd`, :data:`PRESETS`, :class:`ClassifierLoadError`;
- :mod:`~medxgan.config.explain`: :class:`InversionConfig` and each explanation method's
  options (:class:`MethodOptions` holds one per method of ``medxgan.catalogue``).

The torch modules (``medxgan.classifiers.*``, ``medxgan.generators.*``, ``medxgan.explain.*``)
import their configs from here, so the audit YAML is validated down to every key without importing torch.
"""

from medxgan.config.audit import (INGEST_CHUNK_SIZE, SHORTCUT_CRITERION_METRICS, AuditConfig,
                                  ClassifierSection, CohortSection, CohortSource, Criterion,
                                  ExplainSection, GanSection, ScoreSection, error_line,
                                  field_default, stable_hash)
from medxgan.config.classifier import (IMAGENET_MEAN, IMAGENET_STD, PRESETS,
                                       ClassifierLoadError, ClassifierSpec, MeanStd)
from medxgan.config.explain import (METHOD_CONFIGS, RECIPES, CounterfactualIGConfig,
                                    ExplainerConfig, GradCAMConfig, IGConfig, InversionConfig,
                                    LatentIGConfig, MedXGANConfig, MethodOptions, OcclusionConfig,
                                    RandomConfig, SmoothGradConfig)
from medxgan.config.inpaint import InpaintConfig
from medxgan.config.residual import ResidualConfig
from medxgan.config.runtime import RuntimeConfig
from medxgan.config.models import (ClassifierTrainConfig, EncoderConfig, GanConfig,
                                   GanTrainConfig)

__all__ = [
    "INGEST_CHUNK_SIZE", "SHORTCUT_CRITERION_METRICS", "AuditConfig", "ClassifierSection",
    "CohortSection", "CohortSource", "Criterion",
    "ExplainSection", "GanSection", "ScoreSection", "error_line", "field_default", "stable_hash",
    "METHOD_CONFIGS", "RECIPES", "CounterfactualIGConfig", "ExplainerConfig", "GradCAMConfig",
    "IGConfig", "InversionConfig", "LatentIGConfig", "MedXGANConfig", "MethodOptions",
    "OcclusionConfig", "RandomConfig", "SmoothGradConfig",
    "ClassifierTrainConfig", "EncoderConfig", "GanConfig", "GanTrainConfig", "RuntimeConfig",
    "IMAGENET_MEAN", "IMAGENET_STD", "PRESETS", "ClassifierLoadError", "ClassifierSpec",
    "MeanStd", "InpaintConfig", "ResidualConfig",
]
