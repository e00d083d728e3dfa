"""S3's naming rules for the bucket and key a disk container names, checked when the import is
asked for: a name S3 would refuse fails ImportImage/ImportSnapshot at once with
``InvalidParameterValue``, not the task later with a bare OSError (a local bucket is a
directory: a 5,000-character name was ENAMETOOLONG)."""

from __future__ import annotations

import ipaddress
import re

MAX_KEY_BYTES = 1024  # S3: a key is at most 1,024 bytes of UTF-8
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 bucket name (general purpose buckets), or None."""
    if not 3 <= len(name) <= 63:
        return f"A bucket name is 3 to 63 characters long; this one has {len(name)}."
    if not _BUCKET.match(name):
        return ("A bucket name holds only lowercase letters, digits, dots and hyphens, and "
                "starts and ends with a letter or digit.")
    if ".." in name:
        return "A bucket name has no two adjacent dots."
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return "A bucket name does not use a prefix or suffix S3 reserves (xn--, -s3alias...)."
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return None
    return "A bucket name is not formatted as an IP address."


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid S3 object key, or None."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        return f"An object key is at most {MAX_KEY_BYTES} bytes of UTF-8; this one has {size}."
    return None
