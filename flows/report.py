"""The report flow: evidence report, provenance and audit history of a scored run."""

from __future__ import annotations

from prefect import flow

from flows.runtime import on_run_start
from medxgan.storage import Store
from tasks.report import build_report, code_version, evaluate_classifier, library_versions


@flow(name="report", on_running=[on_run_start])
def report_flow(run: str, store: str, audit: str | None = None) -> dict:
    """(Re)build ``<run>/report/index.html`` and ``report/report.pdf`` from the run's tables
    (with ``shortcut.json`` and, for an audit's run, the criteria of its ``provenance.json``);
    appends the history of ``audit`` (default: the run folder's name) under ``store``."""
    info = Store(run).read_json("run.json")
    run_id = run.rstrip("/").rsplit("/", 1)[-1]
    perf = evaluate_classifier(info["cohort"], info["classifier"])
    provenance = {"run_id": run_id, "classifier_hash": perf.get("sha256"),
                  "code_version": code_version(), "libraries": library_versions(),
                  "run": info}
    if Store(run).exists("provenance.json"):  # an audit's run: keep its config (criteria)
        config = Store(run).read_json("provenance.json").get("config")
        if config:
            provenance["config"] = config
    return build_report(run, store, audit or run_id, run_id, info["cohort"], perf, provenance)
