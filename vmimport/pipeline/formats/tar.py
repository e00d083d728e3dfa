"""The tar walk of an OVA: every header checked, members located, nothing extracted.

An OVA is a ustar archive (pax and GNU long-name headers understood). Each 512-byte header is
a `TarHeader`; the rules on a header (`HEADER_CHECKS`) and on a member (`MEMBER_CHECKS`) are
listed at the end, so what an extractor could be tricked by (links, devices, paths with `..`,
duplicate names, members past the end) is refused before any member is read.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, replace

from ..errors import ImportFailure
from .base import CORRUPTED
from .ovf import OVA_UNSUPPORTED
from .structs import Structure, run_checks

BLOCK = 512
MAX_HEADERS = 64  # tar headers (pax and long-name headers included): 21 disks need ~50
MAX_META = 64 << 10  # one pax or GNU long-name record
_KINDS = {
    b"1": "a hard link", b"2": "a symbolic link", b"K": "a link (GNU long link name)",
    b"3": "a character device", b"4": "a block device", b"5": "a directory", b"6": "a FIFO",
    b"S": "a GNU sparse file", b"V": "a volume label", b"M": "a multi-volume continuation",
}
REGULAR = (b"0", b"\0", b"7")


@dataclass(frozen=True)
class TarHeader(Structure):
    """A ustar header block; numbers are octal text (or GNU base-256)."""

    FORMAT = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12s")

    name: bytes
    mode: bytes
    uid: bytes
    gid: bytes
    size: bytes  # offset 124
    mtime: bytes
    checksum: bytes  # offset 148
    typeflag: bytes  # offset 156
    linkname: bytes  # offset 157
    magic: bytes  # offset 257: b"ustar\0" (POSIX) or b"ustar " (GNU)
    version: bytes
    uname: bytes
    gname: bytes
    devmajor: bytes
    devminor: bytes
    prefix: bytes  # offset 345: POSIX directory prefix of the name
    pad: bytes


@dataclass(frozen=True)
class Member:
    name: str
    header: int  # offset of its (first) tar header
    offset: int  # offset of its data
    size: int


@dataclass(frozen=True)
class TarEntry:
    """A member as its headers describe it, before the member checks accept it."""

    name: str  # as written (pax path, long name or prefix/name)
    kind: bytes  # the typeflag
    link: bytes  # the link target, for messages
    size: int
    header_at: int  # its first header (pax or long-name headers come first)
    data_at: int


def refuse(what: str) -> ImportFailure:
    return ImportFailure(f"{OVA_UNSUPPORTED} {what}")


def corrupt(what: str) -> ImportFailure:
    return ImportFailure(f"{CORRUPTED} {what}")


def _octal(field: bytes, at: int, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        if field[0] == 0xFF:
            raise corrupt(f"OVA tar header at offset {at} has a negative {what}")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise corrupt(f"OVA tar header at offset {at} has {what} {bytes(text[:16])!r}, "
                       "which is not an octal number") from None


def _text(raw: bytes, at: int, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse(f"the tar {what} at offset {at} is not valid UTF-8 "
                      f"({raw[:60]!r})") from None


def _pax(data: bytes, at: int) -> dict[str, str]:
    """Records "<length> <key>=<value>\\n"; malformed ones are refused, not guessed at."""
    out, pos = {}, 0
    while pos < len(data):
        if data[pos:].strip(b"\0") == b"":
            break
        space = data.find(b" ", pos, pos + 20)
        length = data[pos:space]
        if space < 0 or not length.isdigit() or int(length) < space - pos + 3 or \
                pos + int(length) > len(data) or data[pos + int(length) - 1] != 0x0A:
            raise corrupt(f"OVA pax header at offset {at} has a malformed record at byte {pos}")
        record = data[space + 1 : pos + int(length) - 1]
        key, eq, value = record.partition(b"=")
        if not eq:
            raise corrupt(f"OVA pax header at offset {at} has a record without '=' at byte {pos}")
        out[_text(key, at, "pax key")] = _text(value, at, "pax value")
        pos += int(length)
    return out


def walk_tar(source) -> list[Member]:
    """Every regular member, in archive order, after checking each header."""
    members: list[Member] = []
    names: set[str] = set()
    pos, headers, pending, first = 0, 0, {}, 0
    while True:
        block = source.read_at(pos, BLOCK)
        if not block and pos == source.size and members and not pending:
            return members  # no end-of-archive blocks: tolerated at a member boundary
        if len(block) < BLOCK:
            raise corrupt(f"OVA archive ends at byte {source.size} inside the tar header that "
                          f"starts at offset {pos} (was the upload cut short?)")
        if block == bytes(BLOCK):
            if pending:
                raise corrupt(f"OVA archive ends at offset {pos} right after a pax or "
                              "long-name header, without the member it describes")
            if not members:
                raise refuse("the OVA archive holds no files")
            return members
        headers += 1
        if headers > MAX_HEADERS:
            raise refuse(f"the OVA archive has more than {MAX_HEADERS} tar headers (at "
                         f"offset {pos}); an OVA holds a descriptor and at most 21 disks")
        header = TarHeader.unpack(block)
        run_checks(HEADER_CHECKS, header, pos)
        kind = header.typeflag
        size = _octal(header.size, pos, "size")
        if not pending:
            first = pos
        if kind in (b"x", b"g", b"L"):
            if size > MAX_META:
                raise refuse(f"the tar {'pax' if kind != b'L' else 'long-name'} header at "
                             f"offset {pos} is {size} bytes; at most {MAX_META} are accepted")
            data = source.read_at(pos + BLOCK, size)
            if len(data) < size:
                raise corrupt(f"OVA archive ends at byte {source.size} inside the tar "
                              f"extension header that starts at offset {pos}")
            if kind == b"x":
                records = _pax(data, pos)
                if any(key.startswith("GNU.sparse") for key in records):
                    raise refuse(f"the tar member at offset {pos} is a sparse file (pax "
                                 "GNU.sparse); not supported in an OVA")
                pending.update({k: v for k, v in records.items() if k in ("path", "size")})
            elif kind == b"L":
                pending["path"] = _text(data.split(b"\0", 1)[0], pos, "long name")
            else:
                _pax(data, pos)  # global defaults: checked for form, otherwise unused
            pos += BLOCK + -(-size // BLOCK) * BLOCK
            continue
        raw_name = header.name.split(b"\0", 1)[0]
        if header.magic == b"ustar\0" and header.prefix[0] != 0:  # POSIX prefix field
            raw_name = header.prefix.split(b"\0", 1)[0] + b"/" + raw_name
        name = pending.get("path") or _text(raw_name, pos, "member name")
        if "size" in pending:
            if not pending["size"].isdigit():
                raise corrupt(f"OVA pax header before offset {pos} has a non-numeric size")
            size = int(pending["size"])
        pending = {}
        entry = TarEntry(name, kind, header.linkname.split(b"\0", 1)[0], size, first,
                         pos + BLOCK)
        run_checks(MEMBER_CHECKS, entry, names, source.size)
        name = plain_name(name)
        names.add(name)
        members.append(Member(name, first, entry.data_at, size))
        pos = entry.data_at + -(-size // BLOCK) * BLOCK


# -- a header ---------------------------------------------------------------------------------

def check_header_checksum(header: TarHeader, at: int) -> None:
    stored = _octal(header.checksum, at, "checksum")
    blank = replace(header, checksum=b" " * 8).pack()
    unsigned = sum(blank)
    signed = sum(b - 256 if b > 127 else b for b in blank)
    if stored not in (unsigned, signed):
        raise corrupt(f"OVA tar header at offset {at} has checksum {stored:o} (octal) but its "
                      f"bytes sum to {unsigned:o}: the archive is damaged or not a tar")


def check_ustar(header: TarHeader, at: int) -> None:
    if header.magic[:5] != b"ustar":
        raise refuse(f"the tar header at offset {at} is not a ustar header (magic "
                     f"{header.magic!r}); an OVA is a ustar archive")


# -- a member ---------------------------------------------------------------------------------

def check_regular_file(entry: TarEntry, names: set[str], archive_size: int) -> None:
    """No links, devices, directories or sparse files: what extractors are tricked by."""
    if entry.kind in _KINDS:
        target = entry.link
        shown = f" pointing to {target[:200].decode('utf-8', 'replace')!r}" if target else ""
        raise refuse(f"the OVA member {entry.name[:200]!r} (tar header at offset "
                     f"{entry.header_at}) is {_KINDS[entry.kind]}{shown}; an OVA may hold only "
                     "regular files")


def check_known_type(entry: TarEntry, names: set[str], archive_size: int) -> None:
    if entry.kind not in REGULAR:
        raise refuse(f"the OVA member {entry.name[:200]!r} (tar header at offset "
                     f"{entry.header_at}) has the unknown tar entry type {entry.kind!r}")


def plain_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def check_safe_name(entry: TarEntry, names: set[str], archive_size: int) -> None:
    """A plain file name: not absolute, no `..`, not empty."""
    shown, at, name = repr(entry.name[:200]), entry.header_at, plain_name(entry.name)
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise refuse(f"the OVA member {shown} (tar header at offset {at}) has an absolute "
                     "path; members must be plain file names")
    if ".." in parts:
        raise refuse(f"the OVA member {shown} (tar header at offset {at}) has a path with "
                     "'..' (path traversal); members must be plain file names")
    if not name or "\0" in name:
        raise refuse(f"the OVA member {shown} (tar header at offset {at}) has an empty or "
                     "invalid name")


def check_unique_name(entry: TarEntry, names: set[str], archive_size: int) -> None:
    name = plain_name(entry.name)
    if name in names:
        raise refuse(f"the OVA holds two members named {name[:200]!r} (the second at "
                     f"offset {entry.header_at}); which one is meant would be ambiguous")


def check_inside_archive(entry: TarEntry, names: set[str], archive_size: int) -> None:
    if entry.data_at + entry.size > archive_size:
        raise corrupt(f"OVA member {plain_name(entry.name)[:200]!r} (tar header at offset "
                      f"{entry.header_at}) declares {entry.size} bytes from offset "
                      f"{entry.data_at}, past the end of the archive at byte {archive_size} "
                      "(was the upload cut short?)")


# -- the policy, in the order the walk applies it ---------------------------------------------

HEADER_CHECKS = (check_header_checksum, check_ustar)
MEMBER_CHECKS = (check_regular_file, check_known_type, check_safe_name, check_unique_name,
                 check_inside_archive)
