"""Reader for qcow2 (QEMU/KVM/OpenStack), versions 2 and 3, with zlib or zstd compressed clusters.

Layout (qemu's docs/interop/qcow2.txt, big-endian): a header at 0 (`QFI\\xfb`), header
extensions after it, an L1 table (one u64 per L2 table), L2 tables (one u64 per cluster), data
clusters and refcount tables. An L2 entry is either 0 (unallocated), a standard cluster (host
offset in bits 9-55, bit 0 = reads as zeros) or a compressed cluster (bit 62; host offset and
sector count packed by cluster size), whose bytes inflate to exactly one cluster.

What is refused, never followed (the rules are listed in `qcow2_checks`): a backing file (the
image holds only changes to a file named inside it), an external data file, encryption, a
header qemu marked corrupt and unknown incompatible features. Extended L2 entries (32
subclusters per cluster, each allocated, zero or unallocated) are read. The dirty bit is
accepted: it says only that refcounts may be stale, and this reader never uses refcounts. Internal snapshots are ignored;
only the active L1 table is read.

Only the active L1/L2 tables are walked, so unallocated and zero clusters cost nothing. Every
table and cluster must be aligned and inside the file, and no two may share a host cluster
(so a small file cannot claim more data than it holds, and tables cannot loop). Standard
clusters that follow each other in the file are fetched in one large read; compressed clusters
are read the same way and inflated on a thread pool (zlib via libdeflate, zstd via zstandard;
both release the GIL), in order, each bounded to one cluster of output.
"""

from __future__ import annotations

import threading
import zlib
from typing import Iterator

from ..errors import ImportFailure
from .base import BAD_LENGTH, CORRUPTED, SECTOR, GuestDisk, Limits
from .ordered import inflate_in_order
from .qcow2_checks import HEADER_CHECKS, IMAGE_CHECKS, Qcow2Image
from .qcow2_structs import L1_OFFSET, L2_COMPRESSED, L2_ZERO, ZSTD, Qcow2Header
from .ranges import join_runs, read_pieces, table, without_holes
from .structs import run_checks

try:  # libdeflate: ~3x stdlib zlib
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - declared dependency
    _libdeflate = None
try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - declared dependency
    _zstd = None

HEAD = 64 << 10  # read first; the rest of a larger first cluster (header extensions) after


class Qcow2(GuestDisk):
    format = "QCOW2"

    def __init__(self, source, limits: Limits):
        super().__init__()
        self._source, self._limits = source, limits
        self._size = size = source.size
        if size < Qcow2Header.SIZE:
            raise ImportFailure(f"{CORRUPTED} qcow2 image is {size} bytes long; its header alone "
                                f"is {Qcow2Header.SIZE} bytes")
        head = source.read_at(0, min(size, HEAD))
        self._consumed = len(head)
        header = Qcow2Header.unpack(head)
        run_checks(HEADER_CHECKS, Qcow2Image(header, head, size), limits)
        self._bits = header.cluster_bits
        cluster = self._cluster = 1 << header.cluster_bits
        if cluster > len(head) and size > len(head):  # header extensions may use the whole cluster
            head += source.read_at(len(head), cluster - len(head))
            self._consumed = len(head)
        image = Qcow2Image(header, head[:cluster], size)
        run_checks(IMAGE_CHECKS, image, limits)
        self._compression = image.compression_type
        self._extended = image.extended_l2
        self.virtual_size = header.size
        self._l2_entries = image.l2_entries
        needed, l1_at = image.l1_entries_needed, header.l1_table_offset
        raw = source.read_at(l1_at, needed * 8)
        self._consumed += len(raw)
        self._l1 = table(raw, "Q", big_endian=True)
        self._l1_at = l1_at
        # One bit per host cluster: header, L1, L2 tables and data clusters each own theirs.
        self._used = bytearray(-(-size // cluster) // 8 + 1)
        self._claim(0, "the header", 0)
        for n in range(-(-needed * 8 // cluster)):
            self._claim(l1_at + n * cluster, "the L1 table", l1_at)

    # -- walking the tables ----------------------------------------------------------------

    def _claim(self, offset: int, what: str, where: int) -> None:
        index = offset >> self._bits
        byte, bit = index >> 3, 1 << (index & 7)
        if self._used[byte] & bit:
            raise ImportFailure(
                f"{CORRUPTED} qcow2 {what} (entry at offset {where}) uses the host cluster at "
                f"offset {offset}, which another table or cluster already uses: tables overlap "
                "or loop")
        self._used[byte] |= bit

    def _clusters(self) -> Iterator[tuple[int, int, tuple]]:
        """(file offset, length, (guest offset, compressed?, guest length)) in guest order."""
        cluster, bits, size, vsize = self._cluster, self._bits, self._size, self.virtual_size
        per_l2, ext = self._l2_entries, self._extended
        entry_size = 16 if ext else 8
        shift = 62 - (bits - 8)  # compressed: offset in bits 0..shift-1, sectors above
        offset_mask, sectors_mask = (1 << shift) - 1, (1 << (bits - 8)) - 1
        empty = bytes(cluster)
        for n, entry in enumerate(self._l1):
            l2_at = entry & L1_OFFSET
            where = self._l1_at + 8 * n
            if not l2_at:
                continue
            if l2_at % cluster or l2_at + cluster > size:
                raise ImportFailure(
                    f"{CORRUPTED} qcow2 L1 entry {n} (at offset {where}) places an L2 table at "
                    f"offset {l2_at}: not cluster-aligned or past the end of the file at byte "
                    f"{size}")
            self._claim(l2_at, f"L2 table {n}", where)
            raw = self._source.read_at(l2_at, cluster)
            self._consumed += len(raw)
            if raw == empty:
                continue
            base = n * per_l2 * cluster
            entries = table(raw, "Q", big_endian=True)
            pairs = zip(entries[0::2], entries[1::2]) if ext else ((e, 0) for e in entries)
            for m, (entry, bitmap) in enumerate(pairs):
                if not entry and not bitmap:
                    continue
                guest = base + m * cluster
                if guest >= vsize:
                    break
                length = min(cluster, vsize - guest)
                at = l2_at + entry_size * m
                if entry & L2_COMPRESSED and bitmap:
                    raise ImportFailure(
                        f"{CORRUPTED} qcow2 extended L2 entry {m} of table {n} (at offset {at}) "
                        f"describes a compressed cluster but has subcluster bits 0x{bitmap:016x}")
                if entry & L2_COMPRESSED:
                    host = entry & offset_mask
                    csize = ((entry >> shift) & sectors_mask) + 1
                    csize = csize * SECTOR - (host & (SECTOR - 1))
                    if host >= size:
                        raise ImportFailure(
                            f"{CORRUPTED} qcow2 L2 entry {m} of table {n} (at offset {at}) places "
                            f"a compressed cluster at offset {host}, past the end of the file at "
                            f"byte {size}")
                    index = host >> bits
                    if self._used[index >> 3] & (1 << (index & 7)):
                        raise ImportFailure(
                            f"{CORRUPTED} qcow2 L2 entry {m} of table {n} (at offset {at}) places "
                            f"a compressed cluster at offset {host}, inside a host cluster that a "
                            "table or an uncompressed cluster uses")
                    yield host, min(csize, size - host), (guest, True, length, at)
                    continue
                if ext:
                    yield from self._subclusters(entry, bitmap, guest, length, at, f"{m} of table {n}")
                    continue
                if entry & L2_ZERO:
                    continue  # reads as zeros (v3), whether or not space is preallocated
                host = entry & L1_OFFSET
                if not host:
                    continue
                self._check_data(host, length, at, f"{m} of table {n}", guest)
                yield host, length, (guest, False, length, at)

    def _check_data(self, host: int, length: int, at: int, entry: str, guest: int) -> None:
        if host % self._cluster or host + length > self._size:
            raise ImportFailure(
                f"{CORRUPTED} qcow2 L2 entry {entry} (at offset {at}) places a data cluster at "
                f"offset {host}: not cluster-aligned or past the end of the file at byte "
                f"{self._size}")
        self._claim(host, f"data cluster for guest offset {guest}", at)

    def _subclusters(self, entry: int, bitmap: int, guest: int, length: int, at: int,
                     name: str) -> Iterator[tuple[int, int, tuple]]:
        """An extended L2 entry: 32 subclusters, each allocated (bits 0-31), reading as zeros
        (bits 32-63) or unallocated (neither: zeros too, as there is no backing file)."""
        allocated, zero = bitmap & 0xFFFFFFFF, bitmap >> 32
        if allocated & zero or entry & L2_ZERO:
            raise ImportFailure(
                f"{CORRUPTED} qcow2 extended L2 entry {name} (at offset {at}) has subcluster bits "
                f"0x{bitmap:016x} and descriptor 0x{entry:016x}: a subcluster is both allocated "
                "and zero, or the reserved bit 0 is set")
        if not allocated:
            return
        host = entry & L1_OFFSET
        if not host:
            raise ImportFailure(
                f"{CORRUPTED} qcow2 extended L2 entry {name} (at offset {at}) marks subclusters "
                "allocated but names no host cluster")
        sub = self._cluster // 32
        runs, first = [], None
        for x in range(33):
            bit = x < 32 and allocated >> x & 1
            if bit and first is None:
                first = x
            elif not bit and first is not None:
                runs.append((first * sub, min(x * sub, length)))
                first = None
        needed = max(hi for _, hi in runs)
        self._check_data(host, needed, at, name, guest)
        for lo, hi in runs:
            if lo < hi:
                yield host + lo, hi - lo, (guest + lo, False, hi - lo, at)

    # -- data ------------------------------------------------------------------------------

    def extents(self) -> Iterator[tuple[int, memoryview | bytes]]:
        """Clusters in guest order; compressed ones are inflated on a pool meanwhile."""
        inflate = _inflate_zstd if self._compression == ZSTD else _inflate_zlib
        cluster = self._cluster

        def account(n: int) -> None:
            self._consumed += n

        def items():
            for (guest, compressed, length, at), view in read_pieces(
                    self._source, join_runs(self._clusters(), _plain, _joined), self._short,
                    account,
                    defer=lambda tag: not tag[1]):  # plain clusters: the writer reads them
                if compressed:
                    yield guest, view, True, (length, at)
                    continue
                for start, data in without_holes(guest, view):
                    yield start, data, False, None

        def run(guest: int, data, extra) -> memoryview:
            length, at = extra
            return memoryview(inflate(data, cluster, guest, at))[:length]

        yield from inflate_in_order(items(), run, self._limits.inflate_threads, "qcow2-inflate")

    def _short(self, piece, got_end: int) -> ImportFailure:
        offset, length, (guest, compressed, _, at) = piece
        kind = "compressed cluster" if compressed else "data cluster"
        return ImportFailure(f"{CORRUPTED} qcow2 {kind} for guest offset {guest} (L2 entry at "
                             f"offset {at}) at file offset {offset} ends at byte {got_end}: the "
                             "file shrank while it was read")


def _plain(tag: tuple) -> bool:
    return not tag[1]


def _joined(tag: tuple, length: int) -> tuple:
    """The tag of a run of plain clusters: its first cluster's guest offset and L2 entry."""
    return tag[0], False, length, tag[3]


def _where(guest: int, at: int, n: int) -> str:
    return f"qcow2 compressed cluster for guest offset {guest} (L2 entry at offset {at}, {n} bytes)"


def _inflate_zlib(data, cluster: int, guest: int, at: int) -> bytes:
    """Raw deflate (qemu's zlib clusters), exactly one cluster of output, no more."""
    if _libdeflate is not None:
        try:
            plain = _libdeflate.deflate_decompress(data, cluster)
            if len(plain) == cluster:
                return plain
        except _libdeflate.DeflateError:
            pass  # damaged, or longer than a cluster: let zlib say which
    inflater = zlib.decompressobj(-15)
    try:
        plain = inflater.decompress(data, cluster + 1)
    except zlib.error as exc:
        raise ImportFailure(f"{CORRUPTED} {_where(guest, at, len(data))} is not valid deflate "
                            f"data ({exc})") from None
    if len(plain) > cluster:
        raise ImportFailure(f"{BAD_LENGTH}: {_where(guest, at, len(data))} inflated to more than "
                            f"{cluster} bytes, the cluster size")
    if len(plain) != cluster:
        raise ImportFailure(f"{BAD_LENGTH}: {_where(guest, at, len(data))} inflated to "
                            f"{len(plain)} bytes, expected {cluster}")
    return plain


_zstd_local = threading.local()


def _inflate_zstd(data, cluster: int, guest: int, at: int) -> bytes:
    """One zstd frame, exactly one cluster of output (a frame declaring more is refused unread)."""
    dctx = getattr(_zstd_local, "dctx", None)
    if dctx is None:
        dctx = _zstd_local.dctx = _zstd.ZstdDecompressor()
    data = bytes(data)
    try:
        declared = _zstd.frame_content_size(data)
        if declared not in (-1, cluster):
            raise ImportFailure(f"{BAD_LENGTH}: {_where(guest, at, len(data))} declares "
                                f"{declared} bytes of content, expected {cluster}")
        plain = dctx.decompress(data, max_output_size=cluster)
    except _zstd.ZstdError as exc:
        text = str(exc)
        if "did not decompress full frame" in text:
            raise ImportFailure(f"{BAD_LENGTH}: {_where(guest, at, len(data))} inflated to more "
                                f"than {cluster} bytes, the cluster size") from None
        raise ImportFailure(f"{CORRUPTED} {_where(guest, at, len(data))} is not valid zstd data "
                            f"({text})") from None
    if len(plain) != cluster:
        raise ImportFailure(f"{BAD_LENGTH}: {_where(guest, at, len(data))} inflated to "
                            f"{len(plain)} bytes, expected {cluster}")
    return plain
