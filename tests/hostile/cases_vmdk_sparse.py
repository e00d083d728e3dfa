"""Hostile monolithicSparse VMDKs: qemu-img's output with one structure damaged or made to lie,
and descriptors that name parents or other files (never to be opened).

Each case is (name, build(tmp_dir) -> image bytes, a substring the ClientError must contain).
"""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path
from typing import Callable

from . import qemu_image, spaced_raw

KiB, MiB = 1 << 10, 1 << 20


def vmdk(tmp: Path, *options: str, raw: bytes | None = None) -> bytes:
    return qemu_image(tmp, "vmdk", *options, raw=spaced_raw(17) if raw is None else raw)


def two_tables(tmp: Path) -> bytes:
    """70 MiB virtual with data in the first and the third 32 MiB: three grain tables."""
    raw = bytearray(70 * MiB)
    raw[:MiB] = random.Random(1).randbytes(MiB)
    raw[65 * MiB : 66 * MiB] = random.Random(2).randbytes(MiB)
    return vmdk(tmp, raw=bytes(raw))


def header(data: bytes) -> dict[str, int]:
    f = struct.unpack_from("<4sIIQQQQIQQQ", data)
    return {"flags": f[2], "capacity": f[3], "grain": f[4], "desc": f[5], "desc_size": f[6],
            "gtes": f[7], "rgd": f[8], "gd": f[9], "overhead": f[10]}


def patch(data: bytes | bytearray, at: int, fmt: str, value: int) -> bytes:
    data = bytearray(data)
    struct.pack_into(fmt, data, at, value)
    return bytes(data)


def gd_entry(data: bytes, n: int) -> int:
    return struct.unpack_from("<I", data, header(data)["gd"] * 512 + 4 * n)[0]


def set_gd(data: bytes, n: int, value: int) -> bytes:
    return patch(data, header(data)["gd"] * 512 + 4 * n, "<I", value)


def gt_entry(data: bytes, m: int, n: int = 0) -> int:
    return struct.unpack_from("<I", data, gd_entry(data, n) * 512 + 4 * m)[0]


def set_gt(data: bytes, m: int, value: int, n: int = 0) -> bytes:
    return patch(data, gd_entry(data, n) * 512 + 4 * m, "<I", value)


def first_grain(data: bytes) -> int:
    return next(m for m in range(512) if gt_entry(data, m))


def set_descriptor(data: bytes, edit: Callable[[str], str]) -> bytes:
    h = header(data)
    off, size = h["desc"] * 512, h["desc_size"] * 512
    text = data[off : off + size].split(b"\0", 1)[0].decode()
    new = edit(text).encode()
    assert len(new) <= size
    return data[:off] + new.ljust(size, b"\0") + data[off + size :]


def _split_extent(tmp: Path) -> bytes:
    """The first extent file of a twoGbMaxExtentSparse disk, uploaded without its descriptor."""
    subprocess.run(["qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
                    str(tmp / "split.vmdk"), "10M"], check=True, capture_output=True)
    return (tmp / "split-s001.vmdk").read_bytes()


CASES: list[tuple[str, Callable[[Path], bytes], str]] = [
    ("vmdk-sparse-parent-hint-etc-passwd", lambda t: set_descriptor(vmdk(t), lambda s: s.replace(
        "# Extent description", 'parentFileNameHint="/etc/passwd"\n# Extent description')),
     "parentFileNameHint='/etc/passwd'"),
    ("vmdk-sparse-tiny", lambda t: vmdk(t)[:100], "VMDK header ends at byte 100"),
    ("vmdk-sparse-cowd", lambda t: b"COWD" + vmdk(t)[4:], "ESX 2 'COWD' sparse VMDK"),
    ("vmdk-sparse-parent-cid", lambda t: set_descriptor(vmdk(t), lambda s: s.replace(
        "parentCID=ffffffff", "parentCID=1234abcd")), "(parentCID=1234abcd)"),
    ("vmdk-sparse-flat-extent-etc-passwd", lambda t: set_descriptor(vmdk(t), lambda s: s.replace(
        "# The Disk Data Base", 'RW 100 FLAT "/etc/passwd" 0\n# The Disk Data Base')),
     "lists 2 extents"),
    ("vmdk-sparse-extent-elsewhere", lambda t: set_descriptor(vmdk(t), lambda s: s.replace(
        'SPARSE "', 'SPARSE "../../etc/')), "names an extent in another location"),
    ("vmdk-sparse-extent-size-lies", lambda t: set_descriptor(vmdk(t), lambda s: s.replace(
        "RW ", "RW 1")), "declares an extent of 1"),
    ("vmdk-sparse-two-gb-split", lambda t: set_descriptor(vmdk(t), lambda s: s.replace(
        '"monolithicSparse"', '"twoGbMaxExtentSparse"')), "createType='twoGbMaxExtentSparse'"),
    ("vmdk-sparse-descriptor-garbage", lambda t: set_descriptor(vmdk(t), lambda s: s +
                                                               "\nwhat is this\n"),
     "is neither a setting nor an extent line"),
    ("vmdk-sparse-split-extent-alone", _split_extent, "has no embedded descriptor"),
    ("vmdk-sparse-huge-capacity", lambda t: patch(vmdk(t), 12, "<Q", (1 << 50) // 512),
     "The disk image is too large"),
    ("vmdk-sparse-compressed-flag", lambda t: patch(vmdk(t), 8, "<I", 0x30003),
     "compressed grains belong to a streamOptimized VMDK"),
    ("vmdk-sparse-grain-size-100", lambda t: patch(vmdk(t), 20, "<Q", 100), "grain size of 100"),
    ("vmdk-sparse-gtes-zero", lambda t: patch(vmdk(t), 44, "<I", 0), "0 entries per grain table"),
    ("vmdk-sparse-overhead-past-eof", lambda t: patch(vmdk(t), 64, "<Q", 1 << 40),
     "says grains start at byte"),
    ("vmdk-sparse-descriptor-outside", lambda t: patch(vmdk(t), 36, "<Q", 100000),
     "places the embedded descriptor at sector 1 (100000 sectors)"),
    ("vmdk-sparse-gd-outside-file", lambda t: patch(vmdk(t), 56, "<Q", 1 << 40),
     "places the grain directory of 1 entries at sector 1099511627776"),
    ("vmdk-sparse-gd-at-end", lambda t: patch(vmdk(t), 56, "<Q", (1 << 64) - 1),
     "places the grain directory"),
    ("vmdk-sparse-gt-outside-file", lambda t: set_gd(vmdk(t), 0, 1 << 31),
     "places a grain table at offset 1099511627776"),
    ("vmdk-sparse-gt-twice", lambda t: set_gd(d := two_tables(t), 1, gd_entry(d, 0)),
     "tables overlap or loop"),
    ("vmdk-sparse-grain-outside-file", lambda t: set_gt(d := vmdk(t), first_grain(d), 1 << 31),
     "places a grain at offset 1099511627776, outside the grain area"),
    ("vmdk-sparse-grain-in-metadata", lambda t: set_gt(d := vmdk(t), first_grain(d), 1),
     "places a grain at offset 512, outside the grain area"),
    ("vmdk-sparse-grains-share-bytes",
     lambda t: set_gt(d := vmdk(t), first_grain(d) + 1, gt_entry(d, first_grain(d))),
     "grains must not share bytes"),
    ("vmdk-sparse-grains-overlap-unaligned",
     lambda t: set_gt(d := vmdk(t), first_grain(d) + 1, gt_entry(d, first_grain(d)) + 3),
     "grains must not share bytes"),
    ("vmdk-sparse-truncated", lambda t: (d := vmdk(t))[: len(d) // 2],
     "outside the grain area"),
]
