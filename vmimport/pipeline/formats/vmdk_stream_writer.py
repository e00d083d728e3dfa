"""Stream-optimized VMDK, as vSphere exports it and AWS's ExportImage writes it, front to back.

Layout (VMware "Virtual Disk Format 5.0"; the reader is vmdk_stream.py): the sparse extent
header with the grain directory "at end", the text descriptor, then a grain marker and the
deflated data of every 64 KiB grain that holds anything but zeros, in increasing order; then
for every 32 MiB with data a grain-table marker and its table, the grain-directory marker and
the directory, the footer marker and the footer (the header with the directory's real place),
and the end-of-stream marker.

Grains are deflated on ``threads`` threads (libdeflate, which releases the GIL) in batches of a
snapshot block, at most ``2 * threads`` batches ahead of the writes: memory stays bounded
whatever the disk's size, and the deflating keeps both cores busy where qemu-img uses one.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import deflate

from .writers import DiskBlocks, Progress, Sink

SECTOR = 512
GRAIN_SECTORS = 128  # 64 KiB, as VMware and qemu write
GRAIN = GRAIN_SECTORS * SECTOR
GT_ENTRIES = 512
# SparseExtentHeader: magic, version, flags, capacity, grain size, descriptor offset and size,
# GTEs per GT, redundant GD offset, GD offset, overhead, unclean shutdown, the four newline
# detection characters, compress algorithm (vmdk_stream.py reads the same layout).
HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
FLAGS = 0x1 | 0x10000 | 0x20000  # newline detection, compressed grains, markers
GD_AT_END = 0xFFFFFFFFFFFFFFFF
MARKER = struct.Struct("<QII")  # sector count / LBA, size (0 for metadata), type
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
GRAIN_MARKER = struct.Struct("<QI")  # LBA, compressed size
LEVEL = 1  # libdeflate's fastest level: the bench compares its size and speed with qemu-img's
_ZERO_GRAIN = bytes(GRAIN)


def descriptor(capacity_sectors: int, cid: int) -> bytes:
    cylinders = min(65535, capacity_sectors // (255 * 63))
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        f"CID={cid:08x}\n"
        "parentCID=ffffffff\n"
        'createType="streamOptimized"\n'
        "\n"
        "# Extent description\n"
        f'RW {capacity_sectors} SPARSE "disk.vmdk"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        'ddb.virtualHWVersion = "4"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        'ddb.geometry.heads = "255"\n'
        'ddb.geometry.sectors = "63"\n'
        'ddb.adapterType = "lsilogic"\n'
    ).encode()


def header(capacity_sectors: int, descriptor_sectors: int, gd_offset: int) -> bytes:
    overhead = 1 + descriptor_sectors
    return HEADER.pack(b"KDMV", 3, FLAGS, capacity_sectors, GRAIN_SECTORS, 1,
                       descriptor_sectors, GT_ENTRIES, 0, gd_offset, overhead, 0,
                       b"\n \r\n", 1).ljust(SECTOR, b"\0")


def _padded(data: bytes | memoryview) -> bytes:
    return bytes(data) + bytes(-len(data) % SECTOR)


def _deflate_block(index: int, block: bytes, block_size: int) -> list[tuple[int, bytes]]:
    """(grain number, grain marker + deflated grain, sector padded) for a block's non-zero
    grains."""
    out = []
    first = index * block_size // GRAIN
    view = memoryview(block)
    for n in range(-(-len(block) // GRAIN)):
        grain = view[n * GRAIN:(n + 1) * GRAIN]
        if len(grain) < GRAIN:  # the disk's last, short grain
            grain = memoryview(bytes(grain) + bytes(GRAIN - len(grain)))
        if grain == _ZERO_GRAIN:
            continue
        packed = deflate.zlib_compress(grain, LEVEL)
        number = first + n
        out.append((number, _padded(GRAIN_MARKER.pack(number * GRAIN_SECTORS, len(packed)) +
                                    packed)))
    return out


def write_vmdk_stream(disk: DiskBlocks, sink: Sink, on_progress: Progress | None = None,
                      threads: int = 2) -> None:
    if disk.block_size % GRAIN:
        raise ValueError("the block size must be a multiple of the 64 KiB grain")
    capacity = -(-disk.size // GRAIN) * GRAIN_SECTORS  # whole grains, as VMware sizes them
    text = descriptor(capacity, int.from_bytes(os.urandom(4), "little") | 1)
    descriptor_sectors = -(-len(text) // SECTOR) + 1
    sink.write(header(capacity, descriptor_sectors, GD_AT_END))
    sink.write(text.ljust(descriptor_sectors * SECTOR, b"\0"))

    grain_places: dict[int, int] = {}  # grain number -> sector of its marker
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="vmdk-deflate") as pool:
        ahead: deque = deque()

        def drain_one() -> None:
            index, future = ahead.popleft()
            for number, record in future.result():
                grain_places[number] = sink.position // SECTOR
                sink.write(record)
            if on_progress is not None:
                on_progress(min(disk.size, (index + 1) * disk.block_size))

        for index in disk.allocated():
            ahead.append((index, pool.submit(_deflate_block, index, disk.read(index),
                                             disk.block_size)))
            if len(ahead) >= 2 * max(1, threads):
                drain_one()
        while ahead:
            drain_one()

    # Grain tables, each behind its marker, for every 32 MiB that has a grain.
    grains = capacity // GRAIN_SECTORS
    tables = -(-grains // GT_ENTRIES)
    table_sectors = GT_ENTRIES * 4 // SECTOR
    directory = [0] * tables
    for table in sorted({number // GT_ENTRIES for number in grain_places}):
        entries = [grain_places.get(table * GT_ENTRIES + i, 0) for i in range(GT_ENTRIES)]
        sink.write(MARKER.pack(table_sectors, 0, MARKER_GT).ljust(SECTOR, b"\0"))
        directory[table] = sink.position // SECTOR
        sink.write(struct.pack(f"<{GT_ENTRIES}I", *entries))
    directory_bytes = _padded(struct.pack(f"<{tables}I", *directory))
    sink.write(MARKER.pack(len(directory_bytes) // SECTOR, 0, MARKER_GD).ljust(SECTOR, b"\0"))
    gd_offset = sink.position // SECTOR
    sink.write(directory_bytes)
    sink.write(MARKER.pack(1, 0, MARKER_FOOTER).ljust(SECTOR, b"\0"))
    sink.write(header(capacity, descriptor_sectors, gd_offset))
    sink.write(bytes(SECTOR))  # end of stream
    if on_progress is not None:
        on_progress(disk.size)
