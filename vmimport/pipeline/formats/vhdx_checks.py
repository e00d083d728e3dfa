"""The safety policy for VHDX: one function per rule, listed at the end in the order the reader
applies them. Each takes a `VhdxImage` and the `Limits` and raises `ImportFailure`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from ..errors import ImportFailure
from .base import CORRUPTED, UNSUPPORTED, Limits, too_large
from .vhdx_structs import (BAT_REGION, FILE_PARAMETERS, HAS_PARENT, HEADER_OFFSETS, KNOWN_ITEMS,
                           LOGICAL_SECTOR_SIZE, METADATA_REGION, PARENT_LOCATOR,
                           PHYSICAL_SECTOR_SIZE, REGION_TABLE_OFFSETS, SIGNATURE,
                           VIRTUAL_DISK_SIZE, FileParameters, KiB, MetadataTableEntry,
                           MetadataTableHeader, MiB, ParentLocatorEntry, ParentLocatorHeader,
                           RegionTableEntry, RegionTableHeader, SectorSize, VhdxHeader,
                           VirtualDiskSize, crc)

MAX_VIRTUAL = 64 << 40  # the format's own limit
MAX_ITEM = 64 * KiB
MAX_ENTRIES = 2047  # in a region or metadata table


def _newest(candidate: tuple[int, int, VhdxHeader]) -> tuple[int, int]:
    return candidate[0], candidate[1]  # sequence number, then offset


@dataclass(frozen=True)
class VhdxImage:
    """What the checks see: the first 320 KiB (identifier, headers, region tables); the
    metadata table and items are read through `read` once the checks before allow it."""

    head: bytes
    file_size: int
    read: Callable[[int, int, str], bytes]  # (offset, length, what): whole, or ImportFailure

    # -- headers and regions ----------------------------------------------------------------

    @cached_property
    def headers_read(self) -> tuple[list[tuple[int, int, VhdxHeader]], list[str]]:
        """([(sequence number, offset, header)] of the valid headers, [faults])."""
        valid, faults = [], []
        for at in HEADER_OFFSETS:
            raw = self.head[at : at + VhdxHeader.SIZE]
            header = VhdxHeader.unpack(raw)
            computed = crc(raw)
            if header.signature != b"head":
                faults.append(f"header at offset {at} lacks the 'head' signature")
            elif header.checksum != computed:
                faults.append(f"header at offset {at} has CRC-32C 0x{header.checksum:08x} but "
                              f"its bytes give 0x{computed:08x}")
            elif header.version != 1:
                faults.append(f"header at offset {at} has version {header.version}; expected 1")
            else:
                valid.append((header.sequence_number, at, header))
        return valid, faults

    @property
    def header_at(self) -> int:
        return max(self.headers_read[0], key=_newest)[1]

    @property
    def header(self) -> VhdxHeader:
        return max(self.headers_read[0], key=_newest)[2]

    @cached_property
    def region_table_read(self) -> tuple[tuple[int, int] | None, list[str]]:
        """((offset, entry count) of the first valid region table or None, [faults])."""
        faults = []
        for at in REGION_TABLE_OFFSETS:
            raw = self.head[at : at + 64 * KiB]
            table = RegionTableHeader.unpack(raw)
            computed = crc(raw)
            if table.signature != b"regi":
                faults.append(f"region table at offset {at} lacks the 'regi' signature")
            elif table.checksum != computed:
                faults.append(f"region table at offset {at} has CRC-32C 0x{table.checksum:08x} "
                              f"but its bytes give 0x{computed:08x}")
            elif table.entry_count > MAX_ENTRIES:
                faults.append(f"region table at offset {at} claims {table.entry_count} entries "
                              f"(at most {MAX_ENTRIES})")
            else:
                return (at, table.entry_count), faults
        return None, faults

    @property
    def region_table_at(self) -> int:
        return self.region_table_read[0][0]

    @property
    def region_entries(self) -> list[RegionTableEntry]:
        at, count = self.region_table_read[0]
        return [RegionTableEntry.unpack(self.head, at + RegionTableHeader.SIZE + 32 * n)
                for n in range(count)]

    @property
    def regions(self) -> dict[uuid.UUID, tuple[int, int]]:
        """{BAT_REGION or METADATA_REGION: (file offset, length)}."""
        return {e.region: (e.file_offset, e.length) for e in self.region_entries
                if e.region in (BAT_REGION, METADATA_REGION)}

    # -- metadata ---------------------------------------------------------------------------

    @property
    def metadata_at(self) -> int:
        return self.regions[METADATA_REGION][0]

    @cached_property
    def metadata_table(self) -> bytes:
        return self.read(self.metadata_at, 64 * KiB, "metadata table")

    @property
    def metadata_header(self) -> MetadataTableHeader:
        return MetadataTableHeader.unpack(self.metadata_table)

    @property
    def metadata_entries(self) -> list[MetadataTableEntry]:
        return [MetadataTableEntry.unpack(self.metadata_table, 32 + 32 * n)
                for n in range(self.metadata_header.entry_count)]

    @cached_property
    def items(self) -> dict[uuid.UUID, tuple[bytes, int]]:
        """{known item: (its bytes, file offset)}, read once the entries were checked."""
        out = {}
        for entry in self.metadata_entries:
            if entry.item in KNOWN_ITEMS:
                at = self.metadata_at + entry.offset
                out[entry.item] = (self.read(at, entry.length, f"metadata item {entry.item}"), at)
        return out

    def item(self, guid: uuid.UUID, name: str, size: int) -> tuple[bytes, int]:
        """A required item's bytes and offset; refused if missing or too short."""
        if guid not in self.items:
            raise ImportFailure(f"{CORRUPTED} VHDX metadata table at offset {self.metadata_at} "
                                f"has no {name} item")
        data, at = self.items[guid]
        if len(data) < size:
            raise ImportFailure(f"{CORRUPTED} VHDX {name} item at offset {at} is {len(data)} "
                                f"bytes; expected {size}")
        return data, at

    @property
    def parameters(self) -> tuple[FileParameters, int]:
        data, at = self.item(FILE_PARAMETERS, "file parameters", FileParameters.SIZE)
        return FileParameters.unpack(data), at

    @property
    def logical_sector(self) -> tuple[int, int]:
        data, at = self.item(LOGICAL_SECTOR_SIZE, "logical sector size", SectorSize.SIZE)
        return SectorSize.unpack(data).size, at

    @property
    def virtual_size(self) -> tuple[int, int]:
        data, at = self.item(VIRTUAL_DISK_SIZE, "virtual disk size", VirtualDiskSize.SIZE)
        return VirtualDiskSize.unpack(data).size, at

    @property
    def chunk_ratio(self) -> int:
        """Payload blocks per sector bitmap block, whose BAT entry follows theirs."""
        return (1 << 23) * self.logical_sector[0] // self.parameters[0].block_size

    @property
    def bat_entries(self) -> int:
        """Entries of the BAT the virtual size needs, sector bitmap entries included."""
        blocks = -(-self.virtual_size[0] // self.parameters[0].block_size)
        return blocks + (blocks - 1) // self.chunk_ratio


# -- the file's first 320 KiB -----------------------------------------------------------------

def check_file_signature(vhdx: VhdxImage, limits: Limits) -> None:
    if vhdx.head[:8] != SIGNATURE:
        raise ImportFailure(f"{CORRUPTED} VHDX file type identifier at offset 0 lacks the "
                            "'vhdxfile' signature")


def check_valid_header(vhdx: VhdxImage, limits: Limits) -> None:
    valid, faults = vhdx.headers_read
    if not valid:
        raise ImportFailure(f"{CORRUPTED} VHDX has no valid header: {'; '.join(faults)}")


def check_log_empty(vhdx: VhdxImage, limits: Limits) -> None:
    """A non-empty log holds updates not applied yet; replaying it is not implemented."""
    log = uuid.UUID(bytes_le=vhdx.header.log_guid)
    if log.int:
        raise ImportFailure(
            f"{UNSUPPORTED} VHDX log is not empty (header at offset {vhdx.header_at} names log "
            f"{log} at offset {vhdx.header.log_offset}): the disk was not shut down cleanly and "
            "holds updates not yet applied. Open it once in Hyper-V (or run `qemu-img "
            "check -r all` on it) and upload it again")


def check_valid_region_table(vhdx: VhdxImage, limits: Limits) -> None:
    found, faults = vhdx.region_table_read
    if found is None:
        raise ImportFailure(f"{CORRUPTED} VHDX has no valid region table: {'; '.join(faults)}")


def check_region_entries(vhdx: VhdxImage, limits: Limits) -> None:
    """Each entry, in order: no unknown required region, no region twice, regions aligned to
    1 MiB after the first MiB and inside the file."""
    seen = set()
    for n, entry in enumerate(vhdx.region_entries):
        guid, offset, length = entry.region, entry.file_offset, entry.length
        where = f"VHDX region table at offset {vhdx.region_table_at}, entry {n} (region {guid})"
        if guid not in (BAT_REGION, METADATA_REGION):
            if entry.required & 1:
                raise ImportFailure(f"{UNSUPPORTED} {where} is an unknown region marked "
                                    "required; this reader cannot honour it")
            continue
        if guid in seen:
            raise ImportFailure(f"{CORRUPTED} {where} lists the region a second time")
        seen.add(guid)
        if offset < MiB or offset % MiB or length == 0 or length % MiB:
            raise ImportFailure(
                f"{CORRUPTED} {where} places it at offset {offset}, length {length}; regions "
                "start at or after 1 MiB and both values are multiples of 1 MiB")
        if offset + length > vhdx.file_size:
            raise ImportFailure(
                f"{CORRUPTED} {where} places it at offset {offset}, length {length}, past the "
                f"end of the file at byte {vhdx.file_size}")


def check_required_regions(vhdx: VhdxImage, limits: Limits) -> None:
    for guid, name in ((BAT_REGION, "BAT"), (METADATA_REGION, "metadata")):
        if guid not in vhdx.regions:
            raise ImportFailure(f"{CORRUPTED} VHDX region table at offset "
                                f"{vhdx.region_table_at} has no {name} region")


def check_regions_apart(vhdx: VhdxImage, limits: Limits) -> None:
    (a, alen), (b, blen) = vhdx.regions[BAT_REGION], vhdx.regions[METADATA_REGION]
    if a < b + blen and b < a + alen:
        raise ImportFailure(f"{CORRUPTED} VHDX region table at offset {vhdx.region_table_at} "
                            f"places the BAT (offset {a}) and the metadata (offset {b}) over "
                            "each other")


# -- the metadata table -----------------------------------------------------------------------

def check_metadata_table(vhdx: VhdxImage, limits: Limits) -> None:
    table, at = vhdx.metadata_header, vhdx.metadata_at
    if table.signature != b"metadata":
        raise ImportFailure(f"{CORRUPTED} VHDX metadata table at offset {at} lacks the "
                            "'metadata' signature")
    if table.entry_count > MAX_ENTRIES:
        raise ImportFailure(f"{CORRUPTED} VHDX metadata table at offset {at} claims "
                            f"{table.entry_count} entries (at most {MAX_ENTRIES})")


def check_metadata_entries(vhdx: VhdxImage, limits: Limits) -> None:
    """Each entry, in order: no unknown required item, no item twice, items inside the region
    after the table and bounded."""
    meta_at, meta_length = vhdx.regions[METADATA_REGION]
    seen = set()
    for n, entry in enumerate(vhdx.metadata_entries):
        guid, offset, length = entry.item, entry.offset, entry.length
        where = f"VHDX metadata entry {n} (item {guid}) at offset {meta_at + 32 + 32 * n}"
        if guid not in KNOWN_ITEMS:
            if entry.flags & 4:
                raise ImportFailure(f"{UNSUPPORTED} {where} is an unknown item marked "
                                    "required; this reader cannot honour it")
            continue
        if guid in seen:
            raise ImportFailure(f"{CORRUPTED} {where} lists the item a second time")
        seen.add(guid)
        if (length and offset < 64 * KiB) or offset + length > meta_length or length > MAX_ITEM:
            raise ImportFailure(
                f"{CORRUPTED} {where} places it at offset {offset} (length {length}) of the "
                f"{meta_length}-byte metadata region; items lie after the 64 KiB table, "
                f"inside the region, and are at most {MAX_ITEM} bytes")


# -- the metadata items -----------------------------------------------------------------------

def check_not_differencing(vhdx: VhdxImage, limits: Limits) -> None:
    """A differencing disk holds changes to a parent, named in the refusal, never opened."""
    params, at = vhdx.parameters
    if params.flags & HAS_PARENT:
        raise ImportFailure(_differencing(vhdx, at))


def _differencing(vhdx: VhdxImage, params_at: int) -> str:
    why = (f"{UNSUPPORTED} VHDX file parameters item at offset {params_at} has the "
           "has-parent flag: this is a differencing disk, which holds only the changes to a "
           "parent disk")
    names = []
    if PARENT_LOCATOR in vhdx.items:
        data, _ = vhdx.items[PARENT_LOCATOR]
        if len(data) >= ParentLocatorHeader.SIZE:
            count = ParentLocatorHeader.unpack(data).key_value_count
            for n in range(min(count, 64)):
                at = ParentLocatorHeader.SIZE + ParentLocatorEntry.SIZE * n
                if at + ParentLocatorEntry.SIZE > len(data):
                    break
                e = ParentLocatorEntry.unpack(data, at)
                key = data[e.key_offset : e.key_offset + e.key_length].decode(
                    "utf-16-le", errors="replace")
                value = data[e.value_offset : e.value_offset + e.value_length].decode(
                    "utf-16-le", errors="replace")
                if key.endswith("path"):
                    names.append(f"{key}={value[:200]!r}")
    named = f" ({', '.join(names)})" if names else ""
    return (f"{why}{named}, which this server never opens; merge the chain into one disk "
            "(Hyper-V Edit Disk > Merge, or `qemu-img convert -O vhdx`) and import that")


def check_block_size(vhdx: VhdxImage, limits: Limits) -> None:
    params, at = vhdx.parameters
    block = params.block_size
    if not (MiB <= block <= 256 * MiB and block & (block - 1) == 0):
        raise ImportFailure(
            f"{UNSUPPORTED} VHDX file parameters item at offset {at} has a block size of "
            f"{block} bytes; the format allows powers of two from 1 MiB to 256 MiB")


def check_logical_sector_size(vhdx: VhdxImage, limits: Limits) -> None:
    sector, at = vhdx.logical_sector
    if sector not in (512, 4096):
        raise ImportFailure(f"{UNSUPPORTED} VHDX logical sector size item at offset {at} says "
                            f"{sector} bytes; expected 512 or 4096")


def check_virtual_size(vhdx: VhdxImage, limits: Limits) -> None:
    (size, at), sector = vhdx.virtual_size, vhdx.logical_sector[0]
    where = f"the VHDX virtual disk size item at offset {at}"
    if size > limits.max_virtual_size:
        raise ImportFailure(too_large(where, size, limits))
    if size == 0 or size % sector or size > MAX_VIRTUAL:
        raise ImportFailure(
            f"{CORRUPTED} {where[4:]} says {size} bytes: not a positive multiple of the "
            f"{sector}-byte logical sector size of at most 64 TiB")


def check_physical_sector_size(vhdx: VhdxImage, limits: Limits) -> None:
    vhdx.item(PHYSICAL_SECTOR_SIZE, "physical sector size", SectorSize.SIZE)


def check_bat_region_size(vhdx: VhdxImage, limits: Limits) -> None:
    """The BAT region holds an entry for every block of the virtual size."""
    (at, length), entries = vhdx.regions[BAT_REGION], vhdx.bat_entries
    if entries * 8 > length:
        raise ImportFailure(
            f"{CORRUPTED} VHDX BAT region at offset {at} is {length} bytes, too small for the "
            f"{entries} entries a {vhdx.virtual_size[0]}-byte disk in "
            f"{vhdx.parameters[0].block_size}-byte blocks needs")


# -- the policy, in the order the reader applies it -------------------------------------------

FILE_CHECKS = (check_file_signature, check_valid_header, check_log_empty,
               check_valid_region_table, check_region_entries, check_required_regions,
               check_regions_apart)
METADATA_CHECKS = (check_metadata_table, check_metadata_entries)  # before any item is read
ITEM_CHECKS = (check_not_differencing, check_block_size, check_logical_sector_size,
               check_virtual_size, check_physical_sector_size, check_bat_region_size)
