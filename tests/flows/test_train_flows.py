"""The training commands under Prefect's real engine: `medxgan train-classifier` and
`medxgan train-gan` (with the optional inversion encoder) from the CLI, and reuse on rerun."""

from __future__ import annotations

import yaml

from flows.cli import main as cli_main
from medxgan.storage import Store


def test_cli_trains_classifier_then_gan_with_encoder_and_reuses(prefect_harness, tmp_path,
                                                                 capsys):
    cohort, clf, gan = (str(tmp_path / n) for n in ("cohort", "clf", "gan"))
    assert cli_main(["ingest", "--source", "phantom-cxr", "--n", "60", "--size", "32",
                     "--out", cohort]) == 0
    assert cli_main(["train-classifier", "--cohort", cohort, "--out", clf, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "test AUROC" in out and "(reused)" not in out
    cfg = tmp_path / "gan.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"family": "published", "d_a": 8, "d_p": 3, "g_width": 0.05, "d_width": 0.125},
        "train": {"batch": 8, "checkpoint_every": 2, "health_samples": 16,
                  "health_heldout": 4, "health_inversion_steps": 2,
                  "encoder": {"steps": 4, "batch": 8, "width": 0.25, "compare_steps": 2}}}))
    argv = ["train-gan", "--cohort", cohort, "--classifier", f"{clf}/spec.yaml", "--out", gan,
            "--steps", "2", "--config", str(cfg)]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "2 steps" in out and "inversion encoder" in out
    rec = Store(gan).read_json("encoder.json")
    assert rec["steps"] == 4 and ("not kept" in out) == (not rec["kept"])
    assert Store(gan).read_manifest()["encoder"]["sha256"] == rec["sha256"]
    before = Store(gan).read_bytes("encoder.pt")
    assert cli_main(argv) == 0                         # finished run: reused as it is
    assert "inversion encoder" in capsys.readouterr().out
    assert Store(gan).read_bytes("encoder.pt") == before
    # the default family (inpaint): --steps is the in-filler's step count
    assert cli_main(["train-gan", "--cohort", cohort, "--classifier", f"{clf}/spec.yaml",
                     "--out", gan + "-inpaint", "--steps", "3"]) == 0
    assert "3 steps" in capsys.readouterr().out
    assert Store(gan + "-inpaint").read_json("best.json")["step"] == 3
    # the residual family: --steps is the map generator's step count, its config is checked
    res = tmp_path / "residual.yaml"
    res.write_text(yaml.safe_dump({
        "model": {"family": "residual"},
        "train": {"health_heldout": 4, "residual": {"base": 4, "depth": 2, "critic_base": 4,
                                                    "batch": 8, "critic_steps": 1,
                                                    "health": {"negatives": 8}}}}))
    assert cli_main(["train-gan", "--cohort", cohort, "--classifier", f"{clf}/spec.yaml",
                     "--out", gan + "-residual", "--steps", "2", "--config", str(res)]) == 0
    assert "2 steps" in capsys.readouterr().out
    assert Store(gan + "-residual").read_manifest()["family"] == "residual"
    assert Store(gan + "-residual").read_json("best.json")["step"] == 2
