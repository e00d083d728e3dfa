"""The text descriptor embedded in a VMDK sparse extent, parsed for what can hurt us.

A descriptor can point anywhere: extent lines name files and `parentFileNameHint` names a
parent disk (CVE-2022-47951 and friends). This parser never opens a path; `vmdk_checks` then
requires a self-contained disk: the expected createType, no parent, exactly one SPARSE extent
(the file itself) of the header's capacity. Every line must be a comment, a `key = value` pair or
an extent line, as in OpenStack's format_inspector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ImportFailure
from .base import UNSUPPORTED

_EXTENT = re.compile(
    r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z0-9_]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$'
)
_KEY = re.compile(r"^([A-Za-z0-9_.]+)\s*=\s*(.*?)\s*$")


@dataclass
class Descriptor:
    keys: dict[str, str] = field(default_factory=dict)  # lower-cased key -> unquoted value
    extents: list[tuple[str, int, str, str | None, int]] = field(default_factory=list)


def parse_descriptor(raw: bytes, file_offset: int) -> Descriptor:
    """Parse descriptor bytes (up to the first NUL); errors name the line and file offset."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    desc = Descriptor()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := _EXTENT.match(line):
            access, sectors, kind, name, offset = m.groups()
            desc.extents.append((access, int(sectors), kind, name, int(offset or 0)))
        elif m := _KEY.match(line):
            desc.keys[m.group(1).lower()] = m.group(2).strip('"')
        else:
            raise ImportFailure(
                f"{UNSUPPORTED} VMDK embedded descriptor (at file offset {file_offset}), line "
                f"{number}: {line[:80]!r} is neither a setting nor an extent line"
            )
    return desc
