"""An object on the S3-compatible endpoint (``VMIMPORT_S3_ENDPOINT_URL``), read by ranged GETs
pinned to the ETag seen at open (see ``source`` for how a disk container finds its object)."""

from __future__ import annotations

import time
from contextlib import closing
from typing import Iterator
from urllib.parse import urlsplit

from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError,
                                 EndpointConnectionError)

from vmimport.config import Settings
from vmimport.pipeline.errors import ImportFailure

from .s3_client import s3_client
from .source_base import DEFAULT_CHUNK, FORBIDDEN, INVALID_LOCATION, check_range, describe_object

RANGE_ATTEMPTS = 4  # per ranged GET whose body broke off; connection setup is retried by botocore


class S3Source:
    """An object on the configured S3-compatible endpoint, read by ranged GETs.

    One boto3 client (own session: creating clients from the default session is not
    thread-safe) per source; fine for one reader thread.
    """

    def __init__(self, settings: Settings, bucket: str, key: str, shared=None):
        """``shared``: the bucket is one of vmimport's own S3 API kept in the block store's
        object store (``store_buckets.SharedBuckets``), read there with its client."""
        self.bucket, self.key = bucket, key
        self.description = describe_object(bucket, key)
        if shared is None:
            self.endpoint = _without_userinfo(settings.s3_endpoint_url)
            self._setting = "VMIMPORT_S3_ENDPOINT_URL"
            self._client, self._close_client = s3_client(settings), True
            self._where = {"Bucket": bucket, "Key": key}
        else:
            self.endpoint, self._setting = shared.endpoint, "VMIMPORT_BLOCKS_S3_ENDPOINT_URL"
            self._client, self._close_client = shared.client, False  # the process's own
            self._where = {"Bucket": shared.bucket, "Key": shared.key(bucket, key)}
        try:
            head = self._client.head_object(**self._where)
        except ClientError as e:
            self.close()
            raise self._failure(self._with_error_code(e)) from None
        except BotoCoreError as e:
            self.close()
            raise self._unreachable(e) from None
        self.size: int = head["ContentLength"]
        self.etag: str | None = head.get("ETag")

    def read_at(self, offset: int, length: int) -> bytes:
        check_range(offset, length)
        if length == 0 or offset >= self.size:
            return b""
        return self._get_range(offset, min(offset + length, self.size) - 1)

    def stream(self, offset: int = 0, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        # One GET per chunk: a dropped connection costs one chunk and resumes at its offset.
        check_range(offset, chunk_size, positive=True)
        pos = offset
        while pos < self.size:
            end = min(pos + chunk_size, self.size) - 1
            yield self._get_range(pos, end)
            pos = end + 1

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close and self._close_client:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _get_range(self, first: int, last: int) -> bytes:
        want = last - first + 1
        extra = {"IfMatch": self.etag} if self.etag else {}
        problem: object = None
        for attempt in range(RANGE_ATTEMPTS):
            if attempt:
                time.sleep(min(0.25 * 2 ** attempt, 2.0))
            try:
                resp = self._client.get_object(**self._where, Range=f"bytes={first}-{last}",
                                               **extra)
                with closing(resp["Body"]) as body:
                    data = body.read()
            except ClientError as e:  # an answer, not a broken transfer: retrying won't help
                raise self._failure(e) from None
            except (BotoCoreError, OSError) as e:  # connection dropped, timeout, short body
                problem = e
                continue
            if len(data) == want:
                return data
            problem = f"got {len(data)} of {want} bytes"
        raise ImportFailure(f"reading bytes {first}-{last} of {self.description} from the S3 "
                            f"endpoint {self.endpoint} failed {RANGE_ATTEMPTS} times: {problem}",
                            kind="ServerError")

    def _with_error_code(self, err: ClientError) -> ClientError:
        """HEAD answers carry no body, so no S3 error code ("404", "403"); a 1-byte GET says
        whether it is NoSuchKey or NoSuchBucket, SignatureDoesNotMatch or AccessDenied."""
        if not err.response.get("Error", {}).get("Code", "").isdigit():
            return err
        try:
            self._client.get_object(**self._where, Range="bytes=0-0")
        except ClientError as detailed:
            if not detailed.response.get("Error", {}).get("Code", "").isdigit():
                return detailed
        except BotoCoreError:
            pass
        return err

    def _failure(self, err: ClientError) -> ImportFailure:
        error = err.response.get("Error", {})
        code = error.get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        desc = self.description
        if code == "NoSuchBucket":
            return ImportFailure(f"{INVALID_LOCATION} {desc}: no such bucket")
        if code in ("NoSuchKey", "NotFound") or status == 404:
            return ImportFailure(f"{INVALID_LOCATION} {desc}: no such key")
        if status == 403:
            return ImportFailure(f"{FORBIDDEN} {desc}: {code or 'Forbidden'}")
        if code in ("PreconditionFailed", "InvalidRange") or status in (412, 416):
            return ImportFailure(f"{desc} changed while it was being read (ETag {self.etag} and "
                                 f"{self.size} bytes at the start); upload it again and retry")
        detail = f"{code}: {error.get('Message', '')}".rstrip(": ")
        if status >= 500:
            return ImportFailure(f"the S3 endpoint {self.endpoint} failed reading {desc}: "
                                 f"{detail}", kind="ServerError")
        return ImportFailure(f"{INVALID_LOCATION} {desc}: {detail} (HTTP {status})")

    def _unreachable(self, err: BotoCoreError) -> ImportFailure:
        what = ("cannot reach" if isinstance(err, (EndpointConnectionError, ConnectTimeoutError))
                else "error talking to")
        return ImportFailure(f"{what} the S3 endpoint {self.endpoint} "
                             f"({self._setting}) to read {self.description}: {err}",
                             kind="ServerError")


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
