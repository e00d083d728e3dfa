"""The object-store block store's view of its bucket: where it is (bucket, prefix, endpoint),
the boto3 client that reaches it, and S3 failures turned into ``BlockStoreError``s that name
the store (a bare botocore exception tells an operator nothing about *which* store)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .interface import BlockStoreFull
from .manifest import BlockStoreError

# Connection failures, timeouts, throttling and 5xx answers are retried by botocore's standard
# mode (exponential backoff with jitter, up to 20 s between attempts): about half a minute of
# an unreachable store is ridden out before an import fails naming the store.
RETRY_ATTEMPTS = 6
# Two pool threads per import, several imports per worker process, and API readers: boto3's
# default of 10 pooled connections made threads wait for one.
POOL_CONNECTIONS = 32

_MISSING = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
_FULL = {"QuotaExceeded", "InsufficientStorage", "XMinioStorageFull", "507"}


class ObjectStoreError(BlockStoreError):
    """The object store answered with an error, or could not be reached (after retries)."""


@dataclass(frozen=True)
class ObjectLocation:
    bucket: str
    prefix: str  # "" or ending in "/"
    endpoint: str  # for messages: the endpoint URL without credentials, or "the default"

    @classmethod
    def from_url(cls, url: str, endpoint: str) -> "ObjectLocation":
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"blocks_url {url!r}: an s3 URL names a bucket, "
                             "s3://bucket/prefix/")
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        shown = urlsplit(endpoint)
        shown = shown._replace(netloc=shown.netloc.rpartition("@")[2]).geturl()  # no userinfo
        return cls(parts.netloc, prefix, shown or "the default endpoint")

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"


def make_client(endpoint_url: str, access_key: str, secret_key: str, region: str):
    """A thread-safe boto3 S3 client (own session: the default one is not thread-safe),
    path-style (custom endpoints rarely resolve <bucket>.<host>). No keys: botocore's own
    credential chain (environment, instance profile)."""
    config = Config(s3={"addressing_style": "path", "payload_signing_enabled": False},
                    request_checksum_calculation="when_required",
                    connect_timeout=10, read_timeout=60,
                    retries={"max_attempts": RETRY_ATTEMPTS, "mode": "standard"},
                    max_pool_connections=POOL_CONNECTIONS)
    keys = ({"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
            if access_key or secret_key else {})
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None,
                                          region_name=region, config=config, **keys)


def abort_upload(client, bucket: str, key: str, upload_id: str) -> int | None:
    """Abort a multipart upload: the bytes its parts held, or None if it was gone already
    (completed or aborted meanwhile)."""
    try:
        size = sum(part["Size"] for page in client.get_paginator("list_parts").paginate(
            Bucket=bucket, Key=key, UploadId=upload_id) for part in page.get("Parts", []))
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    return size


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says the object (or multipart upload) does not exist."""
    return isinstance(exc, ClientError) and error_code(exc) in _MISSING


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or \
        str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


@contextmanager
def store_errors(location: ObjectLocation, doing: str):
    """Raise what goes wrong while ``doing`` (e.g. "reading manifest snap-1") as an
    ``ObjectStoreError`` naming the store; a full store as ``BlockStoreFull``."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code in _FULL:
            raise BlockStoreFull(str(location)) from exc
        message = exc.response.get("Error", {}).get("Message") or ""
        raise ObjectStoreError(f"the block store {location}: {doing} failed: {code}"
                               + (f" ({message})" if message else "")) from None
    except BotoCoreError as exc:  # unreachable, timed out (after retries), no credentials
        raise ObjectStoreError(f"the block store {location}: {doing} failed: {exc}") from None
