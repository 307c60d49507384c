"""Progress for long stages: a bar on a terminal and a Prefect progress artifact in the UI."""

from __future__ import annotations

import sys
import uuid

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext


class Progress:
    """Counts ``done`` of ``total`` units; safe to use outside a Prefect run (terminal only).

    Args:
        total: number of units (images, steps, shards).
        description: what is being counted, shown in the bar and the artifact.
    """

    def __init__(self, total: int, description: str):
        self.total, self.description, self.done = max(int(total), 1), description, 0
        self._artifact: uuid.UUID | None = None
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=description, file=sys.stderr, leave=False)
        if FlowRunContext.get() or TaskRunContext.get():
            try:
                self._artifact = create_progress_artifact(0.0, description=description)
            except Exception:  # noqa: BLE001 - progress must never break a run
                self._artifact = None

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self._bar is not None:
            self._bar.update(n)
        if self._artifact is not None:
            try:
                update_progress_artifact(self._artifact, 100.0 * self.done / self.total)
            except Exception:  # noqa: BLE001
                self._artifact = None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
