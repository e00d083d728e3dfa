"""Dynamic VHD, as `qemu-img convert -O vpc` and Hyper-V write it, front to back.

Layout: a copy of the footer, the dynamic disk header, the block allocation table (BAT), then
for each 2 MiB block that holds data its sector bitmap (all set) and its 2 MiB, then the footer.
The BAT can come first because which blocks hold data is known before any is read.

The footer's creator application is "win ": readers take the disk's size from "current size"
for it (qemu, Hyper-V, Azure), where for "vpc "/"qemu" qemu would round the size down to the
CHS geometry; the geometry is filled in as the specification computes it all the same.
"""

from __future__ import annotations

import struct
import uuid
from datetime import datetime, timezone

from .writers import DiskBlocks, Progress, Sink, zero_filled

SECTOR = 512
VHD_BLOCK = 2 * 1024 * 1024
_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
# Footer: cookie, features, version, data offset, timestamp, creator app, creator version,
# creator OS, original size, current size, geometry, disk type, checksum, unique id, saved
# state (the reader in vhd.py declares the same layout).
FOOTER = struct.Struct(">8sIIQI4sI4sQQIII16sB")
# Dynamic header: cookie, data offset, table offset, version, max table entries, block size,
# checksum, parent unique id, parent timestamp, reserved, parent unicode name.
DYNAMIC_HEADER = struct.Struct(">8sQQIIII16sI4s512s")
DISK_TYPE_DYNAMIC = 3
UNALLOCATED = 0xFFFFFFFF


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


def _with_checksum(layout: struct.Struct, fields: list, checksum_field: int, length: int) -> bytes:
    """Pack ``fields`` padded to ``length`` with the one's-complement checksum filled in."""
    fields = list(fields)
    fields[checksum_field] = 0
    raw = layout.pack(*fields).ljust(length, b"\0")
    fields[checksum_field] = ~sum(raw) & 0xFFFFFFFF
    return layout.pack(*fields).ljust(length, b"\0")


def footer(size: int, unique_id: bytes, when: datetime | None = None) -> bytes:
    stamp = int(((when or datetime.now(timezone.utc)) - _EPOCH).total_seconds())
    return _with_checksum(FOOTER, [
        b"conectix", 2, 0x00010000, SECTOR, stamp & 0xFFFFFFFF, b"win ", 0x000A0000, b"Wi2k",
        size, size, chs_geometry(size), DISK_TYPE_DYNAMIC, 0, unique_id, 0], 12, SECTOR)


def dynamic_header(entries: int) -> bytes:
    head = _with_checksum(DYNAMIC_HEADER, [
        b"cxsparse", 0xFFFFFFFFFFFFFFFF, 3 * SECTOR, 0x00010000, entries, VHD_BLOCK, 0,
        bytes(16), 0, bytes(4), bytes(512)], 6, 1024)
    return head


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
    bat = [UNALLOCATED] * entries
    for n, block in enumerate(used):
        bat[block] = (first_block + n * stride) // SECTOR
    tail = footer(size, uuid.uuid4().bytes)
    sink.write(tail)
    sink.write(dynamic_header(entries))
    sink.write(struct.pack(f">{entries}I", *bat).ljust(bat_bytes, b"\xff"))

    wanted = iter(allocated)
    pending = next(wanted, None)
    for block in used:
        sink.write(bitmap)
        base = block * per_vhd_block
        for index in range(base, base + per_vhd_block):
            if pending == index:
                sink.write(zero_filled(disk.read(index), disk.block_size))
                pending = next(wanted, None)
            else:
                sink.skip(disk.block_size)
        if on_progress is not None:
            on_progress(min(disk.size, (block + 1) * VHD_BLOCK))
    sink.write(tail)
    if on_progress is not None:
        on_progress(disk.size)
