"""The safety policy for qcow2: one function per rule, listed at the end in the order the
reader applies them. Each takes a `Qcow2Image` and the `Limits` and raises `ImportFailure`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, UNSUPPORTED, Limits, too_large
from .qcow2_structs import (EXT_CRYPTO, EXT_DATA_FILE, EXT_END, INCOMPAT_COMPRESSION,
                            INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_EXTENDED_L2,
                            KNOWN_INCOMPAT, ZLIB, ZSTD, HeaderExtension, Qcow2CompressionType,
                            Qcow2Header, Qcow2HeaderV3)

MAX_L1_BYTES = 32 << 20  # qemu's QCOW_MAX_L1_SIZE
WHERE = "qcow2 header at offset 0"


@dataclass(frozen=True)
class Qcow2Image:
    """What the checks see: the header, the image's first cluster (header extensions and the
    backing file name live there) and the file's size."""

    header: Qcow2Header
    first_cluster: bytes
    file_size: int

    @property
    def cluster_size(self) -> int:
        return 1 << self.header.cluster_bits

    @cached_property
    def v3(self) -> Qcow2HeaderV3:
        """The version 3 fields; a version 2 header reads as having none of them."""
        if self.header.version != 3:
            return Qcow2HeaderV3(0, 0, 0, 4, Qcow2Header.SIZE)
        return Qcow2HeaderV3.unpack(self.first_cluster, Qcow2HeaderV3.OFFSET)

    @property
    def compression_type(self) -> int:
        if self.v3.header_length <= Qcow2CompressionType.OFFSET:
            return ZLIB
        return self.first_cluster[Qcow2CompressionType.OFFSET]

    @property
    def extended_l2(self) -> bool:
        return bool(self.v3.incompatible_features & INCOMPAT_EXTENDED_L2)

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // (16 if self.extended_l2 else 8)

    @property
    def l1_entries_needed(self) -> int:
        return -(-self.header.size // (self.cluster_size * self.l2_entries))

    @cached_property
    def _extension_walk(self) -> tuple[dict[int, tuple[bytes, int]], tuple[int, int, int] | None]:
        """({type: (data, offset)}, the first extension running past the cluster or None)."""
        head, at = self.first_cluster, self.v3.header_length
        found: dict[int, tuple[bytes, int]] = {}
        while at + HeaderExtension.SIZE <= len(head):
            kind, length = HeaderExtension.FORMAT.unpack_from(head, at)
            if kind == EXT_END:
                break
            if at + 8 + length > len(head):
                return found, (kind, at, length)
            found[kind] = (head[at + 8 : at + 8 + length], at)
            at += 8 + (length + 7) // 8 * 8
        return found, None  # no end marker inside the first cluster: qemu stops there too

    @property
    def extensions(self) -> dict[int, tuple[bytes, int]]:
        return self._extension_walk[0]


# -- the fixed header (before the rest of the first cluster is read) --------------------------

def check_version(image: Qcow2Image, limits: Limits) -> None:
    version = image.header.version
    if version not in (2, 3):
        raise ImportFailure(f"{UNSUPPORTED} {WHERE} has version {version} (offset 4); only "
                            "versions 2 and 3 exist")


def check_cluster_bits(image: Qcow2Image, limits: Limits) -> None:
    bits = image.header.cluster_bits
    if not 9 <= bits <= 21:
        raise ImportFailure(f"{UNSUPPORTED} {WHERE} has cluster_bits {bits} (offset 20); qemu "
                            "allows 9 to 21")


# -- the first cluster ------------------------------------------------------------------------

def check_v3_header_complete(image: Qcow2Image, limits: Limits) -> None:
    if image.header.version == 3 and len(image.first_cluster) < 104:
        raise ImportFailure(f"{CORRUPTED} qcow2 version 3 header ends at byte "
                            f"{len(image.first_cluster)}")


def check_header_length(image: Qcow2Image, limits: Limits) -> None:
    if image.header.version != 3:
        return
    length = image.v3.header_length
    if not (104 <= length <= image.cluster_size and length % 8 == 0):
        raise ImportFailure(
            f"{CORRUPTED} {WHERE} has header_length {length} (offset 100); expected a multiple "
            "of 8 from 104 to the cluster size")
    if length > len(image.first_cluster):
        raise ImportFailure(
            f"{CORRUPTED} {WHERE} has header_length {length} (offset 100), but the file ends at "
            f"byte {len(image.first_cluster)}")


def check_extensions_fit(image: Qcow2Image, limits: Limits) -> None:
    """Every header extension ends inside the first cluster."""
    fault = image._extension_walk[1]
    if fault is not None:
        kind, at, length = fault
        raise ImportFailure(
            f"{CORRUPTED} qcow2 header extension 0x{kind:08x} at offset {at} claims {length} "
            f"bytes, past the end of the first cluster ({len(image.first_cluster)} bytes)")


def check_no_backing_file(image: Qcow2Image, limits: Limits) -> None:
    """The image holds only changes to a file named inside it, never opened."""
    at, length, head = image.header.backing_file_offset, image.header.backing_file_size, \
        image.first_cluster
    if at:
        name = bytes(head[at : at + min(length, 1023)]) if at < len(head) else b""
        raise ImportFailure(
            f"{UNSUPPORTED} {WHERE} names a backing file "
            f"{name.decode('utf-8', 'replace')[:200]!r} (backing_file_offset {at}, at "
            "offset 8): the image holds only the changes to that file, which this server "
            "never opens. Flatten it first (`qemu-img convert -O qcow2 image.qcow2 "
            "flat.qcow2`) and import the result")


def check_no_data_file(image: Qcow2Image, limits: Limits) -> None:
    """The guest data lives in another file, never opened."""
    if image.v3.incompatible_features & INCOMPAT_DATA_FILE or EXT_DATA_FILE in image.extensions:
        name = image.extensions.get(EXT_DATA_FILE, (b"", 0))[0]
        raise ImportFailure(
            f"{UNSUPPORTED} {WHERE} declares an external data file "
            f"{bytes(name).decode('utf-8', 'replace')[:200]!r} (incompatible feature bit 2 / "
            "data-file extension): the guest data lives in another file, which this server "
            "never opens. Convert to a self-contained image (`qemu-img convert -O qcow2`)")


def check_not_encrypted(image: Qcow2Image, limits: Limits) -> None:
    crypt = image.header.crypt_method
    if crypt or EXT_CRYPTO in image.extensions:
        raise ImportFailure(
            f"{UNSUPPORTED} {WHERE} says the image is encrypted (crypt_method {crypt} at offset "
            "32): encrypted images cannot be imported; decrypt it with `qemu-img convert "
            "--object secret,... -O qcow2` first")


def check_not_marked_corrupt(image: Qcow2Image, limits: Limits) -> None:
    if image.v3.incompatible_features & INCOMPAT_CORRUPT:
        raise ImportFailure(f"{CORRUPTED} {WHERE} has the corrupt bit set (incompatible feature "
                            "bit 1): qemu found its metadata damaged; run `qemu-img check -r "
                            "all` on it first")


def check_known_features(image: Qcow2Image, limits: Limits) -> None:
    unknown = image.v3.incompatible_features & ~KNOWN_INCOMPAT
    if unknown:
        raise ImportFailure(f"{UNSUPPORTED} {WHERE} has unknown incompatible feature bits "
                            f"0x{unknown:x} (offset 72); this reader cannot read it safely")


def check_subcluster_size(image: Qcow2Image, limits: Limits) -> None:
    if image.extended_l2 and image.header.cluster_bits < 14:
        raise ImportFailure(
            f"{CORRUPTED} {WHERE} uses extended L2 entries (incompatible feature bit 4) with "
            f"{image.cluster_size}-byte clusters; subclusters need at least 16 KiB")


def check_compression_type(image: Qcow2Image, limits: Limits) -> None:
    kind = image.compression_type
    if not image.v3.incompatible_features & INCOMPAT_COMPRESSION and kind != ZLIB:
        raise ImportFailure(f"{CORRUPTED} {WHERE} names compression type {kind} without "
                            "incompatible feature bit 3")
    if kind not in (ZLIB, ZSTD):
        raise ImportFailure(f"File uses unsupported compression algorithm {kind}: {WHERE} "
                            "(offset 104) must name 0 = zlib or 1 = zstd")


def check_virtual_size(image: Qcow2Image, limits: Limits) -> None:
    size = image.header.size
    if size > limits.max_virtual_size:
        raise ImportFailure(too_large("the qcow2 header (size at offset 24)", size, limits))
    if size == 0 or size % SECTOR:
        raise ImportFailure(f"{CORRUPTED} {WHERE} declares a size of {size} bytes (offset 24), "
                            "not a positive whole number of sectors")


def check_l1_size(image: Qcow2Image, limits: Limits) -> None:
    """The L1 table covers the disk and stays within qemu's bound."""
    h, needed = image.header, image.l1_entries_needed
    if h.l1_size < needed:
        raise ImportFailure(
            f"{CORRUPTED} {WHERE} has an L1 table of {h.l1_size} entries (offset 36), too few "
            f"for a {h.size}-byte disk ({needed} needed)")
    if needed * 8 > MAX_L1_BYTES:
        raise ImportFailure(
            f"{UNSUPPORTED} {WHERE} needs an L1 table of {needed * 8} bytes for a {h.size}-byte "
            f"disk with {image.cluster_size}-byte clusters; qemu's limit is {MAX_L1_BYTES} "
            "(use larger clusters)")


def check_l1_placement(image: Qcow2Image, limits: Limits) -> None:
    at, cluster = image.header.l1_table_offset, image.cluster_size
    if at % cluster or not cluster <= at or at + image.l1_entries_needed * 8 > image.file_size:
        raise ImportFailure(
            f"{CORRUPTED} {WHERE} places the L1 table at offset {at} (offset 40): it must be "
            f"cluster-aligned, after the header and inside the file's {image.file_size} bytes")


# -- the policy, in the order the reader applies it -------------------------------------------

# On the fixed header alone: they bound the read of the rest of the first cluster.
HEADER_CHECKS = (check_version, check_cluster_bits)
# On the whole first cluster.
IMAGE_CHECKS = (check_v3_header_complete, check_header_length, check_extensions_fit,
                check_no_backing_file, check_no_data_file, check_not_encrypted,
                check_not_marked_corrupt, check_known_features, check_subcluster_size,
                check_compression_type, check_virtual_size, check_l1_size, check_l1_placement)
