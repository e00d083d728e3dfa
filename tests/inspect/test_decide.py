"""decide(): user-given values against what the disk holds (ec2-import-api.md §1.5, §2.3)."""

from __future__ import annotations

import re

import pytest

from tests.inspect.test_fixtures import run_inspection
from vmimport.inspect import Inspection, PartitionInfo, decide
from vmimport.pipeline.errors import ImportFailure


@pytest.fixture(scope="module")
def insp(guest_disks_built):
    cache: dict[str, Inspection] = {}

    def get(name: str) -> Inspection:
        if name not in cache:
            cache[name] = run_inspection(guest_disks_built[name])
        return cache[name]

    return get


def refused(inspection: Inspection, requested: dict) -> str:
    with pytest.raises(ImportFailure) as info:
        decide(inspection, requested)
    assert info.value.kind == "ClientError"
    return info.value.message


def test_matching_requested_values_are_accepted(insp):
    d = decide(insp("ubuntu2204-ext4-mbr-bios"), {"Platform": "Linux", "Architecture": "x86_64", "BootMode": "legacy-bios",
                                                  "LicenseType": "BYOL", "UsageOperation": None, "Hypervisor": "xen"})
    assert (d.platform, d.architecture, d.boot_mode, d.license_type) == ("Linux", "x86_64", "legacy-bios", "BYOL")


@pytest.mark.parametrize("requested, prefix, detail", [
    ({"Platform": "Windows"}, "Unsupported configuration -", "Platform Windows was requested but the disk holds Linux"),
    ({"Architecture": "i386"}, "Unsupported configuration -", "Architecture i386 was requested but the disk's system is x86_64"),
    ({"Architecture": "arm64"}, "Unsupported configuration -", "arm64"),
    ({"BootMode": "uefi"}, "No bootable partition found", "for BootMode uefi: the disk boots with legacy-bios"),
    ({"BootMode": "uefi-preferred"}, "Unsupported configuration -", "not accepted on import"),
    ({"LicenseType": "AWS"}, "Unsupported configuration -", "Linux imports are BYOL"),
    ({"UsageOperation": "RunInstances:0002"}, "Unsupported configuration -", "not valid for Linux"),
    ({"LicenseType": "BYOL", "UsageOperation": "RunInstances"}, "Unsupported configuration -", "cannot both be given"),
    ({"Hypervisor": "kvm"}, "Unsupported configuration -", "only value is 'xen'"),
])
def test_contradictions_on_linux_bios(insp, requested, prefix, detail):
    message = refused(insp("ubuntu2204-ext4-mbr-bios"), requested)
    assert message.startswith(prefix) and detail in message, message


def test_refusals_keep_sentence_case(insp):
    """A finding placed after a full stop starts its sentence with a capital, as AWS writes
    (the refusal read "...legacy-bios. no UEFI boot: ...")."""
    message = refused(insp("ubuntu2204-ext4-mbr-bios"), {"BootMode": "uefi"})
    assert "the disk boots with legacy-bios. No UEFI boot: " in message, message
    assert not re.search(r"[.!?] [a-z]", message), message


def test_platform_contradiction_on_windows(insp):
    message = refused(insp("win2019-ntfs-mbr-bios"), {"Platform": "Linux"})
    assert "Platform Linux was requested but the disk holds Windows (Windows Server 2019 Datacenter" in message


def test_legacy_bios_requested_on_uefi_only_disk(insp):
    message = refused(insp("debian12-ext4-gpt-uefi"), {"BootMode": "legacy-bios"})
    assert message.startswith("No bootable partition found for BootMode legacy-bios: the disk boots with uefi")


def test_dual_boot_mode_follows_the_user_else_legacy_bios(insp):
    for name in ("debian12-btrfs-gpt-hybrid", "ubuntu2204-xfs-hybrid-mbr"):
        assert decide(insp(name), {}).boot_mode == "legacy-bios"
        assert decide(insp(name), {"BootMode": "uefi"}).boot_mode == "uefi"
        assert decide(insp(name), {"BootMode": "legacy-bios"}).boot_mode == "legacy-bios"


def test_uefi_linux_without_fallback_cannot_be_forced(insp):
    message = refused(insp("uefi-no-fallback"), {"BootMode": "uefi"})
    assert message.startswith("No bootable partition found") and "EFI/BOOT/BOOTX64.EFI" in message


def test_windows_licensing(insp):
    server = insp("win2019-ntfs-mbr-bios")
    assert decide(server, {"LicenseType": "BYOL"}).usage_operation == "RunInstances:0800"
    d = decide(server, {"UsageOperation": "RunInstances:0006"})
    assert (d.license_type, d.platform_details) == ("AWS", "Windows with SQL Server Standard")
    d = decide(server, {"UsageOperation": "RunInstances:0800"})
    assert (d.license_type, d.platform_details) == ("BYOL", "Windows BYOL")
    assert "not valid for Windows" in refused(server, {"UsageOperation": "RunInstances"})
    client = insp("win10-ntfs-mbr-bios")
    assert "Windows client edition" in refused(client, {"LicenseType": "AWS"})
    assert "Windows client edition" in refused(client, {"UsageOperation": "RunInstances:0002"})
    assert decide(client, {"LicenseType": "BYOL"}).platform_details == "Windows BYOL"


def test_linux_sql_usage_operation(insp):
    d = decide(insp("rocky9-xfs-mbr-bios"), {"UsageOperation": "RunInstances:0004"})
    assert (d.license_type, d.platform_details) == ("BYOL", "Linux with SQL Server Standard")


def test_windows_32_bit_is_accepted_and_can_be_confirmed(insp):
    d = decide(insp("win7-x86-ntfs-mbr-bios"), {"Architecture": "i386", "Platform": "Windows"})
    assert (d.architecture, d.license_type) == ("i386", "BYOL")


def _windows(build: int, modes: set[str], itype: str = "Client", size: int = 100 << 30, parts: int = 2) -> Inspection:
    return Inspection(
        partition_scheme="gpt", os_family="Windows", os_name="Windows 11 Pro", version="10.0", windows_build=build,
        windows_installation_type=itype, architecture="x86_64", boot_modes=set(modes), root_partition=parts,
        root_filesystem="ntfs", windows_roots=1, disk_size=size,
        efi_loaders=["EFI/Microsoft/Boot/bootmgfw.efi"] if "uefi" in modes else [],
        partitions=[PartitionInfo(i, i << 20, 1 << 20, "0x07", filesystem="ntfs") for i in range(1, parts + 1)],
    )


def test_windows_11_needs_uefi():
    assert "needs UEFI" in refused(_windows(22631, {"legacy-bios"}), {})
    assert decide(_windows(22631, {"legacy-bios", "uefi"}), {}).boot_mode == "uefi"
    assert decide(_windows(19045, {"legacy-bios", "uefi"}), {}).boot_mode == "legacy-bios"


def test_windows_dual_mode_large_disk_stays_uefi():
    assert decide(_windows(17763, {"legacy-bios", "uefi"}, "Server", size=3 << 40), {}).boot_mode == "uefi"
    assert decide(_windows(17763, {"legacy-bios", "uefi"}, "Server"), {}).boot_mode == "legacy-bios"


def test_synthetic_refusals():
    assert refused(Inspection(), {}).startswith("No valid partitions. Not a valid volume.")
    unknown = Inspection(partition_scheme="mbr", partitions=[PartitionInfo(1, 1 << 20, 1 << 20, "0x83", filesystem="ext4")],
                         findings=["partition 1 (ext4) has no /etc directory"])
    assert refused(unknown, {}).startswith("Unknown OS / Missing OS files. No Linux root")
    no_fs = Inspection(partition_scheme="mbr", partitions=[PartitionInfo(1, 1 << 20, 1 << 20, "0x83")])
    assert refused(no_fs, {}).startswith("No valid partitions. Not a valid volume. No partition holds a filesystem")
    locked = Inspection(partition_scheme="gpt", partitions=[PartitionInfo(1, 1 << 20, 1 << 20, "0x07", filesystem="BitLocker")],
                        encrypted=["partition 1 is BitLocker-encrypted"])
    assert "encrypted" in refused(locked, {})
    both = Inspection(partition_scheme="mbr", partitions=[PartitionInfo(1, 1 << 20, 1 << 20, "0x83", filesystem="ext4")],
                      os_family="Linux", root_count=1, windows_roots=1)
    assert refused(both, {}).startswith("Unsupported configuration - Multiple directories found")
