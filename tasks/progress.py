"""Progress for long stages: a bar on a terminal, plain log lines elsewhere, and a Prefect
progress artifact in the UI.

Where stderr is a terminal, a tqdm bar (removed when the stage ends). Where it is not (a log
file, CI, cron, a Prefect worker's captured output) one plain line per event goes to stderr:
the stage's start, about every 10 % (each time ``done`` crosses the next tenth of ``total``)
and its end, e.g.::

    [explain (shards)] start 0/128 images
    [explain (shards)] 40/128 images (31 %) elapsed 12 s, eta 27 s
    [explain (shards)] done 128/128 images (100 %) in 39 s

Inside a Prefect flow or task run a progress artifact is also kept up to date (at most every
``ARTIFACT_EVERY_S`` seconds, and with the last count when the stage ends), and the plain
lines (start, each tenth, end) also go to the run's logs in the UI (logger ``medxgan.progress``,
INFO, to Prefect's API only, never twice on a console), whatever stderr is. Progress never
raises because of its outputs.

:func:`route_library_logs` sends the library's own loggers (``medxgan.*``: storage retries,
training notes) to the run's logs too, what ``PREFECT_LOGGING_EXTRA_LOGGERS=medxgan`` does,
at ``MEDXGAN_LOG_LEVEL``; the flows call it when a run starts (``flows/runtime.py``).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

LIBRARY_LOGGER = "medxgan"
"""The library's loggers all live under this name."""

_progress_log = logging.getLogger("medxgan.progress")
_progress_log.propagate = False  # the lines are printed to stderr already: API only


def _in_run() -> bool:
    return bool(FlowRunContext.get() or TaskRunContext.get())


class RunLogHandler(APILogHandler):
    """Prefect's API log handler that ignores records outside a flow or task run (a library
    call in a plain script, ``medxgan check-classifier``) instead of warning about them."""

    def emit(self, record: logging.LogRecord) -> None:
        if _in_run():
            super().emit(record)


def _has_api_handler(logger: logging.Logger) -> bool:
    return any(isinstance(h, APILogHandler) for h in logger.handlers)


def route_library_logs(level: str | None = None) -> None:
    """Send the ``medxgan.*`` loggers to the current run's logs (idempotent): an API handler on
    ``medxgan`` unless ``PREFECT_LOGGING_EXTRA_LOGGERS`` put one there, and its level set to
    ``level`` (default ``MEDXGAN_LOG_LEVEL``, INFO) where it has none. Console output is not
    changed: the CLI keeps its terminal quiet, a worker prints what its logging config says."""
    from medxgan.settings import get_settings

    lib = logging.getLogger(LIBRARY_LOGGER)
    if not _has_api_handler(lib):
        lib.addHandler(RunLogHandler())
    if lib.level == logging.NOTSET:
        lib.setLevel((level or get_settings().log_level).upper())

LOG_STEPS = 10
"""Plain-log mode prints about every ``1 / LOG_STEPS`` of the total."""

ARTIFACT_EVERY_S = 2.0
"""The fewest seconds between two updates of a run's progress artifact (each is an API call and
a database write: an in-filler's 2 000 steps made 2 000 of them, 10-15 ms of each step); the
last count is always written, when the stage finishes or closes."""


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Counts ``done`` of ``total`` units; safe to use outside a Prefect run.

    Usable as a context manager (``with Progress(n, "score") as bar: ...``), which closes it
    (and logs where it stopped) even when the stage fails.

    Args:
        total: number of units (images, steps, shards); at least 1 is counted.
        description: what is being counted, shown in the bar, the log lines and the artifact.
        unit: optional unit name for the log lines (``"images"``: ``40/128 images``).
    """

    def __init__(self, total: int, description: str, unit: str = ""):
        self.total, self.description, self.done = max(int(total), 1), description, 0
        self.unit = f" {unit}" if unit else ""
        self._artifact: uuid.UUID | None = None
        self._artifact_at = float("-inf")  # when the artifact was last updated (monotonic s)
        self._artifact_done = 0            # the count it shows
        self.artifact_updates = 0          # updates sent (create excluded)
        self._bar = None
        self._closed = False
        self._start = time.monotonic()
        self._stream = sys.stderr
        self._plain = not _is_terminal(self._stream)
        self._next_step = 1  # the next tenth of total that triggers a plain line
        self._to_run = _in_run()
        if self._to_run and not _has_api_handler(_progress_log):
            _progress_log.addHandler(RunLogHandler())
            _progress_log.setLevel(logging.INFO)
        if not self._plain:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=description, file=self._stream, leave=False)
        self._log(f"start 0/{self.total}{self.unit}")
        if _in_run():
            try:
                self._artifact = create_progress_artifact(0.0, description=description)
            except Exception:  # noqa: BLE001 - progress must never break a run
                self._artifact = None

    @property
    def elapsed(self) -> float:
        """Seconds since the stage started."""
        return time.monotonic() - self._start

    def _log(self, text: str) -> None:
        line = f"[{self.description}] {text}"
        if self._plain:
            try:
                print(line, file=self._stream, flush=True)
            except Exception:  # noqa: BLE001 - a closed or broken stream must not fail the stage
                pass
        if self._to_run:
            try:
                _progress_log.info(line)
            except Exception:  # noqa: BLE001
                pass

    def _percent(self) -> int:
        return int(100 * self.done / self.total)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        if self._closed:
            return
        self.done = min(self.total, self.done + n)
        if self._bar is not None:
            self._bar.update(n)
        crossed = self.done * LOG_STEPS >= self._next_step * self.total
        if (self._plain or self._to_run) and crossed and self.done < self.total:
            self._next_step = self.done * LOG_STEPS // self.total + 1  # skip tenths crossed at once
            elapsed = self.elapsed
            eta = elapsed / self.done * (self.total - self.done)
            self._log(f"{self.done}/{self.total}{self.unit} ({self._percent()} %) "
                      f"elapsed {elapsed:.0f} s, eta {eta:.0f} s")
        self._update_artifact(final=self.done >= self.total)

    def _update_artifact(self, final: bool) -> None:
        """Send the count to the run's progress artifact at most every ``ARTIFACT_EVERY_S``
        seconds, and always when ``final`` (unless it already shows it)."""
        if self._artifact is None or self._artifact_done == self.done:
            return
        now = time.monotonic()
        if not final and now - self._artifact_at < ARTIFACT_EVERY_S:
            return
        try:
            update_progress_artifact(self._artifact, 100.0 * self.done / self.total)
        except Exception:  # noqa: BLE001 - progress must never break a run
            self._artifact = None
            return
        self._artifact_at, self._artifact_done = now, self.done
        self.artifact_updates += 1

    def close(self) -> None:
        """End the stage: remove the bar, or log the end line (once)."""
        if self._closed:
            return
        self._closed = True
        self._update_artifact(final=True)  # the artifact ends at the last count
        if self._bar is not None:
            self._bar.close()
        if self._plain or self._to_run:
            word = "done" if self.done >= self.total else "stopped at"
            self._log(f"{word} {self.done}/{self.total}{self.unit} ({self._percent()} %) "
                      f"in {self.elapsed:.0f} s")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
