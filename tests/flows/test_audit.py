"""The whole audit under Prefect's real engine: tables, report, reuse, failure, history, Dask."""

from __future__ import annotations

import html.parser
import re

import pandas as pd
import pyarrow as pa
import pytest

from flows.audit import audit_flow
from medxgan.catalogue import INTERVENTION
from medxgan.explain.base import METHODS
from medxgan.metrics.aggregate import COMPARISONS, SCORES, SUMMARY
from medxgan.storage import Store
from tests.flows._configs import tiny


@pytest.fixture(scope="module")
def local_audit(prefect_harness, tmp_path_factory):
    store = str(tmp_path_factory.mktemp("store"))
    first = audit_flow(tiny(store))
    second = audit_flow(tiny(store))
    return store, first, second


def _check_outputs(store_url: str, manifest: dict) -> None:
    run = Store(manifest["run_url"])
    assert run.read_parquet("scores.parquet").schema.equals(SCORES)
    assert run.read_parquet("summary.parquet").schema.equals(SUMMARY)
    assert run.read_parquet("comparisons.parquet").schema.equals(COMPARISONS)
    scores = run.read_parquet("scores.parquet").to_pandas()
    assert set(scores["method"]) == set(METHODS) | {INTERVENTION}  # + the intervention rows
    assert not scores.duplicated(["image_id", "method", "metric"]).any()
    metrics = set(scores["metric"])
    for m in ("pointing_game", "iou_otsu", "relevance_mass", "relevance_rank", "auroc", "auprc",
              "deletion_auc", "insertion_auc", "recon_mse", "counterfactual_flip",
              "counterfactual_similarity", "pointing_game_shuffled", "relevance_mass_shuffled",
              "counterfactual_ncc", "counterfactual_ncc_shuffled", "counterfactual_dice",
              "counterfactual_dice_shuffled"):  # a phantom cohort: true twins
        assert m in metrics, m
    ncc = scores[(scores["method"] == "medxgan") & (scores["metric"] == "counterfactual_ncc")]
    assert ncc["value"].between(-1, 1).all() and ncc["value"].notna().any()
    dice = scores[(scores["method"] == "medxgan") & (scores["metric"] == "counterfactual_dice")]
    assert dice["value"].dropna().between(0, 1).all() and dice["value"].notna().any()
    prov = run.read_json("provenance.json")
    for k in ("classifier_hash", "cohort_hash", "generator_hash", "code_version", "libraries",
              "seeds", "config"):
        assert prov[k], k
    page = run.read_bytes("report/index.html").decode()
    for m in METHODS:
        assert m in page, m
    assert not re.search(r"(src|href)=[\"'](https?:)?//", page)
    assert "http://" not in page and "https://" not in page
    html.parser.HTMLParser().feed(page)
    assert "<figcaption>true healthy twin</figcaption>" in page   # a phantom cohort's strips
    hist = Store(store_url).read_parquet("audits/history.parquet").to_pandas()
    assert manifest["run_id"] in set(hist["run_id"])
    assert run.read_manifest()["run_id"] == manifest["run_id"]


def test_audit_local_outputs_and_reuse(local_audit):
    store, first, second = local_audit
    _check_outputs(store, first)
    assert not any(v.get("reused") for k, v in first["stages"].items() if k != "classifier"
                   or not v.get("provided"))
    # an unchanged rerun reuses every stage (stage records, not timing)
    assert second["run_id"] == first["run_id"]
    assert set(second["stages"]) >= {"cohort", "classifier", "gan", "run"}
    assert all(v["reused"] for v in second["stages"].values())


def test_changed_classifier_appends_history_and_trend(local_audit, prefect_harness):
    store, first, _ = local_audit
    changed = tiny(store, classifier={"train": {"epochs": 3, "batch": 32}})
    m = audit_flow(changed)
    assert m["run_id"] != first["run_id"]
    st = m["stages"]
    assert st["cohort"]["reused"] and not st["classifier"]["reused"] and not st["gan"]["reused"]
    hist = Store(store).read_parquet("audits/history.parquet").to_pandas()
    tiny_runs = set(hist.loc[hist["audit"] == "tiny", "run_id"])
    assert {first["run_id"], m["run_id"]} <= tiny_runs
    page = Store(m["run_url"]).read_bytes("report/index.html").decode()
    assert first["run_id"] in page  # the previous run is named in the trend / regression section
    assert "<svg" in page


def test_failing_stage_fails_the_audit_and_writes_no_manifest(prefect_harness, tmp_path):
    import torch

    bad = tmp_path / "evil.pt"
    torch.save(torch.nn.Linear(2, 1), bad)  # a pickled full model: must be refused
    (tmp_path / "spec.yaml").write_text(f"kind: small_cnn\npath: {bad}\ninput_size: 32\n")
    cfg = tiny(str(tmp_path / "store"), classifier={"spec": str(tmp_path / "spec.yaml")})
    with pytest.raises(Exception, match="(?i)pickle|weights_only|state_dict|refus"):
        audit_flow(cfg)
    assert Store(str(tmp_path / "store")).list("runs/", suffix="manifest.json") == []


def test_audit_on_s3(prefect_harness, s3_store_url):
    m = audit_flow(tiny(s3_store_url, explain={"methods": ["gradcam", "random", "box_prior"],
                                               "max_images": 6, "shard_size": 3}))
    assert m["run_url"].startswith("s3://")
    run = Store(m["run_url"])
    assert run.read_parquet("summary.parquet").schema.equals(SUMMARY)
    page = run.read_bytes("report/index.html").decode()
    assert all(x in page for x in ("gradcam", "random", "box_prior"))
    assert Store(s3_store_url).exists("audits/history.parquet")


def test_unknown_config_key_is_an_error(tmp_path):
    from pydantic import ValidationError

    from medxgan.config import AuditConfig

    with pytest.raises(ValidationError, match="extra"):
        AuditConfig.model_validate({**tiny(str(tmp_path)), "colour": "blue"})
    with pytest.raises(ValidationError):
        AuditConfig.model_validate(tiny(str(tmp_path), seed="not-a-number"))


def test_dask_explain_matches_local(local_audit, prefect_harness, tmp_path):
    from flows.audit import task_runner
    from flows.explain import explain_flow
    from flows.score import score_flow

    _, first, _ = local_audit
    info = Store(first["run_url"]).read_json("run.json")
    out = {}
    for runner in ("local", "dask"):
        run = str(tmp_path / runner)
        explain_flow.with_options(task_runner=task_runner(runner, workers=2))(
            cohort=info["cohort"], classifier=info["classifier"], run=run,
            methods=["gradcam", "ig", "random"], max_images=8, shard_size=4,
            options={"ig": {"n_steps": 6}})
        score_flow(run=run, n_boot=50, sanity_check=False)
        out[runner] = pa.Table.to_pandas(Store(run).read_parquet("scores.parquet"))
    pd.testing.assert_frame_equal(out["local"], out["dask"], check_exact=False, rtol=1e-6,
                                  atol=1e-9)


@pytest.mark.parametrize("family", ["inpaint", "residual"])
def test_audit_with_an_image_conditioned_family(local_audit, family):
    """The default generator family (inpaint) and the residual family through the whole audit:
    their counterfactuals are scored against the phantoms' true twins and the report shows the
    twin beside the strip."""
    store, first, _ = local_audit
    own = {"steps": 20, "batch": 8, "health": {"negatives": 8}}
    if family == "residual":
        own.update(base=4, depth=2, critic_base=4, critic_steps=1)
    gan = {"model": {"family": family}, "train": {"health_heldout": 4, family: own}}
    cfg = tiny(store, gan=gan, explain={**tiny(store)["explain"],
                                        "methods": ["medxgan", "latent_ig", "counterfactual_ig",
                                                    "ig"]})
    m = audit_flow(cfg)
    assert m["stages"]["cohort"]["reused"] and m["stages"]["classifier"]["reused"]
    assert m["stages"]["gan"]["hash"] != first["stages"]["gan"]["hash"]
    gan_store = Store(m["stages"]["gan"]["url"])
    assert gan_store.read_manifest()["family"] == family
    assert gan_store.read_json("best.json")["step"] == 20
    scores = Store(m["run_url"]).read_parquet("scores.parquet").to_pandas()
    mx = scores[scores["method"] == "medxgan"].set_index(["image_id", "metric"])["value"]
    assert (mx.xs("recon_mse", level="metric") == 0).all()          # x_pos = x
    ncc = mx.xs("counterfactual_ncc", level="metric")
    assert ncc.between(-1, 1).all() and ncc.notna().any()
    page = Store(m["run_url"]).read_bytes("report/index.html").decode()
    assert "x_neg + &alpha;(x &minus; x_neg)" in page
    assert '<section id="generator"><h2>Generator health</h2>' in page
    assert f"<code>{family}</code>" in page and "universal_flip" in page
    # one name per map: latent_ig would repeat counterfactual_ig's map for this family
    assert "latent_ig" in m["stages"]["explain"]["not_offered"]
    assert "latent_ig" not in set(scores["method"]) and "counterfactual_ig" in set(scores["method"])
    assert "G(z_a, 0)" not in page and "reconstruction MSE of the inversion" not in page
    assert f"the counterfactual x_neg ({family} family" in page
