"""CopyObject and UploadPartCopy: an object (or a byte range of it) copied server-side, from a
bucket the caller may read into one it may write (today both are ownership checks, so a
cross-bucket copy needs the caller to own both buckets).

A whole-object copy whose source ETag is already its MD5 is done in the kernel
(``copy_file_range``: no byte through Python, a reflink where the filesystem can); otherwise
the bytes pass through Python once, to compute the MD5 S3 gives a copy (a part's ETag is
always its MD5).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote

from . import s3_multipart, s3_objects, sts
from .context import Context
from .errors import S3Error
from .s3_api import etag_in, owned_bucket
from .store_buckets import check_copy_homes

# S3's limit for one CopyObject and one UploadPartCopy; larger objects are copied in parts
# (the AWS CLI and boto3 switch to UploadPartCopy well below it).
MAX_COPY = 5 * 1024 ** 3
_PLAIN_MD5 = re.compile(r'"[0-9a-f]{32}"\Z')
_COPY_RANGE = re.compile(r"bytes=(\d+)-(\d+)\Z")


def parse_copy_source(value: str) -> tuple[str, str]:
    """(bucket, key) of ``x-amz-copy-source``: ``[/]bucket/key`` URL-encoded, optionally
    ``?versionId=null`` (buckets here are not versioned)."""
    source, _, query = value.partition("?")
    versions = parse_qs(query).get("versionId")
    if versions and versions != ["null"]:
        raise S3Error("InvalidArgument", "Invalid version id specified: buckets on this "
                      "server are not versioned (only versionId=null exists)", value[:1024])
    source = unquote(source)
    if source.startswith("arn:"):
        raise S3Error("InvalidArgument", "Copy from an access point or outpost ARN is not "
                      "served: name the source as <bucket>/<key>", value[:1024])
    bucket, _, key = source.removeprefix("/").partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: "
                      "sourcebucket/sourcekey", value[:1024])
    return bucket, key


def check_copy_conditions(params: dict, info: s3_objects.ObjectInfo) -> None:
    """The x-amz-copy-source-if-* headers; S3 answers every failed one with 412. A matching
    If-Match wins over If-Unmodified-Since, a failing If-None-Match over If-Modified-Since."""
    def fail(header: str):
        return S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                       "specified did not hold", header)
    if_match, since = params.get("CopySourceIfMatch"), params.get("CopySourceIfUnmodifiedSince")
    if if_match is not None:
        if not etag_in(info.etag, if_match):
            raise fail("x-amz-copy-source-if-match")
    elif since is not None and info.last_modified > since:
        raise fail("x-amz-copy-source-if-unmodified-since")
    none_match = params.get("CopySourceIfNoneMatch")
    modified_since = params.get("CopySourceIfModifiedSince")
    if none_match is not None:
        if etag_in(info.etag, none_match):
            raise fail("x-amz-copy-source-if-none-match")
    elif modified_since is not None and info.last_modified <= modified_since:
        raise fail("x-amz-copy-source-if-modified-since")


def _open_source(ctx: Context, params: dict) -> tuple[int, s3_objects.ObjectInfo]:
    """The source object's descriptor (to close) once the caller may read it and the copy
    conditions hold."""
    bucket, key = parse_copy_source(params["CopySource"])
    check_source_read(ctx, bucket, key)
    check_copy_homes(ctx.db, ctx.settings, bucket, params["Bucket"])
    with owned_bucket(ctx, bucket) as bucket_fd:
        fd, info = s3_objects.open_object(ctx.db, bucket_fd, bucket, key)
    try:
        check_copy_conditions(params, info)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def check_source_read(ctx: Context, bucket: str, key: str) -> None:
    """An assumed role copies only what it may read: AWS authorizes a copy as s3:PutObject on
    the target (checked at the front door) and s3:GetObject on the source (here)."""
    caller = ctx.caller
    if caller is None or caller.role_id is None:
        return
    decision = sts.role_allows(ctx.db, caller.role_id, "s3:GetObject")
    if not decision.allowed:
        raise S3Error("AccessDenied", f"{caller.arn} is not authorized to perform: "
                      f"s3:GetObject on the copy source ({decision.reason})",
                      f"/{bucket}/{key}")


class _HashedRange:
    """Bytes [start, end) of an open file as chunks, their MD5 computed as they pass: the
    ``body`` and ``chunks`` that ``s3_multipart.upload_part`` and ``write_temp`` take."""

    def __init__(self, fd: int, start: int, end: int):
        self._fd, self._start, self._end = fd, start, end
        self.md5_hex = ""

    def __iter__(self):
        md5 = hashlib.md5()
        for chunk in s3_objects.read_range(os.dup(self._fd), self._start, self._end):
            md5.update(chunk)
            yield chunk
        self.md5_hex = md5.hexdigest()


def copy_object(ctx: Context, params: dict) -> dict:
    directive = (params.get("MetadataDirective") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive: COPY or REPLACE",
                      params["MetadataDirective"][:64])
    if parse_copy_source(params["CopySource"]) == (params["Bucket"], params["Key"]) and \
            directive == "COPY":
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to "
                      "copy an object to itself without changing the object's metadata, "
                      "storage class, website redirect location or encryption attributes.")
    src, info = _open_source(ctx, params)
    try:
        if info.size > MAX_COPY:
            raise S3Error("InvalidRequest", f"The specified copy source is larger than the "
                          f"maximum allowable size for a copy source: {MAX_COPY}")
        if directive == "COPY":
            content_type, metadata = info.content_type, info.metadata
        else:
            content_type, metadata = params.get("ContentType"), params.get("Metadata")
        with owned_bucket(ctx, params["Bucket"]) as bucket_fd:
            s3_objects.parts_of(params["Bucket"], params["Key"])
            area = s3_objects.upload_area(bucket_fd)
            try:
                if _PLAIN_MD5.match(info.etag):
                    temp, etag = s3_objects.copy_to_temp(area, src, 0, info.size), info.etag
                else:  # multipart or hand-placed source: a copy's ETag is its MD5
                    hashed = _HashedRange(src, 0, info.size)
                    temp, _ = s3_objects.write_temp(area, hashed)
                    etag = f'"{hashed.md5_hex}"'
                modified = s3_objects.publish(ctx.db, bucket_fd, area, temp, params["Bucket"],
                                              params["Key"], etag, content_type, metadata)
            finally:
                os.close(area)
    finally:
        os.close(src)
    return {"CopyObjectResult": {"ETag": etag, "LastModified": modified}}


def copy_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, end) named by ``x-amz-copy-source-range`` (the whole object without it)."""
    if header is None:
        return 0, size
    m = _COPY_RANGE.match(header.strip())
    if not m:
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the "
                      "form bytes=first-last where first and last are the zero-based offsets "
                      "of the first and last bytes to copy", header[:128])
    first, last = int(m.group(1)), int(m.group(2))
    if first > last or last >= size:
        raise S3Error("InvalidArgument", f"Range specified is not valid for source object of "
                      f"size: {size}", header[:128])
    return first, last + 1


def upload_part_copy(ctx: Context, params: dict) -> dict:
    src, info = _open_source(ctx, params)
    try:
        start, end = copy_range(params.get("CopySourceRange"), info.size)
        if end - start > MAX_COPY:
            raise S3Error("InvalidRequest", f"The specified copy source is larger than the "
                          f"maximum allowable size for a copy source: {MAX_COPY} (copy it in "
                          "ranges with x-amz-copy-source-range)")
        hashed = _HashedRange(src, start, end)
        with owned_bucket(ctx, params["Bucket"]) as bucket_fd:
            etag = s3_multipart.upload_part(bucket_fd, params["UploadId"], params["Key"],
                                            params["PartNumber"], hashed, hashed)
    finally:
        os.close(src)
    return {"CopyPartResult": {"ETag": etag, "LastModified": datetime.now(timezone.utc)
                               .replace(microsecond=0)}}
