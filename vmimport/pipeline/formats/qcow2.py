"""Reader for qcow2 (QEMU/KVM/OpenStack), versions 2 and 3, with zlib or zstd compressed clusters.

Layout (qemu's docs/interop/qcow2.txt, big-endian): a header at 0 (`QFI\\xfb`), header
extensions after it, an L1 table (one u64 per L2 table), L2 tables (one u64 per cluster), data
clusters and refcount tables. An L2 entry is either 0 (unallocated), a standard cluster (host
offset in bits 9-55, bit 0 = reads as zeros) or a compressed cluster (bit 62; host offset and
sector count packed by cluster size), whose bytes inflate to exactly one cluster.

What is refused, never followed: a backing file (the image holds only changes to a file named
inside it), an external data file, encryption, a header qemu marked corrupt and unknown
incompatible features. Extended L2 entries (32 subclusters per cluster, each allocated, zero or
unallocated) are read. The dirty bit is accepted: it says only that
refcounts may be stale, and this reader never uses refcounts. Internal snapshots are ignored;
only the active L1 table is read.

Only the active L1/L2 tables are walked, so unallocated and zero clusters cost nothing. Every
table and cluster must be aligned and inside the file, and no two may share a host cluster
(so a small file cannot claim more data than it holds, and tables cannot loop). Standard
clusters that follow each other in the file are fetched in one large read; compressed clusters
are read the same way and inflated on a thread pool (zlib via libdeflate, zstd via zstandard;
both release the GIL), in order, each bounded to one cluster of output.
"""

from __future__ import annotations

import struct
import threading
import zlib
from typing import Iterator

from ..errors import ImportFailure
from .base import BAD_LENGTH, CORRUPTED, SECTOR, UNSUPPORTED, GuestDisk, Limits, too_large
from .ordered import inflate_in_order
from .ranges import join_runs, read_pieces, table, without_holes

try:  # libdeflate: ~3x stdlib zlib
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - declared dependency
    _libdeflate = None
try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - declared dependency
    _zstd = None

_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")  # v2 fields, 72 bytes
_HEADER_V3 = struct.Struct(">QQQII")  # incompatible, compatible, autoclear, refcount order, length

INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE = 1, 2, 4
INCOMPAT_COMPRESSION, INCOMPAT_EXTENDED_L2 = 8, 16
KNOWN_INCOMPAT = 31
EXT_END, EXT_BACKING_FORMAT, EXT_FEATURES = 0, 0xE2792ACA, 0x6803F857
EXT_CRYPTO, EXT_DATA_FILE = 0x0537BE77, 0x44415441

L1_OFFSET = 0x00FFFFFFFFFFFE00
L2_COMPRESSED, L2_ZERO = 1 << 62, 1
MAX_L1_BYTES = 32 << 20  # qemu's QCOW_MAX_L1_SIZE
ZLIB, ZSTD = 0, 1
HEAD = 64 << 10  # read first; the rest of a larger first cluster (header extensions) after


class Qcow2(GuestDisk):
    format = "QCOW2"

    def __init__(self, source, limits: Limits):
        super().__init__()
        self._source, self._limits = source, limits
        self._size = size = source.size
        if size < _HEADER.size:
            raise ImportFailure(f"{CORRUPTED} qcow2 image is {size} bytes long; its header alone "
                                f"is {_HEADER.size} bytes")
        head = source.read_at(0, min(size, HEAD))
        self._consumed = len(head)
        (_, version, backing_at, backing_len, cluster_bits, vsize, crypt, l1_size, l1_at,
         _, _, _, _) = _HEADER.unpack_from(head)
        if version not in (2, 3):
            raise ImportFailure(f"{UNSUPPORTED} qcow2 header at offset 0 has version {version} "
                                "(offset 4); only versions 2 and 3 exist")
        if not 9 <= cluster_bits <= 21:
            raise ImportFailure(f"{UNSUPPORTED} qcow2 header at offset 0 has cluster_bits "
                                f"{cluster_bits} (offset 20); qemu allows 9 to 21")
        self._bits = cluster_bits
        cluster = self._cluster = 1 << cluster_bits
        if cluster > len(head) and size > len(head):  # header extensions may use the whole cluster
            head += source.read_at(len(head), cluster - len(head))
            self._consumed = len(head)
        head = head[:cluster]
        incompat, header_length, self._compression = 0, 72, ZLIB
        if version == 3:
            if len(head) < 104:
                raise ImportFailure(f"{CORRUPTED} qcow2 version 3 header ends at byte {len(head)}")
            incompat, _, _, _, header_length = _HEADER_V3.unpack_from(head, 72)
            if not (104 <= header_length <= cluster and header_length % 8 == 0):
                raise ImportFailure(
                    f"{CORRUPTED} qcow2 header at offset 0 has header_length {header_length} "
                    f"(offset 100); expected a multiple of 8 from 104 to the cluster size")
            if header_length > len(head):
                raise ImportFailure(
                    f"{CORRUPTED} qcow2 header at offset 0 has header_length {header_length} "
                    f"(offset 100), but the file ends at byte {len(head)}")
            if header_length > 104:
                self._compression = head[104]
        extensions = self._extensions(head, header_length)
        if backing_at:
            name = bytes(head[backing_at : backing_at + min(backing_len, 1023)]) if backing_at < len(head) else b""
            raise ImportFailure(
                f"{UNSUPPORTED} qcow2 header at offset 0 names a backing file "
                f"{name.decode('utf-8', 'replace')[:200]!r} (backing_file_offset {backing_at}, at "
                "offset 8): the image holds only the changes to that file, which this server "
                "never opens. Flatten it first (`qemu-img convert -O qcow2 image.qcow2 "
                "flat.qcow2`) and import the result")
        if incompat & INCOMPAT_DATA_FILE or EXT_DATA_FILE in extensions:
            name = extensions.get(EXT_DATA_FILE, (b"", 0))[0]
            raise ImportFailure(
                f"{UNSUPPORTED} qcow2 header at offset 0 declares an external data file "
                f"{bytes(name).decode('utf-8', 'replace')[:200]!r} (incompatible feature bit 2 / "
                "data-file extension): the guest data lives in another file, which this server "
                "never opens. Convert to a self-contained image (`qemu-img convert -O qcow2`)")
        if crypt or EXT_CRYPTO in extensions:
            raise ImportFailure(
                f"{UNSUPPORTED} qcow2 header at offset 0 says the image is encrypted "
                f"(crypt_method {crypt} at offset 32): encrypted images cannot be imported; "
                "decrypt it with `qemu-img convert --object secret,... -O qcow2` first")
        if incompat & INCOMPAT_CORRUPT:
            raise ImportFailure(f"{CORRUPTED} qcow2 header at offset 0 has the corrupt bit set "
                                "(incompatible feature bit 1): qemu found its metadata damaged; "
                                "run `qemu-img check -r all` on it first")
        if incompat & ~KNOWN_INCOMPAT:
            raise ImportFailure(
                f"{UNSUPPORTED} qcow2 header at offset 0 has unknown incompatible feature bits "
                f"0x{incompat & ~KNOWN_INCOMPAT:x} (offset 72); this reader cannot read it safely")
        self._extended = bool(incompat & INCOMPAT_EXTENDED_L2)
        if self._extended and cluster_bits < 14:
            raise ImportFailure(
                f"{CORRUPTED} qcow2 header at offset 0 uses extended L2 entries (incompatible "
                f"feature bit 4) with {cluster}-byte clusters; subclusters need at least 16 KiB")
        if not incompat & INCOMPAT_COMPRESSION and self._compression != ZLIB:
            raise ImportFailure(f"{CORRUPTED} qcow2 header at offset 0 names compression type "
                                f"{self._compression} without incompatible feature bit 3")
        if self._compression not in (ZLIB, ZSTD):
            raise ImportFailure(f"File uses unsupported compression algorithm "
                                f"{self._compression}: qcow2 header at offset 0 (offset 104) "
                                "must name 0 = zlib or 1 = zstd")
        if vsize > limits.max_virtual_size:
            raise ImportFailure(too_large("the qcow2 header (size at offset 24)", vsize, limits))
        if vsize == 0 or vsize % SECTOR:
            raise ImportFailure(f"{CORRUPTED} qcow2 header at offset 0 declares a size of {vsize} "
                                "bytes (offset 24), not a positive whole number of sectors")
        self.virtual_size = vsize
        self._l2_entries = cluster // (16 if self._extended else 8)
        span = cluster * self._l2_entries
        needed = -(-vsize // span)
        if l1_size < needed:
            raise ImportFailure(
                f"{CORRUPTED} qcow2 header at offset 0 has an L1 table of {l1_size} entries "
                f"(offset 36), too few for a {vsize}-byte disk ({needed} needed)")
        if needed * 8 > MAX_L1_BYTES:
            raise ImportFailure(
                f"{UNSUPPORTED} qcow2 header at offset 0 needs an L1 table of {needed * 8} bytes "
                f"for a {vsize}-byte disk with {cluster}-byte clusters; qemu's limit is "
                f"{MAX_L1_BYTES} (use larger clusters)")
        if l1_at % cluster or not cluster <= l1_at or l1_at + needed * 8 > size:
            raise ImportFailure(
                f"{CORRUPTED} qcow2 header at offset 0 places the L1 table at offset {l1_at} "
                f"(offset 40): it must be cluster-aligned, after the header and inside the "
                f"file's {size} bytes")
        raw = source.read_at(l1_at, needed * 8)
        self._consumed += len(raw)
        self._l1 = table(raw, "Q", big_endian=True)
        self._l1_at = l1_at
        # One bit per host cluster: header, L1, L2 tables and data clusters each own theirs.
        self._used = bytearray(-(-size // cluster) // 8 + 1)
        self._claim(0, "the header", 0)
        for n in range(-(-needed * 8 // cluster)):
            self._claim(l1_at + n * cluster, "the L1 table", l1_at)

    # -- header ----------------------------------------------------------------------------

    def _extensions(self, head: bytes, at: int) -> dict[int, tuple[bytes, int]]:
        found: dict[int, tuple[bytes, int]] = {}
        while at + 8 <= len(head):
            kind, length = struct.unpack_from(">II", head, at)
            if kind == EXT_END:
                return found
            if at + 8 + length > len(head):
                raise ImportFailure(
                    f"{CORRUPTED} qcow2 header extension 0x{kind:08x} at offset {at} claims "
                    f"{length} bytes, past the end of the first cluster ({len(head)} bytes)")
            found[kind] = (head[at + 8 : at + 8 + length], at)
            at += 8 + (length + 7) // 8 * 8
        return found  # no end marker inside the first cluster: qemu stops there too

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
