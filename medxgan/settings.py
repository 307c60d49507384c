"""Process-wide settings read from the environment (prefix ``MEDXGAN_``).

Store and S3 (credentials: ``docs/deployment.md``, "Credentials"; never logged):

``MEDXGAN_STORE``        store root URL: a local path, ``file://...`` or ``s3://bucket/prefix``.
``MEDXGAN_S3_ENDPOINT``  endpoint of an S3-compatible server (``None``: AWS defaults).
``MEDXGAN_S3_KEY``       access key id.
``MEDXGAN_S3_SECRET``    secret access key (a ``SecretStr``).
``MEDXGAN_S3_REGION``    region name sent to the server (default ``us-east-1``).
``MEDXGAN_S3_BLOCK``     a Prefect block holding the S3 credentials, ``aws-credentials/<name>``
                         (prefect-aws's ``AwsCredentials``) or ``secret/<name>`` (a core
                         ``Secret`` with a JSON mapping); used when no key/secret is set.
``MEDXGAN_S3_PROFILE``   a named AWS profile (``~/.aws/config``); with none of the above, the
                         AWS default chain (``AWS_*`` variables, ``AWS_PROFILE``, the
                         instance / task role).

Time limits of unattended runs (seconds; an audit YAML's ``runtime:`` section overrides them
per audit, ``medxgan.config.runtime``):

``MEDXGAN_FLOW_TIMEOUT_S``   the audit flow (default 24 h).
``MEDXGAN_TRAIN_TIMEOUT_S``  each training task (classifier, generator; default 12 h), and how
                             long a run waits for another run training the same stage.
``MEDXGAN_TASK_TIMEOUT_S``   every other long task: an ingest chunk, an explanation shard, a
                             tuning sweep, the classifier check (default 2 h).

``MEDXGAN_LOG_LEVEL``        level of the library's loggers (``medxgan.*``) inside Prefect
                             runs, whose lines go to the run's logs (default ``INFO``).
``MEDXGAN_CPU_TUNING``       ``0`` turns off the channels-last U-Nets and classifier training
                             and the cache-sized CPU batches of :mod:`medxgan.cpu` (read once,
                             at its import; default on).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Store, S3, time-limit and log settings; instantiate fresh to re-read the environment."""

    model_config = SettingsConfigDict(env_prefix="MEDXGAN_", extra="ignore")

    store: str = "./medxgan-store"
    s3_endpoint: str | None = None
    s3_key: str | None = None
    s3_secret: SecretStr | None = None
    s3_region: str = "us-east-1"
    s3_block: str | None = Field(None, description="Prefect block with the S3 credentials: "
                                 "aws-credentials/<name> or secret/<name>")
    s3_profile: str | None = Field(None, description="named AWS profile")
    # Attempts for one storage call before the error reaches the caller (exponential backoff).
    io_retries: int = 6
    io_backoff_s: float = 0.5
    flow_timeout_s: float = Field(24 * 3600.0, gt=0, description="the audit flow's limit (s)")
    train_timeout_s: float = Field(12 * 3600.0, gt=0, description="one training task's limit "
                                   "(s), also the wait for another run training the same stage")
    task_timeout_s: float = Field(2 * 3600.0, gt=0, description="one other long task's limit (s)")
    log_level: str = Field("INFO", description="level of the medxgan.* loggers in Prefect runs")


    @field_validator("store", "s3_block")
    @classmethod
    def _not_a_template(cls, v: str | None, info: ValidationInfo) -> str | None:
        """A deployment deployed without the variable set records the placeholder itself."""
        if v is not None and "{{" in v:
            raise ValueError(f"MEDXGAN_{info.field_name.upper()} holds the unresolved template "
                             f"{v!r}: set the variable before "
                             "`prefect deploy` (it is recorded in the job variables), or "
                             "remove it from prefect.yaml")
        return v


def get_settings() -> Settings:
    """The settings as the environment has them now."""
    return Settings()
