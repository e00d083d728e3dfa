"""``Url=https://...`` sources (e.g. presigned URLs of an S3-compatible store), read with ranged
GETs. Off by default: a server that fetches any URL a user names can be made to probe the
networks it sits in, so only hosts listed in ``url_allowed_hosts`` are fetched, plain http only
with ``url_allow_http``, and redirects are never followed. The URL (whose query string may hold
a signature) never appears in messages: only scheme, host and path do."""

from __future__ import annotations

import fnmatch
import re
import time
from typing import Iterator
from urllib.parse import urlsplit

import urllib3

from vmimport.config import Settings

from .errors import ImportFailure
from .source_base import FORBIDDEN, INVALID_LOCATION, UNSUPPORTED_URL
ATTEMPTS = 4
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def check_url_allowed(settings: Settings, url: str) -> None:
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or ''}"  # urlsplit lower-cases the scheme
    if not settings.url_allowed_hosts:
        raise ImportFailure(f"{UNSUPPORTED_URL} {parts.scheme}:// URLs are disabled on this "
                            "server (set url_allowed_hosts to the hosts it may fetch from); use "
                            "s3://bucket/key or UserBucket")
    if parts.scheme == "http" and not settings.url_allow_http:
        raise ImportFailure(f"{UNSUPPORTED_URL} plain http:// URLs are disabled on this server "
                            "(url_allow_http); use https://")
    host = (parts.hostname or "").lower()
    if parts.username or parts.password or not host or not any(
            fnmatch.fnmatchcase(host, pattern.lower()) for pattern in settings.url_allowed_hosts):
        raise ImportFailure(f"{UNSUPPORTED_URL} {shown} is not a host this server may fetch "
                            "from (url_allowed_hosts)")


class HttpSource:
    def __init__(self, settings: Settings, url: str):
        check_url_allowed(settings, url)
        parts = urlsplit(url)
        self._url = url
        self.description = f"{parts.scheme}://{parts.hostname}{parts.path}"
        self._http = urllib3.PoolManager(
            retries=urllib3.Retry(total=3, redirect=0, raise_on_redirect=False,
                                  backoff_factor=0.2, status_forcelist=()),
            timeout=urllib3.Timeout(connect=10, read=60))
        # A presigned URL is signed for GET, so a one-byte ranged GET (not HEAD) asks the size.
        response = self._get(0, 0)
        self.size = self._total_size(response)
        self._etag = response.headers.get("ETag")

    def _get(self, first: int, last: int) -> urllib3.BaseHTTPResponse:
        try:
            response = self._http.request("GET", self._url, preload_content=True,
                                          headers={"Range": f"bytes={first}-{last}"})
        except urllib3.exceptions.HTTPError as exc:
            raise ImportFailure(f"cannot fetch {self.description}: {type(exc).__name__}",
                                kind="ServerError") from None
        if response.status in (401, 403):
            raise ImportFailure(f"{FORBIDDEN} {self.description}: HTTP {response.status}")
        if response.status == 404:
            raise ImportFailure(f"{INVALID_LOCATION} {self.description}: HTTP 404, no such object")
        if 300 <= response.status < 400:
            raise ImportFailure(f"{UNSUPPORTED_URL} {self.description} answered HTTP "
                                f"{response.status} (a redirect); redirects are not followed")
        if response.status == 416:  # an empty object has no byte 0
            return response
        if response.status != 206:
            raise ImportFailure(f"{UNSUPPORTED_URL} {self.description} answered HTTP "
                                f"{response.status} to a ranged GET; the server must support "
                                "Range requests (206 Partial Content)")
        return response

    def _total_size(self, response) -> int:
        if response.status == 416:
            match = re.match(r"^bytes \*/(\d+)$", response.headers.get("Content-Range", ""))
            if match:
                return int(match.group(1))
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match:
            raise ImportFailure(f"{UNSUPPORTED_URL} {self.description} gave no usable "
                                "Content-Range header to a ranged GET")
        return int(match.group(3))

    def read_at(self, offset: int, length: int) -> bytes:
        if length <= 0 or offset >= self.size:
            return b""
        last = min(offset + length, self.size) - 1
        want = last - offset + 1
        problem = None
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(min(0.25 * 2 ** attempt, 2.0))
            response = self._get(offset, last)
            if self._etag and response.headers.get("ETag") not in (None, self._etag):
                raise ImportFailure(f"{self.description} changed while it was being read "
                                    "(its ETag changed)")
            data = response.data
            if len(data) == want:
                return data
            problem = f"got {len(data)} of {want} bytes"
        raise ImportFailure(f"reading bytes {offset}-{last} of {self.description} failed "
                            f"{ATTEMPTS} times: {problem}", kind="ServerError")

    def stream(self, offset: int = 0, chunk_size: int = 8 << 20) -> Iterator[bytes]:
        pos = offset
        while pos < self.size:
            data = self.read_at(pos, chunk_size)
            if not data:
                return
            yield data
            pos += len(data)

    def close(self) -> None:
        self._http.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
