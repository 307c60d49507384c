"""Sizes (issue #16, item 6): the generator trains and explains at the cohort's stored size
(128 px) while the classifier sees its own input size (224 px), through the whole audit."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from flows.audit import audit_flow
from flows.ingest import ingest_flow
from medxgan.cohort.reader import Cohort
from medxgan.explain.serialize import read_maps
from medxgan.storage import Store


class _Brightness(nn.Module):
    """A 224 px classifier of mean brightness around the cohort's median (half the images on
    either side), an identity 1x1 convolution first (the sanity check needs weights)."""

    def __init__(self, centre: float):
        super().__init__()
        self.stem = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.stem.weight.fill_(1.0)
            self.stem.bias.fill_(-centre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == 224
        return 200 * self.stem(x).mean((1, 2, 3))[:, None]


def test_a_128px_cohort_with_a_224px_classifier(prefect_harness, tmp_path):
    cohort = str(tmp_path / "cohort")
    ingest_flow(source="phantom-cxr", out=cohort, n=48, size=128, seed=3, prevalence=0.5)
    x = Cohort(cohort).load(Cohort(cohort).index()["image_id"].to_pylist()).images
    centre = float(np.median(x.mean((1, 2, 3)).numpy()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Brightness(centre)), str(tmp_path / "b.ts"))
    (tmp_path / "b.yaml").write_text("kind: torchscript\npath: b.ts\ninput_size: 224\n")
    m = audit_flow({
        "name": "sizes", "seed": 0, "store": str(tmp_path / "store"),
        "cohort": {"source": "existing", "url": cohort},
        "classifier": {"spec": str(tmp_path / "b.yaml")},
        "gan": {"train": {"health_heldout": 2, "heldout_split": "val",
                          "inpaint": {"steps": 4, "batch": 4, "health": {"negatives": 4}}}},
        "explain": {"methods": ["medxgan", "ig"], "split": "", "max_images": 3,
                    "shard_size": 3, "method_options": {"ig": {"n_steps": 4}}},
        "score": {"n_boot": 20, "shortcut": False, "intervention": False}})
    gan = Store(m["stages"]["gan"]["url"]).read_manifest()
    assert gan["family"] == "inpaint" and gan["gan_config"]["image_size"] == 128
    run = Store(m["run_url"])
    for method in ("medxgan", "ig"):
        ids, maps = read_maps(run.read_parquet(f"explanations/method={method}/part-00000.parquet"))
        assert len(ids) == 3 and tuple(maps.shape[1:]) == (128, 128), method
    scores = run.read_parquet("scores.parquet").to_pandas()
    assert set(scores["method"]) == {"medxgan", "ig"}
