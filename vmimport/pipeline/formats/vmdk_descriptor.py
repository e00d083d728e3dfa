"""The text descriptor embedded in a VMDK sparse extent, parsed for what can hurt us.

A descriptor can point anywhere: extent lines name files and `parentFileNameHint` names a
parent disk (CVE-2022-47951 and friends). This parser never opens a path; it only checks that
the descriptor describes a self-contained streamOptimized disk: createType streamOptimized, no
parent, exactly one SPARSE extent (the file itself) of the header's capacity. Every line must be
a comment, a `key = value` pair or an extent line, as in OpenStack's format_inspector.
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


def check_stream_optimized(desc: Descriptor, capacity: int, file_offset: int) -> None:
    """Refuse anything but a self-contained streamOptimized disk of `capacity` sectors."""
    where = f"VMDK embedded descriptor (at file offset {file_offset})"
    create_type = desc.keys.get("createtype")
    if create_type is None or create_type.lower() != "streamoptimized":
        raise ImportFailure(
            f"{UNSUPPORTED} {where} has createType={create_type!r}; a VMDK with a sparse header "
            "and compressed grains must be createType=\"streamOptimized\""
        )
    parent = desc.keys.get("parentcid", "ffffffff")
    if parent.lower() != "ffffffff":
        raise ImportFailure(
            f"{UNSUPPORTED} {where} names a parent disk (parentCID={parent}): this is a delta "
            "(child) disk; import the consolidated disk instead"
        )
    if "parentfilenamehint" in desc.keys:
        hint = desc.keys["parentfilenamehint"]
        raise ImportFailure(
            f"{UNSUPPORTED} {where} names a parent disk (parentFileNameHint={hint[:200]!r}): "
            "this is a delta (child) disk; import the consolidated disk instead"
        )
    if len(desc.extents) != 1:
        raise ImportFailure(
            f"{UNSUPPORTED} {where} lists {len(desc.extents)} extents; a streamOptimized VMDK "
            "has exactly one, the file itself"
        )
    access, sectors, kind, name, offset = desc.extents[0]
    if kind.upper() != "SPARSE" or access == "NOACCESS":
        raise ImportFailure(
            f"{UNSUPPORTED} {where} has a {access} {kind} extent; a streamOptimized VMDK has one "
            "RW SPARSE extent"
        )
    if name is not None and ("/" in name or "\\" in name):
        raise ImportFailure(
            f"{UNSUPPORTED} {where} names an extent in another location ({name[:200]!r}); only "
            "the file itself may be its extent"
        )
    if sectors != capacity or offset:
        raise ImportFailure(
            f"{UNSUPPORTED} {where} declares an extent of {sectors} sectors at offset {offset}, "
            f"but the header's capacity is {capacity} sectors"
        )
