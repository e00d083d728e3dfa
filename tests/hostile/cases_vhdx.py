"""Hostile VHDXs: qemu-img's output with one structure damaged or made to lie.

Each case is (name, build(tmp_dir) -> image bytes, a substring the ClientError must contain).
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Callable

from dissect.util.hash.crc32c import crc32c

from . import qemu_image, spaced_raw

KiB, MiB = 1 << 10, 1 << 20
BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")


def vhdx(tmp: Path, *options: str, raw: bytes | None = None) -> bytes:
    raw = spaced_raw(9, fill=0.7, shortest=1) if raw is None else raw
    return qemu_image(tmp, "vhdx", *(options or ("-o", "block_size=1M")), raw=raw)


def fix_crc(data: bytearray, at: int, length: int) -> None:
    struct.pack_into("<I", data, at + 4, 0)
    struct.pack_into("<I", data, at + 4, crc32c(bytes(data[at : at + length])))


def regions(data: bytes) -> dict[uuid.UUID, tuple[int, int, int]]:
    """GUID -> (entry offset in the file, region offset, region length), from region table 1."""
    count = struct.unpack_from("<I", data, 192 * KiB + 8)[0]
    out = {}
    for n in range(count):
        at = 192 * KiB + 16 + 32 * n
        guid, offset, length, _ = struct.unpack_from("<16sQII", data, at)
        out[uuid.UUID(bytes_le=guid)] = (at, offset, length)
    return out


def edit_regions(data: bytearray, edit: Callable[[bytearray, dict], None]) -> bytes:
    """Apply `edit(data, regions)` to region table 1, copy it to table 2, fix both CRCs."""
    edit(data, regions(data))
    data[256 * KiB : 320 * KiB] = data[192 * KiB : 256 * KiB]
    fix_crc(data, 192 * KiB, 64 * KiB)
    fix_crc(data, 256 * KiB, 64 * KiB)
    return bytes(data)


def headers(data: bytearray, edit: Callable[[bytearray, int], None]) -> bytes:
    for at in (64 * KiB, 128 * KiB):
        edit(data, at)
        fix_crc(data, at, 4 * KiB)
    return bytes(data)


def metadata_items(data: bytes) -> dict[uuid.UUID, tuple[int, int, int]]:
    """item GUID -> (entry offset in the file, item offset in the file, length)."""
    meta = regions(data)[METADATA][1]
    count = struct.unpack_from("<H", data, meta + 10)[0]
    out = {}
    for n in range(count):
        guid, offset, length, _ = struct.unpack_from("<16sIII", data, meta + 32 + 32 * n)
        out[uuid.UUID(bytes_le=guid)] = (meta + 32 + 32 * n, meta + offset, length)
    return out


def set_item(data: bytearray, guid: uuid.UUID, fmt: str, value: int, at: int = 0) -> bytes:
    struct.pack_into(fmt, data, metadata_items(data)[guid][1] + at, value)
    return bytes(data)


def bat(data: bytes) -> int:
    return regions(data)[BAT][1]


def set_bat(data: bytearray, index: int, state: int, offset: int) -> bytes:
    struct.pack_into("<Q", data, bat(data) + 8 * index, (offset // MiB) << 20 | state)
    return bytes(data)


def bat_entry(data: bytes, index: int) -> int:
    return struct.unpack_from("<Q", data, bat(data) + 8 * index)[0]


def differencing(tmp: Path) -> bytes:
    """qemu's VHDX with the has-parent flag and a parent locator naming /etc/passwd."""
    data = bytearray(vhdx(tmp))
    meta = regions(data)[METADATA][1]
    count = struct.unpack_from("<H", data, meta + 10)[0]
    pairs = [("parent_linkage", "{" + str(uuid.uuid4()) + "}"),
             ("absolute_win32_path", "/etc/passwd"), ("relative_path", "..\\..\\etc\\passwd")]
    head = bytearray(VHDX_LOCATOR_TYPE.bytes_le + struct.pack("<HH", 0, len(pairs)))
    body = bytearray()
    base = len(head) + 12 * len(pairs)
    for key, value in pairs:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        head += struct.pack("<IIHH", base + len(body), base + len(body) + len(k), len(k), len(v))
        body += k + v
    locator = bytes(head + body)
    item_offset = 512 * KiB
    data[meta + item_offset : meta + item_offset + len(locator)] = locator
    struct.pack_into("<16sIII", data, meta + 32 + 32 * count, PARENT_LOCATOR.bytes_le,
                     item_offset, len(locator), 4)
    struct.pack_into("<H", data, meta + 10, count + 1)
    return set_item(data, FILE_PARAMETERS, "<I", 2 | 0, at=4)


def _flip(data: bytearray, at: int) -> bytes:
    data[at] ^= 0x5A
    return bytes(data)


def _unknown_required_region(d: bytearray, r: dict) -> None:
    count = struct.unpack_from("<I", d, 192 * KiB + 8)[0]
    struct.pack_into("<16sQII", d, 192 * KiB + 16 + 32 * count, uuid.uuid4().bytes_le,
                     64 * MiB, MiB, 1)
    struct.pack_into("<I", d, 192 * KiB + 8, count + 1)


def _unknown_required_item(tmp: Path) -> bytes:
    data = bytearray(vhdx(tmp))
    meta = regions(data)[METADATA][1]
    count = struct.unpack_from("<H", data, meta + 10)[0]
    struct.pack_into("<16sIII", data, meta + 32 + 32 * count, uuid.uuid4().bytes_le,
                     600 * KiB, 8, 4)
    struct.pack_into("<H", data, meta + 10, count + 1)
    return bytes(data)


def _first_present(data: bytes) -> int:
    return next(i for i in range(64) if bat_entry(data, i) & 7 == 6)


CASES: list[tuple[str, Callable[[Path], bytes], str]] = [
    ("vhdx-differencing-etc-passwd", differencing, "has the has-parent flag: this is a differencing"),
    ("vhdx-tiny", lambda t: b"vhdxfile" + bytes(1000), "VHDX image is 1008 bytes long"),
    ("vhdx-truncated-in-metadata", lambda t: (d := vhdx(t))[: regions(d)[METADATA][1] + 1000],
     "past the end of the file"),
    ("vhdx-truncated-data", lambda t: vhdx(t)[: -3 * MiB],
     "run past the end of the file"),
    ("vhdx-both-headers-bad-crc",
     lambda t: _flip(bytearray(_flip(bytearray(vhdx(t)), 64 * KiB + 20)), 128 * KiB + 20),
     "VHDX has no valid header: header at offset 65536 has CRC-32C"),
    ("vhdx-header-version-2", lambda t: headers(bytearray(vhdx(t)),
                                                lambda d, at: struct.pack_into("<H", d, at + 66, 2)),
     "has version 2; expected 1"),
    ("vhdx-dirty-log", lambda t: headers(bytearray(vhdx(t)), lambda d, at: d.__setitem__(
        slice(at + 48, at + 64), uuid.uuid4().bytes_le)),
     "VHDX log is not empty"),
    ("vhdx-both-region-tables-bad",
     lambda t: _flip(bytearray(_flip(bytearray(vhdx(t)), 192 * KiB + 40)), 256 * KiB + 40),
     "VHDX has no valid region table"),
    ("vhdx-region-outside-file", lambda t: edit_regions(bytearray(vhdx(t)), lambda d, r: struct.pack_into(
        "<Q", d, r[BAT][0] + 16, 1 << 40)), "past the end of the file"),
    ("vhdx-region-unaligned", lambda t: edit_regions(bytearray(vhdx(t)), lambda d, r: struct.pack_into(
        "<Q", d, r[METADATA][0] + 16, 3 * MiB + 512)), "multiples of 1 MiB"),
    ("vhdx-regions-overlap", lambda t: edit_regions(bytearray(vhdx(t)), lambda d, r: struct.pack_into(
        "<Q", d, r[BAT][0] + 16, r[METADATA][1])), "over each other"),
    ("vhdx-unknown-required-region", lambda t: edit_regions(bytearray(vhdx(t)), _unknown_required_region),
     "unknown region marked required"),
    ("vhdx-metadata-signature", lambda t: _flip(bytearray(d := vhdx(t)), regions(d)[METADATA][1]),
     "lacks the 'metadata' signature"),
    ("vhdx-unknown-required-item", _unknown_required_item, "unknown item marked required"),
    ("vhdx-differencing-names-parent", differencing, "absolute_win32_path='/etc/passwd'"),
    ("vhdx-huge-virtual-size", lambda t: set_item(bytearray(vhdx(t)), VIRTUAL_DISK_SIZE, "<Q", 1 << 50),
     "The disk image is too large"),
    ("vhdx-odd-virtual-size", lambda t: set_item(bytearray(vhdx(t)), VIRTUAL_DISK_SIZE, "<Q", 1000),
     "not a positive multiple of the 512-byte logical sector size"),
    ("vhdx-size-beyond-bat", lambda t: set_item(bytearray(vhdx(t)), VIRTUAL_DISK_SIZE, "<Q", 1 << 40),
     "too small for the"),
    ("vhdx-block-size-3mib", lambda t: set_item(bytearray(vhdx(t)), FILE_PARAMETERS, "<I", 3 * MiB),
     "has a block size of 3145728 bytes"),
    ("vhdx-sector-size-1000", lambda t: set_item(bytearray(vhdx(t)), LOGICAL_SECTOR_SIZE, "<I", 1000),
     "says 1000 bytes; expected 512 or 4096"),
    ("vhdx-bat-entry-outside-file", lambda t: set_bat(bytearray(vhdx(t)), 2, 6, 1 << 40),
     "VHDX BAT entry 2 (at offset"),
    ("vhdx-bat-entry-on-metadata", lambda t: set_bat(bytearray(d := vhdx(t)), 1, 6, regions(d)[METADATA][1]),
     "overlapping the metadata region"),
    ("vhdx-bat-entry-on-headers", lambda t: set_bat(bytearray(vhdx(t)), 1, 6, 0),
     "overlapping the headers and region tables"),
    ("vhdx-bat-entries-share-a-block",
     lambda t: set_bat(bytearray(d := vhdx(t)), 3, 6, (bat_entry(d, _first_present(d)) >> 20) * MiB),
     "blocks must not share bytes"),
    ("vhdx-bat-partially-present", lambda t: set_bat(bytearray(vhdx(t)), 0, 7, 0),
     "partially present"),
    ("vhdx-bat-unknown-state", lambda t: set_bat(bytearray(vhdx(t)), 0, 4, 0), "unknown state 4"),
]


def _bat_all_same_block(tmp: Path) -> bytes:
    """A 64 GiB disk whose every BAT entry names the one real block: a 'zip bomb' of reuse."""
    data = bytearray(vhdx(tmp))
    block = bat_entry(data, _first_present(data))
    set_item(data, VIRTUAL_DISK_SIZE, "<Q", 64 << 30)
    entries = 65536 + 65535 // 4096
    assert entries * 8 <= regions(data)[BAT][2]
    at = bat(data)
    data[at : at + entries * 8] = struct.pack("<Q", block) * entries
    return bytes(data)


CASES.append(("vhdx-bat-reuses-one-block-everywhere", _bat_all_same_block,
              "payload block present, more than the file's"))
