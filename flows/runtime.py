"""What bounds an unattended run, what names it, and what operators see of it (issue #23).

- **Time limits** (:func:`limits`, :func:`limited`, :func:`named_timeouts`): every long task
  runs with ``timeout_seconds`` from the audit YAML's ``runtime:`` section, else the
  environment (``MEDXGAN_*_TIMEOUT_S``, :mod:`medxgan.config.runtime`); a task that runs past
  it fails the run with one line naming the task, its target, the limit and where to raise it
  (:class:`StageTimeoutError`), not Prefect's bare "Scope timed out".
- **The stage lease** (:func:`locked_stage`): a training task runs inside the
  :class:`~medxgan.locks.StageLock` of its stage folder, so two runs with one stage key never
  train into one folder at once; the second waits (its run log says for whom) and then reuses
  the finished stage. A stage whose manifest exists is reused without taking the lease.
- **Run names** (:func:`audit_run_name`): ``<audit>-<YYYY-MM-DD>-<HHMM>Z`` of the scheduled
  start, instead of Prefect's random words.
- **Library logs in the run** (:func:`on_run_start`, an ``on_running`` hook):
  :func:`tasks.progress.route_library_logs`.
- **The report's link** (:func:`report_link`) for the audit's link artifact.

Prefect glue only; the lease itself is plain Python (``medxgan/locks.py``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medxgan.config.runtime import RuntimeConfig, runtime_limits
from medxgan.locks import StageLock, describe
from medxgan.storage import Store

log = logging.getLogger("medxgan.flows")

TRAIN_KNOB = "runtime.train_timeout_s in the audit YAML or MEDXGAN_TRAIN_TIMEOUT_S"
TASK_KNOB = "runtime.task_timeout_s in the audit YAML or MEDXGAN_TASK_TIMEOUT_S"


class StageTimeoutError(TimeoutError):
    """A task ran past its time limit (its message names the task, the target and the limit)."""


def limits(cfg: Any = None) -> RuntimeConfig:
    """The resolved time limits of an audit config (or of the environment alone)."""
    return runtime_limits(cfg)


@contextlib.contextmanager
def named_timeouts(what: str, seconds: float, knob: str) -> Iterator[None]:
    """Turn a Prefect task timeout raised inside (a direct call, or a future's ``result()``)
    into :class:`StageTimeoutError` naming ``what`` and the ``knob`` that sets the limit."""
    from prefect.task_engine import TaskRunTimeoutError

    try:
        yield
    except TaskRunTimeoutError:
        raise StageTimeoutError(f"{what} timed out after {seconds:g} s (is a store, Dask or "
                                f"training call stuck? the limit is {knob})") from None


def limited(task: Any, seconds: float, what: str, knob: str = TASK_KNOB) -> Callable[..., Any]:
    """``task`` with ``timeout_seconds=seconds``, called directly, timeouts named."""
    bounded = task.with_options(timeout_seconds=seconds)

    def call(*args: Any, **kwargs: Any) -> Any:
        with named_timeouts(what, seconds, knob):
            return bounded(*args, **kwargs)

    return call


def _run_label() -> str | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run.name if ctx and ctx.flow_run else None


def locked_stage(task: Any, root: Store, stage_key: str, cfg: Any = None) -> Callable[..., Any]:
    """``task`` (a training task writing the stage folder ``root/stage_key``) run under the
    folder's lease and ``runtime.train_timeout_s``. Waiting for another run is logged to the
    run's logs; the wait is bounded by the same limit. Returns a callable taking the task's
    arguments."""
    lim = limits(cfg)
    url = root.url_of(stage_key)
    what = f"{task.name} into {url}"
    bounded = limited(task, lim.train_timeout_s, what, TRAIN_KNOB)

    def waiting(holder: dict | None) -> None:
        log.info("stage %s: waiting for %s, which is training it; then reusing it", url,
                 describe(holder))

    def call(*args: Any, **kwargs: Any) -> Any:
        if Store(url, root.settings).read_manifest() is not None:
            log.info("stage %s: finished earlier, reused", url)
            return bounded(*args, **kwargs)  # the task reuses it; no lease needed
        with StageLock(root, stage_key, wait_s=lim.train_timeout_s, label=_run_label(),
                       on_wait=waiting) as lease:
            log.info("stage %s: %s under its lease (limit %g s)", url,
                     f"waited {lease.waited_s:.0f} s, then" if lease.waited_s > 0.5 else "runs",
                     lim.train_timeout_s)
            return bounded(*args, **kwargs)

    return call


def _audit_name(config: Any) -> str:
    """The ``name`` of an audit config given as a model, a dict, a YAML path or YAML text."""
    name = getattr(config, "name", None)
    if name is None and isinstance(config, dict):
        name = config.get("name")
    if name is None and isinstance(config, str):
        import yaml

        text = config
        if "\n" not in config and Path(config).suffix in (".yaml", ".yml"):
            text = Path(config).read_text() if Path(config).is_file() else ""
        data = yaml.safe_load(text) if text else None
        name = data.get("name") if isinstance(data, dict) else None
    return str(name) if name else "audit"


def audit_run_name() -> str:
    """The audit flow's run name (Prefect's ``flow_run_name``): ``<audit>-<date>-<HHMM>Z`` of
    the run's scheduled start (a run started by hand: now), e.g.
    ``cxr-nightly-2026-05-01-0200Z``. Never fails a run: an unreadable config names it
    ``audit-...`` and the flow then reports the config error."""
    from prefect.runtime import flow_run

    try:
        name = _audit_name(flow_run.parameters.get("config"))
    except Exception:  # noqa: BLE001 - a name must not fail the run; the flow reports it
        name = "audit"
    when = None
    try:
        when = flow_run.scheduled_start_time
    except Exception:  # noqa: BLE001
        pass
    when = when or _dt.datetime.now(_dt.timezone.utc)
    when = when.astimezone(_dt.timezone.utc)
    return f"{name}-{when:%Y-%m-%d-%H%M}Z"


def on_run_start(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_running`` hook of the flows: the library's logs into this run's logs."""
    from tasks.progress import route_library_logs

    route_library_logs()


def report_link(report: str | None) -> str | None:
    """The report's location as a link: an ``s3://`` or ``http(s)://`` URL as it is, a local
    path as a ``file://`` URL."""
    if not report:
        return None
    if "://" in report:
        return report
    return Path(report).resolve().as_uri()
