"""VHDX structures ([MS-VHDX], little-endian, CRC-32C checksums), shared by the reader and a
writer: the headers, the region table, the metadata table and the metadata items."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from dissect.util.hash.crc32c import crc32c

from .structs import Structure

KiB, MiB = 1 << 10, 1 << 20
SIGNATURE = b"vhdxfile"
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)

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

# BAT entry: state in bits 0-2, file offset in MiB in bits 20-63.
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 6, 7
HAS_PARENT = 2  # FileParameters.flags


def crc(raw: bytes | memoryview, field: int = 4) -> int:
    """CRC-32C of `raw` with its checksum field (4 bytes at `field`) counted as zero."""
    return crc32c(bytes(raw[:field]) + bytes(4) + bytes(raw[field + 4 :]))


@dataclass(frozen=True)
class VhdxHeader(Structure):
    """One of the two 4 KiB headers (at 64 and 128 KiB); the valid one with the higher
    sequence number is current."""

    FORMAT = struct.Struct("<4sIQ16s16s16sHHIQ4016s")

    signature: bytes  # b"head"
    checksum: int
    sequence_number: int
    file_write_guid: bytes
    data_write_guid: bytes
    log_guid: bytes  # all zeros: the log is empty
    log_version: int
    version: int  # 1
    log_length: int
    log_offset: int
    reserved: bytes


@dataclass(frozen=True)
class RegionTableHeader(Structure):
    """Starts each of the two 64 KiB region tables (at 192 and 256 KiB)."""

    FORMAT = struct.Struct("<4sIII")

    signature: bytes  # b"regi"
    checksum: int
    entry_count: int
    reserved: int


@dataclass(frozen=True)
class RegionTableEntry(Structure):
    FORMAT = struct.Struct("<16sQII")

    guid: bytes  # BAT_REGION, METADATA_REGION, or another (little-endian GUID bytes)
    file_offset: int
    length: int
    required: int  # bit 0

    @property
    def region(self) -> uuid.UUID:
        return uuid.UUID(bytes_le=self.guid)


@dataclass(frozen=True)
class MetadataTableHeader(Structure):
    """Starts the metadata region; 32-byte entries follow."""

    FORMAT = struct.Struct("<8sHH20s")

    signature: bytes  # b"metadata"
    reserved: int
    entry_count: int
    reserved2: bytes


@dataclass(frozen=True)
class MetadataTableEntry(Structure):
    FORMAT = struct.Struct("<16sIIII")

    item_id: bytes
    offset: int  # from the start of the metadata region
    length: int
    flags: int  # bit 0 user, bit 1 virtual disk, bit 2 required
    reserved: int

    @property
    def item(self) -> uuid.UUID:
        return uuid.UUID(bytes_le=self.item_id)


@dataclass(frozen=True)
class FileParameters(Structure):
    FORMAT = struct.Struct("<II")

    block_size: int
    flags: int  # bit 0 leave blocks allocated, bit 1 HAS_PARENT


@dataclass(frozen=True)
class VirtualDiskSize(Structure):
    FORMAT = struct.Struct("<Q")

    size: int


@dataclass(frozen=True)
class SectorSize(Structure):
    """The logical and the physical sector size items."""

    FORMAT = struct.Struct("<I")

    size: int


@dataclass(frozen=True)
class ParentLocatorHeader(Structure):
    FORMAT = struct.Struct("<16sHH")

    locator_type: bytes
    reserved: int
    key_value_count: int  # entries follow


@dataclass(frozen=True)
class ParentLocatorEntry(Structure):
    """Where one key and its value (UTF-16 little-endian) lie in the locator item."""

    FORMAT = struct.Struct("<IIHH")

    key_offset: int
    value_offset: int
    key_length: int
    value_length: int
