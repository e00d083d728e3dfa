"""Hostile VHDs: qemu-img's output with one structure damaged or made to lie.

Each case is (name, build(tmp_dir) -> image bytes, a substring the ClientError must contain).
"""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path
from typing import Callable

MiB = 1 << 20
FOOTER_CHECKSUM, HEADER_CHECKSUM = 64, 36


def _raw(size: int = 5 * MiB + 3 * 512, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    buf = bytearray(size)
    for at in range(0, size, 256 * 1024):
        if rng.random() < 0.7:
            n = min(rng.randint(1, 200_000), size - at)
            buf[at : at + n] = rng.randbytes(n) if rng.random() < 0.5 else b"text " * (n // 5)
    buf[-600:-100] = b"end!" * 125
    return bytes(buf)


def vhd(tmp: Path, fixed: bool = False, raw: bytes | None = None) -> bytes:
    src, dst = tmp / "base.raw", tmp / ("fixed.vhd" if fixed else "dynamic.vhd")
    src.write_bytes(_raw() if raw is None else raw)
    opts = ["-o", "subformat=fixed"] if fixed else []
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", *opts, str(src), str(dst)],
                   check=True, capture_output=True)
    return dst.read_bytes()


def checksum(data: bytearray, at: int, length: int, field: int) -> None:
    """Recompute the one's-complement checksum of the structure at `at` (field offset `field`)."""
    struct.pack_into(">I", data, at + field, 0)
    struct.pack_into(">I", data, at + field, ~sum(data[at : at + length]) & 0xFFFFFFFF)


def footers(data: bytearray, edit: Callable[[bytearray, int], None], head: bool = True) -> bytes:
    """Apply `edit(data, footer_offset)` to the tail footer (and the head copy), fixing checksums."""
    spots = [len(data) - 512] + ([0] if head else [])
    for at in spots:
        edit(data, at)
        checksum(data, at, 512, FOOTER_CHECKSUM)
    return bytes(data)


def header(data: bytearray, edit: Callable[[bytearray, int], None]) -> bytes:
    at = struct.unpack_from(">Q", data, 16)[0]
    edit(data, at)
    checksum(data, at, 1024, HEADER_CHECKSUM)
    return bytes(data)


def bat_at(data: bytes) -> int:
    return struct.unpack_from(">Q", data, struct.unpack_from(">Q", data, 16)[0] + 16)[0]


def set_bat(data: bytearray, index: int, value: int) -> bytes:
    struct.pack_into(">I", data, bat_at(data) + 4 * index, value)
    return bytes(data)


def _differencing(tmp: Path) -> bytes:
    data = bytearray(vhd(tmp))
    header(data, lambda d, at: d.__setitem__(slice(at + 64, at + 64 + 22),
                                             "/etc/passwd".encode("utf-16-be")))
    return footers(data, lambda d, at: struct.pack_into(">I", d, at + 60, 4))


def _flip(data: bytearray, at: int) -> bytes:
    data[at] ^= 0x55
    return bytes(data)


def _first_block(data: bytes) -> int:
    return struct.unpack_from(">I", data, bat_at(data))[0]


CASES: list[tuple[str, Callable[[Path], bytes], str]] = [
    ("vhd-differencing-parent-etc-passwd", _differencing,
     "Footers not identical: VHD footer at offset"),
    ("vhd-empty-ish", lambda t: b"conectix" + bytes(100), "VHD image is 108 bytes long"),
    ("vhd-dynamic-truncated-half", lambda t: vhd(t)[: 3 * MiB],
     "footer copy at offset 0 has no matching footer at the end of the file"),
    ("vhd-dynamic-truncated-footer", lambda t: vhd(t)[:-100],
     "is truncated or damaged"),
    ("vhd-footer-bad-checksum", lambda t: _flip(bytearray(vhd(t)), len(vhd(t)) - 512 + 33),
     "Provided image file was corrupted. VHD footer at offset"),
    ("vhd-footer-copy-differs",
     lambda t: footers(bytearray(vhd(t)), lambda d, at: struct.pack_into(">I", d, at + 24, at),
                       head=True),
     "Footers not identical: VHD footer copy at offset 0 differs from the footer at offset"),
    ("vhd-differencing-names-parent", _differencing, "named '/etc/passwd'"),
    ("vhd-disk-type-5", lambda t: footers(bytearray(vhd(t)),
                                          lambda d, at: struct.pack_into(">I", d, at + 60, 5)),
     "has disk type 5"),
    ("vhd-header-bad-checksum", lambda t: _flip(bytearray(vhd(t)), 512 + 30),
     "VHD dynamic header at offset 512 has checksum"),
    ("vhd-header-cookie", lambda t: header(bytearray(vhd(t)),
                                           lambda d, at: d.__setitem__(slice(at, at + 8), b"cxsparsX")),
     "lacks the 'cxsparse' cookie"),
    ("vhd-header-outside-file", lambda t: footers(bytearray(vhd(t)),
                                                  lambda d, at: struct.pack_into(">Q", d, at + 16, 1 << 40)),
     "places the dynamic header at offset 1099511627776"),
    ("vhd-huge-virtual-size", lambda t: footers(bytearray(vhd(t)),
                                                lambda d, at: struct.pack_into(">Q", d, at + 48, 1 << 50)),
     "The disk image is too large"),
    ("vhd-odd-virtual-size", lambda t: footers(bytearray(vhd(t)),
                                               lambda d, at: struct.pack_into(">Q", d, at + 48, 1000)),
     "not a positive whole number of sectors"),
    ("vhd-size-beyond-bat", lambda t: footers(bytearray(vhd(t)),
                                              lambda d, at: struct.pack_into(">Q", d, at + 48, 1 << 40)),
     "too few for the footer's current size"),
    ("vhd-block-size-3mib", lambda t: header(bytearray(vhd(t)),
                                             lambda d, at: struct.pack_into(">I", d, at + 32, 3 * MiB)),
     "has a block size of 3145728 bytes"),
    ("vhd-bat-outside-file", lambda t: header(bytearray(vhd(t)),
                                              lambda d, at: struct.pack_into(">Q", d, at + 16, 1 << 33)),
     "places the BAT of 3 entries at offset 8589934592"),
    ("vhd-bat-entry-outside-file", lambda t: set_bat(bytearray(vhd(t)), 1, 0x7FFFFFF0),
     "VHD BAT entry 1 (at offset 1540) places block 1 at offset 1099511619584"),
    ("vhd-bat-entry-into-footer",
     lambda t: set_bat(bytearray(d := vhd(t)), 0, (len(d) - 1024) // 512),
     "do not fit before the footer"),
    ("vhd-bat-entries-share-a-block",
     lambda t: set_bat(bytearray(d := vhd(t)), 2, _first_block(d)),
     "blocks must not share bytes"),
    ("vhd-bat-entry-on-the-bat", lambda t: set_bat(bytearray(d := vhd(t)), 1, bat_at(d) // 512),
     "overlapping the BAT at offset"),
    ("vhd-fixed-lying-size", lambda t: footers(bytearray(vhd(t, fixed=True)),
                                               lambda d, at: struct.pack_into(">Q", d, at + 48, 64 * MiB),
                                               head=False),
     "fixed VHD footer at offset"),
    ("vhd-fixed-truncated", lambda t: (d := vhd(t, fixed=True))[: 2 * MiB] + d[-512:],
     "declares a disk of"),
    ("vhd-fixed-bad-checksum", lambda t: _flip(bytearray(d := vhd(t, fixed=True)), len(d) - 512 + 20),
     "has checksum"),
]


def _bat_all_same_block(tmp: Path) -> bytes:
    """A 16 GiB disk whose every BAT entry names the one real block: a 'zip bomb' of reuse."""
    data = bytearray(vhd(tmp))
    first = _first_block(data)
    footers(data, lambda d, at: struct.pack_into(">Q", d, at + 48, 16 << 30))
    entries = (16 << 30) // (2 * MiB)
    header(data, lambda d, at: struct.pack_into(">I", d, at + 28, entries))
    bat = bat_at(data)
    table = struct.pack(">I", first) * entries
    # the BAT grows into the blocks; move the blocks' data along is not needed: the check fires first
    return bytes(data[:bat]) + table + bytes(data[bat + len(table):])


CASES.append(("vhd-bat-reuses-one-block-everywhere", _bat_all_same_block,
              "allocated blocks by entry 8191 (at offset 34300), more than the"))
