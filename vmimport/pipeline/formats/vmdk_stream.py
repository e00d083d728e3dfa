"""Streaming reader for streamOptimized VMDK, the format vSphere/ovftool export and OVAs carry.

Why a reader of our own: a streamOptimized VMDK is a sequence of independently deflated
grains, each behind a marker that names its LBA, so it can be read strictly front to back
(from S3 or a pipe, no temporary file) and the grains inflated in parallel (BENCHMARKS.md has
the figures against `qemu-img convert`), and every structure is checked before it is trusted.

Layout: a 512-byte SparseExtentHeader at 0 (`KDMV`), an embedded text descriptor, then from
sector `overHead` on a sequence of sector-aligned markers:
  grain marker:    u64 LBA, u32 compressed size (> 0), zlib data, padded to 512
  metadata marker: u64 sector count, u32 0, u32 type (0 EOS, 1 GT, 2 GD, 3 footer), padded to
                   512, followed by `sector count` sectors of metadata.
VMware writes GT/GD markers, a footer (a copy of the header whose gdOffset is real, the one at 0
then holding GD_AT_END) and an EOS marker. qemu 7.2 writes only grains, keeps its grain directory
and tables in the metadata area before the first grain (header gdOffset is real), and often no
EOS marker at all: the stream just ends. Such a stream is accepted only if its grain tables
account for exactly the grains that were read, none of them past the end of the file — so a
truncation at a grain boundary is still caught. Grain-table markers inside a stream are not
needed to read it, so they are skipped; the footer is checked against the header. The header
rules are listed in `vmdk_checks`.
"""

from __future__ import annotations

import array
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, GuestDisk, Limits
from .cursor import ByteCursor
from .structs import run_checks
from .vmdk_checks import (DESCRIPTOR_CHECKS, FOOTER_CHECKS, STREAM_HEADER_CHECKS,
                          STREAM_LAYOUT_CHECKS, STREAM_TABLE_CHECKS, EmbeddedDescriptor, Extent,
                          check_footer_matches)
from .vmdk_descriptor import parse_descriptor
from .vmdk_grains import GrainRun, inflate_batch
from .vmdk_structs import (GD_AT_END, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT,
                           MARKER_PROGRESS, GrainMarker, MetadataMarker, SparseExtentHeader)

# Unpacked without building objects: there is one marker per grain.
_GRAIN_MARKER = GrainMarker.FORMAT
CHUNK = 4 << 20  # source read size
BATCH_GRAINS = 32  # grains per inflate task: amortises the thread hand-off
BATCH_BYTES = 1 << 20  # ... or this much compressed data, whichever comes first
TABLE_RUN = 1 << 20  # bytes of adjacent grain tables read at once at most (512 of qemu's)
_ZERO_RUN = bytes(TABLE_RUN)


class StreamOptimizedVmdk(GuestDisk):
    format = "VMDK"

    def __init__(self, source, limits: Limits):
        super().__init__()
        self._source = source
        self._limits = limits
        head = source.read_at(0, SECTOR)
        if len(head) < SECTOR:
            raise ImportFailure(
                f"{CORRUPTED} VMDK header ends at byte {len(head)}: the file is only "
                f"{source.size} bytes long and a sparse extent header is {SECTOR} bytes"
            )
        header = self.header = SparseExtentHeader.unpack(head)
        extent = Extent(header, "VMDK header at offset 0", source.size)
        run_checks(STREAM_HEADER_CHECKS, extent, limits)
        self.capacity, self.grain_sectors = header.capacity, header.grain_size
        self.overhead = header.overhead
        self.virtual_size = header.capacity * SECTOR
        desc_off, desc_size = header.descriptor_offset, header.descriptor_size
        raw = source.read_at(desc_off * SECTOR, desc_size * SECTOR)
        if len(raw) < desc_size * SECTOR:
            raise ImportFailure(
                f"{CORRUPTED} VMDK embedded descriptor (bytes {desc_off * SECTOR}-"
                f"{(desc_off + desc_size) * SECTOR}) runs past the end of the file at byte "
                f"{desc_off * SECTOR + len(raw)}"
            )
        run_checks(STREAM_LAYOUT_CHECKS, extent, limits)
        run_checks(DESCRIPTOR_CHECKS, EmbeddedDescriptor(
            parse_descriptor(raw, desc_off * SECTOR), "streamOptimized", header.capacity,
            desc_off * SECTOR))
        self._consumed = SECTOR + desc_size * SECTOR

    # -- streaming -------------------------------------------------------------------------

    def extents(self) -> Iterator[tuple[int, memoryview]]:
        """Inflate grains on a thread pool, yielding them in file order.

        At most `2 * inflate_threads` batches are in flight, so memory stays at a few MiB per
        thread whatever the image size. If the parser meets an error, the grains before it are
        still delivered first (an earlier inflate error wins), so the failure names the first
        fault in file order.
        """
        threads = max(1, self._limits.inflate_threads)
        window = 2 * threads
        start = self.overhead * SECTOR
        cursor = ByteCursor(self._source.stream(start, CHUNK), start)
        pool = ThreadPoolExecutor(threads, thread_name_prefix="vmdk-inflate")
        pending: deque = deque()
        try:
            error = None
            try:
                for batch in self._batches(cursor):
                    pending.append(pool.submit(inflate_batch, batch, self.grain_sectors * SECTOR))
                    while len(pending) >= window:
                        yield from pending.popleft().result()
            except ImportFailure as exc:
                error = exc
            while pending:
                yield from pending.popleft().result()
            if error is not None:
                raise error
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def deferred_extents(self) -> Iterator[tuple[int, GrainRun]]:
        """The grains not inflated: a ``GrainRun`` per run of grains that follow each other
        on the guest disk, for the block writer to inflate on its own threads (see
        ``vmdk_grains``). The markers are walked and checked here as in ``extents()``; a grain
        that does not inflate is found by the writer, which reports the first fault in file
        order."""
        grain_sectors, grain_bytes = self.grain_sectors, self.grain_sectors * SECTOR
        start = self.overhead * SECTOR
        for batch in self._batches(ByteCursor(self._source.stream(start, CHUNK), start)):
            first = 0
            for n in range(1, len(batch) + 1):
                if n == len(batch) or batch[n][0] != batch[n - 1][0] + grain_sectors:
                    yield batch[first][0] * SECTOR, GrainRun.of(batch[first:n], grain_bytes,
                                                                 self)
                    first = n

    def _batches(self, cursor: ByteCursor) -> Iterator[list]:
        """Walk the markers, checking each, and group grains into inflate batches.

        On a fault, the grains already parsed are handed on before the error is raised.
        """
        batch: list = []
        try:
            yield from self._walk(cursor, batch)
        except ImportFailure:
            if batch:
                yield batch
            raise

    def _walk(self, cursor: ByteCursor, batch: list) -> Iterator[list]:
        grain_bytes = self.grain_sectors * SECTOR
        capacity = self.capacity
        # deflate never expands data by more than ~0.1%; anything far beyond is a lie that
        # would only make us buffer garbage.
        max_compressed = grain_bytes + grain_bytes // 8 + 4096
        previous = -1
        batch_bytes = 0
        grains = 0
        while True:
            at = cursor.offset
            self._consumed = cursor.received
            head = cursor.take(12)
            if not head and self.header.gd_offset != GD_AT_END:
                self._check_tables(grains, at)  # qemu's end: no EOS marker
                if batch:
                    yield batch[:]
                    batch.clear()
                return
            if len(head) < 12:
                raise self._truncated(cursor, at, "a marker" if head else None)
            lba, size = _GRAIN_MARKER.unpack_from(head)
            if size == 0:
                rest = cursor.take(SECTOR - 12)
                if len(rest) < SECTOR - 12:
                    raise self._truncated(cursor, at, "a metadata marker")
                kind = MetadataMarker.unpack(bytes(head) + bytes(rest)).kind
                if kind == MARKER_EOS:
                    if batch:
                        yield batch[:]
                        batch.clear()
                    self._consumed = cursor.received
                    return
                self._metadata(cursor, at, kind, lba)
                continue
            if lba % self.grain_sectors or lba >= capacity or lba <= previous:
                raise ImportFailure(self._bad_lba(lba, at, previous))
            if size > max_compressed:
                raise ImportFailure(
                    f"{CORRUPTED} VMDK grain marker at file offset {at} (LBA {lba}) claims "
                    f"{size} compressed bytes; a {grain_bytes}-byte grain never needs more "
                    f"than {max_compressed}"
                )
            data = cursor.take(size)
            if len(data) < size:
                raise self._truncated(cursor, at, f"the grain at LBA {lba} ({size} compressed "
                                                  "bytes)")
            cursor.skip(-(12 + size) % SECTOR)
            previous = lba
            grains += 1
            expected = min(grain_bytes, (capacity - lba) * SECTOR)
            batch.append((lba, at, data, expected))
            batch_bytes += size
            if len(batch) >= BATCH_GRAINS or batch_bytes >= BATCH_BYTES:
                yield batch[:]
                batch.clear()
                batch_bytes = 0

    def _check_tables(self, grains: int, end: int) -> None:
        """A stream that ends without EOS is complete only if the grain directory and tables
        (in the metadata area, where qemu keeps them) list exactly ``grains`` grains, all of
        them before ``end``. Memory: one grain table at a time."""
        gd_offset, gtes_per_gt = self.header.gd_offset, self.header.gtes_per_gt
        extent = Extent(self.header, "VMDK header at offset 0", self._source.size)
        run_checks(STREAM_TABLE_CHECKS, extent, self._limits)
        tables = extent.grain_tables
        gd = self._source.read_at(gd_offset * SECTOR, tables * 4)
        if len(gd) < tables * 4:
            raise self._truncated_tables("grain directory", gd_offset * SECTOR, end)
        listed = 0
        end_sector = end // SECTOR
        table_bytes = gtes_per_gt * 4
        directory = array.array("I", gd)
        if sys.byteorder != "little":
            directory.byteswap()
        # qemu writes the tables back to back: read runs of adjacent tables in one go (a 1 TiB
        # disk has 32,768 of them), pass over empty runs with a memcmp, and count/check the
        # entries of the others with array operations, not a loop (max() over every entry of
        # a 1 TiB disk's 64 MiB of tables took 0.25 s).
        wanted = sorted((gt, n) for n, gt in enumerate(directory) if gt)
        i = 0
        while i < len(wanted):
            j = i + 1
            while (j < len(wanted) and (j - i + 1) * table_bytes <= TABLE_RUN
                   and wanted[j][0] * SECTOR == wanted[j - 1][0] * SECTOR + table_bytes):
                j += 1
            first_sector, first_n = wanted[i]
            run = self._source.read_at(first_sector * SECTOR, (j - i) * table_bytes)
            if len(run) < (j - i) * table_bytes:
                raise self._truncated_tables(f"grain table {first_n}", first_sector * SECTOR,
                                             end)
            if _ZERO_RUN.startswith(run):
                i = j
                continue
            entries = array.array("I", run)
            if sys.byteorder != "little":
                entries.byteswap()
            listed += len(entries) - entries.count(0)
            if entries and max(entries) >= end_sector:
                at = next(k for k, e in enumerate(entries) if e >= end_sector)
                n = wanted[i + at // gtes_per_gt][1]
                raise ImportFailure(
                    f"{CORRUPTED} VMDK stream ends at byte {end} without an end-of-stream "
                    f"marker, and grain table {n} lists a grain at byte {entries[at] * SECTOR}, "
                    "past that end: the image was cut short")
            i = j
        if listed != grains:
            raise ImportFailure(
                f"{CORRUPTED} VMDK stream ends at byte {end} without an end-of-stream marker "
                f"after {grains} grains, but its grain tables (directory at offset "
                f"{gd_offset * SECTOR}) list {listed}: the image is cut short or damaged")

    def _truncated_tables(self, what: str, offset: int, end: int) -> ImportFailure:
        return ImportFailure(f"{CORRUPTED} VMDK stream ends at byte {end} without an "
                             f"end-of-stream marker, and its {what} at offset {offset} is not "
                             "readable: the image is cut short or damaged")

    def _metadata(self, cursor: ByteCursor, at: int, kind: int, sectors: int) -> None:
        """Skip grain tables/directories; check the footer against the header."""
        if kind in (MARKER_GT, MARKER_GD, MARKER_PROGRESS):
            name = {MARKER_GT: "grain table", MARKER_GD: "grain directory"}.get(kind, "progress")
            if cursor.skip(sectors * SECTOR) < sectors * SECTOR:
                raise self._truncated(cursor, at, f"the {name} of {sectors} sectors")
            return
        if kind != MARKER_FOOTER:
            raise ImportFailure(
                f"{CORRUPTED} VMDK metadata marker at file offset {at} has unknown type {kind} "
                "(known: 0 end-of-stream, 1 grain table, 2 grain directory, 3 footer)"
            )
        if sectors != 1:
            raise ImportFailure(f"{CORRUPTED} VMDK footer marker at file offset {at} announces "
                                f"{sectors} sectors; a footer is 1 sector")
        footer = cursor.take(SECTOR)
        if len(footer) < SECTOR:
            raise self._truncated(cursor, at, "the footer")
        extent = Extent(SparseExtentHeader.unpack(footer), f"VMDK footer at offset {at + SECTOR}",
                        self._source.size)
        run_checks(FOOTER_CHECKS, extent, self._limits)
        check_footer_matches(extent, self.header)

    def _bad_lba(self, lba: int, at: int, previous: int) -> str:
        where = f"{CORRUPTED} VMDK grain marker at file offset {at} names LBA {lba}"
        if lba >= self.capacity:
            return f"{where}, beyond the disk's capacity of {self.capacity} sectors"
        if lba % self.grain_sectors:
            return f"{where}, not aligned to the grain size of {self.grain_sectors} sectors"
        return (f"{where}, not after the previous grain's LBA {previous} (grains must come in "
                "increasing LBA order)")

    def _truncated(self, cursor: ByteCursor, at: int, inside: str | None) -> ImportFailure:
        end = cursor.offset
        where = f" inside {inside} that starts at file offset {at}" if inside else ""
        return ImportFailure(
            f"{CORRUPTED} VMDK stream ends at byte {end}{where} without an end-of-stream marker "
            f"(the image is {self._source.size} bytes; was the upload cut short?)"
        )
