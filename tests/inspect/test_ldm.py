"""The LDM reader against libldm's ``ldmtool`` (an independent reader) on the dynamic-disk fixtures,
and against damaged databases."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.inspect.test_fixtures import run_inspection
from vmimport.inspect.budget import BoundedReader, Budget
from vmimport.inspect.ldm import LdmError, read_ldm

FIXTURES = {"win2019-ntfs-dynamic-simple-mbr-bios": "simple", "win2019-dynamic-spanned": "spanned",
            "win2019-dynamic-striped": "striped", "win2019-dynamic-raid5": "RAID5"}


def _ldmtool(disk, *args) -> dict | list:
    out = subprocess.run(["ldmtool", "-d", str(disk), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _ours(disk):
    with open(disk, "rb") as f:
        size = disk.stat().st_size
        return read_ldm(BoundedReader(f, size, Budget(10)), size)


@pytest.mark.parametrize("name, kind", FIXTURES.items())
def test_reader_agrees_with_ldmtool(name, kind, guest_disks_built):
    disk = guest_disks_built[name]
    (group,) = _ldmtool(disk, "scan")
    volume = _ldmtool(disk, "show", "volume", group, "Volume1")
    assert volume["type"] == kind
    data_start = _ldmtool(disk, "show", "disk", group, "Disk1")["data-start"]
    theirs = [_ldmtool(disk, "show", "partition", group, p) for p in volume["partitions"]]
    (ours,) = _ours(disk)
    assert ours.name == volume["name"]
    assert ours.kind == {"RAID5": "RAID-5"}.get(kind, kind)
    assert [(e.start // 512, e.size // 512) for e in ours.extents] == [(data_start + p["start"], p["size"]) for p in theirs]


def _damaged(src, dst, offset: int, data: bytes):
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return dst


@pytest.mark.parametrize("where, data, words", [
    (6 * 512 + 0x12B, (1 << 60).to_bytes(8, "big"), "regions outside the disk"),  # private region start
    (None, b"VMDX", "no VMDB"),
    ("vmdb+8", (1 << 20).to_bytes(4, "big"), "implausible VMDB"),  # VBLK size
    ("vblk0+0x18", b"\x7f", "runs past its record"),  # object id length
])
def test_damaged_database_is_a_finding(where, data, words, guest_disks_built, tmp_path):
    src = guest_disks_built["win2019-ntfs-dynamic-simple-mbr-bios"]
    sectors = src.stat().st_size // 512
    vmdb = (sectors - 2048 + 17) * 512
    offset = {None: vmdb, "vmdb+8": vmdb + 8, "vblk0+0x18": vmdb + 512 + 0x18}.get(where, where)
    disk = _damaged(src, tmp_path / "disk.raw", offset, data)
    if where != "vblk0+0x18":
        with pytest.raises(LdmError, match=words):
            _ours(disk)
    insp = run_inspection(disk)
    assert insp.os_family is None and not insp.incomplete
    assert any(words in n for n in insp.findings), insp.findings
