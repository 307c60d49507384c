"""``medxgan demo``: the whole audit on a generated phantom cohort, twice.

One phantom-cxr cohort in which most positives carry a small bright *shortcut tag* in a corner.
Two baseline classifiers are trained on it: a **clean** one that never sees the tag (it is
removed from its training images) and a **shortcut** one that sees it (and learns it). Both are
audited with the same settings and the same acceptance criteria (:data:`DEMO_CRITERIA`); their
verdicts must tell them apart: clean "relies on the findings, no shortcut", shortcut "shortcut
suspected" at the tag's corner (intervention evidence and the shortcut search on 64 test
images).
"""

from __future__ import annotations

import copy
from typing import Any

from prefect import flow

from flows.audit import audit_flow
from medxgan.config import field_default
from medxgan.settings import Settings


DEMO_CRITERIA: list[dict[str, Any]] = [
    {"name": "relies on the findings (own boxes lower p more than another image's)",
     "evidence": "intervention", "metric": "ablation_drop-shuffled_gap", "comparison": ">",
     "threshold": 0.0},
    {"name": "no strong shortcut (nothing outside the findings is shown to decide f for half the "
             "images it is given to: location-free, located or image-wide)",
     "evidence": "shortcut", "metric": "effect", "comparison": "<", "threshold": 0.5,
     "on": "ci_low"},
]
"""The acceptance criteria of both demo audits (the shortcut classifier is meant to fail)."""


def demo_configs(store: str, quick: bool = False) -> list[dict[str, Any]]:
    """The two audit configs of the demo (quick: a tiny version for tests)."""
    base: dict[str, Any] = {
        "store": store,
        "seed": 0,
        "cohort": {"source": "phantom-cxr", "n": 240 if quick else 2000, "size": 32 if quick else 64,
                   "seed": 0, "prevalence": 0.5, "shortcut_rate": 0.9},
        # the healthy-anatomy in-filler (the default family; docs/generator-families.md)
        "gan": {"model": {"family": "inpaint"},
                "train": {"health_heldout": 8 if quick else 32,
                          "inpaint": {"steps": 60 if quick else 600,
                                      "health": {"negatives": 16 if quick else 64}}}},
        "explain": {"methods": ["medxgan", "counterfactual_ig", "gradcam", "ig",
                                "random", "box_prior"],
                    "max_images": 16 if quick else 48, "shard_size": 16 if quick else 24,
                    "tune": ["gradcam", "ig"], "tune_images": 16 if quick else 32,
                    "method_options": {"counterfactual_ig": {"n_points": 21 if quick else 33},
                                       "ig": {"n_steps": 16 if quick else 32}}},
        "score": {"n_boot": 200 if quick else 1000, "shortcut_images": 48 if quick else 128,
                  "residual_images": 48 if quick else 512},
        "criteria": DEMO_CRITERIA,
    }
    train = {"arch": "small_cnn" if quick else "small_cnn2", "epochs": 3 if quick else 12,
             "flips": "horizontal"}
    clean = copy.deepcopy(base)
    clean.update(name="demo-clean", classifier={"train": {**train, "remove_tag": True}})
    shortcut = copy.deepcopy(base)
    shortcut.update(name="demo-shortcut", classifier={"train": {**train, "remove_tag": False}})
    return [clean, shortcut]


@flow(name="demo")
def demo_flow(store: str = field_default(Settings, "store"), quick: bool = False) -> list[dict]:
    """Audit the clean and the shortcut classifier; returns both run manifests."""
    return [audit_flow(cfg) for cfg in demo_configs(store, quick)]
