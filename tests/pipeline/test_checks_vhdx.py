"""Each VHDX safety check alone: qemu-img's image passes it, the same with one structure made
hostile (CRCs fixed, unless the CRC is the point) is refused with the message the user sees."""

from __future__ import annotations

import struct
import uuid

import pytest

from tests.hostile import cases_vhdx
from tests.hostile.cases_vhdx import (BAT, FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, METADATA,
                                      VIRTUAL_DISK_SIZE, edit_regions, headers, metadata_items,
                                      set_item)
from tests.pipeline.checks_support import assert_policy_complete, refused
from vmimport.pipeline.formats import Limits, vhdx_checks as vc
from vmimport.pipeline.formats.structs import run_checks
from vmimport.pipeline.formats.vhdx_structs import PHYSICAL_SECTOR_SIZE

LIMITS = Limits()
KiB, MiB = 1 << 10, 1 << 20


def _vhdx(data: bytes) -> vc.VhdxImage:
    return vc.VhdxImage(data[: 320 * KiB], len(data), lambda at, n, what: data[at : at + n])


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("vhdx-checks")


def on_copy(edit):
    """`edit(bytearray)` applied to a copy of the image."""
    return lambda data: edit(bytearray(data))


def both_headers(edit_one):
    return on_copy(lambda d: headers(d, edit_one))


def regions_edit(edit_one):
    return on_copy(lambda d: edit_regions(d, edit_one))


def flip(*offsets):
    def edit(d: bytearray) -> bytes:
        for at in offsets:
            d[at] ^= 0x5A
        return bytes(d)
    return on_copy(edit)


def patched(at, fmt, value):
    def edit(d: bytearray) -> bytes:
        struct.pack_into(fmt, d, at, value)
        return bytes(d)
    return on_copy(edit)


def item(guid, fmt, value, at=0):
    return on_copy(lambda d: set_item(d, guid, fmt, value, at))


def metadata_entry(guid, new_guid=None, offset=None):
    """The metadata entry of item `guid` given another GUID or item offset."""
    def edit(d: bytearray) -> bytes:
        at = metadata_items(d)[guid][0]
        if new_guid is not None:
            d[at : at + 16] = new_guid.bytes_le
        if offset is not None:
            struct.pack_into("<I", d, at + 16, offset)
        return bytes(d)
    return on_copy(edit)


def region_field(guid, field_at, fmt, value):
    return regions_edit(lambda d, r: struct.pack_into(fmt, d, r[guid][0] + field_at, value))


def region_guid(guid, new_guid):
    return regions_edit(lambda d, r: d.__setitem__(slice(r[guid][0], r[guid][0] + 16),
                                                   new_guid.bytes_le))


OTHER = uuid.UUID("01234567-89AB-CDEF-0123-456789ABCDEF")

# (check, how the image is made hostile, the refusal says)
CASES = [
    (vc.check_file_signature, flip(0),
     "VHDX file type identifier at offset 0 lacks the 'vhdxfile' signature"),
    (vc.check_valid_header, flip(64 * KiB + 20, 128 * KiB + 20),
     "VHDX has no valid header: header at offset 65536 has CRC-32C"),
    (vc.check_valid_header, flip(64 * KiB, 128 * KiB),
     "header at offset 65536 lacks the 'head' signature; header at offset 131072 lacks"),
    (vc.check_valid_header, both_headers(lambda d, at: struct.pack_into("<H", d, at + 66, 2)),
     "header at offset 65536 has version 2; expected 1"),
    (vc.check_log_empty, both_headers(lambda d, at: d.__setitem__(slice(at + 48, at + 64),
                                                                  OTHER.bytes_le)),
     "VHDX log is not empty (header at offset 131072 names log "
     "01234567-89ab-cdef-0123-456789abcdef at offset"),
    (vc.check_valid_region_table, flip(192 * KiB + 40, 256 * KiB + 40),
     "VHDX has no valid region table: region table at offset 196608 has CRC-32C"),
    (vc.check_valid_region_table, regions_edit(lambda d, r: struct.pack_into(
        "<I", d, 192 * KiB + 8, 3000)),
     "region table at offset 196608 claims 3000 entries (at most 2047)"),
    (vc.check_region_entries, regions_edit(cases_vhdx._unknown_required_region),
     "is an unknown region marked required; this reader cannot honour it"),
    (vc.check_region_entries, region_guid(METADATA, BAT), "lists the region a second time"),
    (vc.check_region_entries, region_field(METADATA, 16, "<Q", 3 * MiB + 512),
     "start at or after 1 MiB and both values are multiples of 1 MiB"),
    (vc.check_region_entries, region_field(BAT, 16, "<Q", 1 << 40),
     "places it at offset 1099511627776, length 1048576, past the end of the file"),
    (vc.check_required_regions, region_guid(BAT, OTHER),
     "VHDX region table at offset 196608 has no BAT region"),
    (vc.check_required_regions, region_guid(METADATA, OTHER), "has no metadata region"),
    (vc.check_regions_apart,
     lambda d: regions_edit(lambda b, r: struct.pack_into("<Q", b, r[BAT][0] + 16,
                                                          r[METADATA][1]))(d),
     "places the BAT (offset 3145728) and the metadata (offset 3145728) over each other"),
    (vc.check_metadata_table, lambda d: flip(cases_vhdx.regions(d)[METADATA][1])(d),
     "lacks the 'metadata' signature"),
    (vc.check_metadata_table, lambda d: patched(cases_vhdx.regions(d)[METADATA][1] + 10,
                                                "<H", 3000)(d),
     "claims 3000 entries (at most 2047)"),
    (vc.check_metadata_entries, metadata_entry(PHYSICAL_SECTOR_SIZE, LOGICAL_SECTOR_SIZE),
     "lists the item a second time"),
    (vc.check_metadata_entries, metadata_entry(FILE_PARAMETERS, offset=4096),
     "places it at offset 4096 (length 8) of the 1048576-byte metadata region; items lie after "
     "the 64 KiB table"),
    (vc.check_not_differencing, item(FILE_PARAMETERS, "<I", 2, at=4),
     "VHDX file parameters item at offset"),
    (vc.check_block_size, item(FILE_PARAMETERS, "<I", 3 * MiB),
     "has a block size of 3145728 bytes; the format allows powers of two from 1 MiB to 256 MiB"),
    (vc.check_logical_sector_size, item(LOGICAL_SECTOR_SIZE, "<I", 1000),
     "says 1000 bytes; expected 512 or 4096"),
    (vc.check_logical_sector_size, metadata_entry(LOGICAL_SECTOR_SIZE, OTHER),
     "has no logical sector size item"),
    (vc.check_virtual_size, item(VIRTUAL_DISK_SIZE, "<Q", 1 << 50),
     "The disk image is too large: the VHDX virtual disk size item at offset"),
    (vc.check_virtual_size, item(VIRTUAL_DISK_SIZE, "<Q", 1000),
     "says 1000 bytes: not a positive multiple of the 512-byte logical sector size"),
    (vc.check_physical_sector_size, metadata_entry(PHYSICAL_SECTOR_SIZE, OTHER),
     "has no physical sector size item"),
    (vc.check_bat_region_size, item(VIRTUAL_DISK_SIZE, "<Q", 1 << 40),
     "is 1048576 bytes, too small for the 1048831 entries a 1099511627776-byte disk in "
     "1048576-byte blocks needs"),
]


@pytest.mark.parametrize("check,edit,message", CASES,
                         ids=[f"{c[0].__name__}-{n}" for n, c in enumerate(CASES)])
def test_check(tmp, check, edit, message):
    data = cases_vhdx.vhdx(tmp)
    check(_vhdx(data), LIMITS)  # qemu-img's image passes
    assert message in refused(check, _vhdx(edit(data)), LIMITS)


def test_unknown_required_item(tmp):
    vhdx = _vhdx(cases_vhdx._unknown_required_item(tmp))
    assert "is an unknown item marked required" in refused(vc.check_metadata_entries, vhdx,
                                                           LIMITS)


def test_differencing_names_the_parent(tmp):
    message = refused(vc.check_not_differencing, _vhdx(cases_vhdx.differencing(tmp)), LIMITS)
    assert "has the has-parent flag: this is a differencing disk" in message
    assert "absolute_win32_path='/etc/passwd'" in message and "never opens" in message


def test_qemu_image_passes_the_whole_policy(tmp):
    run_checks(vc.FILE_CHECKS + vc.METADATA_CHECKS + vc.ITEM_CHECKS,
               _vhdx(cases_vhdx.vhdx(tmp)), LIMITS)


def test_every_check_is_listed_and_tested():
    assert_policy_complete(vc, {c[0].__name__ for c in CASES})
