"""No secrets and no patient identifiers in any output; keyed pseudonyms of DICOM image ids.

A small audit on the live S3 store whose cohort is an RSNA-format folder of real DICOM files
(pydicom) carrying distinctive fake identifiers; the filename patientId equals the header's
PatientID, as in the RSNA release. Every object in the store (Parquet decoded to its rows,
JSON/HTML/YAML as text, binary objects as bytes), the captured logs (DEBUG) and what the
Prefect API holds of the flow runs (parameters, logs) is scanned for the identifiers, the
S3 secret and the pseudonymisation key.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pydicom
import pytest

from flows.audit import audit_flow
from medxgan.ingest import rsna
from medxgan.storage import Store
from tests.flows._configs import tiny
from tests.ingest.helpers import phantom, write_dicom
from tests.reliability._helpers import store_text

N = 40
NAME, BIRTH, ACCESSION = "Quimby^Ottoline^Zara", "18990123", "ACCN-QX-558812"
KEY = "k3y-Do-Not-Leak-7731"


def _pid(i: int) -> str:
    return f"PIDQZX{i:03d}W"


def _rsna_root(root) -> str:
    """N patients, 48 px MONOCHROME2 DICOMs; every other one positive with one box."""
    lines = ["patientId,x,y,width,height,Target"]
    for i in range(N):
        pid, box = _pid(i), (10 + i % 7, 12, 16, 14)
        pos = i % 2 == 1
        path = write_dicom(str(root / rsna.IMAGES_DIR / f"{pid}.dcm"),
                           phantom(48, 48, [(box[0], box[1], box[0] + box[2], box[1] + box[3])]
                                   if pos else [], seed=i))
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, pid, BIRTH
        ds.AccessionNumber = ACCESSION
        ds.save_as(path, enforce_file_format=True)
        lines.append(f"{pid},{box[0]},{box[1]},{box[2]},{box[3]},1" if pos else f"{pid},,,,,0")
    (root / rsna.LABELS_CSV).write_text("\n".join(lines) + "\n")
    return str(root)


def _cfg(store: str, root: str, pseudonymise: bool) -> dict:
    return tiny(store, name="leaks",
                cohort={"source": "rsna", "input": root, "size": 32,
                        "pseudonymise": pseudonymise},
                classifier={"train": {"epochs": 1, "batch": 16}},
                explain={"methods": ["gradcam", "random", "box_prior"], "max_images": 6,
                         "shard_size": 3},
                score={"n_boot": 20, "faithfulness": False})


def _prefect_records() -> str:
    """Parameters of every flow run and every log line the Prefect API holds, as text."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        logs = client.read_logs(limit=200)
    return "\n".join([str(r.parameters) for r in runs] + [lg.message for lg in logs])


def test_audit_outputs_and_logs_hold_no_identifiers_or_secrets(prefect_harness, s3_server,
                                                               s3_store_url, tmp_path,
                                                               monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(caplog.handler)  # Prefect's loggers do not all propagate
    monkeypatch.setenv("MEDXGAN_PSEUDONYMISE_KEY", KEY)
    root = _rsna_root(tmp_path / "rsna")
    try:
        m = audit_flow(_cfg(s3_store_url, root, pseudonymise=True))
    finally:
        prefect_logger.removeHandler(caplog.handler)
    store = Store(s3_store_url)
    texts = store_text(store)
    # the scan reads the objects it must: cohort tables, scores, report, provenance
    joined = "\n".join(texts.values())
    assert any(k.endswith("report/index.html") for k in texts)
    assert any(k.endswith("provenance.json") for k in texts)
    assert any(k.endswith("scores.parquet") for k in texts)
    assert "Lung Opacity" in joined  # decoded Parquet rows (boxes.parquet) are scanned
    logs = caplog.text + _prefect_records()
    assert caplog.records and "leaks" in logs  # the logs were captured (the flows ran)
    needles = [NAME, "Quimby", "Ottoline", BIRTH, ACCESSION, s3_server.secret, KEY,
               *[_pid(i) for i in range(N)], "PIDQZX"]
    for needle in needles:
        for key, text in texts.items():
            assert needle not in text, f"{needle!r} found in {key}"
        assert needle not in logs, f"{needle!r} found in the logs"
    # image ids are keyed pseudonyms (24 hex digits), source refs name CSV lines only
    ids = store.read_parquet(f"{m['stages']['cohort']['url'][len(s3_store_url) + 1:]}"
                             "/images/part-00000.parquet", columns=["image_id", "source_ref"])
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids["image_id"].to_pylist())
    assert all(":line " in r for r in ids["source_ref"].to_pylist())
    prov = Store(m["run_url"]).read_json("provenance.json")
    assert prov["config"]["cohort"]["pseudonymise"] is True


def test_pseudonymise_without_a_key_is_a_clear_error(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDXGAN_PSEUDONYMISE_KEY", raising=False)
    root = tmp_path / "rsna"
    (root / rsna.IMAGES_DIR).mkdir(parents=True)
    write_dicom(str(root / rsna.IMAGES_DIR / "p1.dcm"), phantom(48, 48, seed=1))
    (root / rsna.LABELS_CSV).write_text("patientId,x,y,width,height,Target\np1,,,,,0\n")
    store = str(tmp_path / "store")
    with pytest.raises(Exception, match="pseudonymise is true but MEDXGAN_PSEUDONYMISE_KEY"):
        audit_flow(_cfg(store, str(root), pseudonymise=True))
    assert Store(store).list("", suffix="manifest.json") == []


def test_explicit_false_ignores_a_key_in_the_environment(monkeypatch, tmp_path):
    """``pseudonymise: false`` in the config means plain ids even if a key is set."""
    from tasks.ingest import list_source_records

    monkeypatch.setenv("MEDXGAN_PSEUDONYMISE_KEY", KEY)
    root = tmp_path / "rsna"
    (root / rsna.IMAGES_DIR).mkdir(parents=True)
    (root / rsna.LABELS_CSV).write_text("patientId,x,y,width,height,Target\np1,,,,,0\n")
    plain, _ = list_source_records("rsna", str(root), False)
    keyed, _ = list_source_records("rsna", str(root), True)
    legacy, _ = list_source_records("rsna", str(root))  # None: keyed when the env var is set
    assert [r.image_id for r in plain] == ["p1"]
    assert [r.image_id for r in keyed] == [r.image_id for r in legacy] != ["p1"]
