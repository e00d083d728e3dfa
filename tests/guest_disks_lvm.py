"""Guest disks with the root on LVM2, made by lvm2's own tools on a loop device.

This kernel has no device-mapper, so nothing is activated: ``pvcreate``/``vgcreate``/``lvcreate``
write real LVM metadata to a loop device over each partition (``losetup -o --sizelimit``) with
activation off, and the logical volume's filesystem image is written at the place the metadata
gives it (PV start + ``pe_start`` + extent x ``vg_extent_size``; stripe by stripe for a striped
LV). lvm2 cannot create thin pools, snapshots or RAID volumes without device-mapper, so those are
covered by tests/inspect/test_lvm.py on metadata text.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from tests.guest_disks import (
    BIOS, ESP_GUID, LINUX_FS_GUID, MiB, ROCKY_9, UEFI, Distro, Part, _lx, assemble, fs_uuid, grub_boot_img, grub_efi_loader,
    linux_root, make_esp, make_ext4, make_xfs, run, write,
)

LVM_CONFIG = "global{activation=0} devices{obtain_device_list_from_udev=0}"
LVM_GUID = "E6D6D379-F507-44C2-A23C-238F2A3DF928"

CENTOS_7 = Distro(
    os_release=(
        'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n'
        'PRETTY_NAME="CentOS Linux 7 (Core)"\n'
    ),
    kernel="3.10.0-1160.el7.x86_64",
    hostname="centos-lvm",
    extra={"etc/redhat-release": "CentOS Linux release 7.9.2009 (Core)\n"},
)


def lvm(*args: str) -> str:
    done = subprocess.run([args[0], "--config", LVM_CONFIG, *args[1:]], check=True, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    return done.stdout


@contextlib.contextmanager
def loop_devices(disk: Path, spans: list[tuple[int, int]]):
    """One loop device per (offset, size) span of ``disk``; detached on exit."""
    devices = []
    try:
        for offset, size in spans:
            out = subprocess.run(["losetup", "-f", "--show", "-o", str(offset), "--sizelimit", str(size), str(disk)],
                                 check=True, capture_output=True, text=True)
            devices.append(out.stdout.strip())
        yield devices
    finally:
        for dev in devices:
            subprocess.run(["losetup", "-d", dev], check=False)


def lvm_volume_group(disk: Path, pv_spans: list[tuple[int, int]], vg: str, lvs: list[tuple[str, int, int]],
                     images: dict[str, Path]) -> None:
    """Make PVs on ``pv_spans`` of ``disk``, a VG over them, and LVs (name, MiB, stripes); write ``images``."""
    with loop_devices(disk, pv_spans) as devs:
        lvm("pvcreate", "-q", *devs)
        lvm("vgcreate", "-q", "-s", "4m", vg, *devs)
        for name, size_mb, stripes in lvs:
            extra = ["-i", str(stripes), "-I", "64k"] if stripes > 1 else []
            lvm("lvcreate", "-q", "-an", "--zero", "n", "-n", name, "-L", f"{size_mb}m", *extra, vg, *devs)
        pe_start = {}
        for line in lvm("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pv_name,pe_start").splitlines():
            dev, start = line.split()
            pe_start[dev] = int(start)
        extent = int(lvm("vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg).strip())
        layout = {}
        for line in lvm("lvs", "--noheadings", "-o", "lv_name,stripes,stripe_size,seg_pe_ranges", "--units", "b",
                        "--nosuffix", vg).splitlines():
            name, stripes, stripe_size, ranges = line.split(None, 3)
            layout[name] = (int(stripes), int(stripe_size), ranges.split())
    span_of = dict(zip(devs, pv_spans))
    with open(disk, "r+b") as out:
        for name, image in images.items():
            stripes, stripe_size, ranges = layout[name]
            targets = []  # byte offsets on the disk where each stripe's extents begin
            for r in ranges:
                dev, pe = r.rsplit(":", 1)
                first = int(pe.split("-")[0])
                targets.append(span_of[dev][0] + pe_start[dev] + first * extent)
            chunk = stripe_size if stripes > 1 else 1 << 62
            with open(image, "rb") as f:
                index = 0
                while data := f.read(min(chunk, MiB)):
                    if data.count(0) != len(data):
                        if stripes > 1:
                            row, column = divmod(index, stripes)
                            out.seek(targets[column] + row * chunk)
                        else:
                            out.seek(targets[0] + index * MiB)
                        out.write(data)
                    index += 1


def _lvm_disk(out: Path, name: str, work: Path, *, distro: Distro, root_fs: str, layout: str, fstab: str) -> None:
    """layout: gpt-uefi (ESP, /boot, one PV) | mbr-striped (/boot, two PVs, root striped across them)."""
    tree = work / "root"
    linux_root(tree, distro)
    write(tree, "etc/fstab", fstab)
    boot_tree = work / "boot"
    (tree / "boot").rename(boot_tree)  # /boot is its own filesystem: the root's /boot is an empty mount point
    (tree / "boot").mkdir()
    boot_img = work / "boot.ext4"
    make_ext4(boot_img, 32, boot_tree, fs_uuid(name, "boot"))
    root_img = work / f"root.{root_fs}"
    root_mb = {"xfs": 300, "ext4": 96}[root_fs]
    {"xfs": make_xfs, "ext4": make_ext4}[root_fs](root_img, root_mb, tree, fs_uuid(name, "root"))
    if layout == "gpt-uefi":
        esp = work / "esp.img"
        loader = grub_efi_loader(work)
        make_esp(esp, 40, {"EFI/BOOT/BOOTX64.EFI": loader, "EFI/rocky/grubx64.efi": loader}, fs_uuid(name, "esp").replace("-", "")[:8])
        parts = [Part(40, ESP_GUID, esp), Part(32, LINUX_FS_GUID, boot_img), Part(root_mb + 24, LVM_GUID)]
        assemble(out, name, "gpt", parts, sum(p.size_mb for p in parts) + 2)
        pv_spans = [((1 + 40 + 32) * MiB, (root_mb + 24) * MiB)]
        lvs = [("root", root_mb, 1), ("swap", 8, 1)]
    else:
        pv_mb = root_mb // 2 + 12
        parts = [Part(32, "83", boot_img, bootable=True), Part(pv_mb, "8e"), Part(pv_mb, "8e")]
        assemble(out, name, "dos", parts, 32 + 2 * pv_mb + 2, grub_boot_img())
        pv_spans = [((1 + 32) * MiB, pv_mb * MiB), ((1 + 32 + pv_mb) * MiB, pv_mb * MiB)]
        lvs = [("root", root_mb, 2), ("swap", 8, 1)]
    vg = {"gpt-uefi": "rl", "mbr-striped": "centos"}[layout]
    lvm_volume_group(out, pv_spans, vg, lvs, {"root": root_img})


RECIPES = {
    "rocky9-xfs-lvm-gpt-uefi": (
        lambda o, n, w: _lvm_disk(o, n, w, distro=ROCKY_9, root_fs="xfs", layout="gpt-uefi",
                                  fstab=f"/dev/mapper/rl-root / xfs defaults 0 0\nUUID={fs_uuid(n, 'boot')} /boot ext4 defaults 1 2\n"
                                  "/dev/mapper/rl-swap none swap defaults 0 0\n"),
        _lx(distribution="rocky", version="9.3", os_name="Rocky Linux 9.3 (Blue Onyx)", boot_modes=UEFI,
            partition_scheme="gpt", hostname="rocky-app", kernel="5.14.0-362.8.1.el9_3.x86_64", boot_mode="uefi"),
    ),
    "centos7-ext4-lvm-striped-mbr-bios": (
        lambda o, n, w: _lvm_disk(o, n, w, distro=CENTOS_7, root_fs="ext4", layout="mbr-striped",
                                  fstab="/dev/centos/root / ext4 defaults 1 1\nLABEL=root /boot ext4 defaults 1 2\n"),
        _lx(distribution="centos", version="7", os_name="CentOS Linux 7 (Core)", boot_modes=BIOS,
            partition_scheme="mbr", hostname="centos-lvm", kernel="3.10.0-1160.el7.x86_64", boot_mode="legacy-bios"),
    ),
}
