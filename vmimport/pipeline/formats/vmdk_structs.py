"""VMDK hosted sparse extent structures (VMware "Virtual Disk Format 5.0", little-endian),
shared by the monolithicSparse and streamOptimized readers and the stream writer."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .structs import Structure

MAGIC = b"KDMV"
FLAG_ZERO_GRAIN = 0x4  # a grain table entry of 1 means "reads as zeros"
FLAG_COMPRESSED = 0x10000
FLAG_MARKERS = 0x20000
COMPRESS_DEFLATE = 1
GD_AT_END = 0xFFFFFFFFFFFFFFFF  # a stream's header at 0: the real gdOffset is in the footer
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER, MARKER_PROGRESS = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class SparseExtentHeader(Structure):
    """The 512-byte header at offset 0 (and a stream's footer); sizes and offsets in sectors.

    dissect's c_vmdk calls it VMDKSparseExtentHeader."""

    FORMAT = struct.Struct("<4sIIQQQQIQQQB4sH433s")

    magic: bytes
    version: int
    flags: int
    capacity: int  # offset 12
    grain_size: int  # offset 20
    descriptor_offset: int  # offset 28
    descriptor_size: int  # offset 36
    gtes_per_gt: int  # offset 44: entries per grain table
    rgd_offset: int  # redundant grain directory
    gd_offset: int  # offset 56
    overhead: int  # offset 64: sectors before the first grain
    unclean_shutdown: int
    line_chars: bytes  # "\n", " ", "\r", "\n": detects a file that went through text mode
    compress_algorithm: int  # offset 77
    pad: bytes


@dataclass(frozen=True)
class GrainMarker(Structure):
    """The 12 bytes before a stream's compressed grain (then the zlib data, padded to 512)."""

    FORMAT = struct.Struct("<QI")

    lba: int  # the grain's first sector in the guest
    size: int  # compressed bytes that follow; 0 means a metadata marker


@dataclass(frozen=True)
class MetadataMarker(Structure):
    """A sector announcing metadata (or the end of the stream) in a streamOptimized VMDK."""

    FORMAT = struct.Struct("<QII496s")

    sectors: int  # metadata sectors that follow the marker
    size: int  # always 0: this is what tells it from a grain marker
    kind: int  # MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER, MARKER_PROGRESS
    pad: bytes
