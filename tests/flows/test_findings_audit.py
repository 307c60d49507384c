"""Audits per finding (``explain.findings``): a multi-label TorchScript classifier with named
outputs, a cohort whose boxes name two findings; each finding is explained with its own output
and scored against its own boxes, and the multi-finding run stacks the summaries."""

from __future__ import annotations

import html.parser

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from flows.audit import audit_flow
from flows.cli import audit_exit_code
from flows.findings import with_finding
from medxgan.cohort.reader import Cohort
from medxgan.cohort.writer import Box, CohortImage, CohortWriter
from medxgan.metrics.aggregate import COMPARISONS, SUMMARY
from medxgan.report._html import esc
from medxgan.storage import Store

S = 32


class _TwoFindings(nn.Module):
    """Output 0 (Nodule): a soft maximum of the upper three quarters (a bright square);
    output 1 (Effusion): brightness of the bottom quarter (fluid is white on a radiograph, here
    on one side); output 2: the mean (an unrelated output). An identity
    1x1 convolution first gives the model weights (the sanity check re-initialises them)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.stem.weight.fill_(1.0)
            self.stem.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        bright = torch.logsumexp(50 * x[:, :, :24].flatten(1), 1) / 50
        nodule = 30 * (bright - 0.82)
        effusion = 30 * (x[:, :, 24:, :].mean((1, 2, 3)) - 0.6)
        return torch.stack([nodule, effusion, x.mean((1, 2, 3))], 1)


def _cohort(url: str) -> None:
    rng = np.random.default_rng(0)
    w = CohortWriter(Store(url), "folder")
    for i in range(48):
        px = rng.uniform(0.45, 0.55, (S, S))
        kind, boxes = i % 3, []
        if kind == 0:                                  # a nodule somewhere above the bottom
            y, x = rng.integers(2, 18, 2)
            px[y:y + 4, x:x + 4] = 0.95
            boxes = [Box(x, y, x + 4, y + 4, "Nodule")]
        elif kind == 1:                # an effusion: one side of the bottom quarter white
            x0 = 0 if i % 2 else S // 2
            px[24:, x0:x0 + S // 2] = 0.9
            boxes = [Box(x0, 24, x0 + S // 2, S, "pleural_effusion")]
        w.add(CohortImage(f"im{i:03d}", 1 if boxes else 0, (px * 255).astype(np.uint8),
                          f"im{i:03d}.png", boxes))
    w.close()


@pytest.fixture(scope="module")
def two_findings(prefect_harness, tmp_path_factory):
    d = tmp_path_factory.mktemp("findings")
    _cohort(str(d / "cohort"))
    torch.jit.script(_TwoFindings()).save(str(d / "multi.pt"))
    (d / "spec.yaml").write_text(
        "kind: torchscript\npath: multi.pt\ninput_size: 32\noutputs: [Nodule, Effusion, Other]\n"
        "activation: sigmoid\nfinding: Other\n")
    cfg = {"name": "two", "seed": 0, "store": str(d / "store"),
           "cohort": {"source": "existing", "url": str(d / "cohort")},
           "classifier": {"spec": str(d / "spec.yaml")},
           "gan": {"train": {"health_heldout": 4, "inpaint": {"steps": 10, "health": {"negatives": 8}}}},
           "explain": {"methods": ["ig", "box_prior"], "split": "", "max_images": 8,
                       "shard_size": 4, "findings": ["Nodule", "Effusion"],
                       "method_options": {"ig": {"n_steps": 8}}},
           "score": {"n_boot": 50, "shortcut": False},
           "criteria": [{"name": "ig points", "metric": "pointing_game", "method": "ig",
                         "comparison": ">=", "threshold": 0.5}]}
    return cfg, audit_flow(cfg), audit_flow(cfg)


def test_each_finding_is_audited_with_its_output_and_its_boxes(two_findings):
    cfg, m, _ = two_findings
    assert m["multi_finding"] and list(m["findings"]) == ["Nodule", "Effusion"]
    runs = {f: Store(v["run_url"]) for f, v in m["findings"].items()}
    assert [v["run_id"].rsplit("-", 1)[0] for v in m["findings"].values()] == \
        ["two-nodule", "two-effusion"]
    for f, run in runs.items():
        prov = run.read_json("provenance.json")
        view = Cohort(prov["config"]["cohort"]["url"])
        assert view.manifest["view"]["finding"] == f
        names = set(view.boxes_table().column("finding").to_pylist())
        assert names == ({"Nodule"} if f == "Nodule" else {"pleural_effusion"})
        scores = run.read_parquet("scores.parquet").to_pandas()
        ids = set(scores["image_id"])
        assert ids and ids <= set(view.boxes_by_id())          # only this finding's positives
        ig = scores[(scores["method"] == "ig") & (scores["metric"] == "relevance_mass")]
        assert ig["value"].mean() > 0.55, (f, ig["value"].mean())  # its own output (another: ~0)
    # the spec's own finding (Other) was replaced per finding
    for f, v in m["findings"].items():
        spec = Store(v["run_url"]).read_json("provenance.json")["config"]["classifier"]["spec"]
        assert f"finding: {f}" in Store(spec.rsplit("/", 1)[0]).read_bytes(
            spec.rsplit("/", 1)[1]).decode()


def test_the_multi_finding_run_stacks_the_tables_and_reports_each_verdict(two_findings):
    cfg, m, again = two_findings
    run = Store(m["run_url"])
    for name, schema in (("summary.parquet", SUMMARY), ("comparisons.parquet", COMPARISONS)):
        t = run.read_parquet(name)
        assert t.schema.equals(with_finding(schema)), name
        df = t.to_pandas()
        assert list(df["finding"].unique()) == ["Nodule", "Effusion"]
        for f, v in m["findings"].items():
            own = Store(v["run_url"]).read_parquet(name).to_pandas()
            part = df[df["finding"] == f].drop(columns="finding").reset_index(drop=True)
            pd.testing.assert_frame_equal(part, own)
    page = run.read_bytes("report/index.html").decode()
    html.parser.HTMLParser().feed(page)
    for f, v in m["findings"].items():
        assert f"Finding: {f}" in page and esc(v["verdict"]) in page
        assert f"../../{v['run_id']}/report/index.html" in page
    assert m["verdict"].startswith("Nodule: ") and "; Effusion: " in m["verdict"]
    assert {c["finding"] for c in m["criteria"]} == {"Nodule", "Effusion"}
    assert audit_exit_code(m) == (3 if m["criteria_failed"] else 0)
    assert run.read_manifest()["run_id"] == m["run_id"]
    # a rerun reuses every finding's run and gives the same multi-finding run
    assert again["run_id"] == m["run_id"]
    assert all(v["reused"] for k, v in again["stages"].items() if k.startswith("finding:"))


def test_one_finding_is_an_ordinary_run_and_an_unnamed_finding_is_one_line(two_findings):
    cfg, m, _ = two_findings
    one = audit_flow({**cfg, "explain": {**cfg["explain"], "findings": ["nodule"]}})
    assert "multi_finding" not in one and one["run_id"] == m["findings"]["Nodule"]["run_id"]
    assert "finding" not in Store(one["run_url"]).read_parquet("summary.parquet").schema.names
    with pytest.raises(ValueError, match="'Cardiomegaly': no box of cohort") as e:
        audit_flow({**cfg, "explain": {**cfg["explain"], "findings": ["Cardiomegaly"]}})
    assert "\n" not in str(e.value)
