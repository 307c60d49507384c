"""The ingest flow under Prefect's real engine (test harness), on a local store and on S3."""

from __future__ import annotations

import numpy as np
import pytest

from flows.cli import main as cli_main
from flows.ingest import ingest_flow
from medxgan.cohort.reader import Cohort
from medxgan.phantoms import phantom_image


def test_phantom_ingest_local_and_s3(prefect_harness, any_store_url):
    m = ingest_flow(source="phantom-cxr", out=any_store_url, n=50, size=32, seed=3,
                    prevalence=0.5, chunk_size=16)
    assert m["counts"]["images"] == 50 and m["counts"]["quarantined"] == 0
    assert len(m["parts"]) == 4 and m["image_size"] == [32, 32]
    c = Cohort(any_store_url)
    got = c.load(["phantom-cxr-3-000007"])
    ref = phantom_image("phantom-cxr", 7, size=32, seed=3, prevalence=0.5)
    assert np.allclose(got.images[0, 0].numpy() * 255, ref.pixels, atol=0.5)
    assert got.labels.item() == ref.label
    # a rerun is idempotent: same content hash, same parts
    m2 = ingest_flow(source="phantom-cxr", out=any_store_url, n=50, size=32, seed=3,
                     prevalence=0.5, chunk_size=16)
    assert m2["content_hash"] == m["content_hash"] and m2["parts"] == m["parts"]


def test_cli_ingest_and_one_line_errors(prefect_harness, tmp_path, capsys):
    out = str(tmp_path / "cohort")
    assert cli_main(["ingest", "--source", "phantom-brain", "--n", "12", "--size", "32",
                     "--out", out]) == 0
    assert "12 images" in capsys.readouterr().out
    assert Cohort(out).manifest["counts"]["images"] == 12
    rc = cli_main(["ingest", "--source", "rsna", "--out", out])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("medxgan: error:") and "\n" not in err
    assert "--input is required" in err


def test_folder_csv_ingest_accounts_for_every_record(prefect_harness, tmp_path):
    from PIL import Image

    root = tmp_path / "in"
    (root / "img").mkdir(parents=True)
    rows = ["image_id,path,label,x0,y0,x1,y1,finding"]
    for i in range(6):
        arr = (np.arange(48 * 48).reshape(48, 48) % 251).astype(np.uint8)
        Image.fromarray(arr).save(root / "img" / f"{i}.png")
        rows.append(f"p{i},img/{i}.png,1,4,4,20,20,nodule" if i % 2 else f"n{i},img/{i}.png,0,,,,,")
    rows.append("gone,img/missing.png,0,,,,,")          # missing file
    rows.append("esc,../outside.png,0,,,,,")             # escapes the input root
    rows.append("p1,img/1.png,1,4,4,20,20,nodule")       # duplicate id (second box row is fine,
    (root / "labels.csv").write_text("\n".join(rows) + "\n")  # same id+path = one image)
    out = str(tmp_path / "cohort")
    m = ingest_flow(source="folder", input=str(root / "labels.csv"), out=out, size=32)
    c = Cohort(out)
    n_in = m["input_records"]
    assert m["counts"]["images"] + m["counts"]["quarantined"] == n_in
    assert m["counts"]["images"] == 6
    reasons = " ".join(r["reason"] for r in c.quarantine_table().to_pylist())
    assert "missing" in reasons.lower() or "not found" in reasons.lower()
    b = c.boxes_by_id()["p1"]
    assert b.shape[1] == 4 and np.all(b[:, 2] > b[:, 0])
