"""Every fixture disk through inspect_disk + decide, against the expectations in tests/guest_disks.py."""

from __future__ import annotations

import statistics
import time

import pytest

from tests.guest_disks import ACCEPTED, EXPECTED, NAMES, REFUSED
from vmimport.inspect import decide, inspect_disk
from vmimport.pipeline.errors import ImportFailure


def run_inspection(path, deadline: float = 10.0):
    with open(path, "rb") as f:
        return inspect_disk(f, path.stat().st_size, deadline)


@pytest.mark.parametrize("name", NAMES)
def test_inspection_facts(name, guest_disks_built):
    exp = EXPECTED[name]
    insp = run_inspection(guest_disks_built[name])
    assert not insp.incomplete, insp.findings
    assert insp.partition_scheme == exp.partition_scheme
    if exp.refusal is None or exp.os_family:
        assert insp.os_family == exp.os_family, insp.findings
    if exp.architecture:
        assert insp.architecture == exp.architecture, insp.findings
    if exp.refusal is None or exp.boot_modes:
        assert insp.boot_modes == set(exp.boot_modes), insp.findings
    if exp.root_count is not None:
        assert insp.root_count == exp.root_count
    for attr in ("distribution", "version", "os_name", "hostname", "kernel", "windows_installation_type", "windows_build"):
        if getattr(exp, attr) is not None:
            assert getattr(insp, attr) == getattr(exp, attr), (attr, insp.findings)
    if insp.partition_scheme:
        assert insp.partitions and all(p.size > 0 and p.start % 512 == 0 for p in insp.partitions)


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_decision(name, guest_disks_built):
    exp = EXPECTED[name]
    insp = run_inspection(guest_disks_built[name])
    d = decide(insp, {})
    assert (d.platform, d.architecture, d.boot_mode) == (exp.os_family, exp.architecture, exp.boot_mode)
    assert (d.license_type, d.usage_operation, d.platform_details) == (exp.license_type, exp.usage_operation, exp.platform_details)
    assert d.description.startswith(f"AWS-VMImport service: {exp.os_family} - {exp.os_name}")
    if exp.kernel:
        assert d.description.endswith(f" - {exp.kernel}")


@pytest.mark.parametrize("name", REFUSED)
def test_refusal_message(name, guest_disks_built):
    exp = EXPECTED[name]
    insp = run_inspection(guest_disks_built[name])
    with pytest.raises(ImportFailure) as info:
        decide(insp, {})
    message = info.value.message
    assert message.startswith(exp.refusal), message
    assert len(message) > len(exp.refusal) + 10, "a refusal says what was found"
    assert info.value.status_message.startswith("ClientError: " + exp.refusal)


def test_fixture_details(guest_disks_built):
    """Spot checks of what the messages and partition lists say."""
    insp = run_inspection(guest_disks_built["ubuntu2204-ext4-mbr-bios"])
    (p,) = insp.partitions
    assert (p.number, p.type, p.active, p.filesystem, p.start) == (1, "0x83", True, "ext4", 1024 * 1024)
    insp = run_inspection(guest_disks_built["debian12-btrfs-gpt-hybrid"])
    assert [p.filesystem for p in insp.partitions] == [None, "vfat", "btrfs"]
    assert insp.partitions[1].type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert "EFI/BOOT/BOOTX64.EFI" in insp.efi_loaders
    insp = run_inspection(guest_disks_built["win2022-ntfs-gpt-uefi"])
    assert [p.filesystem for p in insp.partitions] == ["vfat", None, "ntfs"]
    assert insp.windows_edition == "ServerStandard"
    assert any(loader.lower() == "efi/microsoft/boot/bootmgfw.efi" for loader in insp.efi_loaders)
    insp = run_inspection(guest_disks_built["ubuntu2204-xfs-hybrid-mbr"])
    assert insp.partitions[2].active  # lent by the hybrid MBR entry
    with pytest.raises(ImportFailure, match=r"partition 1 \(ext4\) and partition 2 \(ext4\)"):
        decide(run_inspection(guest_disks_built["two-linux-roots"]), {})
    with pytest.raises(ImportFailure, match=r"/bin/bash is an ELF32 i386 executable"):
        decide(run_inspection(guest_disks_built["linux-i386"]), {})
    with pytest.raises(ImportFailure, match=r"EFI/BOOT/BOOTX64.EFI.*EFI/ubuntu/grubx64.efi"):
        decide(run_inspection(guest_disks_built["uefi-no-fallback"]), {})
    with pytest.raises(ImportFailure, match=r"partition 1 \(ext4\) has /etc but no /bin or /usr/bin"):
        decide(run_inspection(guest_disks_built["data-only"]), {})


def test_inspection_time(guest_disks_built, capsys):
    """Median inspection time per disk (printed, not asserted: the target is 0.3 s)."""
    rows = []
    for name in NAMES:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            run_inspection(guest_disks_built[name])
            times.append(time.perf_counter() - started)
        rows.append((name, statistics.median(times)))
    with capsys.disabled():
        print("\ninspection time per disk (median of 5):")
        for name, median in rows:
            print(f"  {name:30s} {median * 1000:7.1f} ms")
        print(f"  median over all disks: {statistics.median(m for _, m in rows) * 1000:.1f} ms")
