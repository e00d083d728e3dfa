"""The S3 operations on a bucket kept in the object store (``store_buckets``): each one the same
operation on the store, the key under ``<prefix>buckets/<bucket>/``. Ownership, names, ranges
and conditions are checked here as for a local bucket (``s3_api``); the store keeps the bytes,
ETags, headers and multipart uploads.

A request body is streamed to the store as it arrives, one chunk behind: its last chunk is
given to the store only once the whole body has verified (signature, Content-MD5, checksums),
so a body that fails them never becomes an object; the store sees a request cut short.
"""

from __future__ import annotations

import tempfile
from contextlib import closing

from . import buckets, s3_multipart, s3_objects
from .context import Context
from .errors import S3Error
from .s3_api import (MAX_DELETE, MAX_KEYS, byte_range, check_conditions, object_headers,
                     owner_entry, parts_page, uploads_page, url_encoded)
from .s3_copy import (MAX_COPY, check_copy_conditions, check_source_read, copy_range,
                      parse_copy_source)
from .s3_objects import ObjectInfo, no_such_key
from .store_buckets import (SharedBuckets, check_copy_homes, in_store, shared_buckets,
                            store_errors)

READ_CHUNK = 1 << 20
SPOOL_IN_MEMORY = 8 << 20  # a body of unannounced size: this much in memory, then a temp file


def _owned(ctx: Context, bucket: str) -> SharedBuckets:
    """The store, once the caller owns ``bucket`` (``dispatch`` found it there)."""
    buckets.check_access(ctx.db, ctx.settings, ctx.account_id, bucket)
    return shared_buckets(ctx.settings)


def _key(shared: SharedBuckets, bucket: str, key: str) -> str:
    """The store's key for ``key`` of ``bucket``. The store (SeaweedFS, say) may treat keys
    as paths, so the rules of a local bucket's keys hold here too: no empty, '.' or '..'
    segment can step out of ``<prefix>buckets/<bucket>/`` (``InvalidArgument``)."""
    s3_objects.parts_of(bucket, key)
    return shared.key(bucket, key)


def _prefix(shared: SharedBuckets, bucket: str, prefix: str) -> str:
    """The store's key prefix for a listing's Prefix (or a marker), checked as keys are."""
    segments = prefix.split("/")
    if "\0" in prefix or any(p in ("", ".", "..") for p in segments[:-1]) or \
            segments[-1] in (".", ".."):
        raise S3Error("InvalidArgument", "A prefix with an empty, '.' or '..' segment names "
                      "no key this server can store", prefix[:1024])
    return shared.key(bucket, prefix)


# --- listing -------------------------------------------------------------------------------
def _listing(shared: SharedBuckets, params: dict, v2: bool, **request) -> tuple[dict, dict]:
    bucket = params["Bucket"]
    base = shared.key(bucket)
    prefix, delimiter = params.get("Prefix") or "", params.get("Delimiter") or ""
    limit = min(MAX_KEYS, max(0, params.get("MaxKeys", MAX_KEYS)))
    request.update(Bucket=shared.bucket, Prefix=_prefix(shared, bucket, prefix), MaxKeys=limit)
    if delimiter:
        request["Delimiter"] = delimiter
    with store_errors(shared, "listing objects", bucket):
        if v2:
            answer = shared.client.list_objects_v2(**request)
        else:
            answer = shared.client.list_objects(**request)
    out = {"Name": bucket, "Prefix": prefix, "MaxKeys": limit,
           "IsTruncated": bool(answer.get("IsTruncated")),
           "Contents": [{"Key": o["Key"][len(base):], "LastModified": o["LastModified"],
                         "ETag": o["ETag"], "Size": o["Size"], "StorageClass": "STANDARD"}
                        for o in answer.get("Contents") or []] or None,
           "CommonPrefixes": [{"Prefix": p["Prefix"][len(base):]}
                              for p in answer.get("CommonPrefixes") or []] or None}
    if delimiter:
        out["Delimiter"] = delimiter
    return out, answer


def list_objects_v2(ctx: Context, params: dict) -> dict:
    shared, request = _owned(ctx, params["Bucket"]), {}
    if params.get("ContinuationToken"):
        request["ContinuationToken"] = params["ContinuationToken"]
    if params.get("StartAfter"):
        request["StartAfter"] = _prefix(shared, params["Bucket"], params["StartAfter"])
    out, answer = _listing(shared, params, True, **request)
    out["KeyCount"] = len(out["Contents"] or []) + len(out["CommonPrefixes"] or [])
    if params.get("ContinuationToken"):
        out["ContinuationToken"] = params["ContinuationToken"]
    if params.get("StartAfter"):
        out["StartAfter"] = params["StartAfter"]
    if out["IsTruncated"] and answer.get("NextContinuationToken"):
        out["NextContinuationToken"] = answer["NextContinuationToken"]
    if params.get("FetchOwner"):
        for item in out["Contents"] or []:
            item["Owner"] = owner_entry(ctx)
    return url_encoded(out, params, ("Prefix", "Delimiter", "StartAfter"))


def list_objects(ctx: Context, params: dict) -> dict:
    marker, shared = params.get("Marker") or "", _owned(ctx, params["Bucket"])
    request = {"Marker": _prefix(shared, params["Bucket"], marker)} if marker else {}
    out, answer = _listing(shared, params, False, **request)
    out["Marker"] = marker
    if out["IsTruncated"] and params.get("Delimiter"):
        last = [item["Key"] for item in out["Contents"] or []] + \
            [item["Prefix"] for item in out["CommonPrefixes"] or []]
        out["NextMarker"] = max(last) if last else marker
    return url_encoded(out, params, ("Prefix", "Delimiter", "Marker", "NextMarker"))


# --- objects -------------------------------------------------------------------------------
class HeldBackBody:
    """A request body as the file botocore sends on: read() gives its bytes one chunk behind
    the client, so the last chunk leaves only once the body has verified (iterating it to the
    end is what verifies it); more bytes than announced are refused."""

    def __init__(self, body, size: int):
        self._chunks = iter(body)
        self._size, self._given = size, 0
        self._ahead: bytes | None = None
        self._ready, self._at = memoryview(b""), 0
        self._done = False
        self.failure: BaseException | None = None

    def prime(self) -> None:
        """Have the first bytes to give before the store is asked: a body that fails before
        any (a bad first chunk) then fails here, with nothing sent. (SeaweedFS stores an empty
        object when a PUT's connection closes before its first body byte.)"""
        self._fill()

    def _fill(self) -> None:
        if self.failure is not None:
            raise self.failure
        while self._at >= len(self._ready) and not self._done:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._done = True
                chunk = None
            except BaseException as exc:
                self.failure = exc
                raise
            if chunk is not None and not chunk:
                continue
            ready, self._ahead = self._ahead, chunk
            self._ready, self._at = memoryview(ready or b""), 0

    def read(self, n: int = -1) -> bytes:
        self._fill()
        end = len(self._ready) if n is None or n < 0 else min(len(self._ready), self._at + n)
        data = bytes(self._ready[self._at:end])
        self._at = end
        self._given += len(data)
        if self._given > self._size:
            self.failure = S3Error("IncompleteBody", "The request body holds more bytes than "
                                   "its Content-Length announced")
            raise self.failure
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._given

    def seek(self, offset: int, whence: int = 0) -> int:
        # botocore rewinds a body before a retry: a stream already under way cannot be (the
        # request fails, and the client retries it).
        if self.failure is not None or \
                (offset, whence) not in ((self._given, 0), (0, 1)):
            raise OSError("a request body being forwarded cannot be rewound")
        return self._given

    def readable(self) -> bool:
        return True


def _send_body(shared: SharedBuckets, ctx: Context, body, doing: str, resource: str, call):
    """``call(Body=..., ContentLength=...)`` with the request body: streamed when its size
    was announced, else spooled first (then it has verified before anything is sent)."""
    size = body.declared_size
    if size is None:
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, dir=_spool_dir(ctx)) as spool:
            for chunk in body:
                spool.write(chunk)
            size = spool.tell()
            spool.seek(0)
            with store_errors(shared, doing, resource):
                return call(Body=spool, ContentLength=size)
    held = HeldBackBody(body, size)
    held.prime()
    try:
        with store_errors(shared, doing, resource):
            answer = call(Body=held, ContentLength=size)
    except S3Error:
        if held.failure is not None:
            raise held.failure from None  # the client's body was wrong, not the store
        raise
    if held.failure is not None:
        raise held.failure
    return answer


def _spool_dir(ctx: Context) -> str:
    path = ctx.settings.data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def put_object(ctx: Context, params: dict) -> dict:
    bucket, key = params["Bucket"], params["Key"]
    shared = _owned(ctx, bucket)
    target, extra = _key(shared, bucket, key), _headers(params)
    answer = _send_body(shared, ctx, params["Body"], "storing an object", f"/{bucket}/{key}",
                        lambda **body: shared.client.put_object(
                            Bucket=shared.bucket, Key=target, **extra, **body))
    return {"ETag": answer["ETag"]}


def _headers(params: dict) -> dict:
    extra = {}
    if params.get("ContentType"):
        extra["ContentType"] = params["ContentType"]
    if params.get("Metadata"):
        extra["Metadata"] = params["Metadata"]
    return extra


def _head(shared: SharedBuckets, bucket: str, key: str) -> ObjectInfo:
    from vmimport.blockstore.object_client import is_missing

    with store_errors(shared, "reading an object", f"/{bucket}/{key}"):
        try:
            head = shared.client.head_object(Bucket=shared.bucket, Key=_key(shared, bucket, key))
        except Exception as exc:
            if is_missing(exc):
                raise no_such_key(bucket, key) from None
            raise
    return ObjectInfo(key, head["ContentLength"], head["ETag"], head["LastModified"],
                      head.get("ContentType"), head.get("Metadata") or None)


def get_object(ctx: Context, params: dict, head: bool = False) -> dict:
    bucket, key = params["Bucket"], params["Key"]
    shared = _owned(ctx, bucket)
    info = _head(shared, bucket, key)
    check_conditions(params, info)
    span = byte_range(params.get("Range"), info.size)
    out = object_headers(info)
    start, end = span or (0, info.size)
    if span is not None:
        out["ContentRange"] = f"bytes {start}-{end - 1}/{info.size}"
        out["ContentLength"] = end - start
    if not head:
        extra = {"Range": f"bytes={start}-{end - 1}"} if span is not None and end > start else {}
        with store_errors(shared, "reading an object", f"/{bucket}/{key}"):
            # Pinned to the ETag the headers came from: a replaced object is a 412, not a mix.
            answer = shared.client.get_object(Bucket=shared.bucket, Key=_key(shared, bucket, key),
                                              IfMatch=info.etag, **extra)
        out["Body"] = _chunks(answer["Body"], end - start)
    return out


def _chunks(stream, size: int):
    with closing(stream):
        left = size
        while left > 0:
            data = stream.read(min(READ_CHUNK, left))
            if not data:
                raise OSError("the object store's answer broke off")
            left -= len(data)
            yield data


def head_object(ctx: Context, params: dict) -> dict:
    return get_object(ctx, params, head=True)


def delete_object(ctx: Context, params: dict) -> dict:
    bucket, key = params["Bucket"], params["Key"]
    shared = _owned(ctx, bucket)
    if _storable(bucket, key):  # else no object can have that key: deleted, as S3 says
        with store_errors(shared, "deleting an object", f"/{bucket}/{key}"):
            shared.client.delete_object(Bucket=shared.bucket, Key=_key(shared, bucket, key))
    return {}


def _storable(bucket: str, key: str) -> bool:
    try:
        s3_objects.parts_of(bucket, key)
    except S3Error:
        return False
    return True


def delete_objects(ctx: Context, params: dict) -> dict:
    bucket = params["Bucket"]
    objects = (params.get("Delete") or {}).get("Objects") or []
    if not objects or len(objects) > MAX_DELETE:
        raise S3Error("MalformedXML", f"The XML you provided was not well-formed or did not "
                      f"validate against our published schema: 1 to {MAX_DELETE} <Object>s")
    shared = _owned(ctx, bucket)
    keys = [item.get("Key") or "" for item in objects]
    with store_errors(shared, "deleting objects", bucket):
        answer = shared.client.delete_objects(Bucket=shared.bucket, Delete={
            "Objects": [{"Key": _key(shared, bucket, key)} for key in keys
                        if _storable(bucket, key)]})
    base = shared.key(bucket)
    errors = [{"Key": e["Key"][len(base):], "Code": e.get("Code", "InternalError"),
               "Message": e.get("Message", "")} for e in answer.get("Errors") or []]
    failed = {e["Key"] for e in errors}
    quiet = (params.get("Delete") or {}).get("Quiet")
    deleted = [{"Key": key} for key in keys if key not in failed]
    return {"Deleted": None if quiet else deleted, "Errors": errors or None}


# --- multipart -----------------------------------------------------------------------------
def create_multipart_upload(ctx: Context, params: dict) -> dict:
    bucket, key = params["Bucket"], params["Key"]
    shared = _owned(ctx, bucket)
    target = _key(shared, bucket, key)
    with store_errors(shared, "starting a multipart upload", f"/{bucket}/{key}"):
        answer = shared.client.create_multipart_upload(Bucket=shared.bucket, Key=target,
                                                       **_headers(params))
    return {"Bucket": bucket, "Key": key, "UploadId": answer["UploadId"]}


def _upload_where(shared: SharedBuckets, params: dict) -> dict:
    return {"Bucket": shared.bucket, "Key": _key(shared, params["Bucket"], params["Key"]),
            "UploadId": params["UploadId"]}


def upload_part(ctx: Context, params: dict) -> dict:
    s3_multipart.check_part_number(params["PartNumber"])
    shared = _owned(ctx, params["Bucket"])
    where = _upload_where(shared, params)
    answer = _send_body(shared, ctx, params["Body"], "storing a part", params["UploadId"][:64],
                        lambda **body: shared.client.upload_part(
                            PartNumber=params["PartNumber"], **where, **body))
    return {"ETag": answer["ETag"]}


def _stored_parts(shared: SharedBuckets, params: dict) -> list[s3_multipart.Part]:
    with store_errors(shared, "listing parts", params["UploadId"][:64]):
        pages = shared.client.get_paginator("list_parts").paginate(**_upload_where(shared, params))
        return [s3_multipart.Part(p["PartNumber"], p["ETag"], p["Size"], p["LastModified"], "")
                for page in pages for p in page.get("Parts") or []]


def complete_multipart_upload(ctx: Context, params: dict) -> dict:
    bucket, key = params["Bucket"], params["Key"]
    requested = (params.get("MultipartUpload") or {}).get("Parts") or []
    shared = _owned(ctx, bucket)
    stored = {p.number: p for p in _stored_parts(shared, params)}
    chosen = s3_multipart.choose_parts(stored, requested, params["UploadId"])
    with store_errors(shared, "completing a multipart upload", params["UploadId"][:64]):
        answer = shared.client.complete_multipart_upload(
            **_upload_where(shared, params), MultipartUpload={
                "Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in chosen]})
    return {"Location": f"/{bucket}/{key}", "Bucket": bucket, "Key": key,
            "ETag": answer["ETag"]}


def abort_multipart_upload(ctx: Context, params: dict) -> dict:
    shared = _owned(ctx, params["Bucket"])
    with store_errors(shared, "aborting a multipart upload", params["UploadId"][:64]):
        shared.client.abort_multipart_upload(**_upload_where(shared, params))
    return {}


def list_parts(ctx: Context, params: dict) -> dict:
    shared = _owned(ctx, params["Bucket"])
    return parts_page(ctx, params, _stored_parts(shared, params))


def list_multipart_uploads(ctx: Context, params: dict) -> dict:
    bucket = params["Bucket"]
    shared = _owned(ctx, bucket)
    base = shared.key(bucket)
    with store_errors(shared, "listing multipart uploads", bucket):
        pages = shared.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=shared.bucket, Prefix=_prefix(shared, bucket, params.get("Prefix") or ""))
        uploads = [s3_multipart.Upload(u["UploadId"], u["Key"][len(base):], u["Initiated"],
                                       None, None)
                   for page in pages for u in page.get("Uploads") or []]
    uploads.sort(key=lambda u: (u.key, u.initiated))
    return uploads_page(ctx, params, uploads)


# --- copies --------------------------------------------------------------------------------
def _copy_source(ctx: Context, params: dict) -> tuple[SharedBuckets, str, str, ObjectInfo]:
    """The copy's source, a shared bucket's object the caller may read (a copy between a
    shared bucket and one in a data dir is refused: neither side can reach the other)."""
    bucket, key = parse_copy_source(params["CopySource"])
    check_source_read(ctx, bucket, key)
    check_copy_homes(ctx.db, ctx.settings, bucket, params["Bucket"])
    shared = _owned(ctx, bucket)
    info = _head(shared, bucket, key)
    check_copy_conditions(params, info)
    return shared, bucket, key, info


def copy_object(ctx: Context, params: dict) -> dict:
    directive = (params.get("MetadataDirective") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive: COPY or REPLACE",
                      params["MetadataDirective"][:64])
    target_bucket, target_key = params["Bucket"], params["Key"]
    if parse_copy_source(params["CopySource"]) == (target_bucket, target_key) and \
            directive == "COPY":
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to "
                      "copy an object to itself without changing the object's metadata, "
                      "storage class, website redirect location or encryption attributes.")
    target = _key(_owned(ctx, target_bucket), target_bucket, target_key)
    shared, bucket, key, info = _copy_source(ctx, params)
    if info.size > MAX_COPY:
        raise S3Error("InvalidRequest", f"The specified copy source is larger than the "
                      f"maximum allowable size for a copy source: {MAX_COPY}")
    extra = {"MetadataDirective": directive}
    if directive == "REPLACE":
        extra.update(_headers(params))
    with store_errors(shared, "copying an object", f"/{target_bucket}/{target_key}"):
        answer = shared.client.copy_object(
            Bucket=shared.bucket, Key=target,
            CopySource={"Bucket": shared.bucket, "Key": _key(shared, bucket, key)},
            CopySourceIfMatch=info.etag, **extra)
    result = answer["CopyObjectResult"]
    return {"CopyObjectResult": {"ETag": result["ETag"], "LastModified": result["LastModified"]}}


def upload_part_copy(ctx: Context, params: dict) -> dict:
    s3_multipart.check_part_number(params["PartNumber"])
    _owned(ctx, params["Bucket"])
    shared, bucket, key, info = _copy_source(ctx, params)
    start, end = copy_range(params.get("CopySourceRange"), info.size)
    if end - start > MAX_COPY:
        raise S3Error("InvalidRequest", f"The specified copy source is larger than the "
                      f"maximum allowable size for a copy source: {MAX_COPY} (copy it in "
                      "ranges with x-amz-copy-source-range)")
    with store_errors(shared, "copying a part", params["UploadId"][:64]):
        answer = shared.client.upload_part_copy(
            **_upload_where(shared, params), PartNumber=params["PartNumber"],
            CopySource={"Bucket": shared.bucket, "Key": _key(shared, bucket, key)},
            CopySourceRange=f"bytes={start}-{end - 1}", CopySourceIfMatch=info.etag)
    result = answer["CopyPartResult"]
    return {"CopyPartResult": {"ETag": result["ETag"],
                               "LastModified": result["LastModified"]}}


def dispatch(local, shared):
    """The S3 operation: ``shared`` for a bucket in the object store, else ``local``."""
    def handler(ctx: Context, params: dict) -> dict:
        if in_store(ctx.db, ctx.settings, params["Bucket"]) is not None:
            return shared(ctx, params)
        return local(ctx, params)
    handler.__name__ = getattr(local, "__name__", "handler")
    return handler

