"""LVM2 volumes lvm2 cannot make here (thin, snapshot, RAID: they need device-mapper) and hostile metadata.

Each case starts from the metadata lvm2's own tools wrote on a fixture disk and changes the root
volume's text, then runs the whole inspection and decision on the changed disk.
"""

from __future__ import annotations

import shutil
import struct

import pytest

from tests.inspect.test_fixtures import run_inspection
from vmimport.inspect import decide
from vmimport.inspect.lvm import LvmError, parse_metadata
from vmimport.pipeline.errors import ImportFailure

FIXTURE = "centos7-ext4-lvm-striped-mbr-bios"
PV_OFFSET = 33 * 1024 * 1024  # partition 2 of that fixture


def _metadata_location(disk) -> tuple[int, int, int]:
    """(offset of the raw_locn size field, offset of the text, its size) for the PV at PV_OFFSET."""
    with open(disk, "rb") as f:
        f.seek(PV_OFFSET + 512)
        label = f.read(512)
        content = struct.unpack_from("<I", label, 20)[0]
        pvh = label[content:]
        pos = 40
        while struct.unpack_from("<Q", pvh, pos)[0]:
            pos += 16
        mda_at = struct.unpack_from("<Q", pvh, pos + 16)[0]
        f.seek(PV_OFFSET + mda_at)
        hdr = f.read(512)
        raw_offset, raw_size = struct.unpack_from("<QQ", hdr, 40)
        return PV_OFFSET + mda_at + 48, PV_OFFSET + mda_at + raw_offset, raw_size


def _rewrite(src, dst, change) -> None:
    shutil.copyfile(src, dst)
    size_field, text_at, size = _metadata_location(dst)
    with open(dst, "r+b") as f:
        f.seek(text_at)
        text = f.read(size)
        new = change(text)
        f.seek(text_at)
        f.write(new)
        f.seek(size_field)
        f.write(struct.pack("<Q", len(new)))


def _root_segment_type(kind: str):
    def change(text: bytes) -> bytes:
        head, sep, tail = text.partition(b"root {")
        return head + sep + tail.replace(b'type = "striped"', f'type = "{kind}"'.encode(), 1)
    return change


@pytest.mark.parametrize("kind, words", [
    ("thin", "is a thin volume (thin)"),
    ("snapshot", "is a snapshot (snapshot)"),
    ("raid1", "is a RAID volume (raid1)"),
    ("thin-pool", "is a thin pool (thin-pool)"),
])
def test_unreadable_root_volume_is_named_in_the_refusal(kind, words, guest_disks_built, tmp_path):
    disk = tmp_path / "disk.raw"
    _rewrite(guest_disks_built[FIXTURE], disk, _root_segment_type(kind))
    insp = run_inspection(disk)
    assert insp.os_family is None
    with pytest.raises(ImportFailure) as info:
        decide(insp, {})
    message = info.value.message
    assert message.startswith("Unknown OS / Missing OS files."), message
    assert f"logical volume centos/root {words}, which vmimport does not read" in message


def test_missing_second_pv_is_reported(guest_disks_built, tmp_path):
    """The striped root needs both PVs; with the second PV's label wiped it cannot be read."""
    disk = tmp_path / "disk.raw"
    shutil.copyfile(guest_disks_built[FIXTURE], disk)
    second = PV_OFFSET + (96 // 2 + 12) * 1024 * 1024
    with open(disk, "r+b") as f:
        f.seek(second + 512)
        f.write(b"\0" * 512)
    insp = run_inspection(disk)
    with pytest.raises(ImportFailure) as info:
        decide(insp, {})
    assert "which is not on this disk" in info.value.message
    assert any("spans physical volumes not on this disk" in n for n in insp.findings)


@pytest.mark.parametrize("change, finding", [
    (lambda t: t.replace(b"}", b"", 1), "malformed LVM metadata"),
    (lambda t: t.replace(b"extent_size = ", b"extent_size = -", 1), "valid extent_size"),
    (lambda t: b"a {" * 40 + t, "nested deeper than 16"),
    (lambda t: t.replace(b'stripes = [', b'stripes = [' + b'"pv0", 0, ' * 100, 1), "stripes (1 to 64 expected)"),
])
def test_hostile_metadata_gives_a_finding_not_a_crash(change, finding, guest_disks_built, tmp_path):
    disk = tmp_path / "disk.raw"
    _rewrite(guest_disks_built[FIXTURE], disk, change)
    insp = run_inspection(disk)
    assert insp.os_family is None
    assert any(finding in n for n in insp.findings), insp.findings


def test_parser_reads_lvm_text_format():
    parsed = parse_metadata('vg {\n id = "a-b"  # comment\n extent_size = 8192\n status = ["READ", "WRITE"]\n'
                            ' logical_volumes {\n  root {\n   segment1 {\n    stripes = [\n     "pv0", 0\n    ]\n   }\n  }\n }\n}\n'
                            'contents = "Text Format Volume Group"\nversion = 1\n')
    assert parsed["vg"]["extent_size"] == 8192
    assert parsed["vg"]["status"] == ["READ", "WRITE"]
    assert parsed["vg"]["logical_volumes"]["root"]["segment1"]["stripes"] == ["pv0", 0]
    with pytest.raises(LvmError):
        parse_metadata("vg { id = }")


@pytest.mark.parametrize("name, lines", [
    ("rocky9-xfs-lvm-gpt-uefi", ["/etc/fstab mounts / from /dev/mapper/rl-root: logical volume rl/root (xfs)",
                                 "/etc/fstab mounts /boot from UUID=", ": partition 2 (ext4)"]),
    ("centos7-ext4-lvm-striped-mbr-bios", ["/etc/fstab mounts / from /dev/centos/root: logical volume centos/root (ext4)",
                                           "/etc/fstab mounts /boot from LABEL=root: partition 1 (ext4)"]),
    ("fedora39-btrfs-subvol-root-gpt-uefi", ["Btrfs subvolume root (id 256) holds the root, as its /etc/fstab says",
                                             "kernel 6.5.6-300.fc39.x86_64 found in the /boot subvolume boot"]),
    ("opensuse155-btrfs-subvol-at-gpt-uefi", ["Btrfs default subvolume @/.snapshots/1/snapshot (id 259) holds the root"]),
])
def test_fstab_and_subvolume_findings(name, lines, guest_disks_built):
    findings = "\n".join(run_inspection(guest_disks_built[name]).findings)
    for line in lines:
        assert line in findings, findings


def test_fstab_names():
    from vmimport.inspect.fstab import _mapper_name, resolve
    from vmimport.inspect.model import PartitionInfo

    lv = PartitionInfo(number=3, start=0, size=1, type="LVM2 LV", volume="my-vg/lv_root", fs_uuid="AB-CD")
    part = PartitionInfo(number=1, start=512, size=1, type="0x83", fs_label="boot")
    assert _mapper_name("my--vg-lv_root") == "my-vg/lv_root"
    assert resolve("/dev/mapper/my--vg-lv_root", [lv, part]) is lv
    assert resolve("/dev/my-vg/lv_root", [lv, part]) is lv
    assert resolve("UUID=ab-cd", [lv, part]) is lv
    assert resolve("/dev/disk/by-label/boot", [lv, part]) is part
    assert resolve("/dev/sda1", [lv, part]) is part
    assert resolve("/dev/nvme0n1p2", [lv, part]) is None
    assert resolve("PARTUUID=1234", [lv, part]) == "unchecked"


def test_whole_disk_physical_volume_is_refused_naming_its_group(guest_disks_built, tmp_path):
    """A PV on the whole disk (no partition table): lvm2 makes it, the refusal says what it is."""
    from tests.guest_disks_lvm import loop_devices, lvm

    disk = tmp_path / "pv.raw"
    with open(disk, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    with loop_devices([(disk, 0, 16 * 1024 * 1024)]) as devs:
        lvm("pvcreate", "-q", *devs, devices=devs)
        lvm("vgcreate", "-q", "datavg", *devs, devices=devs)
    insp = run_inspection(disk)
    assert "the whole disk is a physical volume of LVM2 volume group datavg, without a partition table" in insp.findings
    with pytest.raises(ImportFailure) as info:
        decide(insp, {})
    assert info.value.message.startswith("No valid partitions. Not a valid volume. The disk has no MBR or GPT partition "
                                         "table: it holds an LVM2 physical volume directly."), info.value.message


def test_volume_group_over_two_disks(guest_disk_dir):
    """The root LV starts on disk 1's PV and ends on disk 2 (a whole-disk PV): read whole only with both."""
    from tests.guest_disks_lvm import build_two_disks
    from vmimport.inspect import inspect_disk

    first, second = build_two_disks(guest_disk_dir)
    with open(first, "rb") as a, open(second, "rb") as b:
        insp = inspect_disk(a, first.stat().st_size, other_disks=[(b, second.stat().st_size)])
    assert (insp.os_family, insp.distribution, insp.version) == ("Linux", "rhel", "9.3")
    assert insp.kernel == "5.14.0-362.8.1.el9_3.x86_64"
    assert "LVM2 volume group rhel on partition 3, disk 2: logical volumes root, swap" in insp.findings
    assert decide(insp, {}).boot_mode == "uefi"
    alone = run_inspection(first)
    with pytest.raises(ImportFailure, match="uses physical volume pv1, which is not on this disk"):
        decide(alone, {})
