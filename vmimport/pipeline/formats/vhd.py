"""Reader for VHD (Virtual PC / Hyper-V / Azure / Xen), fixed and dynamic.

Layout (Microsoft "Virtual Hard Disk Image Format Specification", big-endian):
  fixed:    the guest disk, then a 512-byte footer (`conectix`) at the end of the file.
  dynamic:  a copy of the footer at 0, a 1024-byte dynamic header (`cxsparse`) at the footer's
            data offset, the block allocation table (BAT: one u32 sector number per block,
            0xFFFFFFFF = not allocated), blocks (a sector bitmap padded to 512 bytes, then the
            block's data), and the footer again at the end.
Differencing disks (disk type 4) record changes to a parent named in the header; they are
refused without reading, let alone opening, the parent.

Why our own walk: the BAT says which blocks exist, so unallocated space costs nothing, and
adjacent blocks (with their bitmaps) are fetched in one large read. Every structure is checked
before it is trusted (the rules are listed in `vhd_checks`): both footer checksums and their
equality, the header checksum, a BAT bounded by the virtual size, every block inside the file and no two blocks sharing bytes (so
a small file cannot claim more data than it holds). A sector whose bitmap bit is 0 reads as
zeros, as the specification says (qemu ignores the bitmap when reading).

Virtual size: the footer's current size, as Hyper-V, Azure and AWS use it. qemu uses the CHS
geometry instead for images whose creator is "vpc " or "qemu"; for images qemu writes the two
agree (it rounds the size to the geometry when creating).
"""

from __future__ import annotations

from array import array
from typing import Iterator

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, GuestDisk, Limits
from .ranges import (FileRange, bit_runs, can_defer, data_regions, read_pieces, table,
                     without_holes)
from .structs import run_checks
from .vhd_checks import DYNAMIC_CHECKS, FOOTER_CHECKS, VhdImage
from .vhd_structs import FIXED, NOT_ALLOCATED

FIXED_READ = 8 << 20


class Vhd(GuestDisk):
    format = "VHD"

    def __init__(self, source, limits: Limits):
        super().__init__()
        self._source = source
        size = source.size
        if size < SECTOR:
            raise ImportFailure(f"{CORRUPTED} VHD image is {size} bytes long; it must end with a "
                                f"{SECTOR}-byte footer")
        self._tail_at = size - SECTOR
        vhd = VhdImage(source, source.read_at(0, SECTOR), source.read_at(self._tail_at, SECTOR))
        self._consumed = 2 * SECTOR
        run_checks(FOOTER_CHECKS, vhd, limits)
        self.virtual_size = vhd.footer.current_size
        self._dynamic = vhd.footer.disk_type != FIXED
        if self._dynamic:
            run_checks(DYNAMIC_CHECKS, vhd, limits)
            self._consumed += len(vhd.header_raw)
            self._open_dynamic(vhd)

    # -- the block allocation table --------------------------------------------------------

    def _open_dynamic(self, vhd: VhdImage) -> None:
        header_at, table_at, block = vhd.header_at, vhd.header.table_offset, vhd.header.block_size
        bat_bytes = vhd.blocks * 4
        self._block = block
        self._bitmap = -(-(block // SECTOR) // 8 // SECTOR) * SECTOR or SECTOR
        span = self._bitmap + block
        # Blocks are listed in guest order; `sectors` holds each allocated block's file sector.
        self._indexes, self._sectors = array("I"), array("I")
        chunk = 1 << 20
        for base in range(0, bat_bytes, chunk):
            raw = self._source.read_at(table_at + base, min(chunk, bat_bytes - base))
            self._consumed += len(raw)
            if raw.count(0xFF) == len(raw):  # nothing allocated in this stretch: skip fast
                continue
            entries_here = table(raw, "I", big_endian=True)
            first = base // 4
            for n, sector in enumerate(entries_here):
                if sector != NOT_ALLOCATED:
                    self._indexes.append(first + n)
                    self._sectors.append(sector)
            if len(self._sectors) > self._tail_at // span:  # bounds memory before the checks
                index = self._indexes[-1]
                raise ImportFailure(
                    f"{CORRUPTED} VHD BAT at offset {table_at} lists {len(self._sectors)} "
                    f"allocated blocks by entry {index} (at offset {table_at + 4 * index}), more "
                    f"than the {self._tail_at} bytes of the file can hold ({span} bytes each): "
                    "blocks must not share bytes")
        reserved = [(0, SECTOR, "the footer copy at offset 0"),
                    (header_at, header_at + 1024, f"the dynamic header at offset {header_at}"),
                    (table_at, table_at + bat_bytes, f"the BAT at offset {table_at}")]
        limit = self._tail_at
        for index, sector in zip(self._indexes, self._sectors):
            start = sector * SECTOR
            if start + span > limit:
                raise ImportFailure(
                    f"{CORRUPTED} VHD BAT entry {index} (at offset {table_at + 4 * index}) "
                    f"places block {index} at offset {start}; its {span} bytes (bitmap and "
                    f"data) do not fit before the footer at offset {limit}")
            for lo, hi, what in reserved:
                if start < hi and lo < start + span:
                    raise ImportFailure(
                        f"{CORRUPTED} VHD BAT entry {index} (at offset {table_at + 4 * index}) "
                        f"places block {index} at offset {start}, overlapping {what}")
        ordered = sorted(self._sectors)
        for a, b in zip(ordered, ordered[1:]):
            if (b - a) * SECTOR < span:
                n = self._sectors.index(b)
                index = self._indexes[n]
                raise ImportFailure(
                    f"{CORRUPTED} VHD BAT entry {index} (at offset {table_at + 4 * index}) "
                    f"places block {index} at offset {b * SECTOR}, overlapping the block at "
                    f"offset {a * SECTOR}: blocks must not share bytes")
        self._table_at = table_at

    # -- data ------------------------------------------------------------------------------

    def extents(self) -> Iterator[tuple[int, memoryview]]:
        def account(n: int) -> None:
            self._consumed += n

        if not self._dynamic:
            pieces = ((at, min(FIXED_READ, hi - at), at)
                      for lo, hi in data_regions(self._source, 0, self.virtual_size)
                      for at in range(lo, hi, FIXED_READ))
            for at, view in read_pieces(self._source, pieces, self._short, account,
                                        defer=lambda tag: True):
                yield at, view
            return
        block, bitmap = self._block, self._bitmap
        span = bitmap + block
        size = self.virtual_size
        full = b"\xff" * bitmap
        for index, view, data in self._blocks_read(bitmap, span, account):
            guest = index * block
            length = min(block, size - guest)
            sectors = length // SECTOR
            used = -(-sectors // 8)
            data = data[:length]
            if view[:used] == full[:used]:  # the usual case: every sector present
                yield from without_holes(guest, data)
                continue
            for first, n in bit_runs(bytes(view[:used]), sectors):
                yield from without_holes(guest + first * SECTOR,
                                         data[first * SECTOR : (first + n) * SECTOR])

    def _blocks_read(self, bitmap: int, span: int, account):
        """(block index, its sector bitmap, its data) for every allocated block. From a local
        file only the bitmap is read here, the data handed on as a ``FileRange`` (read by the
        block writer, holes skipped); from anywhere else a bitmap and its block come in one
        read (one ranged GET, not two)."""
        if can_defer(self._source):
            for index, sector in zip(self._indexes, self._sectors):
                at = sector * SECTOR
                piece = (at, span, index)
                view = self._source.read_at(at, bitmap)
                if len(view) < bitmap:
                    raise self._short(piece, at + len(view))
                account(span)
                yield index, view, FileRange(
                    self._source, at + bitmap, span - bitmap,
                    lambda got_end, piece=piece: self._short(piece, got_end))
            return
        pieces = ((sector * SECTOR, span, index)
                  for index, sector in zip(self._indexes, self._sectors))
        for index, view in read_pieces(self._source, pieces, self._short, account):
            yield index, view, view[bitmap:]

    def _short(self, piece, got_end: int) -> ImportFailure:
        offset, length, tag = piece
        if not self._dynamic:
            return ImportFailure(f"{CORRUPTED} fixed VHD data at offset {offset} ends at byte "
                                 f"{got_end}: the file shrank while it was read")
        return ImportFailure(
            f"{CORRUPTED} VHD block {tag} (BAT entry at offset {self._table_at + 4 * tag}) at "
            f"offset {offset} ends at byte {got_end}: the file shrank while it was read")
