"""Reader for monolithicSparse VMDK (VMware Workstation/Fusion, VirtualBox, qemu `-O vmdk`).

Layout (VMware "Virtual Disk Format 5.0", little-endian): the 512-byte SparseExtentHeader at 0
(`KDMV`), the embedded text descriptor, a grain directory (GD: one u32 sector number per grain
table), grain tables (GT: one u32 sector number per grain, 0 = not allocated, 1 = zeroed when the
header has the zeroed-grain flag) and uncompressed grains (64 KiB usually) after `overHead`. A
redundant GD/GT copy may exist; only the primary is read.

The header and descriptor are checked by the rules listed in `vmdk_checks`: a self-contained
disk (no parent: a delta disk is refused without opening its parent; exactly one SPARSE extent,
the file itself), a GD bounded by the capacity and lying in the metadata area. While walking,
every GT lies in the metadata area too (before `overHead`, where VMware, VirtualBox and qemu put
them), every grain lies after it and inside the file, no GT serves two GD entries and no two
grains share bytes (so tables cannot loop and a small file cannot claim more data than it
holds). Grain tables and grains that follow each other in the file are
fetched in large reads; unallocated grains cost nothing.
"""

from __future__ import annotations

from typing import Iterator

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, UNSUPPORTED, GuestDisk, Limits
from .ranges import join_runs, read_pieces, table, without_holes
from .structs import run_checks
from .vmdk_checks import (SPARSE_DESCRIPTOR_CHECKS, SPARSE_HEADER_CHECKS, SPARSE_LAYOUT_CHECKS,
                          EmbeddedDescriptor, Extent)
from .vmdk_descriptor import parse_descriptor
from .vmdk_structs import FLAG_ZERO_GRAIN, SparseExtentHeader


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
        header = SparseExtentHeader.unpack(head)
        extent = Extent(header, "VMDK header at offset 0", size)
        run_checks(SPARSE_HEADER_CHECKS, extent, limits)
        self.virtual_size = header.capacity * SECTOR
        desc_at = header.descriptor_offset * SECTOR
        raw = source.read_at(desc_at, header.descriptor_size * SECTOR)
        self._consumed += len(raw)
        descriptor = EmbeddedDescriptor(parse_descriptor(raw, desc_at), "monolithicSparse",
                                        header.capacity, desc_at)
        run_checks(SPARSE_DESCRIPTOR_CHECKS, descriptor)
        run_checks(SPARSE_LAYOUT_CHECKS, extent, limits)
        self._grain = header.grain_size * SECTOR
        self._gtes, self._overhead = header.gtes_per_gt, header.overhead * SECTOR
        self._zero_grain = bool(header.flags & FLAG_ZERO_GRAIN)
        self._gd_at = header.gd_offset * SECTOR
        gd = source.read_at(self._gd_at, extent.grain_tables * 4)
        self._consumed += len(gd)
        self._gd = table(gd, "I", big_endian=False)

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
