"""``medxgan`` command line: each subcommand runs the matching Prefect flow.

Errors print one line (``medxgan: error: ...``) and exit 1; ``--debug`` shows the
traceback. ``medxgan audit`` exits 0 when the audit ran and nothing is wrong,
:data:`EXIT_CRITERIA_FAILED` (3) when a pre-specified acceptance criterion failed and
:data:`EXIT_REGRESSION` (4) when no criterion failed but a regression against the previous run
was detected. Config files (``audit --config``, ``train-* --config``, ``explain --options``) are
validated before any work; an invalid key prints as ``config error: <dotted.path>: <message>``.
Every default comes from the config models (``medxgan.config``), every name list from
``medxgan.catalogue``. The terminal shows our lines, library warnings and progress; Prefect's
own records only when CRITICAL (``--debug``: everything), while runs send their logs, the
library's and the progress lines at INFO to the Prefect API. ``python -m medxgan`` is the same
command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable

from medxgan.catalogue import FLOORS, GRADIENT_BASELINES, METHODS, PHANTOM_SHORTCUTS, SOURCES
from medxgan.config import (INGEST_CHUNK_SIZE, AuditConfig, ClassifierTrainConfig,
                            CohortSection, ExplainSection, GanConfig, GanSection, MethodOptions,
                            ScoreSection, error_line, field_default)
from medxgan.settings import Settings

EXIT_CRITERIA_FAILED = 3
"""``medxgan audit``: the audit ran and a pre-specified acceptance criterion failed."""
EXIT_REGRESSION = 4
"""``medxgan audit``: the audit ran, no criterion failed, a regression was detected."""

Handler = Callable[[argparse.Namespace], int]
_HANDLERS: dict[str, Handler] = {}


def _cmd_ingest(a: argparse.Namespace) -> int:
    from flows.ingest import ingest_flow

    m = ingest_flow(source=a.source, out=a.out, input=a.input, size=a.size, n=a.n, seed=a.seed,
                    prevalence=a.prevalence, shortcut_rate=a.shortcut_rate, shortcut=a.shortcut,
                    shortcut_negative_rate=a.shortcut_negative_rate, lesion_scale=a.lesion_scale,
                    finding=a.finding,
                    chunk_size=a.chunk_size, pseudonymise=True if a.pseudonymise else None,
                    max_pixels=a.max_pixels)
    c = m["counts"]
    print(f"cohort {a.out}: {c['images']} images ({c['positives']} positive, {c['negatives']} "
          f"negative), {c['boxes']} boxes, {c['quarantined']} quarantined")
    return 0


def _load_yaml(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return data


def _cmd_train_classifier(a: argparse.Namespace) -> int:
    from flows.train import train_classifier_flow

    cfg = {**_load_yaml(a.config), **{k: v for k, v in (("arch", a.arch), ("epochs", a.epochs))
                                      if v is not None}}
    if a.remove_tag:
        cfg["remove_tag"] = True
    ClassifierTrainConfig.model_validate(cfg)  # a typo fails here, before any work
    r = train_classifier_flow(cohort=a.cohort, out=a.out, config=cfg)
    t = r["metrics"]["test"]
    print(f"classifier {r['spec']}: test AUROC {t['auroc']:.3f}, accuracy {t['accuracy']:.3f} "
          f"(n={t['n']}){' (reused)' if r['reused'] else ''}")
    return 0


def _cmd_train_gan(a: argparse.Namespace) -> int:
    from flows.train import train_gan_flow

    cfg = _load_yaml(a.config)
    train = dict(cfg.get("train") or {})
    if a.steps is not None:  # the family's own step count
        from medxgan.generators.registry import family

        name = (cfg.get("model") or {}).get("family", field_default(GanConfig, "family"))
        own = family(name).own_config  # its section of gan.train, or gan.train itself
        if own:
            train[own] = {**(train.get(own) or {}), "steps": a.steps}
        else:
            train["steps"] = a.steps
    GanSection.model_validate({**cfg, "train": train})  # a typo fails here, before any work
    r = train_gan_flow(cohort=a.cohort, classifier=a.classifier, out=a.out,
                       model=cfg.get("model"), train=train)
    best = (r.get("best") or {}).get("health", {})
    print(f"medXGAN {r['url']}: {r['steps']} steps; best checkpoint health "
          + ", ".join(f"{k}={v:.3f}" for k, v in best.items() if isinstance(v, float)))
    enc = r.get("encoder")
    if enc:
        print(f"inversion encoder {'kept' if enc['kept'] else 'not kept'}: held-out recon MSE "
              f"{enc['mse_encoder_init']:.4f} from E(x) vs {enc['mse_random_init']:.4f} from "
              "random latents")
    return 0


def _cmd_explain(a: argparse.Namespace) -> int:
    from flows.audit import task_runner
    from flows.explain import explain_flow

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    options = _load_yaml(a.options)
    MethodOptions.model_validate(options)  # a typo fails here, before any work
    m = explain_flow.with_options(task_runner=task_runner(a.runner, a.dask_address))(
        cohort=a.cohort, classifier=a.classifier, run=a.out, methods=methods, gan=a.gan,
        split=a.split or None, max_images=a.max_images, shard_size=a.shard_size,
        options=options)
    print(f"explained {len(m['image_ids'])} images x {len(methods)} methods into {a.out} "
          f"({m['written']} parts written, {m['skipped']} reused)")
    return 0


def _cmd_score(a: argparse.Namespace) -> int:
    from flows.score import score_flow

    r = score_flow(run=a.run, n_boot=a.n_boot, robustness=a.robustness)
    print(f"scored {r['n_images']} images: {a.run}/summary.parquet")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from flows.report import report_flow
    from medxgan.settings import get_settings

    r = report_flow(run=a.run, store=a.store or get_settings().store, audit=a.audit)
    print(f"report {r['report']}\nverdict: {r['verdict']}")
    return 0


def _cmd_audit(a: argparse.Namespace) -> int:
    cfg = AuditConfig.from_yaml(a.config)  # a typo fails here, before the flow or any store write
    from flows.audit import audit_flow
    from flows.runtime import limits

    run, seconds = audit_flow, limits(cfg).flow_timeout_s
    if cfg is not None and hasattr(audit_flow, "with_options"):  # the YAML's runtime limit
        run = audit_flow.with_options(timeout_seconds=seconds)
    try:
        m = run(config=a.config, runner=a.runner, dask_address=a.dask_address)
    except TimeoutError as exc:
        from prefect.flow_engine import FlowRunTimeoutError

        if not isinstance(exc, FlowRunTimeoutError):
            raise
        raise TimeoutError(f"audit {cfg.name} timed out after {seconds:g} s (is a store, Dask "
                           "or training call stuck? the limit is runtime.flow_timeout_s in "
                           "the audit YAML or MEDXGAN_FLOW_TIMEOUT_S)") from None
    print(f"report {m['report']}\nverdict: {m['verdict']}")
    for c in m.get("criteria") or []:
        print(f"criterion {c['outcome']}: {c['name']} ({c['reason']})")
    reused = [k for k, v in m.get("stages", {}).items() if v.get("reused")]
    if reused:
        print("reused stages: " + ", ".join(reused))
    return audit_exit_code(m)


def audit_exit_code(manifest: dict) -> int:
    """0, :data:`EXIT_CRITERIA_FAILED` (a criterion failed; wins over a regression) or
    :data:`EXIT_REGRESSION` (only a regression) for an audit's manifest."""
    if manifest.get("criteria_failed"):
        return EXIT_CRITERIA_FAILED
    if manifest.get("regressions"):
        return EXIT_REGRESSION
    return 0


def _cmd_check_classifier(a: argparse.Namespace) -> int:
    from medxgan.classifiers.check import check_classifier, format_check

    r = check_classifier(a.spec, a.cohort, a.split or None, batch_size=a.batch_size,
                         max_images=a.max_images)
    print("\n".join(format_check(r)))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    import time

    from flows.demo import demo_flow

    t0 = time.perf_counter()
    for m in demo_flow(store=a.store, quick=a.quick):
        print(f"{m['audit']}: report {m['report']}\n  verdict: {m['verdict']}")
        for c in m.get("criteria") or []:
            print(f"  criterion {c['outcome']}: {c['name']} ({c['reason']})")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


def _runner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runner", choices=["local", "dask"], default="local",
                   help="task runner of the explain stage")
    p.add_argument("--dask-address", help="scheduler address of an existing Dask cluster")


def _cohort(name: str):
    return field_default(CohortSection, name)


def _explain(name: str):
    return field_default(ExplainSection, name)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medxgan", description="Audit binary medical image classifiers "
                                 "with medXGAN and baseline explanations.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest a cohort (phantom, RSNA, NIH or folder) into the store")
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--input", help="input root (rsna, nih) or CSV / COCO JSON file (folder)")
    p.add_argument("--out", required=True, help="cohort URL: a path or s3://bucket/prefix")
    p.add_argument("--size", type=int, default=_cohort("size"),
                   help="square side of stored images (px)")
    p.add_argument("--n", type=int, default=_cohort("n"), help="phantom: number of images")
    p.add_argument("--seed", type=int, default=_cohort("seed"), help="phantom: seed")
    p.add_argument("--prevalence", type=float, default=_cohort("prevalence"),
                   help="phantom: share of positives")
    p.add_argument("--shortcut-rate", type=float, default=_cohort("shortcut_rate"),
                   help="phantom: share of positives carrying the shortcut")
    p.add_argument("--shortcut", default=_cohort("shortcut"), choices=PHANTOM_SHORTCUTS,
                   help="phantom: which shortcut (tag, band, marker, text, line, noise, "
                        "exposure, border)")
    p.add_argument("--shortcut-negative-rate", type=float,
                   default=_cohort("shortcut_negative_rate"),
                   help="phantom: share of negatives carrying it (default min(rate, 0.02))")
    p.add_argument("--lesion-scale", type=float, default=_cohort("lesion_scale"),
                   help="phantom: lesion intensity factor (faint findings below 1)")
    p.add_argument("--finding", default=_cohort("finding"),
                   help="nih/folder: the finding that makes an image positive")
    p.add_argument("--chunk-size", type=int, default=INGEST_CHUNK_SIZE,
                   help="images per part / task")
    p.add_argument("--pseudonymise", action="store_true",
                   help="image ids become keyed hashes (key: env MEDXGAN_PSEUDONYMISE_KEY)")
    p.add_argument("--max-pixels", type=int, default=_cohort("max_pixels"),
                   help="quarantine source images with more pixels than this")
    p.set_defaults(handler=_cmd_ingest)

    p = sub.add_parser("train-classifier", help="train a baseline classifier on a cohort")
    p.add_argument("--cohort", required=True, help="cohort URL")
    p.add_argument("--out", required=True, help="output URL (TorchScript, state_dict, spec.yaml)")
    p.add_argument("--config", help="YAML of ClassifierTrainConfig fields")
    p.add_argument("--arch", help="small_cnn (default) or a torchvision name, e.g. resnet18")
    p.add_argument("--epochs", type=int)
    p.add_argument("--remove-tag", action="store_true",
                   help="train with the phantom shortcut tag removed (the demo's clean model)")
    p.set_defaults(handler=_cmd_train_classifier)

    p = sub.add_parser("train-gan", help="train the medXGAN generator tied to a classifier")
    p.add_argument("--cohort", required=True)
    p.add_argument("--classifier", required=True, help="ClassifierSpec YAML path or URL")
    p.add_argument("--out", required=True, help="output URL of checkpoints (resumed if present)")
    p.add_argument("--config", help="YAML with 'model' (GanConfig) and 'train' (GanTrainConfig)")
    p.add_argument("--steps", type=int)
    p.set_defaults(handler=_cmd_train_gan)

    p = sub.add_parser("explain", help="explain a cohort's images with several methods")
    p.add_argument("--cohort", required=True)
    p.add_argument("--classifier", required=True, help="ClassifierSpec YAML path or URL")
    p.add_argument("--gan", help="trained medXGAN URL (needed for medxgan, latent_ig, "
                                 "counterfactual_ig)")
    p.add_argument("--methods", default=",".join(GRADIENT_BASELINES + FLOORS),
                   help="comma-separated: " + ",".join(METHODS))
    p.add_argument("--out", required=True, help="run URL")
    p.add_argument("--split", default=_explain("split"), help="split to explain ('' for all)")
    p.add_argument("--max-images", type=int, default=_explain("max_images"))
    p.add_argument("--shard-size", type=int, default=_explain("shard_size"))
    p.add_argument("--options", help="YAML: method -> config")
    _runner_args(p)
    p.set_defaults(handler=_cmd_explain)

    p = sub.add_parser("score", help="score a run's explanations")
    p.add_argument("--run", required=True, help="run URL")
    p.add_argument("--n-boot", type=int, default=field_default(ScoreSection, "n_boot"))
    p.add_argument("--robustness", action="store_true", help="also noise_stability (slow)")
    p.set_defaults(handler=_cmd_score)

    p = sub.add_parser("report", help="(re)build the evidence report of a scored run")
    p.add_argument("--run", required=True)
    p.add_argument("--store", help="store root for the audit history (default MEDXGAN_STORE)")
    p.add_argument("--audit", help="audit name in the history (default: run folder name)")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("audit", help="run every stage from one YAML config")
    p.add_argument("--config", required=True, help="audit YAML (see configs/)")
    _runner_args(p)
    p.set_defaults(handler=_cmd_audit)

    p = sub.add_parser("check-classifier", help="check a classifier spec on a cohort split: "
                       "outputs, AUROC, calibration, speed, Grad-CAM layer")
    p.add_argument("--spec", required=True, help="ClassifierSpec YAML path or URL")
    p.add_argument("--cohort", required=True, help="cohort URL")
    p.add_argument("--split", default="test", help="split to run ('' for all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-images", type=int, help="stop after this many images")
    p.set_defaults(handler=_cmd_check_classifier)

    p = sub.add_parser("demo", help="audit a clean and a shortcut classifier on phantoms")
    p.add_argument("--store", default=field_default(Settings, "store"))
    p.add_argument("--quick", action="store_true", help="tiny sizes (about a minute)")
    p.set_defaults(handler=_cmd_demo)
    return ap


class _QuietTerminal(logging.Filter):
    """The terminal of ``medxgan`` (no ``--debug``): Prefect's records only when CRITICAL (a
    failed task is reported by our one-line error; Prefect's ERROR logs would add tracebacks),
    the library's from WARNING (storage retries). Runs still log everything at INFO to the
    Prefect API, so a run against a standing server has its logs in the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        prefect = record.name == "prefect" or record.name.startswith("prefect.")
        return record.levelno >= (logging.CRITICAL if prefect else logging.WARNING)


def _setup_logging(debug: bool) -> None:
    root = logging.getLogger()
    fresh = not root.handlers  # in-process callers (tests) keep their own handlers untouched
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if fresh and not debug:
        for h in root.handlers:
            h.addFilter(_QuietTerminal())
    # a library log line outside any run (e.g. check-classifier) is not an API log
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.debug)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("medxgan: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line unless --debug
        from pydantic import ValidationError

        if args.debug:
            traceback.print_exc()
        if isinstance(exc, ValidationError):
            msg = f"config error: {error_line(exc)}"
        else:
            msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"medxgan: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
