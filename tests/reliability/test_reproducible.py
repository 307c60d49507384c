"""Reproducible evidence (issue #15 item 8): the same audit config on the same data, run into
two fresh stores at different paths, gives the same cohort, classifier and generator hashes,
the same run id and a bit-identical ``scores.parquet`` (CPU, one thread).

Each run starts from differently seeded Python / numpy / torch global RNGs, as two fresh
processes on two machines would: every RNG whose state is stored must be seeded by the run.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import torch

from flows.audit import audit_flow
from medxgan.storage import Store
from tests.flows._configs import tiny


def _cfg(store: str) -> dict:
    return tiny(
        store, name="repro",
        cohort={"source": "phantom-cxr", "n": 64, "size": 32, "seed": 3, "shortcut_rate": 0.0},
        classifier={"train": {"epochs": 1, "batch": 16}},
        gan={"model": {"family": "published", "g_width": 0.125, "d_width": 0.125, "d_a": 16,
                       "d_p": 4},
             "train": {"steps": 4, "batch": 8, "checkpoint_every": 2, "health_samples": 8,
                       "health_heldout": 4, "health_inversion_steps": 3,
                       "encoder": {"steps": 6, "batch": 8, "compare_steps": 3},
                       "inpaint": {"steps": 8, "health": {"negatives": 8}}}},
        explain={"methods": ["medxgan", "gradcam", "random"], "max_images": 4,
                 "shard_size": 2, "inversion": {"steps": 4}},
        score={"n_boot": 10})


def _audit(store: str, noise: int) -> tuple[dict, dict, pd.DataFrame]:
    random.seed(noise)          # what a fresh process would hold: unrelated global states
    np.random.seed(noise)
    torch.manual_seed(noise)
    m = audit_flow(_cfg(store))
    run = Store(m["run_url"])
    return m, run.read_json("provenance.json"), run.read_parquet("scores.parquet").to_pandas()


def test_two_stores_give_the_same_hashes_run_id_and_scores(prefect_harness, tmp_path):
    a = str(tmp_path / "a")
    b = str(tmp_path / "elsewhere" / "deeper" / "store-b")
    ma, pa_, sa = _audit(a, 1)
    mb, pb, sb = _audit(b, 2)
    assert not any(v.get("reused") for v in mb["stages"].values())   # b really ran
    for k in ("cohort_hash", "classifier_hash", "generator_hash"):
        assert pa_[k] and pa_[k] == pb[k], (k, pa_[k], pb[k])
    ga, gb = (Store(m["stages"]["gan"]["url"]) for m in (ma, mb))
    ea, eb = ga.read_json("encoder.json"), gb.read_json("encoder.json")   # kept or not
    assert ea["content_hash"] == eb["content_hash"]
    assert ga.read_json("best.json")["content_hash"] == gb.read_json("best.json")["content_hash"]
    # seeded RNG states and no URL inside: even the checkpoint files are byte-identical here
    assert ga.read_json("best.json")["sha256"] == gb.read_json("best.json")["sha256"]
    assert ma["run_id"] == mb["run_id"]
    assert ma["run_url"] != mb["run_url"]
    assert len(sa) > 0 and set(sa["method"]) == {"medxgan", "gradcam", "random", "intervention"}
    pd.testing.assert_frame_equal(sa, sb, check_exact=True)           # NaN == NaN here
