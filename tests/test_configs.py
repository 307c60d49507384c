"""Shipped configs and deployments stay valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from medxgan.config import AuditConfig
from medxgan.explain.inversion import InversionConfig
from medxgan.models.classifier import ClassifierSpec
from medxgan.models.gan import GanConfig
from medxgan.models.train_classifier import ClassifierTrainConfig
from medxgan.models.train_gan import GanTrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_audit_configs_validate_down_to_library_configs():
    for name in ("audit-example.yaml", "audit-nightly.yaml"):
        cfg = AuditConfig.from_yaml(str(ROOT / "configs" / name))
        GanConfig.model_validate(cfg.gan.model)
        GanTrainConfig.model_validate(cfg.gan.train)
        ClassifierTrainConfig.model_validate(cfg.classifier.train)
        InversionConfig.model_validate(cfg.explain.inversion)


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
