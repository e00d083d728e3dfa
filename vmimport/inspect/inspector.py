"""Inspect a boot disk: partition table, filesystems, operating system, architecture, boot modes."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import BinaryIO

from vmimport.inspect.bootmode import esp_loaders, is_esp, legacy_bios
from vmimport.inspect.budget import BoundedReader, Budget, InspectionLimit
from vmimport.inspect.filesystems import PROBE_BYTES, FilesystemError, GuestFS, identity, open_filesystem, probe
from vmimport.inspect.fstab import check_fstab
from vmimport.inspect.ldm import LdmError, read_ldm
from vmimport.inspect.linux import LinuxRoot, inspect_linux_root, kernels_in, root_verdict
from vmimport.inspect.lvm import LogicalVolumeReader, LvmError, assemble, read_pv, unreadable_reason
from vmimport.inspect.model import Inspection, PartitionInfo
from vmimport.inspect.partitions import read_partition_table
from vmimport.inspect.subvolumes import boot_subvolume, find_root_subvolume
from vmimport.inspect.windows import WindowsRoot, find_systemroot, inspect_windows_root

log = logging.getLogger(__name__)

READABLE = {"ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "vfat"}
ENCRYPTED = {"BitLocker": "BitLocker-encrypted", "crypto_LUKS": "LUKS-encrypted"}
# Windows dynamic disks: MBR type 0x42, GPT "LDM metadata" / "LDM data" partitions
LDM_TYPES = {"0x42", "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3", "AF9B60A0-1431-4F62-BC68-3311714A69AD"}


def inspect_disk(disk: BinaryIO, size: int, deadline_seconds: float = 10.0,
                 other_disks: list[tuple[BinaryIO, int]] = ()) -> Inspection:
    """Inspect the guest disk readable from ``disk`` (``size`` bytes), within ``deadline_seconds``.

    ``other_disks`` (file, size) are the import's other volumes: only their LVM2 physical volumes
    are used, so a volume group spanning several disks is assembled whole.
    Never raises for anything the disk contains: damaged or hostile structures become findings,
    and a deadline or limit stops the inspection with ``incomplete`` set.
    """
    budget = Budget(deadline_seconds)
    insp = Inspection(disk_size=size)
    try:
        others = [BoundedReader(fh, n, budget) for fh, n in other_disks]
        _inspect(BoundedReader(disk, size, budget), insp, budget, others)
    except InspectionLimit as exc:
        insp.incomplete = True
        insp.note(str(exc))
    except Exception as exc:  # a parser bug must not kill the worker; report what stopped us
        log.exception("inspection failed")
        insp.incomplete = True
        insp.note(f"inspection stopped by an unexpected error: {type(exc).__name__}: {exc}")
    insp.seconds = budget.elapsed()
    return insp


def _other_pvs(readers: list[BoundedReader], insp: Inspection) -> list:
    """The LVM2 physical volumes on the import's other disks (whole disk or MBR/GPT partitions)."""
    pvs = []
    for index, reader in enumerate(readers, 2):
        table = read_partition_table(reader)
        spans = [(f"disk {index} partition {p.number}", p.start, p.size) for p in table.partitions]
        if table.scheme is None:
            spans = [(f"disk {index}", 0, reader.size)]
        for where, start, size in spans:
            if probe(reader.pread(start, min(PROBE_BYTES, size))) != "LVM2_member":
                continue
            try:
                pvs.append(read_pv(reader, start, size, where))
            except LvmError as exc:
                insp.note(f"{where} is an LVM2 physical volume that cannot be read: {exc}")
    return pvs


def _inspect(reader: BoundedReader, insp: Inspection, budget: Budget, others: list[BoundedReader] = ()) -> None:
    table = read_partition_table(reader)
    insp.partition_scheme = table.scheme
    insp.partitions = table.partitions
    for f in table.findings:
        insp.note(f)
    if table.scheme is None:
        kind = probe(reader.pread(0, PROBE_BYTES))
        if kind == "LVM2_member":
            insp.bare_filesystem = "LVM2 physical volume"
            try:
                pv = read_pv(reader, 0, reader.size, "the whole disk")
                insp.note(f"the whole disk is a physical volume of LVM2 volume group {pv.vg_name}, without a partition table")
            except LvmError as exc:
                insp.note(f"the whole disk is an LVM2 physical volume, without a partition table: {exc}")
        elif kind:
            insp.bare_filesystem = kind
            insp.note(f"the whole disk holds a {kind} filesystem directly, without a partition table")
        return

    linux: list[tuple[PartitionInfo, LinuxRoot]] = []
    windows: list[tuple[PartitionInfo, WindowsRoot]] = []
    boot_kernels: list[tuple[PartitionInfo, list[str]]] = []
    found = (linux, windows, boot_kernels)
    pvs = []
    for part in table.partitions:
        budget.check()
        if part.type in LDM_TYPES:  # volumes are placed by the LDM database, not by this partition's start
            _dynamic_volumes(reader, part, insp, budget, found)
            continue
        head = reader.pread(part.start, min(PROBE_BYTES, part.size))
        part.filesystem = probe(head)
        if part.filesystem == "LVM2_member":
            try:
                pvs.append(read_pv(reader, part.start, part.size, f"partition {part.number}"))
            except LvmError as exc:
                insp.note(f"partition {part.number} is an LVM2 physical volume that cannot be read: {exc}")
            continue
        _examine(reader, part, insp, budget, found, head=head)
    if pvs:  # volume groups with a PV on the boot disk, completed from the other disks
        groups = {pv.vg_name for pv in pvs}
        pvs += [pv for pv in _other_pvs(others, insp) if pv.vg_name in groups]
        _logical_volumes(pvs, insp, budget, found)

    insp.root_count = len(linux)
    insp.windows_roots = len(windows)
    if len(linux) > 1:
        insp.note("Linux roots (/etc, /bin, /etc/fstab) on " + " and ".join(p.describe() for p, _ in linux))
    if linux and windows:
        insp.note(f"both Linux ({linux[0][0].describe()}) and Windows ({windows[0][0].describe()}): a dual-boot disk")
    if linux:
        _fill_linux(insp, *linux[0], boot_kernels)
    elif windows:
        _fill_windows(insp, *windows[0])
    _boot_modes(insp, table)


def _examine(source, part: PartitionInfo, insp: Inspection, budget: Budget, found: tuple,
             offset: int | None = None, head: bytes | None = None) -> None:
    """Probe and inspect the filesystem on ``part`` (a partition of the disk, or a logical volume)."""
    start = part.start if offset is None else offset
    if head is None:
        head = source.pread(start, min(PROBE_BYTES, part.size))
        part.filesystem = probe(head)
    part.fs_uuid, part.fs_label = identity(part.filesystem, head)
    if part.filesystem in ENCRYPTED:
        where = part.describe() if part.volume else f"partition {part.number}"
        insp.encrypted.append(f"{where} is {ENCRYPTED[part.filesystem]}")
        insp.note(insp.encrypted[-1])
        return
    if part.filesystem not in READABLE:
        return
    try:
        fs = open_filesystem(part.filesystem, source, start, part.size, budget)
        _inspect_filesystem(fs, part, insp, *found)
    except InspectionLimit:
        raise
    except FilesystemError as exc:
        insp.note(f"{part.describe()}: {exc}")
    except Exception as exc:  # dissect on corrupt metadata
        insp.note(f"{part.describe()}: unreadable ({type(exc).__name__}: {exc})")


def _dynamic_volumes(reader: BoundedReader, part: PartitionInfo, insp: Inspection, budget: Budget, found: tuple) -> None:
    """A Windows dynamic disk's simple volumes inspected like partitions; other kinds named as unreadable."""
    if part.type != "0x42":
        why = "a GPT dynamic disk, whose LDM database vmimport does not read"
        volumes = []
    else:
        try:
            volumes, why = read_ldm(reader, reader.size), None
        except LdmError as exc:
            volumes, why = [], f"a dynamic disk whose LDM database cannot be read: {exc}"
    if why:
        insp.unreadable_volumes.append(f"partition {part.number} belongs to {why}; convert it to a basic disk")
        insp.note(insp.unreadable_volumes[-1])
        return
    insp.note(f"partition {part.number} is a Windows dynamic disk (LDM) with volumes "
              + (", ".join(f"{v.name} ({v.kind})" for v in volumes) or "none"))
    for vol in volumes:
        budget.check()
        if vol.kind != "simple" or len(vol.extents) != 1:
            insp.unreadable_volumes.append(f"dynamic volume {vol.name} is a {vol.kind} volume, which vmimport does not read "
                                           "(only simple volumes)")
            insp.note(insp.unreadable_volumes[-1])
            continue
        ext = vol.extents[0]
        sub = PartitionInfo(number=part.number, start=ext.start, size=ext.size, type="LDM simple volume",
                            active=part.active, volume=vol.name, volume_kind="dynamic volume")
        insp.logical_volumes.append(sub)
        _examine(reader, sub, insp, budget, found)


def _logical_volumes(pvs: list, insp: Inspection, budget: Budget, found: tuple) -> None:
    """Each volume group on this disk; its linear and striped logical volumes inspected like partitions."""
    try:
        groups = assemble(pvs)
    except LvmError as exc:
        insp.note(f"LVM2: {exc}")
        return
    for vg in groups:
        insp.note(f"LVM2 volume group {vg.name} on " + ", ".join(pv.where for pv in vg.pvs.values())
                  + f": logical volumes {', '.join(lv.name for lv in vg.lvs) or 'none'}")
        if vg.missing:
            insp.note(f"LVM2 volume group {vg.name} also spans physical volumes not on this disk: {', '.join(vg.missing)}")
        for lv in vg.lvs:
            budget.check()
            on_boot_disk = [pv.where for pv in vg.pvs.values() if pv.where.startswith("partition ")]
            number = int(on_boot_disk[0].split()[-1]) if on_boot_disk else 0
            why = unreadable_reason(vg, lv)
            if why:
                insp.unreadable_volumes.append(f"logical volume {lv.path} {why}")
                insp.note(insp.unreadable_volumes[-1])
                continue
            source = LogicalVolumeReader(vg, lv)
            part = PartitionInfo(number=number, start=0, size=source.size, type="LVM2 LV", volume=lv.path)
            insp.logical_volumes.append(part)
            _examine(source, part, insp, budget, found, offset=0)


def _inspect_filesystem(fs: GuestFS, part: PartitionInfo, insp: Inspection, linux: list, windows: list, boot_kernels: list) -> None:
    if part.filesystem == "vfat":
        loaders = esp_loaders(fs)
        if loaders and is_esp(part):
            insp.efi_loaders.extend(loaders)
            insp.note(f"EFI System Partition {part.number} holds " + ", ".join(loaders))
        elif is_esp(part):
            insp.note(f"EFI System Partition {part.number} holds no EFI/*/*.efi loader")
        elif loaders:
            insp.note(f"{part.describe()} holds EFI loaders but its type is not EFI System; firmware ignores it")
        return
    if part.filesystem == "ntfs":
        systemroot = find_systemroot(fs)
        if systemroot:
            windows.append((part, inspect_windows_root(fs, systemroot)))
        elif fs.is_dir("/Windows"):
            insp.note(f"{part.describe()} has /Windows but no Windows/System32/config or Windows/System32/cmd.exe")
        return
    if part.filesystem == "btrfs":
        root_fs, notes = find_root_subvolume(fs)
        for n in notes:
            insp.note(f"{part.describe()}: {n}")
        if root_fs is not None:
            root = inspect_linux_root(root_fs)
            boot = boot_subvolume(fs, root_fs) if root.kernel is None else None
            if boot is not None and kernels_in(boot, "/"):
                root.kernel = kernels_in(boot, "/")[-1]
                root.notes.append(f"kernel {root.kernel} found in the /boot subvolume {boot.path}")
            linux.append((replace(part, subvolume=root_fs.path), root))
            return
    is_root, why_not = root_verdict(fs)
    if is_root:
        linux.append((part, inspect_linux_root(fs)))
        return
    if why_not:
        insp.note(f"{part.describe()} {why_not}")
    else:  # (NTFS returned above)
        insp.note(f"{part.describe()} has no /etc directory")
    kernels = kernels_in(fs, "/")
    if kernels:  # a separate /boot filesystem
        boot_kernels.append((part, kernels))


def _fill_linux(insp: Inspection, part: PartitionInfo, root: LinuxRoot, boot_kernels: list) -> None:
    insp.os_family = "Linux"
    insp.root_partition, insp.root_filesystem = part.number, part.filesystem
    insp.root_description = part.describe()
    insp.distribution, insp.version, insp.os_name = root.distribution, root.version, root.os_name
    insp.hostname, insp.architecture, insp.fstab_found = root.hostname, root.architecture, root.fstab
    insp.kernel = root.kernel
    fstab_notes: list[str] = []
    boot = check_fstab(root.fstab_entries, part, insp.partitions + insp.logical_volumes, fstab_notes)
    if insp.kernel is None and boot_kernels:
        named = [bk for bk in boot_kernels if boot is not None and (bk[0].number, bk[0].volume) == (boot.number, boot.volume)]
        boot_part, kernels = (named or boot_kernels)[0]
        insp.kernel = kernels[-1]
        insp.note(f"kernel {insp.kernel} found on the separate /boot {boot_part.describe()}")
    insp.note(f"Linux root on {part.describe()}: {root.os_name or 'unknown distribution'}, kernel {insp.kernel or 'not found in /boot'}")
    for n in root.notes + fstab_notes:
        insp.note(f"{part.describe()}: {n}")
    if not root.fstab:
        insp.note(f"{part.describe()}: /etc/fstab is missing or not a regular file")


def _fill_windows(insp: Inspection, part: PartitionInfo, root: WindowsRoot) -> None:
    insp.os_family = "Windows"
    insp.root_partition, insp.root_filesystem = part.number, part.filesystem
    insp.root_description = part.describe()
    insp.distribution = "windows"
    insp.os_name, insp.version, insp.windows_build = root.product_name, root.version, root.build
    insp.windows_edition, insp.windows_installation_type = root.edition, root.installation_type
    insp.hostname, insp.architecture = root.hostname, root.architecture
    insp.note(f"Windows in {part.describe()}{root.systemroot}: {root.product_name or 'unknown version'}"
              + (f", build {root.build}" if root.build else ""))
    for n in root.notes:
        insp.note(f"{part.describe()}: {n}")


def _boot_modes(insp: Inspection, table) -> None:
    bios, why = legacy_bios(table)
    if bios:
        insp.boot_modes.add("legacy-bios")
        insp.note(f"legacy BIOS boot: {why}")
    else:
        insp.note(f"no legacy BIOS boot: {why}")
    if insp.efi_loaders:
        insp.boot_modes.add("uefi")
    elif not any(is_esp(p) for p in table.partitions):
        insp.note("no UEFI boot: no EFI System Partition")
