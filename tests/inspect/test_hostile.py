"""Hostile and damaged disks: inspection ends within its deadline, reports, and never raises."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import time
import zlib

import pytest

from tests.inspect.test_fixtures import run_inspection
from vmimport.inspect import decide, inspect_disk
from vmimport.inspect.budget import Budget, InspectionLimit
from vmimport.inspect.filesystems import GuestFS
from vmimport.pipeline.errors import ImportFailure


class SlowReader(io.RawIOBase):
    """A disk whose every read takes ``delay`` seconds (a stalled block store)."""

    def __init__(self, fh, delay: float):
        self.fh, self.delay = fh, delay
        self.reads = 0

    def seek(self, offset, whence=0):
        return self.fh.seek(offset, whence)

    def tell(self):
        return self.fh.tell()

    def read(self, n=-1):
        self.reads += 1
        if self.delay:
            time.sleep(self.delay)
        return self.fh.read(n)


class PatchedReader(io.RawIOBase):
    """A disk file with some byte ranges overwritten in memory."""

    def __init__(self, fh, patches: dict[int, bytes]):
        self.fh, self.patches, self.pos = fh, patches, 0

    def seek(self, offset, whence=0):
        self.pos = self.fh.seek(offset, whence)
        return self.pos

    def tell(self):
        return self.pos

    def read(self, n=-1):
        self.fh.seek(self.pos)
        data = bytearray(self.fh.read(n))
        for off, patch in self.patches.items():
            lo, hi = max(off, self.pos), min(off + len(patch), self.pos + len(data))
            if lo < hi:
                data[lo - self.pos : hi - self.pos] = patch[lo - off : hi - off]
        self.pos += len(data)
        return bytes(data)


class FailingReader(io.RawIOBase):
    def seek(self, offset, whence=0):
        return offset

    def read(self, n=-1):
        raise OSError("block store unavailable")


def test_slow_disk_stops_at_the_deadline(guest_disks_built):
    path = guest_disks_built["win2019-ntfs-mbr-bios"]
    with open(path, "rb") as f:
        everything = SlowReader(f, 0)
        inspect_disk(everything, path.stat().st_size, deadline_seconds=60)
    with open(path, "rb") as f:
        reader = SlowReader(f, 0.1)
        insp = inspect_disk(reader, path.stat().st_size, deadline_seconds=0.3)
    # 0.3 s of 100 ms reads is 3 or 4 of them (fewer on a busy machine, never more), where the
    # whole inspection reads this disk ``everything.reads`` times (21 here).
    assert reader.reads <= 5 < everything.reads, (reader.reads, everything.reads)
    assert insp.incomplete and any("deadline" in f for f in insp.findings), insp.findings
    with pytest.raises(ImportFailure, match="^Unknown OS / Missing OS files. Inspection stopped"):
        decide(insp, {})


def test_failing_reader_is_reported_not_raised():
    insp = inspect_disk(FailingReader(), 1 << 30)
    assert insp.incomplete and "block store unavailable" in insp.findings[-1]


@pytest.mark.parametrize("name", ["hostile-symlink-loops", "hostile-corrupt-superblock", "hostile-corrupt-metadata"])
def test_hostile_fixtures_finish_fast(name, guest_disks_built):
    insp = run_inspection(guest_disks_built[name], deadline=20.0)
    print(f"{name}: findings: {insp.findings}")
    with pytest.raises(ImportFailure, match=r"^Unknown OS / Missing OS files\."):
        decide(insp, {})


def test_symlink_loop_is_named(guest_disks_built):
    insp = run_inspection(guest_disks_built["hostile-symlink-loops"])
    assert any("too many levels of symbolic links" in f for f in insp.findings), insp.findings


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_metadata_never_raises(seed, guest_disks_built):
    """Random damage to the partition table, superblock, group descriptors and inode table."""
    path = guest_disks_built["ubuntu2204-ext4-mbr-bios"]
    rng = random.Random(seed)
    patches = {}
    for _ in range(40):
        region = rng.choice([(0, 512), (1 << 20, (1 << 20) + 8192), ((1 << 20) + 8192, 3 << 20)])
        off = rng.randrange(*region)
        patches[off] = rng.randbytes(rng.choice([1, 2, 4, 16, 64]))
    with open(path, "rb") as f:  # bounded by the deadline (and a hang by the suite's timeout)
        insp = inspect_disk(PatchedReader(f, patches), path.stat().st_size, deadline_seconds=20.0)
    try:
        decide(insp, {})
    except ImportFailure:
        pass


def test_huge_directory_hits_the_entry_limit():
    class Endless(GuestFS):
        def root(self):
            return "root"

        def node_kind(self, node):
            return "dir"

        def iter_children(self, node):
            i = 0
            while True:
                i += 1
                yield f"f{i}", f"f{i}"

    fs = Endless("ext4", None, Budget(5.0))
    with pytest.raises(InspectionLimit, match="more than"):
        fs.resolve("/etc")


def _mbr(entries: list[tuple[int, int, int, int]], code: bytes = b"") -> bytearray:
    sector = bytearray(512)
    sector[: len(code)] = code
    for i, (flag, ptype, lba, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", sector, 446 + 16 * i, flag, ptype, lba, count)
    sector[510:512] = b"\x55\xaa"
    return sector


def test_extended_partition_loop_terminates():
    disk = bytearray(4 << 20)
    disk[0:512] = _mbr([(0, 0x05, 2048, 4096)])
    disk[2048 * 512 : 2049 * 512] = _mbr([(0, 0x83, 63, 30), (0, 0x05, 100, 200)])
    disk[2148 * 512 : 2149 * 512] = _mbr([(0, 0x83, 63, 30), (0, 0x05, 200, 200)])
    disk[2248 * 512 : 2249 * 512] = _mbr([(0, 0x83, 63, 30), (0, 0x05, 100, 200)])  # back to the second EBR
    insp = inspect_disk(io.BytesIO(disk), len(disk))
    assert insp.partition_scheme == "mbr" and [p.number for p in insp.partitions] == [5, 6, 7]
    assert insp.partitions[1].start == (2148 + 63) * 512
    assert any("loops" in f for f in insp.findings)


def test_gpt_with_absurd_entry_count_is_not_trusted():
    disk = bytearray(4 << 20)
    disk[0:512] = _mbr([(0, 0xEE, 1, (4 << 20) // 512 - 1)])
    hdr = bytearray(512)
    struct.pack_into("<8sIII", hdr, 0, b"EFI PART", 0x10000, 92, 0)
    struct.pack_into("<QIII", hdr, 72, 2, 1 << 31, 128, 0)
    struct.pack_into("<I", hdr, 16, zlib.crc32(bytes(hdr[:92])))
    disk[512:1024] = hdr
    insp = inspect_disk(io.BytesIO(disk), len(disk))
    assert any("not a sane GPT" in f for f in insp.findings), insp.findings
    with pytest.raises(ImportFailure):
        decide(insp, {})


def test_damaged_primary_gpt_falls_back_to_backup(tmp_path):
    disk = tmp_path / "gpt.raw"
    disk.write_bytes(b"")
    with open(disk, "r+b") as f:
        f.truncate(8 << 20)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(disk)], check=True,
                   input="label: gpt\nstart=2048, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n", text=True)
    with open(disk, "r+b") as f:
        f.seek(512 + 24)
        f.write(b"\xff" * 8)  # breaks the primary header's CRC
    with open(disk, "rb") as f:
        insp = inspect_disk(f, 8 << 20)
    assert insp.partition_scheme == "gpt" and len(insp.partitions) == 1
    assert insp.partitions[0].start == 2048 * 512 and insp.partitions[0].size == 4096 * 512
    assert any("backup GPT header was used" in f for f in insp.findings)


def test_filesystem_boot_sector_at_lba0_is_not_an_mbr():
    disk = bytearray(1 << 20)
    disk[3:11] = b"NTFS    "
    disk[510:512] = b"\x55\xaa"
    insp = inspect_disk(io.BytesIO(disk), len(disk))
    assert insp.partition_scheme is None and insp.bare_filesystem == "ntfs"
