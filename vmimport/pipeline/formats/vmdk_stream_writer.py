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

from .vmdk_structs import (COMPRESS_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, GD_AT_END, MAGIC,
                           MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, GrainMarker,
                           MetadataMarker, SparseExtentHeader)
from .writers import DiskBlocks, Progress, Sink

SECTOR = 512
GRAIN_SECTORS = 128  # 64 KiB, as VMware and qemu write
GRAIN = GRAIN_SECTORS * SECTOR
GT_ENTRIES = 512
NEWLINE_DETECTION = 0x1
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
    return SparseExtentHeader(
        magic=MAGIC, version=3, flags=NEWLINE_DETECTION | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity=capacity_sectors, grain_size=GRAIN_SECTORS, descriptor_offset=1,
        descriptor_size=descriptor_sectors, gtes_per_gt=GT_ENTRIES, rgd_offset=0,
        gd_offset=gd_offset, overhead=1 + descriptor_sectors, unclean_shutdown=0,
        line_chars=b"\n \r\n", compress_algorithm=COMPRESS_DEFLATE, pad=bytes(433)).pack()


def marker(kind: int, sectors: int) -> bytes:
    return MetadataMarker(sectors=sectors, size=0, kind=kind, pad=bytes(496)).pack()


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
        out.append((number, _padded(GrainMarker.FORMAT.pack(number * GRAIN_SECTORS,
                                                            len(packed)) + packed)))
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
        sink.write(marker(MARKER_GT, table_sectors))
        directory[table] = sink.position // SECTOR
        sink.write(struct.pack(f"<{GT_ENTRIES}I", *entries))
    directory_bytes = _padded(struct.pack(f"<{tables}I", *directory))
    sink.write(marker(MARKER_GD, len(directory_bytes) // SECTOR))
    gd_offset = sink.position // SECTOR
    sink.write(directory_bytes)
    sink.write(marker(MARKER_FOOTER, 1))
    sink.write(header(capacity, descriptor_sectors, gd_offset))
    sink.write(marker(MARKER_EOS, 0))
    if on_progress is not None:
        on_progress(disk.size)
