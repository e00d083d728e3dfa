"""What every image source shares (local bucket, S3 endpoint, https URL): AWS's wording for
source failures, how an object is named in messages, range checks, and the ``OpenedSource``
shape. Apart from ``source`` so that the source modules need not import each other."""

from __future__ import annotations

from typing import Protocol

from vmimport.messages import shorten

from .formats.base import Source

INVALID_LOCATION = "Disk validation failed [Invalid S3 source location]"
FORBIDDEN = ("Disk validation failed [We do not have access to the given resource. "
             "Reason 403 Forbidden]")
UNSUPPORTED_URL = "Disk validation failed [Unsupported URL]"

DEFAULT_CHUNK = 8 << 20


class OpenedSource(Source, Protocol):
    """A format reader's ``Source`` that the pipeline opened and must close (a file
    descriptor, a connection pool)."""

    def close(self) -> None: ...


def quote(text: str) -> str:
    """'text' with control characters (NUL...) shown escaped, so messages stay one clean line,
    and shortened (a key of 300 KB was echoed whole)."""
    return "'" + shorten("".join(c if c.isprintable() else repr(c)[1:-1] for c in text)) + "'"


def describe_object(bucket: str, key: str) -> str:
    """``s3://bucket/key`` as messages show it."""
    return "s3://" + quote(f"{bucket}/{key}")[1:-1]


def check_range(offset: int, length: int, positive: bool = False) -> None:
    if offset < 0 or length < 0 or (positive and length == 0):
        raise ValueError(f"bad range: offset={offset} length={length}")
