"""VHD reader: qemu-img's dynamic and fixed VHDs read back exactly as `qemu-img convert -O raw`,
unallocated space is skipped, sector bitmaps are honoured, and every hostile case is refused."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from tests.hostile import cases_vhd
from tests.pipeline.test_formats import (MiB, BytesSource, FileSource, fails, flatten, mixed_disk,
                                         only_tmp_paths, qemu, sha)  # noqa: F401 (fixture)
from vmimport.pipeline.formats import Limits, open_guest_disk
from vmimport.pipeline.formats.ranges import MAX_READ



class CountingSource(BytesSource):
    def __init__(self, data):
        super().__init__(data)
        self.reads = []

    def read_at(self, offset, length):
        self.reads.append((offset, length))
        return super().read_at(offset, length)


def render(tmp, raw: bytes, fmt: str, *options: str, name: str = "disk") -> tuple[bytes, bytes]:
    """(image made by qemu-img from `raw`, what `qemu-img convert -f fmt -O raw` makes of it)."""
    src, img, back = tmp / f"{name}.raw", tmp / f"{name}.{fmt}", tmp / f"{name}.back"
    src.write_bytes(raw)
    qemu("convert", "-f", "raw", "-O", fmt, *options, str(src), str(img))
    qemu("convert", "-f", fmt, "-O", "raw", str(img), str(back))
    return img.read_bytes(), back.read_bytes()


@pytest.fixture(scope="module")
def raw():
    return mixed_disk(7 * MiB + 5 * 512 + 1000, seed=11)  # not a multiple of 2 MiB nor of 512


@pytest.mark.parametrize("options", [
    [], ["-o", "subformat=fixed"], ["-o", "force_size=on"], ["-o", "subformat=fixed,force_size=on"],
], ids=["dynamic", "fixed", "dynamic-exact-size", "fixed-exact-size"])
def test_vhd_matches_qemu(tmp_path, raw, options):
    """qemu rounds the size up to a CHS geometry unless force_size=on (creator 'qem2', as
    Hyper-V/Azure images); either way the footer's current size is what qemu reads too."""
    image, expected = render(tmp_path, raw, "vpc", *options)
    source = CountingSource(image)
    disk = open_guest_disk(source, "vhd", Limits())
    assert disk.format == "VHD" and disk.virtual_size == len(expected)
    assert sha(flatten(disk)) == sha(expected)
    assert disk.bytes_consumed <= len(image) + 4096
    # footers, header, BAT, then the data in as few reads as MAX_READ allows
    assert len(source.reads) <= 7 + -(-len(image) // MAX_READ)


def test_vhd_file_source(tmp_path, raw):
    image, expected = render(tmp_path, raw, "vpc")
    (tmp_path / "f.vhd").write_bytes(image)
    disk = open_guest_disk(FileSource(tmp_path / "f.vhd"), None, Limits())
    assert flatten(disk) == expected


def test_vhd_sizes(tmp_path):
    for size in (512, 2 * MiB, 2 * MiB + 512, 9 * MiB - 4096):
        raw = mixed_disk(size, seed=size) if size > 4096 else os.urandom(size)
        for options in ([], ["-o", "subformat=fixed"]):
            image, expected = render(tmp_path, raw, "vpc", *options)
            assert flatten(open_guest_disk(BytesSource(image), "VHD", Limits())) == expected


def test_vhd_sector_bitmap_is_honoured(tmp_path, raw):
    """Sectors whose bitmap bit is 0 read as zeros, whatever the block holds."""
    image, expected = render(tmp_path, raw, "vpc")
    image = bytearray(image)
    bat = cases_vhd.bat_at(image)
    block1 = struct.unpack_from(">I", image, bat + 4)[0] * 512
    assert image[block1 : block1 + 512] == b"\xff" * 512
    image[block1] = 0b10100000  # block 1: sector 0 and 2 present of the first 8
    image[block1 + 3] = 0x0F  # sectors 24-27 missing
    want = bytearray(expected)
    guest = 2 * MiB
    for sector in (1, 3, 4, 5, 6, 7, 24, 25, 26, 27):
        want[guest + sector * 512 : guest + (sector + 1) * 512] = bytes(512)
    got = flatten(open_guest_disk(BytesSource(bytes(image)), "vhd", Limits()))
    assert got == bytes(want)
    image[block1 : block1 + 512] = bytes(512)  # a block allocated but all sectors absent
    want[guest : guest + 2 * MiB] = bytes(2 * MiB)
    assert flatten(open_guest_disk(BytesSource(bytes(image)), "vhd", Limits())) == bytes(want)


def test_vhd_differencing_opens_nothing(tmp_path, only_tmp_paths):
    image = cases_vhd.CASES[[c[0] for c in cases_vhd.CASES].index(
        "vhd-differencing-parent-etc-passwd")][1](tmp_path)
    (tmp_path / "child.vhd").write_bytes(image)
    msg = fails(FileSource(tmp_path / "child.vhd"), "Footers not identical", declared="vhd")
    assert "'/etc/passwd'" in msg and "never opens" in msg
    assert only_tmp_paths == []


@pytest.mark.parametrize("name,build,match", cases_vhd.CASES, ids=[c[0] for c in cases_vhd.CASES])
def test_vhd_hostile(tmp_path, name, build, match):
    image = build(tmp_path)
    msg = fails(BytesSource(image), match)
    assert "VHD" in msg


def test_fixed_vhd_skips_holes_the_source_reports(tmp_path, raw):
    """A source that knows its holes (a sparse local file) offers data_ranges(offset); fixed
    VHD data is read only there."""
    image, expected = render(tmp_path, raw, "vpc", "-o", "subformat=fixed")

    class Sparse(CountingSource):
        def data_ranges(self, offset=0):
            assert offset == 0
            yield 0, 2 * MiB
            yield 4 * MiB, self.size  # the footer is clipped off

    want = bytearray(expected)
    want[2 * MiB : 4 * MiB] = bytes(2 * MiB)
    source = Sparse(image)
    assert flatten(open_guest_disk(source, "vhd", Limits())) == bytes(want)
    assert all(not (2 * MiB <= offset < 4 * MiB) for offset, _ in source.reads)


def test_bit_runs_and_grouping():
    from vmimport.pipeline.formats.ranges import bit_runs, group_pieces
    assert list(bit_runs(bytes([0b10110000, 0xFF]), 12)) == [(0, 1), (2, 2), (8, 4)]
    assert list(bit_runs(bytes(2), 16)) == []
    # overlapping and backward-inside-the-span pieces join one read; a far one starts another
    pieces = [(100, 50, "a"), (140, 30, "b"), (120, 10, "c"), (180, 20, "d"), (10_000_000, 5, "e")]
    groups = list(group_pieces(pieces, max_read=1 << 20, max_gap=64))
    assert [(s, e, [p[2] for p in g]) for s, e, g in groups] == [
        (100, 200, ["a", "b", "c", "d"]), (10_000_000, 10_000_005, ["e"])]


QEMU_IO = shutil.which("qemu-io")
WRITES = ["write -P 0x61 40M 3M", "write -P 0x62 0 1M", "write -z 40M 64k",
          "write -P 0x63 10M 128k", "write -P 0x64 63M 1M", "write -P 0x65 5M 4k"]


def written_by_qemu_io(tmp_path, fmt: str, *create_options: str, extra: tuple = ()) -> tuple[bytes, bytes]:
    """An image grown the way a hypervisor grows it: created empty, then written out of order
    (blocks land in the file in write order, not guest order)."""
    img, back = tmp_path / f"io.{fmt}", tmp_path / "io.raw"
    qemu("create", "-f", fmt, *create_options, str(img), "64M")
    args = [QEMU_IO, "-f", fmt]
    for cmd in WRITES + list(extra):
        args += ["-c", cmd]
    subprocess.run([*args, str(img)], check=True, capture_output=True)
    qemu("convert", "-f", fmt, "-O", "raw", str(img), str(back))
    return img.read_bytes(), back.read_bytes()


def test_vhd_written_out_of_order(tmp_path):
    image, expected = written_by_qemu_io(tmp_path, "vpc")
    assert flatten(open_guest_disk(BytesSource(image), "vhd", Limits())) == expected


def test_vhd_size_is_the_footers_current_size_not_chs(tmp_path, raw):
    """A Virtual PC ('vpc ') VHD whose CHS geometry covers less than its current size: qemu
    reads only the geometry's sectors; we read the current size, as Hyper-V, Azure and AWS do.
    The bytes qemu sees are a prefix of ours."""
    image, _ = render(tmp_path, raw, "vpc", "-o", "force_size=on")

    def edit(d, at):
        d[at + 28 : at + 32] = b"vpc "
        struct.pack_into(">HBB", d, at + 56, 100, 4, 17)  # 100*4*17 sectors = 3.3 MiB
    data = bytearray(image)
    image = cases_vhd.footers(data, edit)
    (tmp_path / "vpc.vhd").write_bytes(image)
    qemu("convert", "-f", "vpc", "-O", "raw", str(tmp_path / "vpc.vhd"), str(tmp_path / "vpc.raw"))
    theirs = (tmp_path / "vpc.raw").read_bytes()
    ours = flatten(open_guest_disk(BytesSource(image), "vhd", Limits()))
    assert len(theirs) == 100 * 4 * 17 * 512 and len(ours) == len(raw) + 512 - len(raw) % 512
    assert ours.startswith(theirs) and ours[: len(raw)] == raw


def test_fixed_vhd_on_a_sparse_local_file(tmp_path):
    """The real LocalSource (SEEK_DATA/SEEK_HOLE): a 1 GiB fixed VHD holding 1 MiB is read fast."""
    from vmimport.pipeline.source import LocalSource
    path = tmp_path / "sparse.raw"
    data = os.urandom(MiB)
    with open(path, "wb") as f:
        f.truncate(1 << 30)
        f.seek(300 * MiB)
        f.write(data)
    (tmp_path / "bucket").mkdir()
    qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", str(path),
         str(tmp_path / "bucket" / "f.vhd"))
    with LocalSource.open(tmp_path / "bucket", "bucket", "f.vhd") as source:
        disk = open_guest_disk(source, "vhd", Limits())
        chunks = [(offset, chunk.tobytes()) for offset, chunk in disk.extents()]
        got = [(offset, chunk) for offset, chunk in chunks if any(chunk)]
    assert b"".join(c for _, c in got) == data and got[0][0] == 300 * MiB
    assert disk.bytes_consumed < 64 * MiB
