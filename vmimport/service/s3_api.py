"""The S3 operations served on vmimport's endpoint: one function per operation, taking the
parsed parameters (botocore's ``s3`` model names) and returning the output members. Ownership
is ``buckets``, object storage ``s3_objects`` and ``s3_multipart``.
"""

from __future__ import annotations

import contextlib
import os
import re
from urllib.parse import quote
from datetime import datetime, timezone

from . import buckets, s3_multipart, s3_objects
from .context import Context
from .errors import S3Error

MAX_KEYS = 1000
MAX_DELETE = 1000


@contextlib.contextmanager
def owned_bucket(ctx: Context, name: str):
    fd = buckets.authorize(ctx.db, ctx.settings, ctx.account_id, name)
    try:
        yield fd
    finally:
        os.close(fd)


def owner_entry(ctx: Context) -> dict:
    return {"ID": ctx.account_id, "DisplayName": ctx.account_id}


# --- buckets -------------------------------------------------------------------------------
def list_buckets(ctx: Context, params: dict) -> dict:
    found = []
    for name, created in buckets.owned_by(ctx.db, ctx.settings, ctx.account_id):
        if created is None:  # made by hand: its directory's age
            created = datetime.fromtimestamp(
                os.stat(ctx.settings.buckets_dir / name, follow_symlinks=False).st_mtime,
                timezone.utc)
        found.append({"Name": name, "CreationDate": created})
    return {"Buckets": found, "Owner": owner_entry(ctx)}


def create_bucket(ctx: Context, params: dict) -> dict:
    config = params.get("CreateBucketConfiguration") or {}
    region = config.get("LocationConstraint")
    if region and region != ctx.region:
        raise S3Error("InvalidLocationConstraint", f"The specified location-constraint is not "
                      f"valid: this endpoint serves {ctx.region} only", params["Bucket"])
    buckets.create(ctx.db, ctx.settings, ctx.account_id, params["Bucket"])
    return {"Location": "/" + params["Bucket"]}


def head_bucket(ctx: Context, params: dict) -> dict:
    buckets.check_access(ctx.db, ctx.settings, ctx.account_id, params["Bucket"])
    return {"BucketRegion": ctx.region}


def delete_bucket(ctx: Context, params: dict) -> dict:
    buckets.delete(ctx.db, ctx.settings, ctx.account_id, params["Bucket"])
    return {}


def get_bucket_location(ctx: Context, params: dict) -> dict:
    buckets.check_access(ctx.db, ctx.settings, ctx.account_id, params["Bucket"])
    # us-east-1 is the empty constraint, as S3 answers it.
    return {"LocationConstraint": "" if ctx.region == "us-east-1" else ctx.region}


# --- listing -------------------------------------------------------------------------------
def _listing(ctx: Context, params: dict, after: str) -> dict:
    """Keys after ``after`` under Prefix, grouped by Delimiter, at most MaxKeys of them."""
    prefix, delimiter = params.get("Prefix") or "", params.get("Delimiter") or ""
    limit = min(MAX_KEYS, max(0, params.get("MaxKeys", MAX_KEYS)))
    with owned_bucket(ctx, params["Bucket"]) as fd:
        listed = s3_objects.keys_under(fd, prefix)
    contents, prefixes, truncated, last = [], [], False, None
    for key, st in listed:
        if key <= after:
            continue
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                common = key[:cut + len(delimiter)]
                if common <= after or (prefixes and prefixes[-1] == common):
                    continue
                if len(contents) + len(prefixes) >= limit:
                    truncated = True
                    break
                prefixes.append(common)
                last = common
                continue
        if len(contents) + len(prefixes) >= limit:
            truncated = True
            break
        contents.append((key, st))
        last = key
    objects = [{"Key": o.key, "LastModified": o.last_modified, "ETag": o.etag, "Size": o.size,
                "StorageClass": "STANDARD"}
               for o in s3_objects.describe(ctx.db, params["Bucket"], contents)]
    out = {"Name": params["Bucket"], "Prefix": prefix, "MaxKeys": limit,
           "IsTruncated": truncated, "Contents": objects or None,
           "CommonPrefixes": [{"Prefix": p} for p in prefixes] or None}
    if delimiter:
        out["Delimiter"] = delimiter
    return out, last


def url_encoded(out: dict, params: dict, names: tuple[str, ...]) -> dict:
    """EncodingType=url (what boto3 and the AWS CLI ask for): keys percent-encoded, so that
    characters XML cannot carry survive; the client decodes them."""
    if params.get("EncodingType") != "url":
        return out
    out["EncodingType"] = "url"
    for name in names:
        if out.get(name):
            out[name] = quote(out[name], safe="/~")
    for item in out.get("Contents") or []:
        item["Key"] = quote(item["Key"], safe="/~")
    for item in out.get("CommonPrefixes") or []:
        item["Prefix"] = quote(item["Prefix"], safe="/~")
    return out


def list_objects_v2(ctx: Context, params: dict) -> dict:
    token = params.get("ContinuationToken")
    after = token and _decode_token(token)
    after = max(after or "", params.get("StartAfter") or "")
    out, last = _listing(ctx, params, after)
    out["KeyCount"] = len(out["Contents"] or []) + len(out["CommonPrefixes"] or [])
    if token:
        out["ContinuationToken"] = token
    if params.get("StartAfter"):
        out["StartAfter"] = params["StartAfter"]
    if out["IsTruncated"]:
        out["NextContinuationToken"] = last.encode().hex()
    for item in out["Contents"] or []:
        if params.get("FetchOwner"):
            item["Owner"] = owner_entry(ctx)
    return url_encoded(out, params, ("Prefix", "Delimiter", "StartAfter"))


def _decode_token(token: str) -> str:
    try:
        return bytes.fromhex(token).decode()
    except (ValueError, UnicodeDecodeError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None


def list_objects(ctx: Context, params: dict) -> dict:
    marker = params.get("Marker") or ""
    out, last = _listing(ctx, params, marker)
    out["Marker"] = marker
    if out["IsTruncated"] and params.get("Delimiter"):
        out["NextMarker"] = last
    return url_encoded(out, params, ("Prefix", "Delimiter", "Marker", "NextMarker"))


# --- objects -------------------------------------------------------------------------------
def put_object(ctx: Context, params: dict) -> dict:
    body = params["Body"]
    with owned_bucket(ctx, params["Bucket"]) as fd:
        s3_objects.parts_of(params["Bucket"], params["Key"])
        area = s3_objects.upload_area(fd)
        try:
            temp, _ = s3_objects.write_temp(area, body)
            etag = f'"{body.md5_hex}"'
            s3_objects.publish(ctx.db, fd, area, temp, params["Bucket"], params["Key"], etag,
                               params.get("ContentType"), params.get("Metadata"))
        finally:
            os.close(area)
    return {"ETag": etag}


def check_conditions(params: dict, info: s3_objects.ObjectInfo) -> None:
    """If-Match / If-Unmodified-Since (412) before If-None-Match / If-Modified-Since (304),
    as S3 orders them."""
    etag = info.etag
    if_match = params.get("IfMatch")
    if if_match is not None and not etag_in(etag, if_match):
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified "
                      "did not hold", "If-Match")
    since = params.get("IfUnmodifiedSince")
    if if_match is None and since is not None and info.last_modified > since:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified "
                      "did not hold", "If-Unmodified-Since")
    none_match = params.get("IfNoneMatch")
    if none_match is not None and etag_in(etag, none_match):
        raise S3Error("NotModified", "Not Modified", status=304)
    modified_since = params.get("IfModifiedSince")
    if none_match is None and modified_since is not None and \
            info.last_modified <= modified_since:
        raise S3Error("NotModified", "Not Modified", status=304)


def etag_in(etag: str, header: str) -> bool:
    wanted = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return "*" in wanted or etag.strip('"') in wanted


_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single byte range; None for the whole object (also for a Range S3
    ignores: several ranges, or not bytes)."""
    if header is None:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # the last N bytes
        n = int(m.group(2))
        if n == 0:
            raise S3Error("InvalidRange", "The requested range is not satisfiable", header)
        return max(0, size - n), size
    start = int(m.group(1))
    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    if start >= size or (m.group(2) and int(m.group(2)) < start):
        raise S3Error("InvalidRange", "The requested range is not satisfiable", header)
    return start, end


def object_headers(info: s3_objects.ObjectInfo) -> dict:
    return {"ETag": info.etag, "LastModified": info.last_modified, "ContentLength": info.size,
            "ContentType": info.content_type or "binary/octet-stream",
            "AcceptRanges": "bytes", "Metadata": info.metadata or None}


def get_object(ctx: Context, params: dict, head: bool = False) -> dict:
    with owned_bucket(ctx, params["Bucket"]) as bucket_fd:
        fd, info = s3_objects.open_object(ctx.db, bucket_fd, params["Bucket"], params["Key"])
    try:
        check_conditions(params, info)
        span = byte_range(params.get("Range"), info.size)
    except BaseException:
        os.close(fd)
        raise
    out = object_headers(info)
    start, end = span or (0, info.size)
    if span is not None:
        out["ContentRange"] = f"bytes {start}-{end - 1}/{info.size}"
        out["ContentLength"] = end - start
    if head:
        os.close(fd)
    else:
        out["Body"] = s3_objects.read_range(fd, start, end)
    return out


def head_object(ctx: Context, params: dict) -> dict:
    return get_object(ctx, params, head=True)


def delete_object(ctx: Context, params: dict) -> dict:
    with owned_bucket(ctx, params["Bucket"]) as fd:
        s3_objects.delete_object(ctx.db, fd, params["Bucket"], params["Key"])
    return {}


def delete_objects(ctx: Context, params: dict) -> dict:
    objects = (params.get("Delete") or {}).get("Objects") or []
    if not objects or len(objects) > MAX_DELETE:
        raise S3Error("MalformedXML", f"The XML you provided was not well-formed or did not "
                      f"validate against our published schema: 1 to {MAX_DELETE} <Object>s")
    deleted, errors = [], []
    with owned_bucket(ctx, params["Bucket"]) as fd:
        for item in objects:
            key = item.get("Key") or ""
            try:
                s3_objects.delete_object(ctx.db, fd, params["Bucket"], key)
                deleted.append({"Key": key})
            except S3Error as exc:
                errors.append({"Key": key, "Code": exc.code, "Message": exc.message})
    quiet = (params.get("Delete") or {}).get("Quiet")
    return {"Deleted": None if quiet else deleted, "Errors": errors or None}


# --- multipart -----------------------------------------------------------------------------
def create_multipart_upload(ctx: Context, params: dict) -> dict:
    with owned_bucket(ctx, params["Bucket"]) as fd:
        upload_id = s3_multipart.create(fd, params["Bucket"], params["Key"],
                                        params.get("ContentType"), params.get("Metadata"))
    return {"Bucket": params["Bucket"], "Key": params["Key"], "UploadId": upload_id}


def upload_part(ctx: Context, params: dict) -> dict:
    body = params["Body"]
    with owned_bucket(ctx, params["Bucket"]) as fd:
        etag = s3_multipart.upload_part(fd, params["UploadId"], params["Key"],
                                        params["PartNumber"], body, body)
    return {"ETag": etag}


def complete_multipart_upload(ctx: Context, params: dict) -> dict:
    requested = (params.get("MultipartUpload") or {}).get("Parts") or []
    with owned_bucket(ctx, params["Bucket"]) as fd:
        etag = s3_multipart.complete(ctx.db, fd, params["Bucket"], params["Key"],
                                     params["UploadId"], requested)
    return {"Location": f"/{params['Bucket']}/{params['Key']}", "Bucket": params["Bucket"],
            "Key": params["Key"], "ETag": etag}


def abort_multipart_upload(ctx: Context, params: dict) -> dict:
    with owned_bucket(ctx, params["Bucket"]) as fd:
        s3_multipart.abort(fd, params["UploadId"], params["Key"])
    return {}


def list_parts(ctx: Context, params: dict) -> dict:
    with owned_bucket(ctx, params["Bucket"]) as fd:
        _, parts = s3_multipart.list_parts(fd, params["UploadId"], params["Key"])
    return parts_page(ctx, params, parts)


def parts_page(ctx: Context, params: dict, parts: list[s3_multipart.Part]) -> dict:
    """ListParts' answer: the page of ``parts`` (every part, by number) the request asks for."""
    after = params.get("PartNumberMarker") or 0
    limit = min(MAX_KEYS, params.get("MaxParts", MAX_KEYS))
    chosen = [p for p in parts if p.number > after]
    page = chosen[:limit]
    out = {"Bucket": params["Bucket"], "Key": params["Key"], "UploadId": params["UploadId"],
           "PartNumberMarker": after, "MaxParts": limit, "IsTruncated": len(chosen) > limit,
           "StorageClass": "STANDARD", "Owner": owner_entry(ctx), "Initiator": owner_entry(ctx),
           "Parts": [{"PartNumber": p.number, "LastModified": p.last_modified, "ETag": p.etag,
                      "Size": p.size} for p in page] or None}
    if page and len(chosen) > limit:
        out["NextPartNumberMarker"] = page[-1].number
    return out


def list_multipart_uploads(ctx: Context, params: dict) -> dict:
    with owned_bucket(ctx, params["Bucket"]) as fd:
        uploads = s3_multipart.list_uploads(fd, params.get("Prefix") or "")
    return uploads_page(ctx, params, uploads)


def uploads_page(ctx: Context, params: dict, uploads: list[s3_multipart.Upload]) -> dict:
    """ListMultipartUploads' answer: the page of ``uploads`` (those under the request's Prefix,
    by key) the request asks for."""
    limit = min(MAX_KEYS, params.get("MaxUploads", MAX_KEYS))
    marker = params.get("KeyMarker") or ""
    uploads = [u for u in uploads if u.key > marker]
    page = uploads[:limit]
    out = {"Bucket": params["Bucket"], "KeyMarker": marker, "MaxUploads": limit,
           "IsTruncated": len(uploads) > limit,
           "Uploads": [{"UploadId": u.upload_id, "Key": u.key, "Initiated": u.initiated,
                        "StorageClass": "STANDARD", "Owner": owner_entry(ctx),
                        "Initiator": owner_entry(ctx)} for u in page] or None}
    if len(uploads) > limit:
        out["NextKeyMarker"] = page[-1].key
    return out
