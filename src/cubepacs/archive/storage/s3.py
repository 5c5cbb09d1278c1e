"""S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph…) through boto3.

Connection string
-----------------
``s3://bucket/prefix?endpoint=http://127.0.0.1:8333&region=us-east-1``

Options
-------
``endpoint`` (URL of a non-AWS server), ``region`` (default ``us-east-1``), ``access_key``/``secret_key``
(otherwise boto3's usual credential chain). ``put`` returns when the server acknowledged the PUT (S3 writes are
durable and atomic per object). Secrets are never logged: the URL is masked.

Example
-------
>>> S3Storage.parse("s3://pacs/prod?endpoint=http://127.0.0.1:8333")
('pacs', 'prod/', {'endpoint': 'http://127.0.0.1:8333'})
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cubepacs.archive.storage.base import Storage
from cubepacs.errors import ConfigError


class S3Storage(Storage):
    """Objects in ``bucket`` under ``prefix``; ranged reads for frames of cubes."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None, region: str = "us-east-1",
                 access_key: str | None = None, secret_key: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}))
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
        return cls(bucket, prefix, **{**query, **options})

    def delta_location(self, name: str) -> tuple[str, dict[str, str]]:
        """Where the Delta log table ``name`` lives on this storage, with the delta-rs options to reach it.

        (Single writer per table: S3 has no atomic rename, so delta-rs is told to proceed without a lock.)
        """
        return f"s3://{self.bucket}/{self.prefix}logs/{name}", dict(self._delta_options)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (deployment helper)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception:
            self.client.create_bucket(Bucket=self.bucket)

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
            raise KeyError(key) from None
        return body

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        self.range_reads += 1
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key),
                                          Range=f"bytes={offset}-{offset + length - 1}")
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None
        data: bytes = resp["Body"].read()
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, prefix: str = "") -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self._key(prefix)):
            out += [obj["Key"][len(self.prefix):] for obj in page.get("Contents", [])]
        return sorted(out)
