"""The declared on-disk structures: every one unpacks a real header (made by qemu-img, or by
tarfile for tar) and packs it back byte for byte, so a writer packing what a reader unpacked
reproduces the image; a changed field lands at its documented offset."""

from __future__ import annotations

import dataclasses
import struct
import tarfile

import pytest

from tests.hostile import (cases_vhd, cases_vhdx, qemu_image, spaced_raw, stream_vmdk, tar_bytes,
                           vmdk_markers)
from vmimport.pipeline.formats import structs
from vmimport.pipeline.formats.qcow2_structs import (HeaderExtension, Qcow2CompressionType,
                                                     Qcow2Header, Qcow2HeaderV3)
from vmimport.pipeline.formats.tar import TarHeader
from vmimport.pipeline.formats.vhd_structs import DynamicHeader, ParentLocator, VhdFooter
from vmimport.pipeline.formats.vhdx_structs import (FILE_PARAMETERS, LOGICAL_SECTOR_SIZE,
                                                    PARENT_LOCATOR, VIRTUAL_DISK_SIZE,
                                                    FileParameters, MetadataTableEntry,
                                                    MetadataTableHeader, ParentLocatorEntry,
                                                    ParentLocatorHeader, RegionTableEntry,
                                                    RegionTableHeader, SectorSize, VhdxHeader,
                                                    VirtualDiskSize)
from vmimport.pipeline.formats.vmdk_structs import GrainMarker, MetadataMarker, SparseExtentHeader

KiB = 1 << 10


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("structs")


def _vmdk(tmp):
    stream, sparse = stream_vmdk(tmp), qemu_image(tmp, "vmdk", raw=spaced_raw(3))
    markers = vmdk_markers(stream)
    grain = next(at for at, _, size, _ in markers if size)
    eos = next(at for at, _, size, kind in markers if not size and kind == 0)
    return [(SparseExtentHeader, stream, 0), (SparseExtentHeader, sparse, 0),
            (GrainMarker, stream, grain), (MetadataMarker, stream, eos)]


def _qcow2(tmp):
    zstd = qemu_image(tmp, "qcow2", "-o", "compression_type=zstd", raw=spaced_raw(3))
    v2 = qemu_image(tmp, "qcow2", "-o", "compat=0.10", raw=spaced_raw(3))
    length = Qcow2HeaderV3.unpack(zstd, 72).header_length
    return [(Qcow2Header, zstd, 0), (Qcow2Header, v2, 0), (Qcow2HeaderV3, zstd, 72),
            (Qcow2CompressionType, zstd, 104), (HeaderExtension, zstd, length)]


def _vhd(tmp):
    dynamic, fixed = cases_vhd.vhd(tmp), cases_vhd.vhd(tmp, fixed=True)
    child = cases_vhd._differencing(tmp)
    header_at = VhdFooter.unpack(child, len(child) - 512).data_offset
    return [(VhdFooter, dynamic, len(dynamic) - 512), (VhdFooter, dynamic, 0),
            (VhdFooter, fixed, len(fixed) - 512),
            (DynamicHeader, dynamic, VhdFooter.unpack(dynamic, 0).data_offset),
            (DynamicHeader, child, header_at), (ParentLocator, child, header_at + 576)]


def _vhdx(tmp):
    data, child = cases_vhdx.vhdx(tmp), cases_vhdx.differencing(tmp)
    items, child_items = cases_vhdx.metadata_items(data), cases_vhdx.metadata_items(child)
    meta = cases_vhdx.regions(data)[cases_vhdx.METADATA][1]
    locator = child_items[PARENT_LOCATOR][1]
    return [(VhdxHeader, data, 64 * KiB), (VhdxHeader, data, 128 * KiB),
            (RegionTableHeader, data, 192 * KiB), (RegionTableEntry, data, 192 * KiB + 16),
            (RegionTableEntry, data, 192 * KiB + 48), (MetadataTableHeader, data, meta),
            (MetadataTableEntry, data, meta + 32),
            (FileParameters, data, items[FILE_PARAMETERS][1]),
            (VirtualDiskSize, data, items[VIRTUAL_DISK_SIZE][1]),
            (SectorSize, data, items[LOGICAL_SECTOR_SIZE][1]),
            (ParentLocatorHeader, child, locator), (ParentLocatorEntry, child, locator + 20)]


def _tar(tmp):
    gnu = tar_bytes([("disk.ovf", b"<x/>" * 40)], fmt=tarfile.GNU_FORMAT)
    pax = tar_bytes([("a" * 120 + ".vmdk", b"data")], fmt=tarfile.PAX_FORMAT)
    return [(TarHeader, tar_bytes([("disk.ovf", b"<x/>")]), 0), (TarHeader, gnu, 0),
            (TarHeader, pax, 0), (TarHeader, pax, 1024)]


BUILDERS = {"vmdk": _vmdk, "qcow2": _qcow2, "vhd": _vhd, "vhdx": _vhdx, "tar": _tar}


@pytest.mark.parametrize("fmt", BUILDERS)
def test_pack_is_the_inverse_of_unpack(tmp, fmt):
    for cls, data, at in BUILDERS[fmt](tmp):
        raw = bytes(data[at : at + cls.SIZE])
        assert len(raw) == cls.SIZE, (cls.__name__, at)
        value = cls.unpack(data, at)
        assert value.pack() == raw, (cls.__name__, at)
        assert cls.unpack(value.pack()) == value


def test_every_structure_is_covered(tmp):
    """A structure declared without a round trip above fails here."""
    covered = {cls for build in BUILDERS.values() for cls, _, _ in build(tmp)}
    assert _all_structures() == covered


def _all_structures():
    found, todo = set(), [structs.Structure]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


@pytest.mark.parametrize("cls", sorted(_all_structures(), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_fields_match_the_format(cls):
    """One field per struct item, and SIZE is the format's size."""
    items = cls.FORMAT.unpack(bytes(cls.FORMAT.size))
    assert len(dataclasses.fields(cls)) == len(items)
    assert cls.SIZE == cls.FORMAT.size


@pytest.mark.parametrize("cls,field,offset,fmt,value", [
    (SparseExtentHeader, "capacity", 12, "<Q", 123456),
    (SparseExtentHeader, "grain_size", 20, "<Q", 128),
    (SparseExtentHeader, "gtes_per_gt", 44, "<I", 512),
    (SparseExtentHeader, "gd_offset", 56, "<Q", 77),
    (SparseExtentHeader, "overhead", 64, "<Q", 128),
    (SparseExtentHeader, "compress_algorithm", 77, "<H", 1),
    (Qcow2Header, "cluster_bits", 20, ">I", 16),
    (Qcow2Header, "size", 24, ">Q", 1 << 30),
    (Qcow2Header, "l1_table_offset", 40, ">Q", 196608),
    (VhdFooter, "data_offset", 16, ">Q", 512),
    (VhdFooter, "current_size", 48, ">Q", 1 << 30),
    (VhdFooter, "disk_type", 60, ">I", 3),
    (VhdFooter, "checksum", 64, ">I", 0xDEADBEEF),
    (DynamicHeader, "table_offset", 16, ">Q", 1536),
    (DynamicHeader, "block_size", 32, ">I", 2 << 20),
    (DynamicHeader, "checksum", 36, ">I", 0xDEADBEEF),
    (GrainMarker, "size", 8, "<I", 4000),
    (MetadataMarker, "kind", 12, "<I", 3),
    (Qcow2HeaderV3, "incompatible_features", 0, ">Q", 16),
    (Qcow2HeaderV3, "header_length", 28, ">I", 112),
    (VhdxHeader, "sequence_number", 8, "<Q", 7),
    (VhdxHeader, "log_guid", 48, "16s", b"L" * 16),
    (VhdxHeader, "version", 66, "<H", 1),
    (VhdxHeader, "log_offset", 72, "<Q", 1 << 20),
    (RegionTableHeader, "entry_count", 8, "<I", 2),
    (RegionTableEntry, "file_offset", 16, "<Q", 2 << 20),
    (RegionTableEntry, "required", 28, "<I", 1),
    (MetadataTableHeader, "entry_count", 10, "<H", 5),
    (MetadataTableEntry, "offset", 16, "<I", 65536),
    (MetadataTableEntry, "flags", 24, "<I", 4),
    (ParentLocatorHeader, "key_value_count", 18, "<H", 3),
    (TarHeader, "size", 124, "12s", b"00000001000\0"),
    (TarHeader, "typeflag", 156, "c", b"5"),
    (TarHeader, "magic", 257, "6s", b"ustar\0"),
])
def test_fields_lie_at_their_offsets(cls, field, offset, fmt, value):
    blank = cls.unpack(bytes(cls.SIZE))
    packed = dataclasses.replace(blank, **{field: value}).pack()
    assert struct.unpack_from(fmt, packed, offset)[0] == value


def test_qcow2_v3_and_compression_type_follow_the_v2_header():
    assert Qcow2Header.SIZE == Qcow2HeaderV3.OFFSET
    assert Qcow2HeaderV3.OFFSET + Qcow2HeaderV3.SIZE == Qcow2CompressionType.OFFSET
