"""The audit flow: cohort -> (baseline classifier) -> medXGAN generator -> explain -> score ->
report, from one validated YAML config.

Every stage is **content-addressed** under the store root:

- ``cohorts/<key>``: key = hash of the cohort section (and of the input files' names, sizes
  and modification times for file sources);
- ``classifiers/<key>``: key = hash of (cohort hash, training config);
- ``gans/<key>``: key = hash of (cohort hash, classifier hash, GAN configs);
- ``runs/<name>-<key>``: key = hash of (cohort, classifier and generator hashes, explain and
  score sections, the resolved acceptance criteria).

Hashes are taken of the **resolved** sections (every default filled in, :func:`resolved`), so
two YAMLs that resolve to the same values share stages, and a changed default changes the
stages it affects.

The cohort, classifier and generator hashes are **content hashes** (docs/design.md,
"Reproducibility"): of the images, labels and boxes (the cohort's ``content_hash``), of the
weights and spec without its path (:func:`tasks.common.classifier_hash`), of G's weights and
configs (and the encoder's, when one is kept: ``load_generator``'s ``content_hash``), never of
file bytes that carry locations or RNG states. So the same config on the same data run into
two stores, on two machines, gives the same stage hashes and run id. Only the cohort *folder*
key of a file source holds file modification times (a change detector, not an identity).

A stage whose folder has a manifest is reused as it is, so a rerun of an unchanged audit costs
almost nothing, and a new classifier version retrains only what depends on it. A stage that
fails fails the audit; the run's ``manifest.json`` is written last, only after the report.

Alerts (:func:`publish`, also when the whole run is reused): every audit creates two Prefect
artifacts, a markdown verdict (``medxgan-<audit>-verdict``: headline, the three answers, the
criteria, the report's URL) and a table of the headline metrics (``medxgan-<audit>-metrics``);
when a pre-specified criterion failed it emits the Prefect event
``medxgan.audit.criteria-failed``, when a regression against the previous run was detected
``medxgan.audit.regression`` (resource ``medxgan.audit.<audit>``; payload: audit, run id,
report URL and the failing numbers). ``medxgan audit`` turns them into exit codes 3 and 4.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel

from flows.runtime import audit_run_name, limits, locked_stage, on_run_start, report_link
from medxgan.config import METHOD_CONFIGS, AuditConfig, GanConfig, field_default, stable_hash
from medxgan.settings import get_settings
from medxgan.catalogue import GAN_METHODS, not_offered
from medxgan.storage import Store


def _input_fingerprint(path: str | None) -> list:
    """Names, sizes and mtimes of the input files (a cheap change detector)."""
    if not path:
        return []
    p = Path(path)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.exists() else []
    return [(str(q.relative_to(p.parent if p.is_file() else p)), q.stat().st_size,
             int(q.stat().st_mtime)) for q in files]


def resolved(section: BaseModel, **fallback: Any) -> dict[str, Any]:
    """A typed config section as JSON with every default filled in (what stage hashes are
    taken of and what tasks receive); ``fallback`` gives the values of keys the YAML did not
    set (the audit's seed, the cohort's image size), where the section's own default would
    otherwise apply."""
    given = section.model_dump(mode="json", exclude_unset=True)
    return type(section).model_validate({**fallback, **given}).model_dump(mode="json")


def explain_options(cfg: AuditConfig) -> dict[str, dict[str, Any]]:
    """Each explained method's resolved options; the generator methods invert with
    ``explain.inversion`` unless their own options set an ``inversion``."""
    ex = cfg.explain
    out = {}
    for m in ex.methods:
        own = getattr(ex.method_options, m)
        given = {} if own is None else own.model_dump(mode="json", exclude_unset=True)
        if m in GAN_METHODS:
            given.setdefault("inversion", ex.inversion.model_dump(mode="json"))
        out[m] = METHOD_CONFIGS[m].model_validate(given).model_dump(mode="json")
    return out


def run_key(cfg: AuditConfig, cohort_hash: str, classifier_hash: str,
            generator_hash: str | None, infill_hash: str | None = None) -> str:
    """The run's content address: the upstream hashes (the healthy in-filler's too, where the
    score stage uses one), the resolved explain and score sections, the seed and the resolved
    acceptance criteria (``on`` filled in), so that a run judged by other criteria is another
    run."""
    return stable_hash({"cohort": cohort_hash, "classifier": classifier_hash,
                        "gan": generator_hash, "infill": infill_hash,
                        # a per-finding run's finding is in its cohort view and spec hashes
                        "explain": cfg.explain.model_dump(mode="json", exclude={"findings"}),
                        "score": cfg.score.model_dump(mode="json"), "seed": cfg.seed,
                        "criteria": [c.model_dump(mode="json") for c in cfg.criteria]})


def task_runner(runner: str, dask_address: str | None = None, workers: int = 2):
    """The task runner of the explain stage: threads (local) or Dask (a LocalCluster of
    ``workers`` single-threaded processes, or an existing cluster at ``dask_address``)."""
    if runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    if runner != "dask":
        raise ValueError(f"unknown runner {runner!r}; use local or dask")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def _cohort_stage(cfg: AuditConfig, root: Store) -> dict:
    from medxgan.cohort.reader import Cohort

    c = cfg.cohort
    if c.source == "existing":
        cohort = Cohort(c.url)  # its stored size is the generator's (issue #16, item 6)
        return {"url": cohort.url, "hash": cohort.content_hash, "reused": True,
                "size": cohort.manifest.get("image_size")}
    section = c.model_dump(mode="json")
    key = stable_hash({"cohort": section, "input": _input_fingerprint(c.input)})[:16]
    url = root.url_of(f"cohorts/{key}")
    manifest = Store(url).read_manifest()
    reused = manifest is not None
    if not reused:
        from flows.ingest import ingest_flow

        manifest = ingest_flow(source=c.source, out=url, input=c.input, size=c.size, n=c.n,
                               seed=c.seed, prevalence=c.prevalence,
                               shortcut_rate=c.shortcut_rate, shortcut=c.shortcut,
                               shortcut_negative_rate=c.shortcut_negative_rate,
                               lesion_scale=c.lesion_scale, finding=c.finding,
                               pseudonymise=c.pseudonymise, max_pixels=c.max_pixels,
                               task_timeout_s=limits(cfg).task_timeout_s)
    return {"url": url, "hash": manifest["content_hash"], "reused": reused,
            "size": manifest.get("image_size")}


def _infill_stage(cfg: AuditConfig, root: Store, cohort: dict, spec: str, clf_hash: str,
                  stages: dict) -> tuple[str | None, str | None]:
    """The healthy in-filler of the score stage (``score.ablation_infill: inpaint`` with the
    intervention evidence or the shortcut search): the audit's generator when it is an
    inpaint-family run, else an inpaint run trained by the GAN stage's task with
    ``gan.train`` (its ``inpaint`` section), keyed like a GAN stage; (URL, content hash), or
    (None, None) when none is needed."""
    from medxgan.generators.registry import INFILLER
    from tasks.common import generator, generator_family
    from tasks.train import train_gan_task

    sc = cfg.score
    if sc.ablation_infill != "inpaint" or not (sc.intervention or sc.shortcut):
        return None, None
    g = stages.get("gan")
    if g is not None and generator_family(g["url"]).infiller(generator(g["url"])[0]) is not None:
        stages["infill"] = {"url": g["url"], "hash": g["hash"], "reused": True, "of": "gan"}
        return g["url"], g["hash"]
    size = (cohort.get("size") or [field_default(GanConfig, "image_size")])[0]
    gm = GanConfig.model_validate({"family": INFILLER, "image_size": size}).model_dump(mode="json")
    gt = resolved(cfg.gan.train, seed=cfg.seed)
    key = stable_hash({"cohort": cohort["hash"], "classifier": clf_hash, "model": gm,
                       "train": gt})[:16]
    res = locked_stage(train_gan_task, root, f"gans/{key}", cfg)(
        cohort["url"], spec, root.url_of(f"gans/{key}"), gm, gt)
    h = generator(res["url"])[1]["content_hash"]
    stages["infill"] = {"url": res["url"], "hash": h, "reused": res["reused"]}
    return res["url"], h


@flow(name="audit", flow_run_name=audit_run_name, on_running=[on_run_start],
      timeout_seconds=get_settings().flow_timeout_s)
def audit_flow(config: AuditConfig | dict[str, Any] | str, runner: str = "local",
               dask_address: str | None = None) -> dict:
    """Run (or reuse) every stage of an audit; returns the run manifest.

    Runs are named ``<audit>-<date>-<HHMM>Z`` and limited to ``MEDXGAN_FLOW_TIMEOUT_S``
    (``medxgan audit`` applies the YAML's ``runtime.flow_timeout_s``); each training stage runs
    under its folder's lease and ``runtime.train_timeout_s`` (``flows/runtime.py``).

    Args:
        config: an :class:`~medxgan.config.AuditConfig` (a form in the Prefect UI), or one as
            a dict, YAML text or YAML path.
        runner: ``local`` (threads) or ``dask`` for the explain stage.
        dask_address: scheduler address of an existing Dask cluster (default: LocalCluster).
    """
    from flows.explain import explain_flow
    from flows.score import score_flow
    from tasks.common import classifier_hash, generator, generator_family
    from tasks.report import (build_report, code_version, evaluate_classifier,
                              library_versions)
    from tasks.train import train_classifier_task, train_gan_task

    cfg = config if isinstance(config, AuditConfig) else AuditConfig.model_validate(config) \
        if isinstance(config, dict) else AuditConfig.from_yaml(config)
    store_url = cfg.store or get_settings().store
    root = Store(store_url)
    stages: dict[str, dict] = {}

    cohort = _cohort_stage(cfg, root)
    if cfg.explain.findings is not None:  # one audit per finding (flows/findings.py)
        from flows.findings import findings_audit

        m = findings_audit(cfg, cohort, lambda child: audit_flow(
            config=child, runner=runner, dask_address=dask_address))
        if m.get("multi_finding"):  # a finding's own run published its alerts already
            publish(m)
        return m
    stages["cohort"] = cohort

    if cfg.classifier.spec:
        spec = cfg.classifier.spec
        stages["classifier"] = {"spec": spec, "reused": True, "provided": True}
    else:
        tc = resolved(cfg.classifier.train, seed=cfg.seed)
        key = stable_hash({"cohort": cohort["hash"], "train": tc})[:16]
        res = locked_stage(train_classifier_task, root, f"classifiers/{key}", cfg)(
            cohort["url"], root.url_of(f"classifiers/{key}"), tc)
        spec = res["spec"]
        stages["classifier"] = {"spec": spec, "url": res["url"], "reused": res["reused"],
                                "metrics": {k: res["metrics"].get(k) for k in ("val", "test")}}
    clf_hash = classifier_hash(spec)
    stages["classifier"]["hash"] = clf_hash
    from tasks.check import check_classifier_task  # one line, before any work, if unfit
    check = check_classifier_task(cohort["url"], spec, cfg.explain.split or None)
    if check.get("gradcam_unsupported") and "gradcam" in set(cfg.explain.methods) | set(cfg.explain.tune):
        from medxgan.config.classifier import ClassifierLoadError

        raise ClassifierLoadError(f"classifier {check['path']}: {check['gradcam_unsupported']}")

    gan_url, gan_hash = None, None
    if any(m in GAN_METHODS for m in cfg.explain.methods):
        size = (cohort.get("size") or [field_default(GanConfig, "image_size")])[0]
        gm = resolved(cfg.gan.model, image_size=size)
        gt = resolved(cfg.gan.train, seed=cfg.seed)
        key = stable_hash({"cohort": cohort["hash"], "classifier": clf_hash, "model": gm,
                           "train": gt})[:16]
        res = locked_stage(train_gan_task, root, f"gans/{key}", cfg)(
            cohort["url"], spec, root.url_of(f"gans/{key}"), gm, gt)
        gan_url = res["url"]
        meta = generator(gan_url)[1]
        enc = meta.get("encoder")  # a kept inversion encoder changes every inversion
        gan_hash = meta["content_hash"] if enc is None else \
            stable_hash({"generator": meta["content_hash"],
                         "encoder": enc.get("content_hash", enc["sha256"])})
        stages["gan"] = {"url": gan_url, "hash": gan_hash, "reused": res["reused"],
                         "best": res.get("best"),
                         "encoder": None if enc is None else
                         {k: enc.get(k) for k in ("sha256", "content_hash", "mse_random_init",
                                                  "mse_encoder_init")}}

    ex, sc = cfg.explain, cfg.score
    infill_url, infill_hash = _infill_stage(cfg, root, cohort, spec, clf_hash, stages)
    # one name per map: a method the generator's family does not offer is not explained
    family = generator_family(gan_url).name if gan_url else None
    dropped = not_offered(ex.methods, family)
    methods = [m for m in ex.methods if m not in dropped]
    options = {m: o for m, o in explain_options(cfg).items() if m not in dropped}
    run_id = f"{cfg.name}-{run_key(cfg, cohort['hash'], clf_hash, gan_hash, infill_hash)[:12]}"
    run_url = root.url_of(f"runs/{run_id}")
    run = Store(run_url)
    done = run.read_manifest()
    if done is not None:
        # every stage of the finished run is reused as it is
        stages = {**done.get("stages", {}), **stages, "run": {"url": run_url}}
        manifest = {**done, "stages": {k: {**v, "reused": True} for k, v in stages.items()}}
        publish(manifest)
        return manifest

    explain_flow.with_options(task_runner=task_runner(runner, dask_address))(
        cohort=cohort["url"], classifier=spec, run=run_url, methods=methods, gan=gan_url,
        split=ex.split, labels=ex.labels, max_images=ex.max_images, shard_size=ex.shard_size,
        options=options, tune=ex.tune, tune_split=ex.tune_split, tune_images=ex.tune_images,
        task_timeout_s=limits(cfg).task_timeout_s)
    stages["explain"] = {"reused": False, **({"not_offered": dropped} if dropped else {})}
    score_flow(run=run_url, n_boot=sc.n_boot, faithfulness=sc.faithfulness,
               robustness=sc.robustness, seed=sc.seed, intervention=sc.intervention,
               ablation_infill=sc.ablation_infill, shortcut=sc.shortcut,
               shortcut_images=sc.shortcut_images, infill_gan=infill_url,
               residual_images=sc.residual_images)
    stages["score"] = {"reused": False}
    perf = evaluate_classifier(cohort["url"], spec)
    provenance = {
        "audit": cfg.name, "run_id": run_id, "cohort_hash": cohort["hash"],
        "classifier_hash": clf_hash, "generator_hash": gan_hash,
        "code_version": code_version(), "libraries": library_versions(),
        "seeds": {"audit": cfg.seed, "score": sc.seed},
        "config": cfg.model_dump(mode="json"), "stages": stages,
        "runner": runner, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    report = build_report(run_url, root.url, cfg.name, run_id, cohort["url"], perf, provenance)
    stages["report"] = {"reused": False}
    manifest = {"run_id": run_id, "audit": cfg.name, "run_url": run_url,
                "report": report["report"], "pdf": report["pdf"], "verdict": report["verdict"],
                "answers": report["answers"], "flags": report["flags"],
                "localises": report["localises"], "criteria": report["criteria"],
                "criteria_failed": report["criteria_failed"],
                "regressions": report["regressions"], "regressed": report["regressed"],
                "previous_run_id": report["previous_run_id"],
                "headline_metrics": report["headline_metrics"], "classifier": perf,
                "stages": stages}
    run.write_manifest(manifest)
    publish(manifest)
    return manifest


CRITERIA_FAILED_EVENT = "medxgan.audit.criteria-failed"
REGRESSION_EVENT = "medxgan.audit.regression"


def artifact_key(audit: str, what: str) -> str:
    """``medxgan-<audit>-<what>``: lowercase letters, digits and dashes (Prefect's key rule)."""
    slug = re.sub(r"[^a-z0-9]+", "-", audit.lower()).strip("-") or "audit"
    return f"medxgan-{slug}-{what}"


def _failing_numbers(c: dict) -> dict:
    return {k: c.get(k) for k in ("name", "what", "source", "metric", "comparison", "threshold",
                                  "on", "value", "mean", "ci_low", "ci_high", "n", "reason")}


def _resource(manifest: dict) -> dict[str, str]:
    return {"prefect.resource.id": f"medxgan.audit.{manifest['audit']}",
            "prefect.resource.name": str(manifest["audit"]),
            "medxgan.run-id": str(manifest["run_id"])}


def verdict_markdown(manifest: dict) -> str:
    """The markdown artifact: headline, the three answers, the criteria, the report's URL."""
    lines = [f"# Audit {manifest['audit']}: {manifest.get('verdict', '')}", "",
             f"Run `{manifest['run_id']}`. Report: [{manifest.get('report')}]({manifest.get('report')})"
             + (f" (PDF: [{manifest['pdf']}]({manifest['pdf']}))" if manifest.get("pdf") else ""), ""]
    answers = (manifest.get("answers") or {}).get("answers") or {}
    for a in answers.values():
        lines += [f"**{a.get('question')}** {str(a.get('outcome', '')).upper()}: {a.get('sentence', '')}", ""]
    crit = manifest.get("criteria") or []
    if crit:
        lines += ["| criterion | outcome | deciding number |", "|---|---|---|"]
        lines += [f"| {c.get('name')} | {c.get('outcome')} | {c.get('reason')} |" for c in crit]
        lines.append("")
    if manifest.get("regressions"):
        lines.append(f"**{manifest['regressions']} regression(s)** against run "
                     f"`{manifest.get('previous_run_id')}`: "
                     + ", ".join(f"{r['method']} {r['metric']} {r['prev_mean']:.3f} -> {r['cur_mean']:.3f}"
                                 for r in manifest.get("regressed") or []))
    return "\n".join(lines)


def publish(manifest: dict) -> dict:
    """The audit's Prefect artifacts and alert events (module docstring); returns what was
    emitted: ``{"artifacts": [keys], "events": [names]}``. Artifacts and events need a flow
    run context (an ephemeral or standing Prefect server). Besides the verdict and the metrics,
    a link artifact ``medxgan-<audit>-report`` points at the evidence report (an ``s3://`` URL
    as it is, a local path as ``file://``)."""
    from prefect.artifacts import (create_link_artifact, create_markdown_artifact,
                                   create_table_artifact)
    from prefect.events import emit_event

    audit, run_id = manifest["audit"], manifest["run_id"]
    keys = [artifact_key(audit, "verdict"), artifact_key(audit, "metrics")]
    create_markdown_artifact(verdict_markdown(manifest), key=keys[0],
                             description=f"medXGAN audit {audit}: verdict of run {run_id}")
    create_table_artifact(manifest.get("headline_metrics") or [], key=keys[1],
                          description=f"medXGAN audit {audit}: headline metrics of run {run_id}")
    link = report_link(manifest.get("report"))
    if link:
        keys.append(artifact_key(audit, "report"))
        create_link_artifact(link, link_text=f"evidence report of run {run_id}", key=keys[-1],
                             description=f"medXGAN audit {audit}: the evidence report of run "
                                         f"{run_id} ({manifest.get('verdict', '')})")
    events = []
    base = {"audit": audit, "run_id": run_id, "report": manifest.get("report"),
            "verdict": manifest.get("verdict")}
    failing = manifest.get("criteria_failed") or []
    if failing:
        emit_event(event=CRITERIA_FAILED_EVENT, resource=_resource(manifest),
                   payload={**base, "failing": [_failing_numbers(c) for c in failing]})
        events.append(CRITERIA_FAILED_EVENT)
    if manifest.get("regressions"):
        emit_event(event=REGRESSION_EVENT, resource=_resource(manifest),
                   payload={**base, "previous_run_id": manifest.get("previous_run_id"),
                            "failing": list(manifest.get("regressed") or [])})
        events.append(REGRESSION_EVENT)
    return {"artifacts": keys, "events": events}
