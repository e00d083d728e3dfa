"""qcow2 structures (qemu's docs/interop/qcow2.txt, big-endian), shared by the reader and a
writer: the version 2 header, the fields version 3 adds, and header extensions."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .structs import Structure

MAGIC = b"QFI\xfb"
INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE = 1, 2, 4
INCOMPAT_COMPRESSION, INCOMPAT_EXTENDED_L2 = 8, 16
KNOWN_INCOMPAT = 31
EXT_END, EXT_BACKING_FORMAT, EXT_FEATURES = 0, 0xE2792ACA, 0x6803F857
EXT_CRYPTO, EXT_DATA_FILE = 0x0537BE77, 0x44415441
ZLIB, ZSTD = 0, 1

L1_OFFSET = 0x00FFFFFFFFFFFE00  # host offset bits of L1 and standard L2 entries
L2_COMPRESSED, L2_ZERO = 1 << 62, 1


@dataclass(frozen=True)
class Qcow2Header(Structure):
    """The header at offset 0 as version 2 has it; version 3 continues with `Qcow2HeaderV3`."""

    FORMAT = struct.Struct(">4sIQIIQIIQQIIQ")

    magic: bytes
    version: int  # offset 4
    backing_file_offset: int  # offset 8
    backing_file_size: int
    cluster_bits: int  # offset 20
    size: int  # offset 24: virtual size in bytes
    crypt_method: int  # offset 32
    l1_size: int  # offset 36: entries
    l1_table_offset: int  # offset 40
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int


@dataclass(frozen=True)
class Qcow2HeaderV3(Structure):
    """The version 3 fields, at offset 72."""

    FORMAT = struct.Struct(">QQQII")
    OFFSET = 72

    incompatible_features: int  # offset 72
    compatible_features: int
    autoclear_features: int
    refcount_order: int
    header_length: int  # offset 100


@dataclass(frozen=True)
class Qcow2CompressionType(Structure):
    """At offset 104, when header_length is larger than 104."""

    FORMAT = struct.Struct(">B7s")
    OFFSET = 104

    compression_type: int  # ZLIB or ZSTD
    padding: bytes


@dataclass(frozen=True)
class HeaderExtension(Structure):
    """Precedes each header extension's data (padded to 8 bytes); type 0 ends the list."""

    FORMAT = struct.Struct(">II")

    kind: int
    length: int
