"""What inspection reports about a boot disk, and what the import decides from it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PartitionInfo:
    number: int  # 1-based, as Linux names it (sda1); MBR logical partitions are 5, 6, ...
    start: int  # byte offset on the disk
    size: int  # bytes
    type: str  # GPT type GUID (upper case) or the MBR type byte as "0x83"
    active: bool = False  # MBR boot indicator 0x80 (for GPT: the hybrid MBR entry's flag)
    filesystem: str | None = None  # "ext4", "xfs", "btrfs", "ntfs", "vfat", "swap", "LVM2_member", ...
    label: str | None = None  # GPT partition name
    volume: str | None = None  # "vg/lv" when this is an LVM2 logical volume (number: its first PV's partition)
    volume_kind: str = "logical volume"  # or "dynamic volume" (Windows LDM; volume is its name)

    fs_uuid: str | None = None  # the filesystem's UUID and label, as fstab's UUID= and LABEL= name them
    fs_label: str | None = None
    subvolume: str | None = None  # the Btrfs subvolume holding the root ("root", "@", "/" for the top level)

    def describe(self) -> str:
        if self.volume:
            where = f"{self.volume_kind} {self.volume} ({self.filesystem or 'no filesystem'})"
        else:
            where = f"partition {self.number} ({self.filesystem or 'type ' + self.type})"
        return where + (f" subvolume {self.subvolume}" if self.subvolume and self.subvolume != "/" else "")


@dataclass
class Inspection:
    partition_scheme: str | None = None  # "mbr" | "gpt" | "hybrid" | None
    partitions: list[PartitionInfo] = field(default_factory=list)
    os_family: str | None = None  # "Linux" | "Windows"
    distribution: str | None = None
    version: str | None = None
    os_name: str | None = None
    windows_edition: str | None = None
    windows_installation_type: str | None = None  # "Client" | "Server"
    windows_build: int | None = None
    hostname: str | None = None
    kernel: str | None = None
    architecture: str | None = None  # "x86_64" | "i386" | "arm64" | other ELF/PE machine names
    boot_modes: set[str] = field(default_factory=set)  # subset of {"legacy-bios", "uefi"}
    findings: list[str] = field(default_factory=list)
    root_count: int = 0  # Linux roots found
    # Beyond the agreed interface (all defaulted): facts decide() needs to explain itself.
    disk_size: int = 0
    root_partition: int | None = None  # the partition number holding the detected OS
    root_filesystem: str | None = None  # its filesystem ("ext4", "ntfs", or "disk" when unpartitioned)
    fstab_found: bool | None = None  # Linux: /etc/fstab is a readable file
    efi_loaders: list[str] = field(default_factory=list)  # "EFI/BOOT/BOOTX64.EFI", ... found on ESPs
    windows_roots: int = 0  # Windows system directories found
    encrypted: list[str] = field(default_factory=list)  # descriptions of encrypted volumes found
    bare_filesystem: str | None = None  # a filesystem found on the whole unpartitioned disk
    logical_volumes: list[PartitionInfo] = field(default_factory=list)  # LVM2 LVs that were read
    unreadable_volumes: list[str] = field(default_factory=list)  # thin/snapshot/RAID/... volumes, and why
    root_description: str | None = None  # "partition 2 (ext4)" or "logical volume rhel/root (xfs)"
    incomplete: bool = False  # a deadline or limit stopped inspection early
    seconds: float = 0.0

    def note(self, text: str) -> None:
        if text not in self.findings:
            self.findings.append(text)


@dataclass
class Decision:
    platform: str  # "Linux" | "Windows"
    architecture: str  # "x86_64" | "i386"
    boot_mode: str  # "legacy-bios" | "uefi"
    license_type: str | None  # "AWS" | "BYOL"
    usage_operation: str  # "RunInstances", "RunInstances:0002", ...
    platform_details: str  # "Linux/UNIX", "Windows", "Windows BYOL", ...
    description: str  # "AWS-VMImport service: Linux - Ubuntu 22.04.3 LTS - 5.15.0-91-generic"
