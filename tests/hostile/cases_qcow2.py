"""Hostile qcow2 images: qemu-img's output with one structure damaged or made to lie, plus the
dangerous features (backing file, external data file, encryption) made by qemu-img itself
(`qemu-img create -u` never opens the backing file it names).

Each case is (name, build(tmp_dir) -> image bytes, a substring the ClientError must contain).
"""

from __future__ import annotations

import random
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Callable

from . import qemu_image, spaced_raw

KiB, MiB = 1 << 10, 1 << 20


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def qcow2(tmp: Path, *options: str, raw: bytes | None = None) -> bytes:
    return qemu_image(tmp, "qcow2", *options, raw=spaced_raw(13) if raw is None else raw)


def created(tmp: Path, *options: str, size: str = "4M") -> bytes:
    dst = tmp / "created.qcow2"
    qemu_img("create", "-f", "qcow2", *options, str(dst), size)
    return dst.read_bytes()


def l1(data: bytes) -> tuple[int, int]:
    """(L1 offset, cluster size)."""
    return struct.unpack_from(">Q", data, 40)[0], 1 << struct.unpack_from(">I", data, 20)[0]


def l2_at(data: bytes, n: int = 0) -> int:
    return struct.unpack_from(">Q", data, l1(data)[0] + 8 * n)[0] & 0x00FFFFFFFFFFFE00


def l2_entry(data: bytes, m: int, n: int = 0) -> int:
    return struct.unpack_from(">Q", data, l2_at(data, n) + 8 * m)[0]


def patch(data: bytes | bytearray, at: int, fmt: str, value: int) -> bytes:
    data = bytearray(data)
    struct.pack_into(fmt, data, at, value)
    return bytes(data)


def set_l1(data: bytes, n: int, value: int) -> bytes:
    return patch(data, l1(data)[0] + 8 * n, ">Q", value)


def set_l2(data: bytes, m: int, value: int, n: int = 0) -> bytes:
    return patch(data, l2_at(data, n) + 8 * m, ">Q", value)


def first_compressed(data: bytes) -> int:
    return next(m for m in range(64) if l2_entry(data, m) >> 62 & 1)


def with_compressed(data: bytes, payload: bytes, m: int | None = None) -> bytes:
    """Append `payload` at the end (sector-aligned) and point a compressed L2 entry at it."""
    _, cluster = l1(data)
    bits = cluster.bit_length() - 1
    m = first_compressed(data) if m is None else m
    data = bytes(data) + bytes(-len(data) % 512)
    host = len(data)
    sectors = -(-len(payload) // 512)
    shift = 62 - (bits - 8)
    assert sectors - 1 < 1 << (bits - 8), "payload too large for a compressed descriptor"
    entry = 1 << 62 | (sectors - 1) << shift | host
    return set_l2(data + payload + bytes(-len(payload) % 512), m, entry)


def raw_deflate(plain: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -12)
    return c.compress(plain) + c.flush()


def _zstd(plain: bytes, content_size: bool) -> bytes:
    import zstandard
    return zstandard.ZstdCompressor(write_content_size=content_size).compress(plain)


def ext_l2(data: bytes, compressed: bool = False) -> int:
    """File offset of the first allocated (or compressed) 16-byte extended L2 entry."""
    at = l2_at(data)
    while True:
        entry, bitmap = struct.unpack_from(">QQ", data, at)
        if (entry >> 62 & 1) if compressed else (bitmap & 0xFFFFFFFF and not entry >> 62 & 1):
            return at
        at += 16


def _data_file(tmp: Path) -> bytes:
    return created(tmp, "-o", f"data_file={tmp / 'guest-data.raw'}")


def _encrypted(tmp: Path) -> bytes:
    # qemu-img times PBKDF2 on the CPU to choose its iteration count, and on a loaded machine
    # that measurement can fail ("Unable to get accurate CPU usage"): try again, with pauses
    # (5 quick tries were not enough with two test suites sharing 2 cores).
    for attempt in range(12):
        try:
            return created(tmp, "--object", "secret,id=sec0,data=hunter2", "-o",
                           "encrypt.format=luks,encrypt.key-secret=sec0")
        except subprocess.CalledProcessError:
            if attempt == 11:
                raise
            time.sleep(1.0)


def _data_cluster(data: bytes) -> int:
    return next(l2_entry(data, m) & 0x00FFFFFFFFFFFE00 for m in range(64)
                if l2_entry(data, m) & 0x00FFFFFFFFFFFE00)


def _first_data(data: bytes) -> int:
    return next(m for m in range(64) if l2_entry(data, m) & 0x00FFFFFFFFFFFE00)


CASES: list[tuple[str, Callable[[Path], bytes], str]] = [
    ("qcow2-backing-etc-passwd",
     lambda t: created(t, "-u", "-b", "/etc/passwd", "-F", "raw"),
     "names a backing file '/etc/passwd'"),
    ("qcow2-tiny", lambda t: b"QFI\xfb" + bytes(20), "qcow2 image is 24 bytes long"),
    ("qcow2-backing-qcow2-v2", lambda t: created(t, "-u", "-o", "compat=0.10", "-b",
                                                 "/etc/shadow", "-F", "qcow2"),
     "names a backing file '/etc/shadow'"),
    ("qcow2-external-data-file", _data_file, "declares an external data file"),
    ("qcow2-data-file-bit-only", lambda t: patch(qcow2(t), 72, ">Q", 4),
     "declares an external data file"),
    ("qcow2-encrypted-luks", _encrypted, "the image is encrypted"),
    ("qcow2-encrypted-aes", lambda t: patch(qcow2(t), 32, ">I", 1), "crypt_method 1"),
    ("qcow2-unknown-incompatible-bit", lambda t: patch(qcow2(t), 72, ">Q", 1 << 5),
     "unknown incompatible feature bits 0x20"),
    ("qcow2-corrupt-bit", lambda t: patch(qcow2(t), 72, ">Q", 2), "has the corrupt bit set"),
    ("qcow2-extended-l2-small-clusters",
     lambda t: patch(qcow2(t, "-o", "cluster_size=4096"), 72, ">Q", 16),
     "subclusters need at least 16 KiB"),
    ("qcow2-extended-l2-allocated-and-zero",
     lambda t: patch(d := qcow2(t, "-o", "extended_l2=on"), ext_l2(d) + 8, ">Q", 0x00000001_00000001),
     "a subcluster is both allocated and zero"),
    ("qcow2-extended-l2-compressed-with-bits",
     lambda t: patch(d := qcow2(t, "-c", "-o", "extended_l2=on"), ext_l2(d, compressed=True) + 8,
                     ">Q", 1), "describes a compressed cluster but has subcluster bits"),
    ("qcow2-extended-l2-allocated-without-host",
     lambda t: patch(d := qcow2(t, "-o", "extended_l2=on"), ext_l2(d), ">Q", 0),
     "marks subclusters allocated but names no host cluster"),
    ("qcow2-version-4", lambda t: patch(qcow2(t), 4, ">I", 4), "has version 4"),
    ("qcow2-cluster-bits-22", lambda t: patch(qcow2(t), 20, ">I", 22), "cluster_bits 22"),
    ("qcow2-cluster-bits-8", lambda t: patch(qcow2(t), 20, ">I", 8), "cluster_bits 8"),
    ("qcow2-compression-type-2", lambda t: patch(patch(qcow2(t), 72, ">Q", 8), 104, ">B", 2),
     "File uses unsupported compression algorithm 2"),
    ("qcow2-zstd-without-bit", lambda t: patch(qcow2(t), 104, ">B", 1),
     "without incompatible feature bit 3"),
    ("qcow2-header-length-odd", lambda t: patch(qcow2(t), 100, ">I", 105), "header_length 105"),
    ("qcow2-extension-past-cluster", lambda t: patch(qcow2(t), 116, ">I", 1 << 20),
     "past the end of the first cluster"),
    ("qcow2-huge-virtual-size", lambda t: patch(qcow2(t), 24, ">Q", 1 << 50),
     "The disk image is too large"),
    ("qcow2-odd-virtual-size", lambda t: patch(qcow2(t), 24, ">Q", 1000),
     "not a positive whole number of sectors"),
    ("qcow2-l1-too-small", lambda t: patch(qcow2(t), 24, ">Q", 1 << 40), "too few for a"),
    ("qcow2-l1-too-large-for-qemu", lambda t: patch(patch(qcow2(t, "-o", "cluster_size=512"), 24,
                                                          ">Q", 1 << 40), 36, ">I", 1 << 30),
     "qemu's limit is 33554432"),
    ("qcow2-l1-unaligned", lambda t: patch(qcow2(t), 40, ">Q", l1(qcow2(t))[0] + 8),
     "places the L1 table at offset"),
    ("qcow2-l1-outside-file", lambda t: patch(qcow2(t), 40, ">Q", 1 << 40),
     "places the L1 table at offset 1099511627776"),
    ("qcow2-l2-outside-file", lambda t: set_l1(qcow2(t), 0, 1 << 63 | 1 << 40),
     "qcow2 L1 entry 0 (at offset"),
    ("qcow2-l2-unaligned", lambda t: set_l1(d := qcow2(t), 0, l2_at(d) + 512),
     "not cluster-aligned"),
    ("qcow2-l2-is-the-l1", lambda t: set_l1(d := qcow2(t), 0, l1(d)[0]),
     "tables overlap or loop"),
    ("qcow2-two-l1-entries-one-l2",
     lambda t: set_l1(d := qcow2(t, "-o", "cluster_size=512"), 1, 1 << 63 | l2_at(d, 0)),
     "tables overlap or loop"),
    ("qcow2-data-cluster-outside-file", lambda t: set_l2(d := qcow2(t), _first_data(d), 1 << 40),
     "places a data cluster at offset 1099511627776"),
    ("qcow2-data-cluster-unaligned", lambda t: set_l2(d := qcow2(t), _first_data(d),
                                                      _data_cluster(d) + 512),
     "not cluster-aligned"),
    ("qcow2-data-cluster-is-l2-table", lambda t: set_l2(d := qcow2(t), _first_data(d), l2_at(d)),
     "tables overlap or loop"),
    ("qcow2-data-cluster-is-l1-table", lambda t: set_l2(d := qcow2(t), _first_data(d), l1(d)[0]),
     "another table or cluster already uses"),
    ("qcow2-two-entries-one-cluster",
     lambda t: set_l2(d := qcow2(t), _first_data(d) + 1, _data_cluster(d)),
     "tables overlap or loop"),
    ("qcow2-truncated", lambda t: (d := qcow2(t))[: len(d) // 2], "past the end of the file"),
    ("qcow2-zlib-bomb", lambda t: with_compressed(qcow2(t, "-c"), raw_deflate(bytes(64 * MiB))),
     "Uncompressed data has invalid length: qcow2 compressed cluster"),
    ("qcow2-zlib-short", lambda t: with_compressed(qcow2(t, "-c"), raw_deflate(b"x" * 1000)),
     "inflated to 1000 bytes, expected 65536"),
    ("qcow2-zlib-garbage", lambda t: with_compressed(qcow2(t, "-c"),
                                                     random.Random(1).randbytes(3000)),
     "is not valid deflate data"),
    ("qcow2-zstd-bomb-declared", lambda t: with_compressed(
        qcow2(t, "-c", "-o", "compression_type=zstd"), _zstd(bytes(64 * MiB), True)),
     "declares 67108864 bytes of content"),
    ("qcow2-zstd-bomb-streamed", lambda t: with_compressed(
        qcow2(t, "-c", "-o", "compression_type=zstd"), _zstd(bytes(64 * MiB), False)),
     "inflated to more than 65536 bytes"),
    ("qcow2-zstd-garbage", lambda t: with_compressed(
        qcow2(t, "-c", "-o", "compression_type=zstd"), random.Random(2).randbytes(3000)),
     "is not valid zstd data"),
    ("qcow2-compressed-outside-file",
     lambda t: set_l2(d := qcow2(t, "-c"), first_compressed(d), 1 << 62 | (1 << 40)),
     "places a compressed cluster at offset 1099511627776"),
    ("qcow2-compressed-in-l2-table",
     lambda t: set_l2(d := qcow2(t, "-c"), first_compressed(d), 1 << 62 | l2_at(d)),
     "inside a host cluster that a table"),
]
