"""The explain flow with ``tune``: options chosen on the validation split's boxes, written to
``tuning.json``, used (and recorded in ``run.json``) for the explained test split."""

from __future__ import annotations

import pytest
import torch

from medxgan.storage import Store


@pytest.fixture(scope="module")
def tuned_run(prefect_harness, tmp_path_factory):
    from bench._common import phantom_tensors, quick_classifier, write_phantom_cohort
    from flows.explain import explain_flow

    root = tmp_path_factory.mktemp("tuning")
    cohort = f"{root}/cohort"
    write_phantom_cohort(cohort, "phantom-cxr", 120, size=32, seed=5)
    x, y = phantom_tensors("phantom-cxr", 128, size=32, seed=6)
    f = quick_classifier(x, y, epochs=2, seed=0)
    torch.save(f.model.state_dict(), root / "f.pt")
    spec = root / "spec.yaml"
    spec.write_text(f"kind: small_cnn\npath: {root / 'f.pt'}\ninput_size: 32\n")
    run = f"{root}/run"
    kw = dict(cohort=cohort, classifier=str(spec), run=run, methods=["gradcam", "random"],
              split="test", labels=[1], max_images=4, shard_size=4, tune=["gradcam"],
              tune_split="val", tune_images=8)
    man = explain_flow(**kw)
    return kw, man


def test_tuning_json_is_written_and_the_choice_is_used(tuned_run):
    from medxgan.cohort.reader import Cohort
    from medxgan.explain import make_explainer
    from medxgan.explain.serialize import read_maps
    from medxgan.classifiers import load_classifier
    from tasks.explain import part_key

    kw, man = tuned_run
    store = Store(kw["run"])
    tuning = store.read_json("tuning.json")
    assert list(tuning) == ["gradcam"]                       # only the tuned method
    t = tuning["gradcam"]
    layers = [r["options"]["layer"] for r in t["candidates"]]
    assert layers == ["features.2", "features.6", "features.10", "blocks-mean"]
    assert t["choice"] in [r["options"] for r in t["candidates"]]
    assert t["split"] == "val" and 0 < len(t["image_ids"]) <= 8
    index = Cohort(kw["cohort"]).index().to_pandas().set_index("image_id")
    assert set(index.loc[t["image_ids"], "split"]) == {"val"}
    assert not set(t["image_ids"]) & set(man["image_ids"])  # never the scored images
    info = store.read_json("run.json")
    assert info["options"]["gradcam"] == t["choice"]         # run.json shows the choice
    assert info["tuning"] == {"methods": ["gradcam"], "split": "val", "max_images": 8}
    assert "random" not in info["options"]
    # the stored maps are the chosen layer's
    ids, maps = read_maps(store.read_parquet(part_key("explanations", "gradcam", 0)))
    f = load_classifier(kw["classifier"])
    want = make_explainer("gradcam", f, config=t["choice"]).explain(
        Cohort(kw["cohort"]).load(ids).images).maps
    torch.testing.assert_close(maps, want.half().float())


def test_existing_tuning_json_is_reused(tuned_run):
    from flows.explain import explain_flow

    kw, _ = tuned_run
    store = Store(kw["run"])
    tuning = store.read_json("tuning.json")
    other = next(r["options"] for r in tuning["gradcam"]["candidates"]
                 if r["options"] != tuning["gradcam"]["choice"])
    tuning["gradcam"]["choice"] = other                     # a stored choice is not recomputed
    store.write_json("tuning.json", tuning)
    explain_flow(**kw)
    assert store.read_json("run.json")["options"]["gradcam"] == other
    assert store.read_json("tuning.json")["gradcam"]["choice"] == other


def test_tune_split_must_differ_from_the_explained_split(tuned_run, tmp_path):
    from flows.explain import explain_flow

    kw, _ = tuned_run
    run = str(tmp_path / "same")
    with pytest.raises(ValueError, match="must differ from the explained split 'test'"):
        explain_flow(**{**kw, "run": run, "tune_split": "test"})
    assert not Store(run).exists("tuning.json") and not Store(run).exists("run.json")
