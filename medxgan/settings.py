"""Process-wide settings read from the environment (prefix ``MEDXGAN_``).

``MEDXGAN_STORE``        store root URL: a local path, ``file://...`` or ``s3://bucket/prefix``.
``MEDXGAN_S3_ENDPOINT``  endpoint of an S3-compatible server (``None``: AWS defaults).
``MEDXGAN_S3_KEY``       access key id.
``MEDXGAN_S3_SECRET``    secret access key (never logged: a ``SecretStr``).
``MEDXGAN_S3_REGION``    region name sent to the server (default ``us-east-1``).
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Store and S3 settings; instantiate fresh to re-read the environment."""

    model_config = SettingsConfigDict(env_prefix="MEDXGAN_", extra="ignore")

    store: str = "./medxgan-store"
    s3_endpoint: str | None = None
    s3_key: str | None = None
    s3_secret: SecretStr | None = None
    s3_region: str = "us-east-1"
    # Attempts for one storage call before the error reaches the caller (exponential backoff).
    io_retries: int = 6
    io_backoff_s: float = 0.5


def get_settings() -> Settings:
    """The settings as the environment has them now."""
    return Settings()
