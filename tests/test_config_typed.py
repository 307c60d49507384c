"""The audit config is typed all the way down (issue #13 item 2): every section is the library's
own pydantic model, so a typo anywhere fails at load, before any work, as one line naming the
key's dotted path; ``medxgan.config`` never imports torch; each default is written once."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from medxgan.catalogue import METHODS, SOURCES
from medxgan.config import (AuditConfig, ClassifierTrainConfig, CohortSection, ExplainSection,
                            GanConfig, GanTrainConfig, IGConfig, InversionConfig, METHOD_CONFIGS,
                            MethodOptions, ScoreSection, error_line, field_default)

ROOT = Path(__file__).resolve().parents[1]

BASE = {"name": "typed", "cohort": {"source": "phantom-cxr", "n": 20, "size": 32},
        "classifier": {"train": {"epochs": 1}},
        "gan": {"model": {"d_a": 8}, "train": {"steps": 2}},
        "explain": {"methods": ["gradcam", "ig", "medxgan"],
                    "method_options": {"ig": {"n_steps": 4}}}}

TYPOS = [  # (section path, bad key) -> the dotted path in the error
    (("gan", "train"), "stpes", "gan.train.stpes"),
    (("explain", "method_options", "ig"), "n_stpes", "explain.method_options.ig.n_stpes"),
    (("classifier", "train"), "epochz", "classifier.train.epochz"),
]


def _with_typo(path: tuple[str, ...], key: str) -> dict:
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    d = cfg
    for p in path:
        d = d.setdefault(p, {})
    d[key] = 3
    return cfg


def test_importing_the_config_does_not_import_torch():
    code = ("import sys; import medxgan.config, medxgan.catalogue; "
            "from medxgan.config import AuditConfig, stable_hash; "
            "AuditConfig.from_yaml('configs/audit-example.yaml'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


@pytest.mark.parametrize("path,key,dotted", TYPOS)
def test_typo_fails_at_load_with_its_dotted_path(tmp_path, path, key, dotted):
    f = tmp_path / "audit.yaml"
    f.write_text(yaml.safe_dump(_with_typo(path, key)))
    with pytest.raises(ValidationError) as info:
        AuditConfig.from_yaml(str(f))
    line = error_line(info.value)
    assert line == f"{dotted}: Extra inputs are not permitted"
    assert "\n" not in line


@pytest.mark.parametrize("path,key,dotted", TYPOS)
def test_cli_audit_typo_is_one_line_before_any_store_is_written(tmp_path, capsys, path, key,
                                                                 dotted):
    from flows.cli import main as cli_main

    store = tmp_path / "store"
    cfg = _with_typo(path, key)
    cfg["store"] = str(store)
    f = tmp_path / "audit.yaml"
    f.write_text(yaml.safe_dump(cfg))
    rc = cli_main(["audit", "--config", str(f)])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err == f"medxgan: error: config error: {dotted}: Extra inputs are not permitted"
    assert not store.exists()


def test_wrong_type_and_unknown_method_name_their_paths():
    bad = yaml.safe_load(yaml.safe_dump(BASE))
    bad["gan"]["model"]["image_size"] = 50
    bad["explain"]["method_options"]["foo"] = {}
    with pytest.raises(ValidationError) as info:
        AuditConfig.model_validate(bad)
    line = error_line(info.value)
    assert "gan.model.image_size: 50 px is not a multiple of 8" in line
    assert "explain.method_options.foo: Extra inputs are not permitted" in line
    assert "\n" not in line


def test_the_published_family_keeps_its_sizes_the_in_filler_takes_224():
    from medxgan.config import GanConfig
    from medxgan.generators.published.gan import Discriminator, Generator

    assert GanConfig(family="inpaint", image_size=224).image_size == 224
    for net in (Generator, Discriminator):
        with pytest.raises(ValueError, match="published family is built for 32, 64, 128, 256 "
                                             "px, not 224"):
            net(GanConfig(family="published", image_size=224))


def test_sections_are_the_library_models():
    cfg = AuditConfig.model_validate(BASE)
    assert isinstance(cfg.classifier.train, ClassifierTrainConfig)
    assert isinstance(cfg.gan.model, GanConfig) and isinstance(cfg.gan.train, GanTrainConfig)
    assert isinstance(cfg.explain.inversion, InversionConfig)
    assert isinstance(cfg.explain.method_options.ig, IGConfig)
    assert cfg.explain.method_options.given() == {"ig": {"n_steps": 4}}
    assert AuditConfig.model_validate({**BASE, "classifier": {"spec": "s.yaml"}}).classifier.train \
        is None


def test_method_options_has_one_field_per_catalogued_method_with_its_explainer_config():
    import importlib

    from medxgan.explain.base import _MODULES

    assert tuple(MethodOptions.model_fields) == METHODS
    for m, (mod, cls) in _MODULES.items():
        assert getattr(importlib.import_module(mod), cls).Config is METHOD_CONFIGS[m], m


def test_torch_modules_reexport_the_config_classes():
    from medxgan.config.explain import InversionConfig as I2
    from medxgan.config.models import (ClassifierTrainConfig as C2, EncoderConfig as E2,
                                       GanConfig as G2, GanTrainConfig as T2)
    from medxgan.config import EncoderConfig

    assert (I2, E2, G2, C2, T2) == (InversionConfig, EncoderConfig, GanConfig,
                                    ClassifierTrainConfig, GanTrainConfig)


def test_resolved_sections_hash_equal_when_they_resolve_to_the_same_values():
    from flows.audit import explain_options, resolved

    explicit = yaml.safe_load(yaml.safe_dump(BASE))
    explicit["gan"]["train"]["lr"] = field_default(GanTrainConfig, "lr")
    explicit["explain"]["method_options"]["ig"]["baseline"] = "black"
    a, b = AuditConfig.model_validate(BASE), AuditConfig.model_validate(explicit)
    assert resolved(a.gan.train, seed=0) == resolved(b.gan.train, seed=0)
    assert explain_options(a) == explain_options(b)
    # the audit's seed and the cohort's size apply where the section does not set them
    assert resolved(a.gan.train, seed=7)["seed"] == 7
    assert resolved(a.gan.model, image_size=32)["image_size"] == 32
    own = AuditConfig.model_validate({**BASE, "classifier": {"train": {"seed": 3}}})
    assert resolved(own.classifier.train, seed=7)["seed"] == 3
    # the generator methods invert with explain.inversion unless they set their own
    inv = AuditConfig.model_validate({**BASE, "explain": {
        "methods": ["medxgan", "latent_ig"], "inversion": {"steps": 5},
        "method_options": {"latent_ig": {"inversion": {"steps": 9}}}}})
    opts = explain_options(inv)
    assert opts["medxgan"]["inversion"]["steps"] == 5
    assert opts["latent_ig"]["inversion"]["steps"] == 9


def test_defaults_are_the_config_models():
    from flows.cli import build_parser
    from flows.explain import explain_flow
    from flows.ingest import ingest_flow
    from flows.score import score_flow

    ing = inspect.signature(ingest_flow.fn).parameters
    for name in ("size", "n", "seed", "prevalence", "shortcut_rate", "finding", "max_pixels"):
        assert ing[name].default == field_default(CohortSection, name), name
    ex = inspect.signature(explain_flow.fn).parameters
    for name in ("split", "max_images", "shard_size"):
        assert ex[name].default == field_default(ExplainSection, name), name
    sc = inspect.signature(score_flow.fn).parameters
    for name in ("n_boot", "faithfulness", "robustness", "seed"):
        assert sc[name].default == field_default(ScoreSection, name), name
    a = build_parser().parse_args(["ingest", "--source", "nih", "--out", "x"])
    assert (a.size, a.n, a.max_pixels) == tuple(field_default(CohortSection, k)
                                                for k in ("size", "n", "max_pixels"))
    sources = CohortSection.model_fields["source"].annotation.__args__
    assert sources == ("existing", *SOURCES)
