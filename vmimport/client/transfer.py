"""Moving files through the S3 API: boto3's managed transfers (multipart with parallel parts
above 8 MiB) with a progress bar."""

from __future__ import annotations

import os
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError as BotoError

from .output import transfer_progress
from .session import ClientError, Endpoint, error_text

# Parts of 16 MiB, 8 at once: fewer requests than boto3's 8 MiB default for disk-sized files.
TRANSFER = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20,
                          max_concurrency=8)


def ensure_bucket(s3, bucket: str, region: str) -> None:
    """Create the bucket unless the caller has it already (someone else's is an error)."""
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except BotoError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise ClientError(f"bucket {bucket} cannot be used: {error_text(exc)}") from None
    kwargs = {} if region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, **kwargs)
    except BotoError as exc:
        if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise ClientError(f"cannot create bucket {bucket}: {error_text(exc)}") from None


def upload(endpoint: Endpoint, path: Path, bucket: str, key: str, quiet: bool) -> None:
    s3 = endpoint.client("s3")
    ensure_bucket(s3, bucket, endpoint.region)
    size = os.stat(path).st_size
    with transfer_progress(quiet) as progress:
        bar = progress.add_task(f"upload {path.name}", total=size)
        try:
            s3.upload_file(str(path), bucket, key, Config=TRANSFER,
                           Callback=lambda sent: progress.advance(bar, sent))
        except BotoError as exc:
            raise ClientError(f"upload of {path} to s3://{bucket}/{key} failed: "
                              f"{error_text(exc)}") from None


def download(endpoint: Endpoint, bucket: str, key: str, target: Path, quiet: bool) -> None:
    s3 = endpoint.client("s3")
    try:
        size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except BotoError as exc:
        raise ClientError(f"s3://{bucket}/{key}: {error_text(exc)}") from None
    with transfer_progress(quiet) as progress:
        bar = progress.add_task(f"download {target.name}", total=size)
        try:
            s3.download_file(bucket, key, str(target), Config=TRANSFER,
                             Callback=lambda got: progress.advance(bar, got))
        except BotoError as exc:
            raise ClientError(f"download of s3://{bucket}/{key} failed: "
                              f"{error_text(exc)}") from None

