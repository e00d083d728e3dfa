"""Reader for monolithicSparse VMDK (VMware Workstation/Fusion, VirtualBox, qemu `-O vmdk`).

Layout (VMware "Virtual Disk Format 5.0", little-endian): the 512-byte SparseExtentHeader at 0
(`KDMV`), the embedded text descriptor, a grain directory (GD: one u32 sector number per grain
table), grain tables (GT: one u32 sector number per grain, 0 = not allocated, 1 = zeroed when the
header has the zeroed-grain flag) and uncompressed grains (64 KiB usually) after `overHead`. A
redundant GD/GT copy may exist; only the primary is read.

The descriptor must describe a self-contained disk (reusing `vmdk_descriptor`): no parent
(parentCID ffffffff, no parentFileNameHint: a delta disk is refused without opening its
parent), exactly one SPARSE extent, the file itself. The GD is bounded by the capacity, the GD
and every GT lie in the metadata area (before `overHead`, where VMware, VirtualBox and qemu put
them), every grain lies after it and inside the file, no GT serves two GD entries and no two grains share bytes (so tables cannot loop and a small file cannot claim
more data than it holds). Grain tables and grains that follow each other in the file are
fetched in large reads; unallocated grains cost nothing.
"""

from __future__ import annotations

import struct
from typing import Iterator

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, UNSUPPORTED, GuestDisk, Limits, too_large
from .ranges import join_runs, read_pieces, table, without_holes
from .vmdk_descriptor import parse_descriptor

_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
FLAG_ZERO_GRAIN = 0x4
FLAG_COMPRESSED = 0x10000
FLAG_MARKERS = 0x20000
GD_AT_END = 0xFFFFFFFFFFFFFFFF
MAX_GRAIN_SECTORS = 2048
MAX_GTES = 4096
MAX_DESCRIPTOR_SECTORS = 2048


class SparseVmdk(GuestDisk):
    format = "VMDK"

    def __init__(self, source, limits: Limits):
        super().__init__()
        self._source = source
        self._size = size = source.size
        head = source.read_at(0, SECTOR)
        self._consumed = len(head)
        if head[:4] == b"COWD":
            raise ImportFailure(f"{UNSUPPORTED} the image is an ESX 2 'COWD' sparse VMDK (magic "
                                "at offset 0); convert it to a current VMDK first")
        if len(head) < SECTOR:
            raise ImportFailure(f"{CORRUPTED} VMDK header ends at byte {len(head)}: the file is "
                                f"only {size} bytes long and a sparse extent header is {SECTOR}")
        (_, version, flags, capacity, grain, desc_off, desc_size, gtes, _, gd_off, overhead,
         _, _, compress) = _HEADER.unpack_from(head)
        where = "VMDK header at offset 0"
        if not 1 <= version <= 3:
            raise ImportFailure(f"{UNSUPPORTED} {where} has version {version}; sparse extents "
                                "are versions 1 to 3")
        if flags & (FLAG_COMPRESSED | FLAG_MARKERS) or compress:
            raise ImportFailure(
                f"{UNSUPPORTED} {where} has flags 0x{flags:08x} and compression {compress}: "
                "compressed grains belong to a streamOptimized VMDK, but its descriptor says "
                "otherwise")
        if not (1 <= grain <= MAX_GRAIN_SECTORS and grain & (grain - 1) == 0):
            raise ImportFailure(f"{UNSUPPORTED} {where} has a grain size of {grain} sectors "
                                f"(offset 20); it must be a power of two of at most "
                                f"{MAX_GRAIN_SECTORS} sectors")
        if not 1 <= gtes <= MAX_GTES:
            raise ImportFailure(f"{UNSUPPORTED} {where} has {gtes} entries per grain table "
                                f"(offset 44); expected 1 to {MAX_GTES} (512 is usual)")
        self.virtual_size = capacity * SECTOR
        if self.virtual_size > limits.max_virtual_size:
            raise ImportFailure(too_large("the VMDK header (capacity at offset 12)",
                                          self.virtual_size, limits))
        if capacity == 0:
            raise ImportFailure(f"{UNSUPPORTED} {where} declares a capacity of 0 sectors")
        if overhead * SECTOR > size:
            raise ImportFailure(f"{CORRUPTED} {where} says grains start at byte "
                                f"{overhead * SECTOR} (overHead at offset 64) but the file ends "
                                f"at byte {size}")
        if desc_off == 0 and desc_size == 0:
            raise ImportFailure(self._no_descriptor(f"{where} (descriptor offset and size at "
                                                    "offsets 28 and 36 are 0)"))
        if not (1 <= desc_off and 1 <= desc_size <= MAX_DESCRIPTOR_SECTORS
                and desc_off + desc_size <= overhead):
            raise ImportFailure(
                f"{UNSUPPORTED} {where} places the embedded descriptor at sector {desc_off} "
                f"({desc_size} sectors), outside the {overhead}-sector metadata area (or larger "
                f"than {MAX_DESCRIPTOR_SECTORS} sectors)")
        raw = source.read_at(desc_off * SECTOR, desc_size * SECTOR)
        self._consumed += len(raw)
        desc = parse_descriptor(raw, desc_off * SECTOR)
        if not desc.keys and not desc.extents:
            raise ImportFailure(self._no_descriptor(
                f"VMDK descriptor area at offset {desc_off * SECTOR} (it is empty)"))
        self._check_descriptor(desc, capacity, desc_off * SECTOR)
        self._grain = grain * SECTOR
        self._gtes, self._overhead = gtes, overhead * SECTOR
        self._zero_grain = bool(flags & FLAG_ZERO_GRAIN)
        tables = -(-capacity // (grain * gtes))
        if gd_off == GD_AT_END or not 1 <= gd_off or gd_off * SECTOR + tables * 4 > overhead * SECTOR:
            raise ImportFailure(
                f"{CORRUPTED} {where} places the grain directory of {tables} entries at sector "
                f"{gd_off} (offset 56), outside the metadata area before the grains (sectors 1 "
                f"to {overhead})")
        self._gd_at = gd_off * SECTOR
        gd = source.read_at(self._gd_at, tables * 4)
        self._consumed += len(gd)
        self._gd = table(gd, "I", big_endian=False)

    @staticmethod
    def _no_descriptor(where: str) -> str:
        return (f"{UNSUPPORTED} {where}: this file has no embedded descriptor, so it is one "
                "extent of a disk whose text descriptor is a separate file (a split "
                "twoGbMaxExtentSparse disk, for example); convert the whole disk to a single "
                "file (monolithicSparse or streamOptimized) and import that")

    @staticmethod
    def _check_descriptor(desc, capacity: int, file_offset: int) -> None:
        """Refuse anything but a self-contained monolithicSparse disk of `capacity` sectors."""
        where = f"VMDK embedded descriptor (at file offset {file_offset})"
        create_type = desc.keys.get("createtype")
        if create_type is None or create_type.lower() != "monolithicsparse":
            raise ImportFailure(
                f"{UNSUPPORTED} {where} has createType={create_type!r}; a hosted sparse VMDK "
                "without compressed grains must be createType=\"monolithicSparse\" (split and "
                "flat variants name other files)")
        parent = desc.keys.get("parentcid", "ffffffff")
        if parent.lower() != "ffffffff":
            raise ImportFailure(
                f"{UNSUPPORTED} {where} names a parent disk (parentCID={parent}): this is a "
                "delta (child) disk; import the consolidated disk instead")
        if "parentfilenamehint" in desc.keys:
            hint = desc.keys["parentfilenamehint"]
            raise ImportFailure(
                f"{UNSUPPORTED} {where} names a parent disk (parentFileNameHint={hint[:200]!r}), "
                "which this server never opens: this is a delta (child) disk; import the "
                "consolidated disk instead")
        if len(desc.extents) != 1:
            raise ImportFailure(
                f"{UNSUPPORTED} {where} lists {len(desc.extents)} extents; a monolithicSparse "
                "VMDK has exactly one, the file itself")
        access, sectors, kind, name, offset = desc.extents[0]
        if kind.upper() != "SPARSE" or access == "NOACCESS":
            raise ImportFailure(f"{UNSUPPORTED} {where} has a {access} {kind} extent; a "
                                "monolithicSparse VMDK has one RW SPARSE extent")
        if name is not None and ("/" in name or "\\" in name):
            raise ImportFailure(f"{UNSUPPORTED} {where} names an extent in another location "
                                f"({name[:200]!r}); only the file itself may be its extent")
        if sectors != capacity or offset:
            raise ImportFailure(
                f"{UNSUPPORTED} {where} declares an extent of {sectors} sectors at offset "
                f"{offset}, but the header's capacity is {capacity} sectors")

    # -- walking the tables ----------------------------------------------------------------

    def _tables(self) -> Iterator[tuple[int, int, int]]:
        """(file offset, length, GD index) of every grain table, checked: all lie in the
        metadata area, before the grains, so grains can never overwrite a table."""
        seen: set[int] = set()
        length = self._gtes * 4
        for n, sector in enumerate(self._gd):
            if not sector:
                continue
            at = sector * SECTOR
            if at + length > self._overhead:
                raise ImportFailure(
                    f"{CORRUPTED} VMDK grain directory entry {n} (at offset {self._gd_at + 4 * n}) "
                    f"places a grain table at offset {at}, outside the metadata area before the "
                    f"grains (which start at offset {self._overhead})")
            if sector in seen:
                raise ImportFailure(
                    f"{CORRUPTED} VMDK grain directory entry {n} (at offset {self._gd_at + 4 * n}) "
                    f"names the grain table at offset {at} a second time: tables overlap or loop")
            seen.add(sector)
            yield at, length, n

    def _grains(self) -> Iterator[tuple[int, int, tuple[int, int]]]:
        """(file offset, length, (guest offset, GT entry offset)) of every grain, guest order."""
        grain, size, vsize = self._grain, self._size, self.virtual_size
        span = grain * self._gtes
        used = bytearray(-(-size // grain) // 8 + 2)
        phase = -1

        def claim(at: int, where: str) -> None:
            nonlocal phase
            if phase < 0:
                phase = at % grain
            first = (at - phase) // grain
            units = (first,) if (at - phase) % grain == 0 else (first, first + 1)
            for unit in units:
                if used[unit >> 3] & (1 << (unit & 7)):
                    raise ImportFailure(
                        f"{CORRUPTED} VMDK {where} places a grain at offset {at}, where another "
                        "grain or a grain table already lies: grains must not share bytes")
                used[unit >> 3] |= 1 << (unit & 7)

        def short(piece, got_end):
            return ImportFailure(f"{CORRUPTED} VMDK grain table at offset {piece[0]} ends at "
                                 f"byte {got_end}: the file shrank while it was read")

        def account(n: int) -> None:
            self._consumed += n

        for n, raw in read_pieces(self._source, self._tables(), short, account):
            table_at = self._gd[n] * SECTOR
            base = n * span
            for m, sector in enumerate(table(raw, "I", big_endian=False)):
                if not sector:
                    continue
                guest = base + m * grain
                if guest >= vsize:
                    break
                where = f"grain table entry {m} (at offset {table_at + 4 * m})"
                if sector == 1 and self._zero_grain:
                    continue
                at = sector * SECTOR
                length = min(grain, vsize - guest)
                if at < self._overhead or at + length > size:
                    raise ImportFailure(
                        f"{CORRUPTED} VMDK {where} places a grain at offset {at}, outside the "
                        f"grain area (from offset {self._overhead}, the end of the metadata, to "
                        f"the end of the file at byte {size})")
                claim(at, where)
                yield at, length, (guest, table_at + 4 * m)

    # -- data ------------------------------------------------------------------------------

    def extents(self) -> Iterator[tuple[int, memoryview]]:
        def account(n: int) -> None:
            self._consumed += n

        grains = join_runs(self._grains(), lambda tag: True, lambda tag, length: tag)
        for (guest, _), view in read_pieces(self._source, grains, self._short, account,
                                            defer=lambda tag: True):
            yield from without_holes(guest, view)

    def _short(self, piece, got_end: int) -> ImportFailure:
        offset, _, (guest, entry_at) = piece
        return ImportFailure(f"{CORRUPTED} VMDK grain for guest offset {guest} (grain table "
                             f"entry at offset {entry_at}) at file offset {offset} ends at byte "
                             f"{got_end}: the file shrank while it was read")
