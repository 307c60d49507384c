"""SIGKILL of the audit process in the middle of GAN training and in the middle of the explain
stage: the rerun completes and its scores equal those of an uninterrupted run of the same
config in another store (same rows, no duplicates).

The killed audit runs in its own Python process (``tests/reliability/_helpers.start_audit``)
against the API of the Prefect test harness. The corrupt-latest-checkpoint fallback is tested
in ``tests/models/test_train_gan.py::test_corrupt_latest_checkpoint_falls_back_to_the_previous``.
"""

from __future__ import annotations

import glob
import os
import shutil

import pandas as pd
import pytest

from flows.audit import audit_flow
from medxgan.storage import Store
from tests.flows._configs import tiny
from tests.reliability._helpers import scores, sigkill, start_audit, wait_for

KEYS = ["image_id", "method", "metric"]


def _cfg(store: str) -> dict:
    """A tiny audit whose GAN training (16 steps, a checkpoint every 4) and explain stage
    (12 images in shards of 2, medXGAN inversion first) last long enough to be killed."""
    return tiny(
        store, name="killed",
        cohort={"source": "phantom-cxr", "n": 80, "size": 32, "seed": 5, "shortcut_rate": 0.0},
        classifier={"train": {"epochs": 1, "batch": 32}},
        gan={"model": {"family": "published", "g_width": 0.125, "d_width": 0.125, "d_a": 16,
                       "d_p": 4},
             "train": {"steps": 16, "batch": 8, "checkpoint_every": 4, "health_samples": 8,
                       "health_heldout": 4, "health_inversion_steps": 3,
                       "inpaint": {"steps": 12, "health": {"negatives": 8}}}},
        explain={"methods": ["medxgan", "gradcam", "random", "box_prior"], "max_images": 12,
                 "shard_size": 2, "inversion": {"steps": 25}},
        score={"n_boot": 20, "faithfulness": False})


@pytest.fixture(scope="module")
def reference(prefect_harness, tmp_path_factory):
    """An uninterrupted run: (store path, manifest, scores)."""
    store = str(tmp_path_factory.mktemp("reference"))
    m = audit_flow(_cfg(store))
    return store, m, scores(m["run_url"])


def _same_scores(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert not got.duplicated(KEYS).any()
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got[KEYS], want[KEYS])
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-6, atol=1e-9)


def test_kill_during_gan_training_then_rerun(reference, prefect_harness, tmp_path):
    _, ref_m, ref_scores = reference
    store = tmp_path / "store"
    proc = start_audit(_cfg(str(store)), tmp_path)
    try:
        # a complete checkpoint (its pointer written last) exists: training is under way
        wait_for(lambda: bool(glob.glob(f"{store}/gans/*/checkpoints/latest.json")), proc)
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    # killed mid-training: a checkpoint exists, the GAN has no manifest, there is no run
    assert glob.glob(f"{store}/gans/*/checkpoints/step-*.pt")
    assert not glob.glob(f"{store}/gans/*/manifest.json")
    assert not glob.glob(f"{store}/runs/*/manifest.json")
    m = audit_flow(_cfg(str(store)))
    # (run ids differ: the generator hash covers checkpoint bytes, which name the store's cohort)
    gan = Store(m["stages"]["gan"]["url"]).read_manifest()
    assert gan["resumed_from"] is not None and gan["resumed_from"] > 0  # resumed, not restarted
    _same_scores(scores(m["run_url"]), ref_scores)


def test_kill_during_explain_then_rerun(reference, prefect_harness, tmp_path):
    ref_store, ref_m, ref_scores = reference
    store = tmp_path / "store"
    # the finished earlier stages are copied (they are content-addressed and reused), so the
    # process spends its time in the explain stage
    for sub in ("cohorts", "classifiers", "gans"):
        shutil.copytree(os.path.join(ref_store, sub), store / sub)
    proc = start_audit(_cfg(str(store)), tmp_path)
    parts = f"{store}/runs/*/explanations/method=*/part-*.parquet"
    try:
        wait_for(lambda: bool(glob.glob(parts)), proc)
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    written = glob.glob(parts)
    assert written, "no explanation part was written before the kill"
    assert not glob.glob(f"{store}/runs/*/explanations/manifest.json"), "explain had finished"
    assert not glob.glob(f"{store}/runs/*/manifest.json")
    m = audit_flow(_cfg(str(store)))
    assert m["run_id"] == ref_m["run_id"]
    ex = Store(m["run_url"]).read_manifest("explanations")
    assert ex["skipped"] >= 1  # parts of the killed run were kept, the rest written
    assert not glob.glob(f"{store}/runs/*/**/*.tmp-*", recursive=True)
    _same_scores(scores(m["run_url"]), ref_scores)


def test_kill_between_checkpoint_file_and_its_pointers_keeps_the_best(reference, tmp_path):
    """The state a SIGKILL leaves between the checkpoint file and its pointers, rebuilt
    by deleting what had not been written yet; the resumed run must pick the same best."""
    from medxgan.config.models import GanConfig, GanTrainConfig
    from medxgan.generators import train_gan
    from tasks.common import classifier

    _, ref_m, _ = reference
    cohort = ref_m["stages"]["cohort"]["url"]
    f = classifier(ref_m["stages"]["classifier"]["spec"])
    cfg = _cfg("unused")["gan"]
    gc = GanConfig.model_validate({"image_size": 32, **cfg["model"]})
    tc = {"seed": 0, **cfg["train"]}
    whole = train_gan(cohort, f, str(tmp_path / "whole"), gc,
                      GanTrainConfig.model_validate({**tc, "steps": 8}))
    killed = Store(str(tmp_path / "killed"))
    train_gan(cohort, f, killed, gc, GanTrainConfig.model_validate({**tc, "steps": 4}))
    for key in ("best.pt", "best.json", "checkpoints/latest.json",
                "checkpoints/step-0000004.png", "manifest.json"):
        killed.delete(key)
    with pytest.warns(UserWarning, match="latest.json missing"):
        resumed = train_gan(cohort, f, killed, gc,
                            GanTrainConfig.model_validate({**tc, "steps": 8}))
    assert resumed["resumed_from"] == 4
    assert resumed["best"]["step"] == whole["best"]["step"]
