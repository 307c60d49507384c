"""One pipeline: the benchmarks score exactly what ``medxgan explain`` + ``medxgan score`` write.

A tiny phantom cohort (32 px, a SmallCNN trained for two epochs, 8 test positives in shards of
3) goes through the product's explain and score flows under Prefect, and through the benchmarks'
code path (``bench._pipeline.explain_and_score``, what ``bench.quality`` and ``bench.train_gan``
call). Both must give the same ``scores.parquet`` rows and values, NaN equal to NaN.

The comparison can fail: the shuffled-box control of the old bench (partners drawn within each
batch) gives other ``_shuffled`` values than the run-wide partners, checked below.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bench._common import phantom_tensors, quick_classifier, write_phantom_cohort
from bench._pipeline import explain_and_score
from medxgan.cohort import Cohort
from medxgan.storage import Store

METHODS = ["gradcam", "ig", "random", "box_prior"]
OPTIONS = {"ig": {"n_steps": 4}}
SEED = 3
SHARD = 3


@pytest.fixture(scope="module")
def product_run(prefect_harness, tmp_path_factory):
    from flows.explain import explain_flow
    from flows.score import score_flow

    root = tmp_path_factory.mktemp("one-pipeline")
    cohort = f"{root}/cohort"
    write_phantom_cohort(cohort, "phantom-cxr", 120, size=32, seed=5)
    x, y = phantom_tensors("phantom-cxr", 128, size=32, seed=6)
    f = quick_classifier(x, y, epochs=2, seed=0)
    torch.save(f.model.state_dict(), root / "f.pt")
    (root / "spec.yaml").write_text(f"kind: small_cnn\npath: {root / 'f.pt'}\ninput_size: 32\n")
    run = f"{root}/run"
    man = explain_flow(cohort=cohort, classifier=str(root / "spec.yaml"), run=run,
                       methods=METHODS, split="test", labels=[1], max_images=8,
                       shard_size=SHARD, options=OPTIONS)
    score_flow(run, n_boot=20, faithfulness=True, sanity_check=False, seed=SEED,
               intervention=False, shortcut=False)  # the explanations' scores only
    scores = Store(run).read_parquet("scores.parquet").to_pandas()
    return cohort, str(root / "spec.yaml"), run, man["image_ids"], scores


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return (df[["image_id", "method", "metric", "value"]]
            .sort_values(["method", "metric", "image_id"], kind="stable")
            .reset_index(drop=True))


def test_bench_path_scores_equal_the_flows(product_run):
    from medxgan.classifiers import load_classifier

    cohort, spec, _, ids, product = product_run
    assert len(ids) > SHARD  # several shards: partners cross shard boundaries
    bench, _ = explain_and_score(Cohort(cohort), load_classifier(spec), None, ids, METHODS,
                                 OPTIONS, seed=SEED, batch_size=SHARD, faithfulness=True)
    a, b = _sorted(product), _sorted(bench)
    assert set(a["metric"]) >= {"pointing_game", "relevance_mass_shuffled", "deletion_auc"}
    assert a["value"].notna().any()
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # NaN == NaN here


def test_old_within_batch_control_would_differ(product_run):
    """The within-batch derangement (old bench/quality.py) gives other shuffled scores."""
    from medxgan.explain.serialize import read_maps
    from medxgan.metrics.localization import localization_scores
    from medxgan.metrics.masks import boxes_to_masks
    from tasks.explain import part_key

    cohort, _, run, ids, product = product_run
    c = Cohort(cohort)
    old = []
    for s in range((len(ids) + SHARD - 1) // SHARD):
        part_ids, maps = read_maps(Store(run).read_parquet(part_key("explanations", "ig", s)))
        batch = c.load(part_ids)
        masks = boxes_to_masks(batch.boxes, *maps.shape[1:], tuple(batch.images.shape[-2:]))
        v = localization_scores(maps, masks, shuffle_seed=SEED)["relevance_mass_shuffled"]
        old.append(pd.Series(v.numpy(), index=part_ids))
    old = pd.concat(old).sort_index()
    new = product[(product.method == "ig") & (product.metric == "relevance_mass_shuffled")]
    new = new.set_index("image_id")["value"].sort_index()
    assert list(old.index) == list(new.index)
    same = np.isclose(old.values, new.values, equal_nan=True, rtol=0, atol=0)
    assert not same.all()
