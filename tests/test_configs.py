"""Shipped configs and deployments stay valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from medxgan.config import (AuditConfig, ClassifierTrainConfig, GanConfig, GanTrainConfig,
                            InversionConfig, MethodOptions)
from medxgan.config.classifier import ClassifierSpec

ROOT = Path(__file__).resolve().parents[1]


def test_audit_configs_validate_down_to_library_configs():
    for name in ("audit-example.yaml", "audit-nightly.yaml"):
        cfg = AuditConfig.from_yaml(str(ROOT / "configs" / name))
        assert isinstance(cfg.gan.model, GanConfig)
        assert isinstance(cfg.gan.train, GanTrainConfig)
        assert isinstance(cfg.classifier.train, ClassifierTrainConfig)
        assert isinstance(cfg.explain.inversion, InversionConfig)
        assert isinstance(cfg.explain.method_options, MethodOptions)
        assert cfg.explain.method_options.given()  # the shipped configs set some options


def test_classifier_spec_example_parses():
    spec = ClassifierSpec.from_yaml(str(ROOT / "configs" / "classifier-example.yaml"))
    assert spec.kind == "torchscript" and spec.path.endswith("configs/classifier.ts")


def test_prefect_yaml_deployments_point_at_real_flows():
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"]: d for d in doc["deployments"]}
    assert {"audit-nightly", "explain-cohort"} <= set(names)
    assert names["audit-nightly"]["schedules"][0]["cron"]
    for d in doc["deployments"]:
        path, fn = d["entrypoint"].split(":")
        assert f"def {fn}(" in (ROOT / path).read_text()
        assert d["work_pool"]["name"] == "medxgan-process"
    assert (ROOT / names["audit-nightly"]["parameters"]["config"]).exists()


def test_nightly_config_prespecifies_acceptance_criteria():
    from medxgan.config import Criterion

    cfg = AuditConfig.from_yaml(str(ROOT / "configs" / "audit-nightly.yaml"))
    assert cfg.criteria and all(isinstance(c, Criterion) for c in cfg.criteria)
    by_source = {(c.evidence or c.method, c.metric): c for c in cfg.criteria}
    gap = by_source[("intervention", "ablation_drop-shuffled_gap")]
    assert (gap.comparison, gap.threshold, gap.on) == (">", 0.0, "ci_low")
    sc = by_source[("shortcut", "effect")]
    assert (sc.comparison, sc.threshold, sc.on) == ("<", 0.1, "ci_high")
    assert by_source[("counterfactual_ig", "pointing_game")].on == "ci_low"
    example = AuditConfig.from_yaml(str(ROOT / "configs" / "audit-example.yaml"))
    assert example.criteria == []  # optional
