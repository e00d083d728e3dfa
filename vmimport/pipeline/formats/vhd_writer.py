"""Dynamic VHD, as `qemu-img convert -O vpc` and Hyper-V write it, front to back.

Layout: a copy of the footer, the dynamic disk header, the block allocation table (BAT), then
for each 2 MiB block that holds data its sector bitmap (all set) and its 2 MiB, then the footer.
The BAT can come first because which blocks hold data is known before any is read.

The footer's creator application is "win ": readers take the disk's size from "current size"
for it (qemu, Hyper-V, Azure), where for "vpc "/"qemu" qemu would round the size down to the
CHS geometry; the geometry is filled in as the specification computes it all the same.
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
from datetime import datetime, timezone

from .vhd_structs import (DYNAMIC, FOOTER_COOKIE, HEADER_COOKIE, NOT_ALLOCATED, DynamicHeader,
                          VhdFooter, checksum)
from .writers import DiskBlocks, Progress, Sink, read_ahead, zero_filled

SECTOR = 512
VHD_BLOCK = 2 * 1024 * 1024
_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def chs_geometry(size: int) -> int:
    """Cylinders, heads and sectors per track packed as the footer holds them (VHD spec)."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cylinder_heads = total // spt
    else:
        spt = 17
        cylinder_heads = total // spt
        heads = max(4, (cylinder_heads + 1023) // 1024)
        if cylinder_heads >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cylinder_heads = total // spt
        if cylinder_heads >= heads * 1024:
            spt, heads = 63, 16
            cylinder_heads = total // spt
    return ((cylinder_heads // heads) << 16) | (heads << 8) | spt


def _sealed(structure):
    """The structure packed with its one's-complement checksum filled in."""
    raw = structure.pack()
    return dataclasses.replace(structure, checksum=checksum(raw, structure.CHECKSUM_AT)).pack()


def footer(size: int, unique_id: bytes, when: datetime | None = None) -> bytes:
    stamp = int(((when or datetime.now(timezone.utc)) - _EPOCH).total_seconds())
    return _sealed(VhdFooter(
        cookie=FOOTER_COOKIE, features=2, version=0x00010000, data_offset=SECTOR,
        timestamp=stamp & 0xFFFFFFFF, creator_app=b"win ", creator_version=0x000A0000,
        creator_os=b"Wi2k", original_size=size, current_size=size,
        geometry=chs_geometry(size), disk_type=DYNAMIC, checksum=0, unique_id=unique_id,
        saved_state=0, reserved=bytes(427)))


def dynamic_header(entries: int) -> bytes:
    return _sealed(DynamicHeader(
        cookie=HEADER_COOKIE, data_offset=0xFFFFFFFFFFFFFFFF, table_offset=3 * SECTOR,
        header_version=0x00010000, max_table_entries=entries, block_size=VHD_BLOCK,
        checksum=0, parent_unique_id=bytes(16), parent_timestamp=0, reserved=bytes(4),
        parent_unicode_name=bytes(512), parent_locators=bytes(192), reserved2=bytes(256)))


def write_vhd(disk: DiskBlocks, sink: Sink, on_progress: Progress | None = None) -> None:
    size = -(-disk.size // SECTOR) * SECTOR
    per_vhd_block = VHD_BLOCK // disk.block_size
    entries = -(-size // VHD_BLOCK)
    allocated = disk.allocated()
    used = sorted({index // per_vhd_block for index in allocated})
    bat_bytes = -(-entries * 4 // SECTOR) * SECTOR
    first_block = 3 * SECTOR + bat_bytes
    bitmap = b"\xff" * SECTOR  # 4,096 sectors a block: 512 bytes of bitmap, all present
    stride = SECTOR + VHD_BLOCK
    bat = [NOT_ALLOCATED] * entries
    for n, block in enumerate(used):
        bat[block] = (first_block + n * stride) // SECTOR
    tail = footer(size, uuid.uuid4().bytes)
    sink.write(tail)
    sink.write(dynamic_header(entries))
    sink.write(struct.pack(f">{entries}I", *bat).ljust(bat_bytes, b"\xff"))

    wanted = read_ahead(disk, allocated)
    pending = next(wanted, None)
    for block in used:
        sink.write(bitmap)
        base = block * per_vhd_block
        for index in range(base, base + per_vhd_block):
            if pending is not None and pending[0] == index:
                sink.write(zero_filled(pending[1], disk.block_size))
                pending = next(wanted, None)
            else:
                sink.skip(disk.block_size)
        if on_progress is not None:
            on_progress(min(disk.size, (block + 1) * VHD_BLOCK))
    sink.write(tail)
    if on_progress is not None:
        on_progress(disk.size)
