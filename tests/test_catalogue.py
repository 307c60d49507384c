"""The catalogue is the one list of methods and metrics, and the code that computes them agrees."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from medxgan import catalogue as cat

ROOT = Path(__file__).resolve().parents[1]


def test_names_are_unique_and_derived_lists_agree():
    for names in (cat.METHODS, cat.METRICS, cat.SOURCES):
        assert len(set(names)) == len(names)
    assert set(cat.GAN_METHODS) <= set(cat.METHODS) and set(cat.FLOORS) <= set(cat.METHODS)
    assert set(cat.GRADIENT_BASELINES) <= set(cat.BASELINES)
    assert not set(cat.BASELINES) & (set(cat.FLOORS) | set(cat.GAN_METHODS))
    assert cat.METHODS[-len(cat.FLOORS):] == cat.FLOORS  # report order: floors last
    # a shuffled-box control exists for every localisation metric, the intervention drop and
    # the counterfactual NCC and Dice (against another positive's true change)
    assert set(cat.SHUFFLED_METRICS) <= (set(cat.LOCALISATION_METRICS)
                                         | set(cat.INTERVENTION_METRICS)
                                         | {"counterfactual_ncc", "counterfactual_dice"})
    assert set(cat.LOCALISATION_METRICS) <= set(cat.SHUFFLED_METRICS)


def test_every_label_is_unique():
    method_labels = [m.label for m in cat.METHOD_CATALOGUE]
    metric_labels = [m.label for m in cat.METRIC_CATALOGUE]
    assert len(set(method_labels)) == len(method_labels)
    assert len(set(metric_labels)) == len(metric_labels)
    shuffled = [cat.metric_label(k + cat.SHUFFLED_SUFFIX) for k in cat.SHUFFLED_METRICS]
    assert not set(shuffled) & set(metric_labels)
    assert all(lab.strip() for lab in method_labels + metric_labels)


def test_every_metric_has_a_direction():
    for k in cat.METRICS:
        assert isinstance(cat.higher_is_better(k), bool), k
    for k in cat.SHUFFLED_METRICS:  # a control has no "better"
        assert cat.higher_is_better(k + cat.SHUFFLED_SUFFIX) is None
    from medxgan.report.history import HIGHER_IS_BETTER

    assert HIGHER_IS_BETTER == {m.name: m.higher_is_better for m in cat.METRIC_CATALOGUE}


def test_helpers():
    assert cat.base_metric("relevance_mass_shuffled") == "relevance_mass"
    assert cat.is_shuffled("relevance_mass_shuffled") and not cat.is_shuffled("foo_shuffled")
    assert cat.metric_label("pointing_game_shuffled") == "pointing game (shuffled boxes)"
    assert cat.method_label("nope") == "nope" and cat.metric_label("nope") == "nope"
    assert cat.order_methods(["zz", "random", "medxgan", "gradcam"]) == ["gradcam", "medxgan", "random", "zz"]
    with pytest.raises(KeyError, match="known"):
        cat.method("nope")


def test_localisation_metrics_match_the_metric_code():
    from medxgan.metrics import localization

    assert tuple(localization.LOCALIZATION_METRICS) == cat.LOCALISATION_METRICS


def test_every_method_has_an_explainer_module():
    from medxgan.explain.base import _MODULES

    assert set(cat.METHODS) <= set(_MODULES), set(cat.METHODS) - set(_MODULES)
    assert set(_MODULES) <= set(cat.METHODS), set(_MODULES) - set(cat.METHODS)  # no explainer outside the catalogue
    for name in cat.METHODS:
        module, cls = _MODULES[name]
        assert importlib.util.find_spec(module) is not None, (name, module)
        assert cls.isidentifier()


def test_catalogue_and_report_text_do_not_import_torch():
    code = (
        "import sys\n"
        "import medxgan.catalogue, medxgan.report._text, medxgan.report\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'captum', 'prefect') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"


def test_intervention_evidence_is_catalogued_but_not_a_method():
    assert cat.INTERVENTION == "intervention" and cat.INTERVENTION not in cat.METHODS
    assert cat.method_label(cat.INTERVENTION) == "intervention (boxes infilled)"
    assert cat.order_methods(["zz", cat.INTERVENTION, "random", "gradcam"]) == ["gradcam", "random", cat.INTERVENTION, "zz"]
    assert cat.INTERVENTION_METRICS == ("ablation_drop", "ablation_flip", "retention")
    assert "ablation_drop" in cat.SHUFFLED_METRICS and "ablation_drop" not in cat.LOCALISATION_METRICS
    assert cat.base_metric("ablation_drop_shuffled") == "ablation_drop"
    assert cat.metric_label("ablation_drop_shuffled") == "ablation drop (shuffled boxes)"
    for k in cat.INTERVENTION_METRICS:
        assert cat.higher_is_better(k) is True and cat.metric(k).family == "intervention"
    # the intervention metrics are not scored by score_batch's generator extras
    from medxgan.metrics.batch import EXTRA_METRICS

    assert not set(EXTRA_METRICS) & set(cat.INTERVENTION_METRICS)


def test_intervention_metrics_match_the_ablation_code():
    from medxgan.metrics.ablation import ABLATION_METRICS

    names = set(cat.INTERVENTION_METRICS) | {k + cat.SHUFFLED_SUFFIX for k in cat.INTERVENTION_METRICS if k in cat.SHUFFLED_METRICS}
    assert set(ABLATION_METRICS) == names


def test_the_aggregate_gap_covers_the_intervention_drop():
    import numpy as np
    import pandas as pd

    from medxgan.metrics.aggregate import shuffle_gap

    ids = [f"i{j}" for j in range(20)]
    rng = np.random.default_rng(0)
    rows = [(i, cat.INTERVENTION, "ablation_drop", 0.2 + 0.01 * rng.standard_normal()) for i in ids]
    rows += [(i, cat.INTERVENTION, "ablation_drop_shuffled", 0.01 * rng.standard_normal()) for i in ids]
    gaps = shuffle_gap(pd.DataFrame(rows, columns=["image_id", "method", "metric", "value"]))
    r = gaps[gaps["metric"] == "ablation_drop" + cat.GAP_SUFFIX]
    assert len(r) == 1 and r.iloc[0]["method_a"] == r.iloc[0]["method_b"] == cat.INTERVENTION
    assert r.iloc[0]["ci_low"] > 0


def test_one_name_per_map_latent_ig_needs_a_latent_code():
    from medxgan.catalogue import not_offered, offered

    assert offered("latent_ig", "published") and offered("latent_ig", None)
    for fam in ("inpaint", "residual"):
        assert not offered("latent_ig", fam)
        assert set(not_offered(["medxgan", "latent_ig", "counterfactual_ig", "ig"], fam)) == {"latent_ig"}
    assert offered("counterfactual_ig", "inpaint") and offered("gradcam", "inpaint")
