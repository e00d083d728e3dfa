"""VHD structures (Microsoft "Virtual Hard Disk Image Format Specification", big-endian),
shared by the reader and a writer: the footer, the dynamic header and its parent locators."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .structs import Structure

FOOTER_COOKIE, HEADER_COOKIE = b"conectix", b"cxsparse"
FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
NOT_ALLOCATED = 0xFFFFFFFF  # a BAT entry of a block that is not in the file


@dataclass(frozen=True)
class VhdFooter(Structure):
    """The last 512 bytes of every VHD (and a copy at offset 0 of a dynamic one)."""

    FORMAT = struct.Struct(">8sIIQI4sI4sQQIII16sB427s")
    CHECKSUM_AT = 64

    cookie: bytes
    features: int
    version: int  # offset 12: file format version, 0x00010000
    data_offset: int  # offset 16: the dynamic header; all ones for a fixed disk
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_os: bytes
    original_size: int
    current_size: int  # offset 48: the virtual size
    geometry: int
    disk_type: int  # offset 60: FIXED, DYNAMIC or DIFFERENCING
    checksum: int  # offset 64
    unique_id: bytes
    saved_state: int
    reserved: bytes


@dataclass(frozen=True)
class DynamicHeader(Structure):
    """1024 bytes at the footer's data offset of a dynamic or differencing disk."""

    FORMAT = struct.Struct(">8sQQIIII16sI4s512s192s256s")
    CHECKSUM_AT = 36

    cookie: bytes
    data_offset: int  # unused, all ones
    table_offset: int  # offset 16: the BAT
    header_version: int  # offset 24
    max_table_entries: int  # offset 28
    block_size: int  # offset 32
    checksum: int  # offset 36
    parent_unique_id: bytes
    parent_timestamp: int
    reserved: bytes
    parent_unicode_name: bytes  # UTF-16 big-endian
    parent_locators: bytes  # eight ParentLocator entries
    reserved2: bytes

    def locators(self) -> list["ParentLocator"]:
        return [ParentLocator.unpack(self.parent_locators, ParentLocator.SIZE * n)
                for n in range(8)]


@dataclass(frozen=True)
class ParentLocator(Structure):
    FORMAT = struct.Struct(">4sIIIQ")

    platform_code: bytes  # b"W2ku", b"W2ru", b"Mac " ...; zeros when unused
    platform_data_space: int
    platform_data_length: int
    reserved: int
    platform_data_offset: int


def checksum(raw: bytes | memoryview, field: int) -> int:
    """One's complement of the byte sum, the checksum field at `field` counted as zero."""
    return ~(sum(raw) - sum(raw[field : field + 4])) & 0xFFFFFFFF
