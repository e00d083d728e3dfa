"""The safety policy for VMDK sparse extents: one function per rule, listed per reader below.

Header checks take an `Extent` (the header, where it was read, the file's size) and the
`Limits`; descriptor checks take an `EmbeddedDescriptor`. Each raises `ImportFailure` with
the message the user sees, or returns None.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, UNSUPPORTED, Limits, too_large
from .vmdk_descriptor import Descriptor
from .vmdk_structs import (COMPRESS_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, GD_AT_END, MAGIC,
                           SparseExtentHeader)

MAX_GRAIN_SECTORS = 2048  # 1 MiB grains; VMware and qemu write 64 KiB
MAX_GTES = 4096  # entries per grain table; everyone writes 512
MAX_DESCRIPTOR_SECTORS = 2048  # 1 MiB, as OpenStack's format_inspector


@dataclass(frozen=True)
class Extent:
    """What the header checks see."""

    header: SparseExtentHeader
    where: str  # "VMDK header at offset 0", "VMDK footer at offset N"
    file_size: int

    @property
    def grain_tables(self) -> int:
        """Entries of the grain directory the capacity needs."""
        h = self.header
        return -(-h.capacity // (h.grain_size * h.gtes_per_gt))


@dataclass(frozen=True)
class EmbeddedDescriptor:
    """What the descriptor checks see."""

    descriptor: Descriptor
    create_type: str  # the one the reader requires: "streamOptimized" or "monolithicSparse"
    capacity: int  # the header's, in sectors
    file_offset: int

    @property
    def where(self) -> str:
        return f"VMDK embedded descriptor (at file offset {self.file_offset})"


def no_descriptor(where: str) -> str:
    return (f"{UNSUPPORTED} {where}: this file has no embedded descriptor, so it is one "
            "extent of a disk whose text descriptor is a separate file (a split "
            "twoGbMaxExtentSparse disk, for example); convert the whole disk to a single "
            "file (monolithicSparse or streamOptimized) and import that")


# -- the header -------------------------------------------------------------------------------

def check_magic(extent: Extent, limits: Limits) -> None:
    magic = extent.header.magic
    if magic != MAGIC:
        raise ImportFailure(f"{CORRUPTED} {extent.where} lacks the 'KDMV' magic "
                            f"(found {bytes(magic)!r})")


def check_version(extent: Extent, limits: Limits) -> None:
    if not 1 <= extent.header.version <= 3:
        raise ImportFailure(f"{UNSUPPORTED} {extent.where} has version {extent.header.version}; "
                            "sparse extents are versions 1 to 3")


def check_stream_flags(extent: Extent, limits: Limits) -> None:
    """A streamOptimized extent has compressed grains behind markers."""
    flags = extent.header.flags
    if flags & (FLAG_COMPRESSED | FLAG_MARKERS) != FLAG_COMPRESSED | FLAG_MARKERS:
        raise ImportFailure(
            f"{UNSUPPORTED} {extent.where} has flags 0x{flags:08x}, without the "
            "compressed-grains (0x10000) and markers (0x20000) bits of a streamOptimized VMDK")


def check_deflate(extent: Extent, limits: Limits) -> None:
    compress = extent.header.compress_algorithm
    if compress != COMPRESS_DEFLATE:
        raise ImportFailure(
            f"File uses unsupported compression algorithm {compress}: {extent.where} "
            "(offset 77) must name 1 = deflate in a streamOptimized VMDK")


def check_not_compressed(extent: Extent, limits: Limits) -> None:
    """A monolithicSparse extent has plain grains (the descriptor said so)."""
    flags, compress = extent.header.flags, extent.header.compress_algorithm
    if flags & (FLAG_COMPRESSED | FLAG_MARKERS) or compress:
        raise ImportFailure(
            f"{UNSUPPORTED} {extent.where} has flags 0x{flags:08x} and compression {compress}: "
            "compressed grains belong to a streamOptimized VMDK, but its descriptor says "
            "otherwise")


def check_grain_size(extent: Extent, limits: Limits) -> None:
    grain = extent.header.grain_size
    if not (1 <= grain <= MAX_GRAIN_SECTORS and grain & (grain - 1) == 0):
        raise ImportFailure(f"{UNSUPPORTED} {extent.where} has a grain size of {grain} sectors "
                            f"(offset 20); it must be a power of two of at most "
                            f"{MAX_GRAIN_SECTORS} sectors")


def check_grain_table_entries(extent: Extent, limits: Limits) -> None:
    gtes = extent.header.gtes_per_gt
    if not 1 <= gtes <= MAX_GTES:
        raise ImportFailure(f"{UNSUPPORTED} {extent.where} has {gtes} entries per grain table "
                            f"(offset 44); expected 1 to {MAX_GTES} (512 is usual)")


def check_capacity(extent: Extent, limits: Limits) -> None:
    if extent.header.capacity == 0:
        raise ImportFailure(f"{UNSUPPORTED} {extent.where} declares a capacity of 0 sectors")


def check_virtual_size(extent: Extent, limits: Limits) -> None:
    size = extent.header.capacity * SECTOR
    if size > limits.max_virtual_size:
        raise ImportFailure(too_large("the VMDK header (capacity at offset 12)", size, limits))


def check_overhead_in_file(extent: Extent, limits: Limits) -> None:
    """The grains start inside the file."""
    start = extent.header.overhead * SECTOR
    if start > extent.file_size:
        raise ImportFailure(f"{CORRUPTED} {extent.where} says grains start at byte {start} "
                            f"(overHead at offset 64) but the file ends at byte "
                            f"{extent.file_size}")


def check_has_descriptor(extent: Extent, limits: Limits) -> None:
    """A split disk's extent file carries no descriptor: its disk is elsewhere."""
    if extent.header.descriptor_offset == 0 and extent.header.descriptor_size == 0:
        raise ImportFailure(no_descriptor(f"{extent.where} (descriptor offset and size at "
                                          "offsets 28 and 36 are 0)"))


def check_descriptor_placement(extent: Extent, limits: Limits) -> None:
    """The descriptor lies in the metadata area and is bounded."""
    h = extent.header
    at, size = h.descriptor_offset, h.descriptor_size
    if not (1 <= at and 1 <= size <= MAX_DESCRIPTOR_SECTORS and at + size <= h.overhead):
        raise ImportFailure(
            f"{UNSUPPORTED} {extent.where} places the embedded descriptor at sector {at} "
            f"({size} sectors), outside the {h.overhead}-sector metadata area (or larger than "
            f"{MAX_DESCRIPTOR_SECTORS} sectors)")


def check_grain_directory_placement(extent: Extent, limits: Limits) -> None:
    """The grain directory lies in the metadata area, before the grains."""
    h, tables = extent.header, extent.grain_tables
    if (h.gd_offset == GD_AT_END or not 1 <= h.gd_offset
            or h.gd_offset * SECTOR + tables * 4 > h.overhead * SECTOR):
        raise ImportFailure(
            f"{CORRUPTED} {extent.where} places the grain directory of {tables} entries at "
            f"sector {h.gd_offset} (offset 56), outside the metadata area before the grains "
            f"(sectors 1 to {h.overhead})")


def check_footer_matches(footer: Extent, header: SparseExtentHeader) -> None:
    """A stream's footer repeats the header's geometry."""
    f = footer.header
    if f.capacity != header.capacity or f.grain_size != header.grain_size:
        raise ImportFailure(
            f"{CORRUPTED} {footer.where} disagrees with the header: capacity {f.capacity} vs "
            f"{header.capacity} sectors, grain {f.grain_size} vs {header.grain_size} sectors")


# -- the embedded descriptor ------------------------------------------------------------------

_CREATE_TYPE_WHY = {
    "streamOptimized": 'a VMDK with a sparse header and compressed grains must be '
                       'createType="streamOptimized"',
    "monolithicSparse": 'a hosted sparse VMDK without compressed grains must be '
                        'createType="monolithicSparse" (split and flat variants name other files)',
}


def check_descriptor_not_empty(d: EmbeddedDescriptor) -> None:
    if not d.descriptor.keys and not d.descriptor.extents:
        raise ImportFailure(no_descriptor(
            f"VMDK descriptor area at offset {d.file_offset} (it is empty)"))


def check_create_type(d: EmbeddedDescriptor) -> None:
    create_type = d.descriptor.keys.get("createtype")
    if create_type is None or create_type.lower() != d.create_type.lower():
        raise ImportFailure(f"{UNSUPPORTED} {d.where} has createType={create_type!r}; "
                            f"{_CREATE_TYPE_WHY[d.create_type]}")


def check_no_parent(d: EmbeddedDescriptor) -> None:
    """A delta disk names its parent; the parent is never opened."""
    keys = d.descriptor.keys
    parent = keys.get("parentcid", "ffffffff")
    if parent.lower() != "ffffffff":
        raise ImportFailure(
            f"{UNSUPPORTED} {d.where} names a parent disk (parentCID={parent}): this is a "
            "delta (child) disk; import the consolidated disk instead")
    if "parentfilenamehint" in keys:
        raise ImportFailure(
            f"{UNSUPPORTED} {d.where} names a parent disk "
            f"(parentFileNameHint={keys['parentfilenamehint'][:200]!r}), which this server "
            "never opens: this is a delta (child) disk; import the consolidated disk instead")


def check_single_extent(d: EmbeddedDescriptor) -> None:
    """Exactly one extent: a second one names another file."""
    if len(d.descriptor.extents) != 1:
        raise ImportFailure(
            f"{UNSUPPORTED} {d.where} lists {len(d.descriptor.extents)} extents; a "
            f"{d.create_type} VMDK has exactly one, the file itself")


def check_extent_kind(d: EmbeddedDescriptor) -> None:
    access, _, kind, _, _ = d.descriptor.extents[0]
    if kind.upper() != "SPARSE" or access == "NOACCESS":
        raise ImportFailure(f"{UNSUPPORTED} {d.where} has a {access} {kind} extent; a "
                            f"{d.create_type} VMDK has one RW SPARSE extent")


def check_extent_is_this_file(d: EmbeddedDescriptor) -> None:
    name = d.descriptor.extents[0][3]
    if name is not None and ("/" in name or "\\" in name):
        raise ImportFailure(f"{UNSUPPORTED} {d.where} names an extent in another location "
                            f"({name[:200]!r}); only the file itself may be its extent")


def check_extent_size(d: EmbeddedDescriptor) -> None:
    _, sectors, _, _, offset = d.descriptor.extents[0]
    if sectors != d.capacity or offset:
        raise ImportFailure(
            f"{UNSUPPORTED} {d.where} declares an extent of {sectors} sectors at offset "
            f"{offset}, but the header's capacity is {d.capacity} sectors")


# -- the policy, per reader, in the order each applies it -------------------------------------

# streamOptimized: the header at 0 (before its descriptor is read), then the descriptor; a
# footer gets FOOTER_CHECKS and must match the header.
STREAM_HEADER_CHECKS = (check_magic, check_version, check_stream_flags, check_deflate,
                        check_grain_size, check_capacity, check_virtual_size,
                        check_descriptor_placement)
STREAM_LAYOUT_CHECKS = (check_overhead_in_file,)  # once the descriptor was read whole
FOOTER_CHECKS = (check_magic, check_version, check_stream_flags, check_deflate,
                 check_grain_size, check_capacity)
# Only for a stream without an end-of-stream marker, whose grain tables are then read.
STREAM_TABLE_CHECKS = (check_grain_table_entries,)

# monolithicSparse: the header, the descriptor, then the grain directory's place.
SPARSE_HEADER_CHECKS = (check_version, check_not_compressed, check_grain_size,
                        check_grain_table_entries, check_virtual_size, check_capacity,
                        check_overhead_in_file, check_has_descriptor,
                        check_descriptor_placement)
SPARSE_LAYOUT_CHECKS = (check_grain_directory_placement,)

DESCRIPTOR_CHECKS = (check_create_type, check_no_parent, check_single_extent,
                     check_extent_kind, check_extent_is_this_file, check_extent_size)
SPARSE_DESCRIPTOR_CHECKS = (check_descriptor_not_empty, *DESCRIPTOR_CHECKS)
