"""S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph…) through boto3.

Connection string
-----------------
``s3://bucket/prefix?endpoint=http://127.0.0.1:8333&region=us-east-1``

Options
-------
``endpoint`` (URL of a non-AWS server), ``region`` (default ``us-east-1``), ``access_key``/``secret_key``
(otherwise boto3's usual credential chain), ``create_bucket=true`` (create the bucket when it is missing, on
opening; default: a missing bucket is a one-line ``BackendError`` from ``serve --check``, ``/readyz`` and every
request). ``put`` returns when the server acknowledged the PUT (S3 writes are durable and atomic per object).
Secrets are never logged: the URL is masked.

``probe`` (``serve --check``, ``/readyz``) makes real requests, each with a short timeout and no retry: HEAD of
the bucket, then a PUT, GET and DELETE of an object under ``.cubepacs-probe/``.

Example
-------
>>> S3Storage.parse("s3://pacs/prod?endpoint=http://127.0.0.1:8333")
('pacs', 'prod/', {'endpoint': 'http://127.0.0.1:8333'})
"""

from __future__ import annotations

from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from cubepacs.archive.storage.base import Storage
from cubepacs.errors import BackendError, ConfigError, MissingObjectError


def _reason(exc: Exception) -> str:
    """One line of a boto error (no request ids, no secrets: boto never puts the keys in its messages)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


class S3Storage(Storage):
    """Objects in ``bucket`` under ``prefix``; ranged reads for frames of cubes."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None, region: str = "us-east-1",
                 access_key: str | None = None, secret_key: str | None = None,
                 create_bucket: bool | str = False) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint or f"AWS S3 ({region})"
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}))
        # probes: one attempt each, short timeouts — a backend that is not there is said in seconds, not minutes
        self._probe_client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"},
                          connect_timeout=3, read_timeout=5))
        self.range_reads = 0  # how many ranged GETs were made (the benchmark and tests read it)
        self._delta_options = {"AWS_REGION": region, "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        if endpoint:
            self._delta_options["AWS_ENDPOINT_URL"] = endpoint
            if endpoint.startswith("http://"):
                self._delta_options["AWS_ALLOW_HTTP"] = "true"
        if access_key and secret_key:
            self._delta_options.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)

    @staticmethod
    def parse(url: str) -> tuple[str, str, dict[str, str]]:
        """(bucket, prefix, options) of an ``s3://`` URL."""
        parts = urlsplit(url)
        if not parts.netloc:
            raise ConfigError(f"S3 URL {url.split('?', maxsplit=1)[0]!r} names no bucket")
        prefix = parts.path.strip("/")
        return parts.netloc, (prefix + "/") if prefix else "", dict(parse_qsl(parts.query))

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3Storage:
        bucket, prefix, query = cls.parse(url)
        known = {"endpoint", "region", "access_key", "secret_key", "create_bucket"}
        if set(query) - known:
            raise ConfigError(f"S3 URL {url.split('?', maxsplit=1)[0]!r}: unknown options {sorted(set(query) - known)}"
                              f"; known: {sorted(known)}")
        merged: dict[str, Any] = {**query, **options}
        create = str(merged.pop("create_bucket", "false")).lower() in ("1", "true", "yes", "on")
        storage = cls(bucket, prefix, **merged)
        if create:
            storage.ensure_bucket()
        return storage

    def delta_location(self, name: str) -> tuple[str, dict[str, str]]:
        """Where the Delta log table ``name`` lives on this storage, with the delta-rs options to reach it.

        (Single writer per table: S3 has no atomic rename, so delta-rs is told to proceed without a lock.)
        """
        return f"s3://{self.bucket}/{self.prefix}logs/{name}", dict(self._delta_options)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (``create_bucket=true``); BackendError when the server cannot
        be reached or refuses."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._head_bucket()
        except BackendError as exc:
            if "does not exist" not in str(exc):
                raise
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except (BotoCoreError, ClientError) as create_exc:
                raise BackendError(f"S3 bucket {self.bucket!r} at {self.endpoint} cannot be created: "
                                   f"{_reason(create_exc)}") from None

    def _head_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._probe_client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
                raise BackendError(f"S3 bucket {self.bucket!r} does not exist at {self.endpoint} (create it, or "
                                   f"add create_bucket=true to the storage URL)") from None
            raise BackendError(f"S3 bucket {self.bucket!r} at {self.endpoint}: {_reason(exc)}") from None
        except BotoCoreError as exc:
            raise BackendError(f"S3 at {self.endpoint} is not reachable: {_reason(exc)}") from None

    def probe(self) -> None:
        """HEAD the bucket, then PUT, GET and DELETE an object under ``.cubepacs-probe/`` (one attempt each, short
        timeouts); BackendError naming the endpoint, the bucket and the step that failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        self._head_bucket()
        import uuid

        key = self._key(f"{self.PROBE_PREFIX}{uuid.uuid4().hex}")
        step = "PUT"
        try:
            self._probe_client.put_object(Bucket=self.bucket, Key=key, Body=b"probe")
            step = "GET"
            if self._probe_client.get_object(Bucket=self.bucket, Key=key)["Body"].read() != b"probe":
                raise BackendError(f"S3 bucket {self.bucket!r} at {self.endpoint}: the probe object read back "
                                   "other bytes than were written")
            step = "DELETE"
            self._probe_client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise BackendError(f"S3 bucket {self.bucket!r} at {self.endpoint}: probe {step} {key} failed: "
                               f"{_reason(exc)}") from None

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ConfigError(f"storage key {key!r} leaves the storage prefix")
        return self.prefix + key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise MissingObjectError(key) from None
        return body

    def open_read(self, key: str) -> IO[bytes]:
        """The GET's body, read from the connection as the caller reads (not downloaded first)."""
        try:
            body: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            raise MissingObjectError(key) from None
        return body

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        self.range_reads += 1
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key),
                                          Range=f"bytes={offset}-{offset + length - 1}")
        except self.client.exceptions.NoSuchKey:
            raise MissingObjectError(key) from None
        data: bytes = resp["Body"].read()
        return data

    def exists(self, key: str) -> bool:
        """True when stored, False when not (404); any other failure (unreachable, no bucket, denied) raises."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, prefix: str = "") -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self._key(prefix)):
            out += [obj["Key"][len(self.prefix):] for obj in page.get("Contents", [])]
        return sorted(out)
