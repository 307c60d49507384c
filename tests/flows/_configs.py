"""A tiny audit config for flow tests (32 px, a few training steps)."""

from __future__ import annotations

import copy
from typing import Any

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "cohort": {"source": "phantom-cxr", "n": 120, "size": 32, "seed": 5, "shortcut_rate": 0.0},
    "classifier": {"train": {"epochs": 2, "batch": 32}},
    "gan": {"model": {"family": "published", "g_width": 0.125, "d_width": 0.125, "d_a": 16, "d_p": 4},
            "train": {"steps": 4, "batch": 8, "checkpoint_every": 4, "health_samples": 16,
                      "health_heldout": 4, "health_inversion_steps": 3,
                      # the score stage's healthy in-filler (score.ablation_infill: inpaint)
                      "inpaint": {"steps": 20, "health": {"negatives": 8}}}},
    "explain": {"methods": ["medxgan", "latent_ig", "counterfactual_ig", "gradcam", "ig",
                            "smoothgrad", "occlusion", "random", "box_prior"],
                "max_images": 8, "shard_size": 4, "inversion": {"steps": 5},
                "method_options": {"latent_ig": {"n_points": 6},
                                   "counterfactual_ig": {"n_points": 6}, "ig": {"n_steps": 6},
                                   "smoothgrad": {"nt_samples": 3},
                                   "occlusion": {"window": 8, "stride": 8}}},
    "score": {"n_boot": 50},
}


def tiny(store: str, **changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(TINY)
    cfg["store"] = store
    for k, v in changes.items():
        cfg[k] = v
    return cfg
