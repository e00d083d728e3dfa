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
before it is trusted: both footer checksums and their equality, the header checksum, a BAT
bounded by the virtual size, every block inside the file and no two blocks sharing bytes (so
a small file cannot claim more data than it holds). A sector whose bitmap bit is 0 reads as
zeros, as the specification says (qemu ignores the bitmap when reading).

Virtual size: the footer's current size, as Hyper-V, Azure and AWS use it. qemu uses the CHS
geometry instead for images whose creator is "vpc " or "qemu"; for images qemu writes the two
agree (it rounds the size to the geometry when creating).
"""

from __future__ import annotations

import struct
from array import array
from typing import Iterator

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, UNSUPPORTED, GuestDisk, Limits, too_large
from .ranges import (FileRange, bit_runs, can_defer, data_regions, read_pieces, table,
                     without_holes)

FOOTERS = "Footers not identical"  # AWS's wording for a differencing VHD

# Footer: cookie, features, version, data offset, timestamp, creator app, creator version,
# creator OS, original size, current size, geometry, disk type, checksum (at 64), unique id,
# saved state.
_FOOTER = struct.Struct(">8sIIQI4sI4sQQIII16sB")
# Dynamic header: cookie, data offset, table offset, version, max table entries, block size,
# checksum (at 36), parent unique id, parent timestamp, reserved, parent unicode name.
_HEADER = struct.Struct(">8sQQIIII16sI4s512s")
_LOCATOR = struct.Struct(">4sIIIQ")  # platform code, data space, data length, reserved, offset

FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
NOT_ALLOCATED = 0xFFFFFFFF
MIN_BLOCK, MAX_BLOCK = 64 << 10, 16 << 20  # Hyper-V, Virtual PC, Xen and qemu write 2 MiB
FIXED_READ = 8 << 20


def _checksum(data: bytes | memoryview, field: int) -> int:
    """One's complement of the byte sum, the checksum field itself counted as zero."""
    return ~(sum(data) - sum(data[field : field + 4])) & 0xFFFFFFFF


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
        tail = source.read_at(self._tail_at, SECTOR)
        head = source.read_at(0, SECTOR)
        self._consumed = 2 * SECTOR
        if tail[:8] != b"conectix":
            if head[:8] == b"conectix":
                raise ImportFailure(
                    f"{CORRUPTED} VHD footer copy at offset 0 has no matching footer at the end "
                    f"of the file (offset {self._tail_at} holds {bytes(tail[:8])!r}): the file "
                    "is truncated or damaged")
            raise ImportFailure(f"{CORRUPTED} VHD footer at offset {self._tail_at} lacks the "
                                f"'conectix' cookie")
        footer = self._check_footer(tail, self._tail_at)
        disk_type, current = footer[11], footer[9]
        if disk_type == FIXED:
            self._dynamic = False
        elif disk_type in (DYNAMIC, DIFFERENCING):
            self._dynamic = True
            if head != tail:
                what = ("lacks the 'conectix' cookie of" if head[:8] != b"conectix"
                        else "differs from")
                raise ImportFailure(
                    f"{FOOTERS}: VHD footer copy at offset 0 {what} the footer at offset "
                    f"{self._tail_at}, which says this is a {('dynamic', 'differencing')[disk_type - 3]}"
                    " disk, whose two footer copies must be identical (the file is damaged or "
                    "was cut short)")
        else:
            raise ImportFailure(
                f"{UNSUPPORTED} VHD footer at offset {self._tail_at} has disk type {disk_type}; "
                "expected 2 (fixed), 3 (dynamic) or 4 (differencing)")
        if current == 0 or current % SECTOR:
            raise ImportFailure(
                f"{CORRUPTED} VHD footer at offset {self._tail_at} declares a current size of "
                f"{current} bytes (offset 48), which is not a positive whole number of sectors")
        self.virtual_size = current
        if disk_type == DIFFERENCING:
            raise ImportFailure(self._differencing(footer))
        if current > limits.max_virtual_size:
            raise ImportFailure(too_large(f"the VHD footer at offset {self._tail_at} (current "
                                          "size at offset 48)", current, limits))
        if self._dynamic:
            self._open_dynamic(footer)
        elif self._tail_at != current:
            raise ImportFailure(
                f"{CORRUPTED} fixed VHD footer at offset {self._tail_at} declares a disk of "
                f"{current} bytes, but the data before the footer is {self._tail_at} bytes")

    # -- structures ------------------------------------------------------------------------

    @staticmethod
    def _check_footer(raw: bytes, at: int) -> tuple:
        fields = _FOOTER.unpack_from(raw)
        stored, computed = fields[12], _checksum(raw, 64)
        if stored != computed:
            raise ImportFailure(
                f"{CORRUPTED} VHD footer at offset {at} has checksum 0x{stored:08x} (offset "
                f"{at + 64}) but its bytes give 0x{computed:08x}")
        if fields[2] >> 16 != 1:
            raise ImportFailure(f"{UNSUPPORTED} VHD footer at offset {at} has file format "
                                f"version 0x{fields[2]:08x}; only version 1.x exists")
        return fields

    def _read_header(self, footer: tuple) -> tuple[tuple, bytes, int]:
        at = footer[3]
        if not (SECTOR <= at and at + 1024 <= self._tail_at):
            raise ImportFailure(
                f"{CORRUPTED} VHD footer at offset {self._tail_at} places the dynamic header at "
                f"offset {at} (data offset, footer offset 16), outside the file's "
                f"{self._source.size} bytes")
        raw = self._source.read_at(at, 1024)
        self._consumed += len(raw)
        if raw[:8] != b"cxsparse":
            raise ImportFailure(f"{CORRUPTED} VHD dynamic header at offset {at} lacks the "
                                f"'cxsparse' cookie (found {bytes(raw[:8])!r})")
        fields = _HEADER.unpack_from(raw)
        stored, computed = fields[6], _checksum(raw, 36)
        if stored != computed:
            raise ImportFailure(
                f"{CORRUPTED} VHD dynamic header at offset {at} has checksum 0x{stored:08x} "
                f"(offset {at + 36}) but its bytes give 0x{computed:08x}")
        return fields, raw, at

    def _differencing(self, footer: tuple) -> str:
        """The refusal for a differencing disk, naming its parent (read, never opened)."""
        why = (f"{FOOTERS}: VHD footer at offset {self._tail_at} says this is a differencing "
               "disk (disk type 4)")
        try:
            header, raw, at = self._read_header(footer)
        except ImportFailure as exc:
            return f"{why}; its dynamic header is unreadable too ({exc.message})"
        name = header[10].decode("utf-16-be", errors="replace").split("\0", 1)[0]
        codes = []
        for n in range(8):
            code = _LOCATOR.unpack_from(raw, 576 + 24 * n)[0]
            if code != b"\0\0\0\0":
                codes.append(code.decode("latin-1"))
        locators = f" and {len(codes)} parent locator(s) ({', '.join(codes)})" if codes else ""
        return (f"{why}: it holds only the changes to a parent disk named {name[:200]!r} "
                f"(dynamic header at offset {at}){locators}, which this server never opens; "
                "merge the chain into one disk (Hyper-V Edit Disk > Merge, or "
                "`qemu-img convert -O vpc child.vhd merged.vhd`) and import that")

    def _open_dynamic(self, footer: tuple) -> None:
        header, _, header_at = self._read_header(footer)
        table_at, entries, block, version = header[2], header[4], header[5], header[3]
        if version >> 16 != 1:
            raise ImportFailure(f"{UNSUPPORTED} VHD dynamic header at offset {header_at} has "
                                f"version 0x{version:08x}; only version 1.x exists")
        if not (MIN_BLOCK <= block <= MAX_BLOCK and block & (block - 1) == 0):
            raise ImportFailure(
                f"{UNSUPPORTED} VHD dynamic header at offset {header_at} has a block size of "
                f"{block} bytes (offset {header_at + 32}); expected a power of two from "
                f"{MIN_BLOCK} to {MAX_BLOCK} (2 MiB is usual)")
        needed = -(-self.virtual_size // block)
        if entries < needed:
            raise ImportFailure(
                f"{CORRUPTED} VHD dynamic header at offset {header_at} has {entries} BAT "
                f"entries (offset {header_at + 28}) of {block} bytes each, too few for the "
                f"footer's current size of {self.virtual_size} bytes ({needed} needed)")
        bat_bytes = needed * 4
        if not (SECTOR <= table_at and table_at + bat_bytes <= self._tail_at):
            raise ImportFailure(
                f"{CORRUPTED} VHD dynamic header at offset {header_at} places the BAT of "
                f"{needed} entries at offset {table_at} (offset {header_at + 16}); it does not "
                f"fit inside the file's {self._source.size} bytes")
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
