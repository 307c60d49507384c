"""Credential scrubbing of the dicts the report and ``provenance.json`` show.

``sanitise(obj)`` copies a nested dict/list without any key that names a credential
(``secret``, ``password``, ``token``, ``key_id``, ``credential``, ``*_key``, ...) and with the
user:password part of URLs masked (``s3://u:p@host/b`` -> ``s3://***@host/b``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SECRET_MARKERS = (
    "secret", "password", "passwd", "passphrase", "token", "key_id", "credential", "access_key", "private_key",
    "api_key", "authorization", "cookie",
)
_URL_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.\-]*://)[^/@\s]+@")


def is_secret(key: Any) -> bool:
    """A key that names a credential: contains a ``SECRET_MARKERS`` word, or is ``key`` /
    ends in ``_key`` / ``-key`` (e.g. ``MEDXGAN_S3_KEY``, an access key id)."""
    k = str(key).lower()
    return any(m in k for m in SECRET_MARKERS) or k == "key" or k.endswith(("_key", "-key"))


def sanitise(obj: Any) -> Any:
    """Copy of a nested dict/list without credential keys and with URL passwords masked."""
    if isinstance(obj, Mapping):
        return {k: sanitise(v) for k, v in obj.items() if not is_secret(k)}
    if isinstance(obj, (list, tuple)):
        return [sanitise(v) for v in obj]
    if isinstance(obj, str):
        return _URL_USERINFO.sub(r"\1***@", obj)
    return obj


__all__ = ["SECRET_MARKERS", "is_secret", "sanitise"]
