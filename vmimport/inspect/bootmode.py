"""Boot-mode signals: BIOS boot code and where it can jump to, and the loaders on EFI System Partitions."""

from __future__ import annotations

from vmimport.inspect.filesystems import GuestFS
from vmimport.inspect.model import PartitionInfo
from vmimport.inspect.partitions import BIOS_BOOT_GUID, ESP_GUID, PartitionTable

FALLBACK_LOADERS = {"x86_64": "EFI/BOOT/BOOTX64.EFI", "i386": "EFI/BOOT/BOOTIA32.EFI", "arm64": "EFI/BOOT/BOOTAA64.EFI"}
WINDOWS_LOADER = "EFI/Microsoft/Boot/bootmgfw.efi"


def is_esp(part: PartitionInfo) -> bool:
    return part.type == ESP_GUID or part.type == "0xef"


def esp_loaders(fs: GuestFS) -> list[str]:
    """Every ``*.efi`` one level below ``EFI/`` (``EFI/BOOT/BOOTX64.EFI``, ``EFI/debian/grubx64.efi``...)."""
    loaders = []
    for vendor in fs.listdir("/EFI", limit=64):
        for name in fs.listdir(f"/EFI/{vendor}", limit=256):
            if name.lower().endswith(".efi"):
                loaders.append(f"EFI/{vendor}/{name}")
            elif vendor.lower() == "microsoft" and name.lower() == "boot":
                for inner in fs.listdir("/EFI/Microsoft/Boot", limit=256):
                    if inner.lower().endswith(".efi"):
                        loaders.append(f"EFI/{vendor}/{name}/{inner}")
    return loaders


def has_loader(loaders: list[str], wanted: str) -> bool:
    return any(path.casefold() == wanted.casefold() for path in loaders)


def legacy_bios(table: PartitionTable) -> tuple[bool, str]:
    """(bootable with legacy BIOS, why) from the MBR boot code and the partition layout."""
    if not table.has_boot_code:
        return False, "the MBR has no boot code (bytes 0-439 are zero)"
    grub = b"GRUB" in table.boot_code
    if table.scheme in ("gpt", "hybrid"):
        bios_boot = [p for p in table.partitions if p.type == BIOS_BOOT_GUID]
        if bios_boot:
            return True, f"MBR boot code{' (GRUB)' if grub else ''} and a BIOS boot partition (partition {bios_boot[0].number})"
        active = [p for p in table.partitions if p.active]
        if table.scheme == "hybrid" and active:
            return True, f"MBR boot code and an active hybrid-MBR partition (partition {active[0].number})"
        return False, "GPT disk with MBR boot code but no BIOS boot partition"
    active = [p for p in table.partitions if p.active]
    if active:
        return True, f"MBR boot code{' (GRUB)' if grub else ''} and active partition {active[0].number}"
    if grub:
        return True, "GRUB boot code in the MBR (no partition is marked active)"
    return False, "the MBR has boot code but no partition is marked active"
