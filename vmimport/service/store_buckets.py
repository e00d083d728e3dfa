"""Where buckets of vmimport's own S3 API live when the block store is an object store: under
``<prefix>buckets/<bucket>/`` of the ``blocks_url`` bucket, so that every process of the
installation, on any machine, reads and writes the same objects (a data dir is one machine's).

Which buckets: those CreateBucket made (a ``s3_buckets`` row) and that have no directory in this
process's ``DATA_DIR/buckets`` (a directory made by hand, or by CreateBucket before the store was
switched on, stays a local bucket, found first as before). With a ``file://`` block store there
is no shared bucket at all.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select

from vmimport.config import Settings
from vmimport.db.models import S3Bucket
from vmimport.db.session import Database

from .errors import S3Error

FOLDER = "buckets"


@dataclass(frozen=True)
class SharedBuckets:
    """The object store's client and where the shared buckets are in it."""
    client: object
    bucket: str      # the store's bucket (blocks_url's)
    root: str        # "<prefix>buckets/"
    endpoint: str    # for messages: without credentials

    def key(self, bucket: str, key: str = "") -> str:
        return f"{self.root}{bucket}/{key}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.root} at {self.endpoint}"


def shared_buckets(settings: Settings) -> SharedBuckets | None:
    """The shared buckets' place, or None when the block store is not an object store."""
    if not settings.blocks_url.lower().startswith("s3://"):
        return None
    return _open(settings.blocks_url, settings.blocks_s3_endpoint_url,
                 settings.blocks_s3_access_key, settings.blocks_s3_secret_key,
                 settings.blocks_s3_region, os.getpid())


@functools.lru_cache(maxsize=4)
def _open(url: str, endpoint: str, access_key: str, secret_key: str, region: str,
          pid: int) -> SharedBuckets:
    # One client per process (boto3 clients are thread-safe; building one costs ~50 ms); a
    # forked worker makes its own: pooled connections must not be shared across processes.
    from vmimport.blockstore.object_client import ObjectLocation, make_client

    location = ObjectLocation.from_url(url, endpoint)
    return SharedBuckets(make_client(endpoint, access_key, secret_key, region), location.bucket,
                         location.key(FOLDER, ""), location.endpoint)


def is_local(settings: Settings, name: str) -> bool:
    """A directory (or a link, never followed) of that name in this data dir."""
    if not name or "/" in name or name in (".", ".."):
        return False
    path = settings.buckets_dir / name
    return path.is_symlink() or path.is_dir()


def in_store(db: Database, settings: Settings, name: str) -> SharedBuckets | None:
    """Where bucket ``name`` is when it is a shared bucket (see the module docstring)."""
    shared = shared_buckets(settings)
    if shared is None or is_local(settings, name):
        return None
    with db.read() as session:
        made = session.scalar(select(S3Bucket.name).where(S3Bucket.name == name))
    return shared if made is not None else None


def check_copy_homes(db: Database, settings: Settings, source: str, target: str) -> None:
    """A copy stays within one home: both buckets in the object store, or both here."""
    if (in_store(db, settings, source) is None) != (in_store(db, settings, target) is None):
        raise S3Error("NotImplemented", "A copy between a bucket in the object store and one "
                      "in this server's data dir is not served; download and upload instead",
                      source)


@contextmanager
def store_errors(shared: SharedBuckets, doing: str, resource: str | None = None):
    """The store's answers as the S3 errors a client of vmimport expects: the store's own 4xx
    code passes through (NoSuchKey, PreconditionFailed, InvalidPart, ...), a store that fails or
    cannot be reached is a 503 naming it (never its credentials)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.get("Code") or status)
        if status == 304:
            raise S3Error("NotModified", "Not Modified", status=304) from None
        if status == 404 and code.isdigit():
            code = "NoSuchKey"
        if 400 <= status < 500 and not code.isdigit() and code not in (
                "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"):
            raise S3Error(code, error.get("Message") or code, resource, status=status) from None
        raise S3Error("ServiceUnavailable", f"the object store that holds this server's "
                      f"buckets ({shared}) failed {doing}: {code}", resource,
                      status=503) from None
    except BotoCoreError as exc:
        raise S3Error("ServiceUnavailable", f"the object store that holds this server's "
                      f"buckets ({shared}) could not be reached {doing}: "
                      f"{type(exc).__name__}", resource, status=503) from None


def has_objects(shared: SharedBuckets, name: str) -> str | None:
    """Why bucket ``name`` cannot be deleted (an object or an upload in it), or None."""
    with store_errors(shared, "listing a bucket", name):
        listed = shared.client.list_objects_v2(Bucket=shared.bucket, Prefix=shared.key(name),
                                               MaxKeys=1)
        if listed.get("KeyCount") or listed.get("Contents"):
            return "The bucket you tried to delete is not empty"
        uploads = shared.client.list_multipart_uploads(Bucket=shared.bucket,
                                                       Prefix=shared.key(name), MaxUploads=1)
        if uploads.get("Uploads"):
            return ("The bucket you tried to delete has multipart uploads in progress; "
                    "abort them first")
    return None


def abort_abandoned_uploads(settings: Settings, older_than_seconds: float) -> tuple[int, int]:
    """Abort the multipart uploads of shared buckets started more than ``older_than_seconds``
    ago (``vmimport gc``); (how many, the bytes their parts held)."""
    from datetime import datetime, timezone

    from vmimport.blockstore.object_client import abort_upload

    shared = shared_buckets(settings)
    if shared is None:
        return 0, 0
    now, removed, freed = datetime.now(timezone.utc), 0, 0
    with store_errors(shared, "listing abandoned uploads"):
        uploads = [u for page in shared.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=shared.bucket, Prefix=shared.root) for u in page.get("Uploads", [])]
    for upload in uploads:
        if (now - upload["Initiated"]).total_seconds() <= older_than_seconds:
            continue
        with store_errors(shared, "aborting an abandoned upload"):
            size = abort_upload(shared.client, shared.bucket, upload["Key"], upload["UploadId"])
        if size is not None:  # else completed or aborted meanwhile
            removed, freed = removed + 1, freed + size
    return removed, freed
