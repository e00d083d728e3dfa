"""OVA: a tar archive whose first member is the `.ovf` descriptor, then the disks it names,
an optional `.mf` manifest of digests and an optional `.cert`.

Members are read in place, never extracted: the tar headers are walked with `read_at` (`tar`:
each checksum verified; ustar, GNU long names and pax headers understood), and each disk is handed to
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
from typing import Callable, Iterator

from ..errors import ImportFailure
from .base import SECTOR, GuestDisk, Limits
from .ovf import MAX_OVF_BYTES, OvfDisk, parse_manifest, parse_ovf
from .probe import detect
from .tar import Member, corrupt, refuse, walk_tar

__all__ = ["Member", "MemberSource", "open_ova", "open_single_disk_ova", "walk_tar"]

MAX_MANIFEST = 1 << 20
HASH_CHUNK = 4 << 20

OpenDisk = Callable[..., GuestDisk]  # formats.open_guest_disk, passed in to avoid an import cycle


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
                raise corrupt(f"OVA member {self.member.name!r} could not be read at byte "
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
                raise corrupt(
                    f"the {alg} digest of OVA member {self.member.name!r} is {h.hexdigest()}, "
                    f"but the manifest {manifest!r} says {self._expected[alg].lower()}: the "
                    "file was changed or damaged after the OVA was made")


def _annotate(exc: ImportFailure, member: Member) -> ImportFailure:
    return ImportFailure(exc.message + _where(member), exc.kind)


def _where(member: Member) -> str:
    return (f" (in OVA member {member.name!r}, whose data starts at offset {member.offset} "
            "of the archive)")


class OvaMemberDisk(GuestDisk):
    """A disk read from an OVA member; its manifest digest is checked when `extents()` ends."""

    def __init__(self, inner: GuestDisk, source: MemberSource, manifest: str | None):
        super().__init__()
        self.inner, self.source, self.manifest = inner, source, manifest
        self.format, self.virtual_size = inner.format, inner.virtual_size
        self.name = source.member.name
        inner.fault_where = _where(source.member)  # for faults found in deferred work

    @property
    def bytes_consumed(self) -> int:
        return self.inner.bytes_consumed

    def extents(self) -> Iterator[tuple[int, bytes | memoryview]]:
        return self._checked(self.inner.extents())

    def deferred_extents(self) -> Iterator[tuple[int, object]]:
        return self._checked(self.inner.deferred_extents())

    def _checked(self, extents: Iterator) -> Iterator:
        try:
            yield from extents
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
        raise refuse(f"the first member of the OVA is {ovf_member.name[:200]!r}; an OVA must "
                      "start with its .ovf descriptor")
    if ovf_member.size > MAX_OVF_BYTES:
        raise refuse(f"the OVF descriptor {ovf_member.name!r} is {ovf_member.size} bytes; at "
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
            raise refuse(f"the OVA holds the extra file {member.name[:200]!r} (tar header at "
                          f"offset {member.header}) that its descriptor {ovf_member.name!r} does "
                          "not reference")
    for href, size in envelope.files.items():
        if href == ovf_member.name:
            raise refuse(f"the OVF descriptor {ovf_member.name!r} references itself as a file")
        if href not in by_name:
            raise refuse(f"the OVF descriptor {ovf_member.name!r} references the file "
                          f"{href[:200]!r}, which is not in the OVA")
        if size is not None and size != by_name[href].size:
            raise refuse(f"the OVF descriptor {ovf_member.name!r} says {href!r} is {size} "
                          f"bytes (ovf:size) but the OVA member is {by_name[href].size} bytes")

    digests: dict[str, dict[str, str]] = {}
    if manifest_member is not None:
        if manifest_member.size > MAX_MANIFEST:
            raise refuse(f"the OVA manifest {manifest_member.name!r} is "
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
            raise refuse(f"the OVA member {member.name!r} is itself an OVA (a tar archive); "
                          "nested archives are not accepted")
        inner = open_disk(sub, disk.declared_format, limits)
    except ImportFailure as exc:
        raise _annotate(exc, member) from None
    if disk.capacity is not None:
        capacity = -(-disk.capacity // SECTOR) * SECTOR
        if inner.virtual_size != capacity:
            raise refuse(
                f"the OVF descriptor says disk {disk.disk_id!r} ({member.name!r}) has a capacity "
                f"of {disk.capacity} bytes, but the {inner.format} image in it is "
                f"{inner.virtual_size} bytes")
    return OvaMemberDisk(inner, sub, manifest)


def open_single_disk_ova(source, limits: Limits, open_disk: OpenDisk) -> GuestDisk:
    """For callers that take one disk per image file: an OVA must then hold exactly one."""
    disks = open_ova(source, limits, open_disk)
    if len(disks) != 1:
        raise refuse(f"the OVA {source.description} holds {len(disks)} disks; this import "
                      "takes one disk per image file (import the OVA with ImportImage to get "
                      "all of its volumes)")
    return disks[0]
