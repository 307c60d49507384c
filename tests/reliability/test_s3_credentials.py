"""Where S3 credentials come from (issue #23, ``medxgan.storage.s3_credentials``), on the live
rclone S3 server (which refuses a wrong secret): the ``MEDXGAN_S3_*`` variables, a Prefect
block named by ``MEDXGAN_S3_BLOCK`` (a core ``Secret`` holding a JSON mapping, or an
``aws-credentials`` document as prefect-aws's ``AwsCredentials`` saves it), and the AWS default
chain (``AWS_*`` variables, a named profile). A wrong or missing block is one line, and no
secret is ever printed or logged.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from pydantic import SecretStr

from medxgan.storage import Store, StorageError, block_credentials

SECRET_NAME = "medxgan-s3-test"


@pytest.fixture
def no_env_keys(s3_server, monkeypatch):
    """MEDXGAN_S3_ENDPOINT at the live server, no key or secret in the environment."""
    monkeypatch.setenv("MEDXGAN_S3_ENDPOINT", s3_server.endpoint)
    for k in ("MEDXGAN_S3_KEY", "MEDXGAN_S3_SECRET", "MEDXGAN_S3_BLOCK", "MEDXGAN_S3_PROFILE",
              "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask here
    block_credentials.cache_clear()
    yield
    block_credentials.cache_clear()


def _roundtrip() -> None:
    store = Store(f"s3://medxgan/cred-{uuid.uuid4().hex[:8]}")
    store.write_json("probe.json", {"ok": 1})
    assert store.read_json("probe.json") == {"ok": 1}


def test_a_secret_block_with_the_keys(prefect_harness, s3_server, no_env_keys, monkeypatch,
                                      caplog):
    from prefect.blocks.system import Secret

    caplog.set_level(logging.DEBUG)
    Secret(value={"aws_access_key_id": s3_server.key,
                  "aws_secret_access_key": s3_server.secret}).save(SECRET_NAME, overwrite=True)
    monkeypatch.setenv("MEDXGAN_S3_BLOCK", f"secret/{SECRET_NAME}")
    _roundtrip()
    Secret(value={"aws_access_key_id": s3_server.key,
                  "aws_secret_access_key": "a-wrong-secret"}).save("medxgan-s3-wrong",
                                                                     overwrite=True)
    monkeypatch.setenv("MEDXGAN_S3_BLOCK", "secret/medxgan-s3-wrong")
    with pytest.raises(StorageError) as info:
        Store("s3://medxgan/x").read_bytes("missing.json")
    assert "\n" not in str(info.value) and "a-wrong-secret" not in str(info.value)
    Secret(value="just a string").save("medxgan-s3-string", overwrite=True)
    for name, needle in (("secret/medxgan-s3-string", "JSON mapping"),
                         ("secret/no-such-block", "could not be read (ObjectNotFound)"),
                         ("vault/x", "expected aws-credentials/<name> or secret/<name>")):
        monkeypatch.setenv("MEDXGAN_S3_BLOCK", name)
        with pytest.raises(StorageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            Store("s3://medxgan/x")
    text = caplog.text + str(info.value)
    assert s3_server.secret not in text and "a-wrong-secret" not in text


def test_an_aws_credentials_block(prefect_harness, s3_server, no_env_keys, monkeypatch):
    """The document prefect-aws's ``AwsCredentials`` saves (its endpoint in the client
    parameters). prefect-aws is an optional package this venv does not have; without it a
    Block with the same slug and field names stands in for it, and the store reads the
    document through the API either way, without importing prefect-aws."""
    try:
        from prefect_aws import AwsClientParameters, AwsCredentials

        block = AwsCredentials(aws_access_key_id=s3_server.key,
                               aws_secret_access_key=s3_server.secret,
                               aws_client_parameters=AwsClientParameters(
                                   endpoint_url=s3_server.endpoint))
    except ImportError:
        from prefect.blocks.core import Block

        class AwsCredentials(Block):  # the fields of prefect_aws.AwsCredentials we read
            _block_type_name = "AWS Credentials"
            _block_type_slug = "aws-credentials"
            aws_access_key_id: str | None = None
            aws_secret_access_key: SecretStr | None = None
            region_name: str | None = None
            aws_client_parameters: dict = {}

        block = AwsCredentials(aws_access_key_id=s3_server.key,
                               aws_secret_access_key=s3_server.secret,
                               aws_client_parameters={"endpoint_url": s3_server.endpoint})
    block.save("medxgan-aws", overwrite=True)
    monkeypatch.delenv("MEDXGAN_S3_ENDPOINT")  # the endpoint comes from the block too
    monkeypatch.setenv("MEDXGAN_S3_BLOCK", "aws-credentials/medxgan-aws")
    _roundtrip()
    # the environment's keys win over a block
    monkeypatch.setenv("MEDXGAN_S3_BLOCK", "aws-credentials/no-such-block")
    monkeypatch.setenv("MEDXGAN_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("MEDXGAN_S3_KEY", s3_server.key)
    monkeypatch.setenv("MEDXGAN_S3_SECRET", s3_server.secret)
    _roundtrip()


def test_the_aws_default_chain(s3_server, no_env_keys, monkeypatch, tmp_path):
    """No MEDXGAN key and no block: the AWS variables, then a named profile."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    _roundtrip()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "credentials").write_text(f"[hospital]\naws_access_key_id = {s3_server.key}\n"
                                          f"aws_secret_access_key = {s3_server.secret}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("MEDXGAN_S3_PROFILE", "hospital")
    _roundtrip()
