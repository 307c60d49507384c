"""The one catalogue of explanation methods, metrics and ingest sources (torch-free).

Every list of names in the code base reads this module: the config validates method and source
names against it, the report takes labels, order and floors from it, the history takes each
metric's direction, the aggregate takes which metrics have a shuffled-box control, the verdict
takes each method's role, and the CLI takes its choices. Adding a metric is its function plus one
:class:`Metric` entry here; adding a method is its explainer plus one :class:`Method` entry (and
its module in ``medxgan.explain.base._MODULES``). See ``docs/design.md`` ("Catalogue").

Plain dataclasses and tuples with no heavy imports, so that the config, the CLI and the report can
use it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MethodFamily = Literal["gradient", "perturbation", "generator", "floor"]
MetricFamily = Literal["localisation", "faithfulness", "robustness", "generator", "intervention"]
SourceKind = Literal["phantom", "file"]

SHUFFLED_SUFFIX = "_shuffled"  # <metric>_shuffled: the same map against another positive's boxes
GAP_SUFFIX = "-shuffled_gap"  # comparisons.parquet: <metric>-shuffled_gap = own - shuffled

# The ``method`` value of the intervention evidence rows of ``scores.parquet`` (``ablation_drop``,
# ``ablation_drop_shuffled``, ``ablation_flip``, ``retention``: f's probability with the boxes
# infilled, ``medxgan.metrics.ablation``). Not an explanation method, so not in METHOD_CATALOGUE
# (not configurable, no explainer); the report orders it after the floors and labels it
# INTERVENTION_LABEL.
INTERVENTION = "intervention"
INTERVENTION_LABEL = "intervention (boxes infilled)"


@dataclass(frozen=True)
class Method:
    """One explanation method.

    Attributes:
        name: the name used in configs, ``scores.parquet`` and paths (``method=<name>``).
        label: human name for reports.
        family: ``gradient`` (attribution by f's gradient), ``perturbation`` (by occluding
            the input), ``generator`` (built on the audit's generator), ``floor`` (a map an
            explanation must beat).
        verdict_role: ``gradient_baseline`` (judged first by the verdict), ``baseline``,
            ``generator`` or ``floor``.
        generator_families: the generator families (``gan.model.family``) that offer it;
            empty: every family. ``latent_ig`` needs a latent code (``published``): with an
            image-conditioned family (``inpaint``, ``residual``) the generator path and the
            straight line coincide and it would repeat ``counterfactual_ig``'s map.
    """

    name: str
    label: str
    family: MethodFamily
    verdict_role: Literal["gradient_baseline", "baseline", "generator", "floor"]
    generator_families: tuple[str, ...] = ()

    @property
    def floor(self) -> bool:
        return self.family == "floor"

    @property
    def needs_generator(self) -> bool:
        return self.family == "generator"


@dataclass(frozen=True)
class Metric:
    """One metric of ``scores.parquet``.

    Attributes:
        name: the ``metric`` column value.
        label: human name for reports.
        higher_is_better: the direction used by the history's regression check.
        family: ``localisation`` (map vs boxes), ``faithfulness`` (map vs f's behaviour),
            ``robustness``, ``generator`` (medXGAN's own checks), ``intervention`` (f's
            probability with the boxes infilled; rows with method ``INTERVENTION``).
        shuffled_control: the metric also appears as ``<name>_shuffled`` (the same map, or the
            same intervention, against another positive's boxes; see
            ``medxgan.metrics.shuffle_partners``). Not only localisation metrics have one:
            ``ablation_drop`` does too.
    """

    name: str
    label: str
    higher_is_better: bool
    family: MetricFamily
    shuffled_control: bool = False


@dataclass(frozen=True)
class Source:
    """One ingest source (``medxgan ingest --source <name>``)."""

    name: str
    kind: SourceKind
    description: str


# Order is the report's order: gradient baselines, perturbation, generator methods, floors last.
METHOD_CATALOGUE: tuple[Method, ...] = (
    Method("gradcam", "Grad-CAM", "gradient", "gradient_baseline"),
    Method("ig", "IG", "gradient", "gradient_baseline"),
    Method("smoothgrad", "SmoothGrad", "gradient", "baseline"),
    Method("occlusion", "occlusion", "perturbation", "baseline"),
    Method("medxgan", "medXGAN difference map", "generator", "generator"),
    Method("latent_ig", "latent IG (medXGAN + IG)", "generator", "generator", ("published",)),
    Method("counterfactual_ig", "counterfactual IG", "generator", "generator"),
    Method("random", "random map", "floor", "floor"),
    Method("box_prior", "average-box prior", "floor", "floor"),
)

METRIC_CATALOGUE: tuple[Metric, ...] = (
    Metric("pointing_game", "pointing game", True, "localisation", True),
    Metric("iou_otsu", "IoU (Otsu)", True, "localisation", True),
    Metric("relevance_mass", "relevance mass", True, "localisation", True),
    Metric("relevance_rank", "relevance rank", True, "localisation", True),
    Metric("auroc", "pixel AUROC", True, "localisation", True),
    Metric("auprc", "pixel AUPRC", True, "localisation", True),
    Metric("deletion_auc", "deletion AUC", False, "faithfulness"),
    Metric("insertion_auc", "insertion AUC", True, "faithfulness"),
    Metric("noise_stability", "noise stability", True, "robustness"),
    Metric("recon_mse", "reconstruction MSE", False, "generator"),
    Metric("counterfactual_flip", "counterfactual flip rate", True, "generator"),
    Metric("counterfactual_similarity", "counterfactual similarity", False, "generator"),
    Metric("counterfactual_ncc", "counterfactual NCC with the true change", True, "generator",
           True),
    Metric("counterfactual_dice", "counterfactual mask Dice with the true lesion", True,
           "generator", True),
    # intervention evidence (method INTERVENTION): ablation_drop_shuffled is ablation_drop's control
    Metric("ablation_drop", "ablation drop", True, "intervention", True),
    Metric("ablation_flip", "ablation flip rate", True, "intervention"),
    Metric("retention", "retention (only the boxes kept)", True, "intervention"),
)

SOURCE_CATALOGUE: tuple[Source, ...] = (
    Source("phantom-cxr", "phantom", "generated chest X-ray phantoms with lesion boxes"),
    Source("phantom-brain", "phantom", "generated brain MRI slice phantoms with tumour boxes"),
    Source("rsna", "file", "RSNA Pneumonia (Kaggle layout: stage_2_train_labels.csv + DICOMs)"),
    Source("nih", "file", "NIH ChestX-ray14 (Data_Entry_2017*.csv, BBox_List_2017.csv, images/)"),
    Source("folder", "file", "a CSV image_id,path,label,x0,y0,x1,y1,finding"),
)

# ---- derived name lists (never written a second time elsewhere) ----
METHODS: tuple[str, ...] = tuple(m.name for m in METHOD_CATALOGUE)
GAN_METHODS: tuple[str, ...] = tuple(m.name for m in METHOD_CATALOGUE if m.needs_generator)
FLOORS: tuple[str, ...] = tuple(m.name for m in METHOD_CATALOGUE if m.floor)
GRADIENT_BASELINES: tuple[str, ...] = tuple(
    m.name for m in METHOD_CATALOGUE if m.verdict_role == "gradient_baseline")
BASELINES: tuple[str, ...] = tuple(
    m.name for m in METHOD_CATALOGUE if m.verdict_role in ("gradient_baseline", "baseline"))

METRICS: tuple[str, ...] = tuple(m.name for m in METRIC_CATALOGUE)
LOCALISATION_METRICS: tuple[str, ...] = tuple(
    m.name for m in METRIC_CATALOGUE if m.family == "localisation")
SHUFFLED_METRICS: tuple[str, ...] = tuple(m.name for m in METRIC_CATALOGUE if m.shuffled_control)
INTERVENTION_METRICS: tuple[str, ...] = tuple(
    m.name for m in METRIC_CATALOGUE if m.family == "intervention")

SOURCES: tuple[str, ...] = tuple(s.name for s in SOURCE_CATALOGUE)
PHANTOM_SOURCES: tuple[str, ...] = tuple(s.name for s in SOURCE_CATALOGUE if s.kind == "phantom")
FILE_SOURCES: tuple[str, ...] = tuple(s.name for s in SOURCE_CATALOGUE if s.kind == "file")
PHANTOM_SHORTCUTS: tuple[str, ...] = ("tag", "band", "marker", "text", "line", "noise", "exposure",
                                      "border", "arrow", "blur")
"""Shortcut kinds a phantom cohort can carry (``cohort.shortcut``; drawn by
``medxgan.phantoms.shortcuts``)."""

_METHOD_BY_NAME = {m.name: m for m in METHOD_CATALOGUE}
_METRIC_BY_NAME = {m.name: m for m in METRIC_CATALOGUE}


def method(name: str) -> Method:
    """The catalogue entry of ``name``; KeyError naming the known methods if unknown."""
    try:
        return _METHOD_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {list(METHODS)}") from None


def metric(name: str) -> Metric:
    """The entry of ``name``; a ``<metric>_shuffled`` name resolves to its base metric."""
    base = base_metric(name)
    try:
        return _METRIC_BY_NAME[base]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {list(METRICS)}") from None


def base_metric(name: str) -> str:
    """``relevance_mass_shuffled`` -> ``relevance_mass``; other names unchanged."""
    if name.endswith(SHUFFLED_SUFFIX) and name[: -len(SHUFFLED_SUFFIX)] in _METRIC_BY_NAME:
        return name[: -len(SHUFFLED_SUFFIX)]
    return name


def is_shuffled(name: str) -> bool:
    """True for a ``<metric>_shuffled`` control of a catalogued metric."""
    return base_metric(name) != name


def method_label(name: str) -> str:
    """Human name of a method (unknown names are returned as given; escape before HTML);
    ``INTERVENTION`` gets ``INTERVENTION_LABEL``."""
    if name == INTERVENTION:
        return INTERVENTION_LABEL
    m = _METHOD_BY_NAME.get(name)
    return m.label if m else name


def offered(name: str, generator_family: str | None) -> bool:
    """Does a generator of ``generator_family`` offer method ``name``? (Non-generator methods:
    always; an unknown family: every generator method.)"""
    m = _METHOD_BY_NAME.get(name)
    if m is None or not m.generator_families or generator_family is None:
        return True
    return generator_family in m.generator_families


def not_offered(methods, generator_family: str | None) -> dict[str, str]:
    """The methods of ``methods`` that ``generator_family`` does not offer, with the reason."""
    return {m: f"the {generator_family} generator family has no latent code: {m} would repeat "
               "counterfactual_ig's map (the straight line from x_neg to x)"
            for m in methods if not offered(m, generator_family)}


def metric_label(name: str) -> str:
    """Human name of a metric; ``<metric>_shuffled`` gets " (shuffled boxes)"."""
    base = base_metric(name)
    m = _METRIC_BY_NAME.get(base)
    if m is None:
        return name
    return m.label + (" (shuffled boxes)" if base != name else "")


def higher_is_better(name: str) -> bool | None:
    """Direction of a catalogued metric; None for shuffled controls and unknown names."""
    if is_shuffled(name):
        return None
    m = _METRIC_BY_NAME.get(name)
    return m.higher_is_better if m else None


def order_methods(methods) -> list[str]:
    """Known methods in catalogue order (floors last), then ``INTERVENTION``, then unknown ones
    sorted."""
    ms = set(methods)
    known = [m for m in (*METHODS, INTERVENTION) if m in ms]
    return known + sorted(ms - set(known))
