"""Reader for VHDX (Hyper-V), fixed and dynamic.

Layout ([MS-VHDX], little-endian, CRC-32C checksums):
  0        file type identifier (`vhdxfile`)
  64 KiB   header 1, 128 KiB header 2 (`head`; the valid one with the higher sequence number
           is current; it names the log)
  192 KiB  region table 1, 256 KiB region table 2 (`regi`; where the BAT and metadata live)
  metadata region: a table (`metadata`) of items: file parameters (block size, has-parent
           flag), virtual disk size, logical/physical sector size, disk id, parent locator
  BAT: one u64 per payload block (state in bits 0-2, file offset in MiB in bits 20-63), with a
       sector-bitmap entry after every `chunk ratio` payload entries.
A non-empty log (log GUID non-zero) holds metadata updates that were not yet applied: the disk
was not shut down cleanly. Replaying it is not implemented, so such a file is refused, as are
differencing disks (has-parent flag), whose parent is named in the message but never opened.
These rules and the others on headers, regions and metadata are listed in `vhdx_checks`.

Payload blocks that are fully present are read (adjacent ones in one large read); zero,
unmapped, undefined and not-present blocks read as zeros and cost nothing. Every block must lie
inside the file, outside the headers and regions, and apart from every other block.
"""

from __future__ import annotations

from array import array
from typing import Iterator

from ..errors import ImportFailure
from .base import CORRUPTED, GuestDisk, Limits
from .ranges import MAX_READ, read_pieces, table, without_holes
from .structs import run_checks
from .vhdx_checks import FILE_CHECKS, ITEM_CHECKS, METADATA_CHECKS, VhdxImage
from .vhdx_structs import (BAT_REGION, FULLY_PRESENT, NOT_PRESENT, PARTIALLY_PRESENT, UNDEFINED,
                           UNMAPPED, ZERO, KiB, MiB)

BAT_CHUNK = 1 * MiB


class Vhdx(GuestDisk):
    format = "VHDX"

    def __init__(self, source, limits: Limits):
        super().__init__()
        self._source = source
        self._size = size = source.size
        if size < 320 * KiB:
            raise ImportFailure(f"{CORRUPTED} VHDX image is {size} bytes long; its headers and "
                                "region tables alone take 320 KiB")
        head = self._read(0, 320 * KiB, "file type identifier, headers and region tables")
        vhdx = VhdxImage(head, size, self._read)
        run_checks(FILE_CHECKS, vhdx, limits)
        run_checks(METADATA_CHECKS, vhdx, limits)
        run_checks(ITEM_CHECKS, vhdx, limits)
        regions = vhdx.regions
        self._bat_at = regions[BAT_REGION][0]
        self.virtual_size = vhdx.virtual_size[0]
        self._block = vhdx.parameters[0].block_size
        self._chunk_ratio = vhdx.chunk_ratio
        self._read_bat(vhdx.bat_entries, regions)

    def _read(self, offset: int, length: int, what: str) -> bytes:
        data = self._source.read_at(offset, length)
        self._consumed += len(data)
        if len(data) < length:
            raise ImportFailure(f"{CORRUPTED} VHDX {what} at offset {offset} ({length} bytes) "
                                f"runs past the end of the file at byte {self._size}")
        return data

    # -- BAT -------------------------------------------------------------------------------

    def _read_bat(self, entries: int, regions: dict) -> None:
        block, ratio = self._block, self._chunk_ratio
        bat_at = self._bat_at
        reserved = [(0, MiB, "the headers and region tables")]
        reserved += [(o, o + n, f"the {'BAT' if g == BAT_REGION else 'metadata'} region at "
                                f"offset {o}") for g, (o, n) in regions.items()]
        self._indexes, self._offsets = array("Q"), array("Q")
        size = self._size
        for base in range(0, entries * 8, BAT_CHUNK):
            raw = self._read(bat_at + base, min(BAT_CHUNK, entries * 8 - base), "BAT")
            if raw.count(0) == len(raw):  # nothing present in this stretch: skip fast
                continue
            entries_here = table(raw, "Q", big_endian=False)
            first = base // 8
            for n, entry in enumerate(entries_here):
                if not entry:
                    continue
                index = first + n
                state = entry & 7
                where = f"VHDX BAT entry {index} (at offset {bat_at + 8 * index})"
                if (index + 1) % (ratio + 1) == 0:  # a sector bitmap entry
                    if state not in (NOT_PRESENT, FULLY_PRESENT):
                        raise ImportFailure(f"{CORRUPTED} {where} is a sector bitmap entry with "
                                            f"state {state}; expected 0 or 6")
                    continue
                if state in (NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED):
                    continue
                payload = index - index // (ratio + 1)
                if state == PARTIALLY_PRESENT:
                    raise ImportFailure(
                        f"{CORRUPTED} {where} marks payload block {payload} partially present, "
                        "which only a differencing disk may do")
                if state != FULLY_PRESENT:
                    raise ImportFailure(f"{CORRUPTED} {where} has unknown state {state}")
                offset = (entry >> 20) * MiB
                length = min(block, self.virtual_size - payload * block)
                if offset + length > size:
                    raise ImportFailure(
                        f"{CORRUPTED} {where} places payload block {payload} at offset {offset}; "
                        f"its {length} bytes run past the end of the file at byte {size}")
                for lo, hi, what in reserved:
                    if offset < hi and lo < offset + length:
                        raise ImportFailure(f"{CORRUPTED} {where} places payload block {payload} "
                                            f"at offset {offset}, overlapping {what}")
                self._indexes.append(payload)
                self._offsets.append(offset)
                if len(self._offsets) > size // MiB:  # bounds memory before the overlap check
                    raise ImportFailure(
                        f"{CORRUPTED} {where} is the {len(self._offsets)}th payload block present, "
                        f"more than the file's {size} bytes can hold apart: blocks must not share "
                        "bytes")
        ordered = sorted(range(len(self._offsets)), key=self._offsets.__getitem__)
        for a, b in zip(ordered, ordered[1:]):
            start, index = self._offsets[b], self._indexes[b]
            end = self._offsets[a] + min(block, self.virtual_size - self._indexes[a] * block)
            if start < end:
                raise ImportFailure(
                    f"{CORRUPTED} VHDX BAT entry for payload block {index} places it at offset "
                    f"{start}, overlapping payload block {self._indexes[a]} at offset "
                    f"{self._offsets[a]}: blocks must not share bytes")

    # -- data ------------------------------------------------------------------------------

    def extents(self) -> Iterator[tuple[int, memoryview]]:
        def account(n: int) -> None:
            self._consumed += n

        block, size = self._block, self.virtual_size

        def pieces():
            for index, offset in zip(self._indexes, self._offsets):
                guest = index * block
                length = min(block, size - guest)
                for part in range(0, length, MAX_READ):
                    yield offset + part, min(MAX_READ, length - part), (guest + part, index)

        for (guest, _), view in read_pieces(self._source, pieces(), self._short, account,
                                            defer=lambda tag: True):
            yield from without_holes(guest, view)

    def _short(self, piece, got_end: int) -> ImportFailure:
        offset, _, (_, index) = piece
        return ImportFailure(f"{CORRUPTED} VHDX payload block {index} at offset {offset} ends at "
                             f"byte {got_end}: the file shrank while it was read")
