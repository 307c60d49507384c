"""Audits per finding (``explain.findings``; docs/design.md, "Multi-finding audits").

For each named finding F the audit runs as an audit of its own (``audit_flow``, every stage
content-addressed as usual) with

- the cohort's **view of F** (:func:`medxgan.cohort.views.finding_view`, stored at
  ``cohorts/<hash of (cohort hash, F)>``): F's boxes only, images labelled by them;
- for a classifier spec, the same spec with ``finding: F`` (stored at
  ``specs/<hash>.yaml``; the output named F, NIH / RSNA synonyms understood); a baseline
  classifier (``classifier.train``) is trained on the view, i.e. one binary model per finding;
- the name ``<audit>-<slug of F>``, so each finding has its own history, regressions and
  alerts.

With one finding, that finding's run *is* the audit (today's tables, no ``finding`` column).
With two or more, a multi-finding run ``runs/<audit>-<key>`` (key: the findings and their
run ids) stacks the findings' ``summary.parquet`` and ``comparisons.parquet`` with a leading
``finding`` column, writes ``findings.json`` and ``report/index.html`` (one verdict per
finding), and its ``manifest.json`` last: ``findings`` (per finding: run id, URL, verdict,
criteria), ``criteria_failed`` and ``regressed`` rows carry their ``finding``, ``verdict`` is
the findings' headlines joined, and the CLI's exit code is the worst of the findings'.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from medxgan.config import AuditConfig, stable_hash
from medxgan.metrics.aggregate import COMPARISONS, SUMMARY
from medxgan.settings import get_settings
from medxgan.storage import Store


def finding_slug(finding: str) -> str:
    """``Pleural Effusion`` -> ``pleural-effusion`` (run names, folder names)."""
    return re.sub(r"[^a-z0-9]+", "-", finding.lower()).strip("-") or "finding"


def finding_spec(spec_url: str, finding: str, root: Store) -> str:
    """URL of a copy of the classifier spec at ``spec_url`` that audits ``finding`` (its weights
    path made absolute), stored content-addressed under ``specs/`` of ``root``."""
    from medxgan.config.classifier import ClassifierSpec, _is_url

    spec = ClassifierSpec.from_yaml(spec_url)
    data = spec.model_dump(mode="json", exclude_none=True)
    if spec.path and not _is_url(spec.path) and not os.path.isabs(spec.path):
        data["path"] = os.path.abspath(spec.path)
    if spec.outputs:  # the output's own spelling: 'nodule' and 'Nodule' are one classifier
        from medxgan.findings import match_finding

        finding = spec.outputs[match_finding(finding, spec.outputs)]
    data["finding"] = finding
    data.pop("positive_index", None)
    text = ClassifierSpec.model_validate(data).to_yaml()
    key = f"specs/{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not root.exists(key):
        root.write_bytes(key, text.encode())
    return root.url_of(key)


def findings_audit(cfg: AuditConfig, cohort: dict, audit: Callable[[dict[str, Any]], dict]
                   ) -> dict:
    """Run (or reuse) the audit of every finding of ``cfg.explain.findings``; returns the
    multi-finding run's manifest (``multi_finding``: True; its alerts are the caller's to
    publish) or, with one finding, that finding's run manifest.

    Args:
        cfg: the audit's config.
        cohort: the audit's cohort stage (``url``, ``hash``; the flow's cohort stage).
        audit: runs one finding's audit from its config dict and returns its manifest (the
            audit flow, with the caller's runner).
    """
    from medxgan.cohort.views import finding_view, view_hash
    from medxgan.report.findings import render_findings_report, stack_by_finding

    root = Store(cfg.store or get_settings().store)
    base = cfg.model_dump(mode="json", exclude_unset=True)
    base["explain"] = {k: v for k, v in base.get("explain", {}).items() if k != "findings"}
    runs: dict[str, dict] = {}
    for finding in cfg.explain.findings or []:
        view_url = root.url_of("cohorts/" + view_hash(cohort["hash"], finding)[:16])
        view = finding_view(cohort["url"], view_url, finding)
        child: dict[str, Any] = {**base, "name": f"{cfg.name}-{finding_slug(finding)}",
                                 "cohort": {"source": "existing", "url": view_url}}
        if cfg.classifier.spec:
            child["classifier"] = {"spec": finding_spec(cfg.classifier.spec, finding, root)}
        m = audit(child)
        runs[finding] = {**m, "cohort_counts": view["counts"]}
    if len(runs) == 1:
        return next(iter(runs.values()))

    run_id = f"{cfg.name}-" + stable_hash({"findings": {f: m["run_id"] for f, m in runs.items()},
                                           "audit": cfg.name})[:12]
    run = Store(root.url_of(f"runs/{run_id}"))
    for name, schema in (("summary.parquet", SUMMARY), ("comparisons.parquet", COMPARISONS)):
        tables = {f: Store(m["run_url"]).read_parquet(name).to_pandas() for f, m in runs.items()}
        run.write_parquet(name, pa.Table.from_pandas(
            stack_by_finding(tables), schema=with_finding(schema), preserve_index=False))
    per = [{"finding": f, "run_id": m["run_id"], "run_url": m["run_url"],
            "report": m.get("report"), "verdict": m.get("verdict"), "answers": m.get("answers"),
            "criteria": m.get("criteria") or [], "criteria_failed": m.get("criteria_failed") or [],
            "regressions": m.get("regressions") or 0, "headline_metrics":
            m.get("headline_metrics") or [], "cohort": m["cohort_counts"]}
           for f, m in runs.items()]
    run.write_json("findings.json", {"audit": cfg.name, "run_id": run_id, "findings": per})
    run.write_bytes("report/index.html",
                    render_findings_report(cfg.name, run_id, per).encode("utf-8"))

    def tagged(key: str) -> list[dict]:
        """Every finding's ``key`` rows of its manifest, each with its ``finding``."""
        return [{**r, "finding": f} for f, m in runs.items() for r in m.get(key) or []]

    manifest = {
        "run_id": run_id, "audit": cfg.name, "run_url": run.url, "multi_finding": True,
        "report": run.url_of("report/index.html"), "pdf": None,
        "verdict": "; ".join(f"{p['finding']}: {p['verdict']}" for p in per),
        "findings": {p["finding"]: {k: p[k] for k in ("run_id", "run_url", "report", "verdict",
                                                       "regressions")} for p in per},
        "answers": {}, "criteria": tagged("criteria"), "criteria_failed": tagged("criteria_failed"),
        "regressions": sum(p["regressions"] for p in per), "regressed": tagged("regressed"),
        "headline_metrics": tagged("headline_metrics"),
        "stages": {"cohort": {**cohort, "reused": cohort.get("reused", False)},
                   **{f"finding:{f}": {"run_id": m["run_id"], "reused": all(
                       v.get("reused") for v in (m.get("stages") or {}).values())}
                      for f, m in runs.items()}},
    }
    run.write_manifest(manifest)
    return manifest


def with_finding(schema: pa.Schema) -> pa.Schema:
    """A table schema with a leading ``finding`` (string) column: the multi-finding run's
    ``summary.parquet`` / ``comparisons.parquet``."""
    return pa.schema([pa.field("finding", pa.string()), *schema])
