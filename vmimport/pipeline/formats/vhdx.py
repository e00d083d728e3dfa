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

Payload blocks that are fully present are read (adjacent ones in one large read); zero,
unmapped, undefined and not-present blocks read as zeros and cost nothing. Every block must lie
inside the file, outside the headers and regions, and apart from every other block.
"""

from __future__ import annotations

import struct
import uuid
from array import array
from typing import Iterator

from dissect.util.hash.crc32c import crc32c

from ..errors import ImportFailure
from .base import CORRUPTED, UNSUPPORTED, GuestDisk, Limits, too_large
from .ranges import MAX_READ, read_pieces, table, without_holes

KiB, MiB = 1 << 10, 1 << 20
_HEADER = struct.Struct("<4sIQ16s16s16sHHIQ")  # sig, crc, seq, file/data/log GUIDs, log ver, ver, log len, log off
_REGION_HEAD = struct.Struct("<4sII")  # sig, crc, entry count
_REGION = struct.Struct("<16sQII")  # GUID, file offset, length, required
_META_HEAD = struct.Struct("<8sHH")  # sig, reserved, entry count
_META = struct.Struct("<16sIII")  # item id, offset, length, flags

BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PAGE83_DATA = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
KNOWN_ITEMS = {FILE_PARAMETERS, VIRTUAL_DISK_SIZE, PAGE83_DATA, LOGICAL_SECTOR_SIZE,
               PHYSICAL_SECTOR_SIZE, PARENT_LOCATOR}

NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 6, 7
MAX_VIRTUAL = 64 << 40  # the format's own limit
MAX_ITEM = 64 * KiB
BAT_CHUNK = 1 * MiB


def _crc_ok(raw: bytes | memoryview, field: int = 4) -> tuple[int, int]:
    """(stored, computed) CRC-32C of `raw` with its checksum field counted as zero."""
    stored = struct.unpack_from("<I", raw, field)[0]
    blank = bytes(raw[:field]) + bytes(4) + bytes(raw[field + 4 :])
    return stored, crc32c(blank)


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
        if head[:8] != b"vhdxfile":
            raise ImportFailure(f"{CORRUPTED} VHDX file type identifier at offset 0 lacks the "
                                "'vhdxfile' signature")
        header, header_at = self._current_header(head)
        log_guid = uuid.UUID(bytes_le=header[5])
        if log_guid.int:
            raise ImportFailure(
                f"{UNSUPPORTED} VHDX log is not empty (header at offset {header_at} names log "
                f"{log_guid} at offset {header[9]}): the disk was not shut down cleanly and "
                "holds updates not yet applied. Open it once in Hyper-V (or run `qemu-img "
                "check -r all` on it) and upload it again")
        regions = self._regions(head)
        self._bat_at, bat_length = regions[BAT_REGION]
        meta_at, meta_length = regions[METADATA_REGION]
        items = self._metadata(meta_at, meta_length)
        self._parameters(items, meta_at, limits)
        self._read_bat(bat_length, regions)

    def _read(self, offset: int, length: int, what: str) -> bytes:
        data = self._source.read_at(offset, length)
        self._consumed += len(data)
        if len(data) < length:
            raise ImportFailure(f"{CORRUPTED} VHDX {what} at offset {offset} ({length} bytes) "
                                f"runs past the end of the file at byte {self._size}")
        return data

    # -- headers and regions ---------------------------------------------------------------

    def _current_header(self, head: bytes) -> tuple[tuple, int]:
        valid, faults = [], []
        for at in (64 * KiB, 128 * KiB):
            raw = head[at : at + 4 * KiB]
            fields = _HEADER.unpack_from(raw)
            stored, computed = _crc_ok(raw)
            if fields[0] != b"head":
                faults.append(f"header at offset {at} lacks the 'head' signature")
            elif stored != computed:
                faults.append(f"header at offset {at} has CRC-32C 0x{stored:08x} but its bytes "
                              f"give 0x{computed:08x}")
            elif fields[7] != 1:
                faults.append(f"header at offset {at} has version {fields[7]}; expected 1")
            else:
                valid.append((fields[2], at, fields))
        if not valid:
            raise ImportFailure(f"{CORRUPTED} VHDX has no valid header: {'; '.join(faults)}")
        sequence, at, fields = max(valid)
        return fields, at

    def _regions(self, head: bytes) -> dict[uuid.UUID, tuple[int, int]]:
        faults = []
        for at in (192 * KiB, 256 * KiB):
            raw = head[at : at + 64 * KiB]
            sig, _, count = _REGION_HEAD.unpack_from(raw)
            stored, computed = _crc_ok(raw)
            if sig != b"regi":
                faults.append(f"region table at offset {at} lacks the 'regi' signature")
            elif stored != computed:
                faults.append(f"region table at offset {at} has CRC-32C 0x{stored:08x} but its "
                              f"bytes give 0x{computed:08x}")
            elif count > 2047:
                faults.append(f"region table at offset {at} claims {count} entries (at most 2047)")
            else:
                return self._region_entries(raw, at, count)
        raise ImportFailure(f"{CORRUPTED} VHDX has no valid region table: {'; '.join(faults)}")

    def _region_entries(self, raw: bytes, table_at: int, count: int) -> dict:
        regions: dict[uuid.UUID, tuple[int, int]] = {}
        for n in range(count):
            guid_raw, offset, length, required = _REGION.unpack_from(raw, 16 + 32 * n)
            guid = uuid.UUID(bytes_le=guid_raw)
            where = f"VHDX region table at offset {table_at}, entry {n} (region {guid})"
            if guid not in (BAT_REGION, METADATA_REGION):
                if required & 1:
                    raise ImportFailure(f"{UNSUPPORTED} {where} is an unknown region marked "
                                        "required; this reader cannot honour it")
                continue
            if guid in regions:
                raise ImportFailure(f"{CORRUPTED} {where} lists the region a second time")
            if offset < MiB or offset % MiB or length == 0 or length % MiB:
                raise ImportFailure(
                    f"{CORRUPTED} {where} places it at offset {offset}, length {length}; regions "
                    "start at or after 1 MiB and both values are multiples of 1 MiB")
            if offset + length > self._size:
                raise ImportFailure(
                    f"{CORRUPTED} {where} places it at offset {offset}, length {length}, past the "
                    f"end of the file at byte {self._size}")
            regions[guid] = (offset, length)
        for guid, name in ((BAT_REGION, "BAT"), (METADATA_REGION, "metadata")):
            if guid not in regions:
                raise ImportFailure(f"{CORRUPTED} VHDX region table at offset {table_at} has no "
                                    f"{name} region")
        (a, alen), (b, blen) = regions[BAT_REGION], regions[METADATA_REGION]
        if a < b + blen and b < a + alen:
            raise ImportFailure(f"{CORRUPTED} VHDX region table at offset {table_at} places the "
                                f"BAT (offset {a}) and the metadata (offset {b}) over each other")
        return regions

    # -- metadata --------------------------------------------------------------------------

    def _metadata(self, meta_at: int, meta_length: int) -> dict[uuid.UUID, tuple[bytes, int]]:
        table = self._read(meta_at, 64 * KiB, "metadata table")
        sig, _, count = _META_HEAD.unpack_from(table)
        if sig != b"metadata":
            raise ImportFailure(f"{CORRUPTED} VHDX metadata table at offset {meta_at} lacks the "
                                "'metadata' signature")
        if count > 2047:
            raise ImportFailure(f"{CORRUPTED} VHDX metadata table at offset {meta_at} claims "
                                f"{count} entries (at most 2047)")
        items: dict[uuid.UUID, tuple[bytes, int]] = {}
        for n in range(count):
            guid_raw, offset, length, flags = _META.unpack_from(table, 32 + 32 * n)
            guid = uuid.UUID(bytes_le=guid_raw)
            where = f"VHDX metadata entry {n} (item {guid}) at offset {meta_at + 32 + 32 * n}"
            if guid not in KNOWN_ITEMS:
                if flags & 4:
                    raise ImportFailure(f"{UNSUPPORTED} {where} is an unknown item marked "
                                        "required; this reader cannot honour it")
                continue
            if guid in items:
                raise ImportFailure(f"{CORRUPTED} {where} lists the item a second time")
            if (length and offset < 64 * KiB) or offset + length > meta_length or length > MAX_ITEM:
                raise ImportFailure(
                    f"{CORRUPTED} {where} places it at offset {offset} (length {length}) of the "
                    f"{meta_length}-byte metadata region; items lie after the 64 KiB table, "
                    f"inside the region, and are at most {MAX_ITEM} bytes")
            items[guid] = (self._read(meta_at + offset, length, f"metadata item {guid}"),
                           meta_at + offset)
        return items

    def _parameters(self, items: dict, meta_at: int, limits: Limits) -> None:
        def item(guid, name: str, size: int) -> tuple[bytes, int]:
            if guid not in items:
                raise ImportFailure(f"{CORRUPTED} VHDX metadata table at offset {meta_at} has no "
                                    f"{name} item")
            data, at = items[guid]
            if len(data) < size:
                raise ImportFailure(f"{CORRUPTED} VHDX {name} item at offset {at} is "
                                    f"{len(data)} bytes; expected {size}")
            return data, at

        params, params_at = item(FILE_PARAMETERS, "file parameters", 8)
        block, flags = struct.unpack_from("<II", params)
        if flags & 2:
            raise ImportFailure(self._differencing(items, params_at))
        if not (MiB <= block <= 256 * MiB and block & (block - 1) == 0):
            raise ImportFailure(
                f"{UNSUPPORTED} VHDX file parameters item at offset {params_at} has a block size "
                f"of {block} bytes; the format allows powers of two from 1 MiB to 256 MiB")
        raw, sector_at = item(LOGICAL_SECTOR_SIZE, "logical sector size", 4)
        sector = struct.unpack_from("<I", raw)[0]
        if sector not in (512, 4096):
            raise ImportFailure(f"{UNSUPPORTED} VHDX logical sector size item at offset "
                                f"{sector_at} says {sector} bytes; expected 512 or 4096")
        raw, size_at = item(VIRTUAL_DISK_SIZE, "virtual disk size", 8)
        size = struct.unpack_from("<Q", raw)[0]
        where = f"the VHDX virtual disk size item at offset {size_at}"
        if size > limits.max_virtual_size:
            raise ImportFailure(too_large(where, size, limits))
        if size == 0 or size % sector or size > MAX_VIRTUAL:
            raise ImportFailure(
                f"{CORRUPTED} {where[4:]} says {size} bytes: not a positive multiple of the "
                f"{sector}-byte logical sector size of at most 64 TiB")
        item(PHYSICAL_SECTOR_SIZE, "physical sector size", 4)
        self.virtual_size, self._block = size, block
        self._chunk_ratio = (1 << 23) * sector // block

    def _differencing(self, items: dict, params_at: int) -> str:
        why = (f"{UNSUPPORTED} VHDX file parameters item at offset {params_at} has the "
               "has-parent flag: this is a differencing disk, which holds only the changes to a "
               "parent disk")
        names = []
        if PARENT_LOCATOR in items:
            data, _ = items[PARENT_LOCATOR]
            try:
                count = struct.unpack_from("<H", data, 18)[0]
                for n in range(min(count, 64)):
                    ko, vo, kl, vl = struct.unpack_from("<IIHH", data, 20 + 12 * n)
                    key = data[ko : ko + kl].decode("utf-16-le", errors="replace")
                    value = data[vo : vo + vl].decode("utf-16-le", errors="replace")
                    if key.endswith("path"):
                        names.append(f"{key}={value[:200]!r}")
            except struct.error:
                pass
        named = f" ({', '.join(names)})" if names else ""
        return (f"{why}{named}, which this server never opens; merge the chain into one disk "
                "(Hyper-V Edit Disk > Merge, or `qemu-img convert -O vhdx`) and import that")

    # -- BAT -------------------------------------------------------------------------------

    def _read_bat(self, bat_length: int, regions: dict) -> None:
        block, ratio = self._block, self._chunk_ratio
        blocks = -(-self.virtual_size // block)
        entries = blocks + (blocks - 1) // ratio
        bat_at = self._bat_at
        if entries * 8 > bat_length:
            raise ImportFailure(
                f"{CORRUPTED} VHDX BAT region at offset {bat_at} is {bat_length} bytes, too small "
                f"for the {entries} entries a {self.virtual_size}-byte disk in {block}-byte "
                "blocks needs")
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
