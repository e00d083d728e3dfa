"""OVA: a tar archive whose first member is the `.ovf` descriptor, then the disks it names,
an optional `.mf` manifest of digests and an optional `.cert`.

Members are read in place, never extracted: the tar headers are walked with `read_at` (each
checksum verified; ustar, GNU long names and pax headers understood), and each disk is handed to
its reader as a `MemberSource`, a window onto the archive's bytes. Anything an extractor could be
tricked by is refused before a disk is opened: names with `..` or absolute paths, links,
devices, directories, sparse members, duplicate names, members the descriptor does not reference
(other than the manifest and certificate) and referenced files that are missing.

Manifest digests are checked without a second read where the reader streams: the member source
hashes the bytes as they pass through `stream()`, fills any gap it skipped (the header area a
reader fetched with `read_at`) and the tail after the reader's end marker, and the digest is
compared when `extents()` ends. A reader that only uses `read_at` (random-access formats) gets its
member hashed in a separate sequential pass at that point.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, GuestDisk, Limits
from .ovf import MAX_OVF_BYTES, OVA_UNSUPPORTED, OvfDisk, parse_manifest, parse_ovf
from .probe import detect

BLOCK = 512
MAX_HEADERS = 64  # tar headers (pax and long-name headers included): 21 disks need ~50
MAX_META = 64 << 10  # one pax or GNU long-name record
MAX_MANIFEST = 1 << 20
HASH_CHUNK = 4 << 20
_KINDS = {
    b"1": "a hard link", b"2": "a symbolic link", b"K": "a link (GNU long link name)",
    b"3": "a character device", b"4": "a block device", b"5": "a directory", b"6": "a FIFO",
    b"S": "a GNU sparse file", b"V": "a volume label", b"M": "a multi-volume continuation",
}

OpenDisk = Callable[..., GuestDisk]  # formats.open_guest_disk, passed in to avoid an import cycle


@dataclass(frozen=True)
class Member:
    name: str
    header: int  # offset of its (first) tar header
    offset: int  # offset of its data
    size: int


def _refuse(what: str) -> ImportFailure:
    return ImportFailure(f"{OVA_UNSUPPORTED} {what}")


def _corrupt(what: str) -> ImportFailure:
    return ImportFailure(f"{CORRUPTED} {what}")


# -- the tar walk -----------------------------------------------------------------------------

def _octal(field: bytes, at: int, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        if field[0] == 0xFF:
            raise _corrupt(f"OVA tar header at offset {at} has a negative {what}")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _corrupt(f"OVA tar header at offset {at} has {what} {bytes(text[:16])!r}, "
                       "which is not an octal number") from None


def _checksum(block: bytes, at: int) -> None:
    stored = _octal(block[148:156], at, "checksum")
    blank = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blank)
    signed = sum(b - 256 if b > 127 else b for b in blank)
    if stored not in (unsigned, signed):
        raise _corrupt(f"OVA tar header at offset {at} has checksum {stored:o} (octal) but its "
                       f"bytes sum to {unsigned:o}: the archive is damaged or not a tar")


def _text(raw: bytes, at: int, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(f"the tar {what} at offset {at} is not valid UTF-8 "
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
            raise _corrupt(f"OVA pax header at offset {at} has a malformed record at byte {pos}")
        record = data[space + 1 : pos + int(length) - 1]
        key, eq, value = record.partition(b"=")
        if not eq:
            raise _corrupt(f"OVA pax header at offset {at} has a record without '=' at byte {pos}")
        out[_text(key, at, "pax key")] = _text(value, at, "pax value")
        pos += int(length)
    return out


def _check_name(name: str, at: int) -> str:
    shown = repr(name[:200])
    while name.startswith("./"):
        name = name[2:]
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(f"the OVA member {shown} (tar header at offset {at}) has an absolute "
                      "path; members must be plain file names")
    if ".." in parts:
        raise _refuse(f"the OVA member {shown} (tar header at offset {at}) has a path with "
                      "'..' (path traversal); members must be plain file names")
    if not name or "\0" in name:
        raise _refuse(f"the OVA member {shown} (tar header at offset {at}) has an empty or "
                      "invalid name")
    return name


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
            raise _corrupt(f"OVA archive ends at byte {source.size} inside the tar header that "
                           f"starts at offset {pos} (was the upload cut short?)")
        if block == bytes(BLOCK):
            if pending:
                raise _corrupt(f"OVA archive ends at offset {pos} right after a pax or "
                               "long-name header, without the member it describes")
            if not members:
                raise _refuse("the OVA archive holds no files")
            return members
        headers += 1
        if headers > MAX_HEADERS:
            raise _refuse(f"the OVA archive has more than {MAX_HEADERS} tar headers (at "
                          f"offset {pos}); an OVA holds a descriptor and at most 21 disks")
        _checksum(block, pos)
        if block[257:262] != b"ustar":
            raise _refuse(f"the tar header at offset {pos} is not a ustar header (magic "
                          f"{block[257:263]!r}); an OVA is a ustar archive")
        kind = block[156:157]
        size = _octal(block[124:136], pos, "size")
        if not pending:
            first = pos
        if kind in (b"x", b"g", b"L"):
            if size > MAX_META:
                raise _refuse(f"the tar {'pax' if kind != b'L' else 'long-name'} header at "
                              f"offset {pos} is {size} bytes; at most {MAX_META} are accepted")
            data = source.read_at(pos + BLOCK, size)
            if len(data) < size:
                raise _corrupt(f"OVA archive ends at byte {source.size} inside the tar "
                               f"extension header that starts at offset {pos}")
            if kind == b"x":
                records = _pax(data, pos)
                if any(key.startswith("GNU.sparse") for key in records):
                    raise _refuse(f"the tar member at offset {pos} is a sparse file (pax "
                                  "GNU.sparse); not supported in an OVA")
                pending.update({k: v for k, v in records.items() if k in ("path", "size")})
            elif kind == b"L":
                pending["path"] = _text(data.split(b"\0", 1)[0], pos, "long name")
            else:
                _pax(data, pos)  # global defaults: checked for form, otherwise unused
            pos += BLOCK + -(-size // BLOCK) * BLOCK
            continue
        raw_name = block[:100].split(b"\0", 1)[0]
        if block[257:263] == b"ustar\0" and block[345] != 0:  # POSIX prefix field
            raw_name = block[345:500].split(b"\0", 1)[0] + b"/" + raw_name
        name = pending.get("path") or _text(raw_name, pos, "member name")
        if "size" in pending:
            if not pending["size"].isdigit():
                raise _corrupt(f"OVA pax header before offset {pos} has a non-numeric size")
            size = int(pending["size"])
        pending = {}
        if kind in _KINDS:
            target = block[157:257].split(b"\0", 1)[0]
            shown = f" pointing to {target[:200].decode('utf-8', 'replace')!r}" if target else ""
            raise _refuse(f"the OVA member {name[:200]!r} (tar header at offset {first}) is "
                          f"{_KINDS[kind]}{shown}; an OVA may hold only regular files")
        if kind not in (b"0", b"\0", b"7"):
            raise _refuse(f"the OVA member {name[:200]!r} (tar header at offset {first}) has "
                          f"the unknown tar entry type {kind!r}")
        name = _check_name(name, first)
        if name in names:
            raise _refuse(f"the OVA holds two members named {name[:200]!r} (the second at "
                          f"offset {first}); which one is meant would be ambiguous")
        names.add(name)
        data_at = pos + BLOCK
        if data_at + size > source.size:
            raise _corrupt(f"OVA member {name[:200]!r} (tar header at offset {first}) declares "
                           f"{size} bytes from offset {data_at}, past the end of the archive at "
                           f"byte {source.size} (was the upload cut short?)")
        members.append(Member(name, first, data_at, size))
        pos = data_at + -(-size // BLOCK) * BLOCK


# -- a member as a Source ---------------------------------------------------------------------

class MemberSource:
    """A window onto `parent`: offsets are member-relative and reads stop at the member's end.

    With `digests` ({"SHA256": expected hex, ...}) it hashes every byte exactly once, in order,
    as `stream()` hands chunks on; `verify()` hashes whatever was not streamed and compares.
    """

    def __init__(self, parent, member: Member, digests: dict[str, str] | None = None):
        self._parent, self._start, self.member = parent, member.offset, member
        self.size = member.size
        self.description = f"{parent.description} (OVA member {member.name!r})"
        self._hashes = {alg: hashlib.new(alg.lower()) for alg in digests or {}}
        self._expected = dict(digests or {})
        self._hashed = 0  # member bytes [0, _hashed) are in the hashes

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        length = min(length, self.size - offset)
        if length <= 0:
            return b""
        return self._parent.read_at(self._start + offset, length)

    def stream(self, offset: int = 0, chunk_size: int = 8 << 20) -> Iterator[bytes]:
        remaining = self.size - offset
        if remaining <= 0:
            return
        chunks = self._parent.stream(self._start + offset, min(chunk_size, remaining))
        at = offset
        try:
            for chunk in chunks:
                if len(chunk) > remaining:
                    chunk = chunk[:remaining]
                if self._hashes:
                    self._hash(at, chunk)
                at += len(chunk)
                remaining -= len(chunk)
                yield chunk
                if remaining <= 0:
                    return
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()

    def _hash(self, at: int, chunk) -> None:
        if at > self._hashed:
            self._hash_range(self._hashed, at)
        skip = self._hashed - at
        if skip < len(chunk):
            piece = memoryview(chunk)[max(0, skip):]
            for h in self._hashes.values():
                h.update(piece)
            self._hashed = at + len(chunk)

    def _hash_range(self, start: int, end: int) -> None:
        while start < end:
            data = self.read_at(start, min(HASH_CHUNK, end - start))
            if not data:
                raise _corrupt(f"OVA member {self.member.name!r} could not be read at byte "
                               f"{start} while checking its manifest digest")
            for h in self._hashes.values():
                h.update(data)
            start += len(data)
        self._hashed = max(self._hashed, end)

    def verify(self, manifest: str) -> None:
        if not self._hashes:
            return
        self._hash_range(self._hashed, self.size)
        for alg, h in self._hashes.items():
            if h.hexdigest() != self._expected[alg].lower():
                raise _corrupt(
                    f"the {alg} digest of OVA member {self.member.name!r} is {h.hexdigest()}, "
                    f"but the manifest {manifest!r} says {self._expected[alg].lower()}: the "
                    "file was changed or damaged after the OVA was made")


def _annotate(exc: ImportFailure, member: Member) -> ImportFailure:
    where = (f" (in OVA member {member.name!r}, whose data starts at offset {member.offset} "
             "of the archive)")
    return ImportFailure(exc.message + where, exc.kind)


class OvaMemberDisk(GuestDisk):
    """A disk read from an OVA member; its manifest digest is checked when `extents()` ends."""

    def __init__(self, inner: GuestDisk, source: MemberSource, manifest: str | None):
        super().__init__()
        self.inner, self.source, self.manifest = inner, source, manifest
        self.format, self.virtual_size = inner.format, inner.virtual_size
        self.name = source.member.name

    @property
    def bytes_consumed(self) -> int:
        return self.inner.bytes_consumed

    def extents(self) -> Iterator[tuple[int, bytes | memoryview]]:
        try:
            yield from self.inner.extents()
            if self.manifest:
                self.source.verify(self.manifest)
        except ImportFailure as exc:
            raise _annotate(exc, self.source.member) from None


# -- the OVA ----------------------------------------------------------------------------------

def open_ova(source, limits: Limits, open_disk: OpenDisk) -> list[GuestDisk]:
    """One GuestDisk per disk the descriptor references, boot volume first."""
    members = walk_tar(source)
    ovf_member = members[0]
    if not ovf_member.name.lower().endswith(".ovf"):
        raise _refuse(f"the first member of the OVA is {ovf_member.name[:200]!r}; an OVA must "
                      "start with its .ovf descriptor")
    if ovf_member.size > MAX_OVF_BYTES:
        raise _refuse(f"the OVF descriptor {ovf_member.name!r} is {ovf_member.size} bytes; at "
                      f"most {MAX_OVF_BYTES} are accepted")
    ovf_data = source.read_at(ovf_member.offset, ovf_member.size)
    envelope = parse_ovf(ovf_data, ovf_member.name, limits.max_virtual_size)

    by_name = {m.name: m for m in members}
    manifest_member = cert = None
    for member in members[1:]:
        lower = member.name.lower()
        if member.name in envelope.files:
            continue
        if lower.endswith(".mf") and manifest_member is None:
            manifest_member = member
        elif lower.endswith(".cert") and cert is None:
            cert = member
        else:
            raise _refuse(f"the OVA holds the extra file {member.name[:200]!r} (tar header at "
                          f"offset {member.header}) that its descriptor {ovf_member.name!r} does "
                          "not reference")
    for href, size in envelope.files.items():
        if href == ovf_member.name:
            raise _refuse(f"the OVF descriptor {ovf_member.name!r} references itself as a file")
        if href not in by_name:
            raise _refuse(f"the OVF descriptor {ovf_member.name!r} references the file "
                          f"{href[:200]!r}, which is not in the OVA")
        if size is not None and size != by_name[href].size:
            raise _refuse(f"the OVF descriptor {ovf_member.name!r} says {href!r} is {size} "
                          f"bytes (ovf:size) but the OVA member is {by_name[href].size} bytes")

    digests: dict[str, dict[str, str]] = {}
    if manifest_member is not None:
        if manifest_member.size > MAX_MANIFEST:
            raise _refuse(f"the OVA manifest {manifest_member.name!r} is "
                          f"{manifest_member.size} bytes; at most {MAX_MANIFEST} are accepted")
        digests = parse_manifest(source.read_at(manifest_member.offset, manifest_member.size),
                            manifest_member, set(by_name))
    mf_name = manifest_member.name if manifest_member else None
    disk_files = {disk.href for disk in envelope.disks}
    for name, expected in digests.items():
        if name not in disk_files:  # the descriptor, NVRAM, an ISO: small, checked now
            check = MemberSource(source, by_name[name], expected)
            check.verify(mf_name)

    disks: list[GuestDisk] = []
    for disk in envelope.disks:
        member = by_name[disk.href]
        sub = MemberSource(source, member, digests.get(disk.href))
        disks.append(_open_member_disk(sub, disk, limits, open_disk, mf_name if digests.get(
            disk.href) else None))
    return disks


def _open_member_disk(sub: MemberSource, disk: OvfDisk, limits: Limits, open_disk: OpenDisk,
                      manifest: str | None) -> GuestDisk:
    member = sub.member
    try:
        if sub.size and detect(sub).format == "ova":
            raise _refuse(f"the OVA member {member.name!r} is itself an OVA (a tar archive); "
                          "nested archives are not accepted")
        inner = open_disk(sub, disk.declared_format, limits)
    except ImportFailure as exc:
        raise _annotate(exc, member) from None
    if disk.capacity is not None:
        capacity = -(-disk.capacity // SECTOR) * SECTOR
        if inner.virtual_size != capacity:
            raise _refuse(
                f"the OVF descriptor says disk {disk.disk_id!r} ({member.name!r}) has a capacity "
                f"of {disk.capacity} bytes, but the {inner.format} image in it is "
                f"{inner.virtual_size} bytes")
    return OvaMemberDisk(inner, sub, manifest)


def open_single_disk_ova(source, limits: Limits, open_disk: OpenDisk) -> GuestDisk:
    """For callers that take one disk per image file: an OVA must then hold exactly one."""
    disks = open_ova(source, limits, open_disk)
    if len(disks) != 1:
        raise _refuse(f"the OVA {source.description} holds {len(disks)} disks; this import "
                      "takes one disk per image file (import the OVA with ImportImage to get "
                      "all of its volumes)")
    return disks[0]
