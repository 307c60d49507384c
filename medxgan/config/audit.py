"""The audit's YAML configuration (pydantic; unknown keys and wrong types are errors).

Example (``configs/audit-example.yaml``)::

    name: cxr-nightly
    store: ./medxgan-store
    cohort: {source: phantom-cxr, n: 1200, size: 64, seed: 0, shortcut_rate: 0.0}
    classifier: {train: {arch: small_cnn, epochs: 8}}      # or {spec: path/to/spec.yaml}
    gan: {model: {g_width: 0.25, d_width: 0.5}, train: {steps: 600}}
    explain: {methods: [medxgan, latent_ig, gradcam, ig, random, box_prior], max_images: 64}
    score: {n_boot: 1000}

Every section is typed down to the library's own configs (``gan.train`` is a
:class:`~medxgan.config.models.GanTrainConfig`, ``explain.method_options.ig`` an
:class:`~medxgan.config.explain.IGConfig`, ...), so a typo anywhere fails when the YAML is
loaded, before any work; :func:`error_line` turns the error into one line naming the key's
dotted path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from medxgan.catalogue import (FILE_SOURCES, GAP_SUFFIX, INTERVENTION_METRICS, METRICS,
                               PHANTOM_SHORTCUTS, SHUFFLED_METRICS, SHUFFLED_SUFFIX, SOURCES)
from medxgan.catalogue import METHODS as ALL_METHODS
from medxgan.config.explain import InversionConfig, MethodOptions
from medxgan.config.models import ClassifierTrainConfig, GanConfig, GanTrainConfig
from medxgan.config.runtime import RuntimeConfig

CohortSource = Literal[("existing", *SOURCES)]  # type: ignore[valid-type]
ShortcutKind = Literal[PHANTOM_SHORTCUTS]  # type: ignore[valid-type]

#: images per part / task of the ingest flow (not part of a cohort's identity, so not a field)
INGEST_CHUNK_SIZE = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CohortSection(_Strict):
    """Where the cohort comes from: an existing cohort URL, or a source to ingest."""

    source: CohortSource
    url: str | None = Field(None, description="existing cohort URL (source: existing)")
    input: str | None = Field(None, description="input root / CSV for rsna, nih, folder")
    size: int = 64
    n: int = 1000
    seed: int = 0
    prevalence: float = 0.5
    shortcut_rate: float = Field(0.0, ge=0, le=1, description="phantom: share of positives "
                                 "carrying the shortcut")
    shortcut: ShortcutKind = Field("tag", description="phantom: which shortcut "
                                   "(medxgan.phantoms.shortcuts)")
    shortcut_negative_rate: float | None = Field(
        None, ge=0, le=1, description="phantom: share of negatives carrying it (default "
        "min(shortcut_rate, 0.02))")
    lesion_scale: float = Field(1.0, gt=0, le=4, description="phantom: lesion intensity factor "
                                "(faint findings below 1)")
    finding: str | None = None
    pseudonymise: bool = Field(False, description="DICOM-derived image ids become keyed hashes "
                               "(HMAC-SHA256); the key comes from env MEDXGAN_PSEUDONYMISE_KEY")
    max_pixels: int = Field(50_000_000, ge=1, description="refuse source images with more pixels")

    @model_validator(mode="after")
    def _check(self) -> "CohortSection":
        if self.source == "existing" and not self.url:
            raise ValueError("cohort.url is required when cohort.source is 'existing'")
        if self.source in FILE_SOURCES and not self.input:
            raise ValueError(f"cohort.input is required for source {self.source!r}")
        return self


class ClassifierSection(_Strict):
    """The classifier under audit: a spec YAML of the user's model, or a baseline to train."""

    spec: str | None = Field(None, description="path/URL of a ClassifierSpec YAML")
    train: ClassifierTrainConfig | None = Field(None, description="baseline training config")

    @model_validator(mode="after")
    def _one(self) -> "ClassifierSection":
        if (self.spec is None) == (self.train is None):
            raise ValueError("classifier needs exactly one of 'spec' or 'train'")
        return self


class GanSection(_Strict):
    model: GanConfig = Field(default_factory=GanConfig, description="generator architecture")
    train: GanTrainConfig = Field(default_factory=GanTrainConfig, description="GAN training")


class ExplainSection(_Strict):
    methods: list[str] = Field(default_factory=lambda: list(ALL_METHODS))
    split: str = "test"
    labels: list[int] = Field(default_factory=lambda: [1], description="labels of explained images")
    max_images: int = 100
    shard_size: int = 32
    inversion: InversionConfig = Field(
        default_factory=InversionConfig,
        description="GAN inversion of the generator methods (a method's own inversion wins)")
    method_options: MethodOptions = Field(default_factory=MethodOptions)
    tune: list[Literal["gradcam", "ig"]] = Field(
        default_factory=list,
        description="methods whose options are chosen before explaining, from a declared set, "
                    "on tune_split's positives with boxes (medxgan.explain.sweep); [] = none")
    tune_split: str = Field("val", description="split the tuning runs on; never the explained one")
    tune_images: int = Field(64, ge=1, description="at most this many tuning images")
    findings: list[str] | None = Field(
        None, description="audit each named finding on its own (the classifier's output of "
                          "that name against the cohort's boxes of that finding; one summary and "
                          "verdict per finding: flows.findings); None = the spec's finding")

    @model_validator(mode="after")
    def _methods(self) -> "ExplainSection":
        if self.findings is not None:
            from medxgan.findings import normalise

            norm = [normalise(f) for f in self.findings]
            if not norm or not all(norm):
                raise ValueError("findings must name at least one finding, none empty")
            if len(set(norm)) != len(norm):
                raise ValueError(f"findings {self.findings} name a finding twice")
        bad = [m for m in self.methods if m not in ALL_METHODS]
        if bad:
            raise ValueError(f"unknown explanation methods {bad}; known: {list(ALL_METHODS)}")
        if self.tune:
            if missing := [m for m in self.tune if m not in self.methods]:
                raise ValueError(f"tune: {missing} not among the explained methods")
            if not self.split or self.tune_split == self.split:
                raise ValueError(f"tune_split {self.tune_split!r} must differ from the "
                                 f"explained split {self.split or 'all'!r}")
        return self


class ScoreSection(_Strict):
    """The score stage: metrics of the explanations, intervention evidence, shortcut search.

    Attributes:
        intervention: per explained image, the intervention rows (method ``intervention``:
            ``ablation_drop`` (+ ``_shuffled``), ``ablation_flip``, ``retention``;
            ``medxgan.metrics.ablation``), the shuffled boxes from the same partners as the
            localisation controls.
        ablation_infill: how boxes are infilled for the intervention evidence and the shortcut
            search: ``inpaint`` (default since issue #20: the run's healthy-anatomy in-filler,
            trained by the GAN stage with ``family: inpaint`` even when no generator method is
            explained), ``blur``, ``mean``, ``noisy_linear`` (ROAD). On the shortcut panel a
            blurred opacity was still an opacity and ROAD's noise read as a finding
            (docs/benchmarks.md, "Shortcut panel").
        shortcut: the run-level shortcut search (``shortcut.json``,
            ``medxgan.metrics.shortcut.find_shortcut``) on the explained split.
        shortcut_images: most images the shortcut search's located and image-wide evidence
            use (positives with boxes and negatives, about half each).
        residual_images: most images its location-free evidence uses (a superset of the
            former: one in-filling and one pass of f per image; its CI narrows with them).
    """

    n_boot: int = 1000
    faithfulness: bool = True
    robustness: bool = False
    seed: int = 0
    intervention: bool = True
    ablation_infill: Literal["inpaint", "blur", "mean", "noisy_linear"] = "inpaint"
    shortcut: bool = True
    shortcut_images: int = Field(128, ge=4)
    residual_images: int = Field(512, ge=4)


#: metrics of a ``shortcut`` criterion: keys of ``shortcut.json`` (``ShortcutFinding.summary()``)
SHORTCUT_CRITERION_METRICS: tuple[str, ...] = ("effect", "residual_effect", "transplant_effect",
                                                "wide_effect", "transplant_rate", "drop")


def _metric_names(base: tuple[str, ...]) -> set[str]:
    """``base``, each one's ``_shuffled`` control and ``-shuffled_gap`` (own - shuffled) where
    the catalogue gives it a shuffled control."""
    out = set(base)
    for k in base:
        if k in SHUFFLED_METRICS:
            out |= {k + SHUFFLED_SUFFIX, k + GAP_SUFFIX}
    return out


class Criterion(_Strict):
    """One pre-specified acceptance criterion of the audit (``criteria:`` in the YAML).

    Judged on one number of the run's evidence: ``<on> <comparison> <threshold>``, e.g.
    ``{evidence: intervention, metric: ablation_drop-shuffled_gap, comparison: ">",
    threshold: 0}`` passes when the CI of the own - shuffled ablation gap lies above 0.

    Attributes:
        name: shown in the report (default: built from the other fields, :attr:`label`).
        evidence: ``intervention`` (rows of method ``intervention``: ``ablation_drop``,
            ``ablation_drop_shuffled``, ``ablation_drop-shuffled_gap``, ``ablation_flip``,
            ``retention``) or ``shortcut`` (``shortcut.json``: ``effect``, ``residual_effect``,
            ``transplant_effect``, ``wide_effect``, ``transplant_rate``, ``drop``).
        method: an explanation method of the catalogue (exactly one of evidence / method).
        metric: a catalogue metric, its ``<metric>_shuffled`` control or
            ``<metric>-shuffled_gap`` (own - shuffled, from the comparisons table).
        comparison: ``>=``, ``>``, ``<=`` or ``<``.
        threshold: the number compared with.
        on: ``ci_low``, ``mean`` or ``ci_high`` of the 95 % CI; default ``ci_low`` for ``>=`` /
            ``>`` and ``ci_high`` for ``<=`` / ``<`` (the criterion must hold for the whole CI).
    """

    name: str | None = None
    evidence: Literal["intervention", "shortcut"] | None = None
    method: str | None = None
    metric: str
    comparison: Literal[">=", ">", "<=", "<"]
    threshold: float
    on: Literal["ci_low", "mean", "ci_high"] | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str | None) -> str | None:
        if v is not None and v not in ALL_METHODS:
            raise ValueError(f"unknown method {v!r}; known: {list(ALL_METHODS)}")
        return v

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str, info: ValidationInfo) -> str:
        ev = info.data.get("evidence")
        if ev is None and info.data.get("method") is None:
            return v  # no (valid) source: that error is reported, not a metric error
        if ev == "shortcut":
            known = set(SHORTCUT_CRITERION_METRICS)
        elif ev == "intervention":
            known = _metric_names(INTERVENTION_METRICS)
        else:
            known = _metric_names(tuple(k for k in METRICS if k not in INTERVENTION_METRICS))
        if v not in known:
            what = f"evidence {ev}" if ev else "a method"
            raise ValueError(f"unknown metric {v!r} for {what}; known: {sorted(known)}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "Criterion":
        if (self.evidence is None) == (self.method is None):
            raise ValueError("a criterion needs exactly one of 'evidence' or 'method'")
        if self.on is None:
            self.on = "ci_low" if self.comparison in (">=", ">") else "ci_high"
        return self

    @property
    def label(self) -> str:
        """``name``, or e.g. ``intervention ablation_drop-shuffled_gap ci_low > 0``."""
        if self.name:
            return self.name
        return f"{self.evidence or self.method} {self.metric} {self.on} {self.comparison} {self.threshold:g}"


class AuditConfig(_Strict):
    """One audit: cohort -> classifier -> medXGAN generator -> explanations -> scores -> report."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    store: str | None = Field(None, description="store root URL (default: MEDXGAN_STORE)")
    seed: int = 0
    cohort: CohortSection
    classifier: ClassifierSection
    gan: GanSection = Field(default_factory=GanSection)
    explain: ExplainSection = Field(default_factory=ExplainSection)
    score: ScoreSection = Field(default_factory=ScoreSection)
    criteria: list[Criterion] = Field(
        default_factory=list,
        description="pre-specified acceptance criteria, judged by the report "
                    "(medxgan.report.criteria.evaluate_criteria)")
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig,
        description="time limits of this audit's runs (s): flow_timeout_s, train_timeout_s, "
                    "task_timeout_s; not part of any stage hash or run id")

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> "AuditConfig":
        """Load and validate; a path to a YAML file or YAML text."""
        text = str(path_or_text)
        p = Path(text)
        if "\n" not in text and p.suffix in (".yaml", ".yml"):
            if not p.exists():
                raise FileNotFoundError(f"config file {text} not found")
            text = p.read_text()
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError("audit config must be a YAML mapping")
        return cls.model_validate(data)


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys): a content address."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def field_default(model: type[BaseModel], name: str) -> Any:
    """The default of ``model``'s field ``name``: flow signatures, CLI flags and tasks take
    their defaults from the config models, so that each default is written once."""
    return model.model_fields[name].get_default(call_default_factory=True)


def error_line(exc: ValidationError) -> str:
    """A validation error as one line, ``<dotted.path>: <message>`` per error (``; ``-joined),
    e.g. ``gan.train.stpes: Extra inputs are not permitted``."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = err.get("msg", "")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        msg = " ".join(msg.split())
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or " ".join(str(exc).split())


__all__ = ["AuditConfig", "ClassifierSection", "CohortSection", "CohortSource", "Criterion",
           "ExplainSection", "GanSection", "INGEST_CHUNK_SIZE", "SHORTCUT_CRITERION_METRICS",
           "ScoreSection", "error_line", "field_default", "stable_hash"]
