"""Time limits of one audit (the audit YAML's ``runtime:`` section; torch-free).

A stuck storage call, Dask scheduler or training loop must fail the nightly run, not hang it.
Each limit is a wall-clock budget in seconds; a key the YAML leaves out comes from the
environment (``MEDXGAN_FLOW_TIMEOUT_S``, ``MEDXGAN_TRAIN_TIMEOUT_S``, ``MEDXGAN_TASK_TIMEOUT_S``:
:class:`medxgan.settings.Settings`, which holds the generous defaults: 24 h, 12 h, 2 h), so a
deployment sets them for every run in its job variables and one audit can still ask for more::

    runtime: {train_timeout_s: 86400}   # this audit's generator trains for up to a day

Limits are not part of any stage hash or run id: they bound how long a run may take, not what
it computes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medxgan.settings import Settings, get_settings


class RuntimeConfig(BaseModel):
    """Wall-clock limits in seconds (None: the environment's, :class:`Settings`)."""

    model_config = ConfigDict(extra="forbid")

    flow_timeout_s: float | None = Field(
        None, gt=0, description="the audit flow (a `medxgan audit` run; a deployment's flow "
        "takes MEDXGAN_FLOW_TIMEOUT_S of its worker, fixed when the run starts)")
    train_timeout_s: float | None = Field(
        None, gt=0, description="each training task (baseline classifier, generator, healthy "
        "in-filler), and the wait for another run training the same stage")
    task_timeout_s: float | None = Field(
        None, gt=0, description="every other long task: an ingest chunk, an explanation "
        "shard, a tuning sweep, the classifier check")

    def resolved(self, settings: Settings | None = None) -> "RuntimeConfig":
        """Every limit filled in: this section's value, else the environment's."""
        s = settings or get_settings()
        return RuntimeConfig(**{k: getattr(self, k) if getattr(self, k) is not None
                                else getattr(s, k) for k in type(self).model_fields})


def runtime_limits(cfg: Any = None) -> RuntimeConfig:
    """The resolved limits of an audit config (its ``runtime`` section where it has one) or,
    for ``None``, of the environment alone."""
    section = getattr(cfg, "runtime", None)
    return (section if isinstance(section, RuntimeConfig) else RuntimeConfig()).resolved()


__all__ = ["RuntimeConfig", "runtime_limits"]
