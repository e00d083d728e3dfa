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
import os
import subprocess
import tempfile
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


def lvm(*args: str, devices: list[str] | None = None) -> str:
    """Run an lvm2 command with activation off; ``devices`` limits what it sees to our loop devices, so
    volume groups of the same name on other loop devices (a parallel build) do not collide."""
    only = ["--devices", ",".join(devices)] if devices else []
    done = subprocess.run([args[0], "--config", LVM_CONFIG, *only, *args[1:]], check=True, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    return done.stdout


@contextlib.contextmanager
def loop_devices(spans: list[tuple[Path, int, int]]):
    """One loop device per (disk file, offset, size) span; detached on exit."""
    devices = []
    try:
        for disk, offset, size in spans:
            out = subprocess.run(["losetup", "-f", "--show", "-o", str(offset), "--sizelimit", str(size), str(disk)],
                                 check=True, capture_output=True, text=True)
            devices.append(out.stdout.strip())
        yield devices
    finally:
        for dev in devices:
            subprocess.run(["losetup", "-d", dev], check=False)


def lvm_volume_group(pv_spans: list[tuple[Path, int, int]], vg: str, lvs: list[tuple[str, int, int]],
                     images: dict[str, Path]) -> None:
    """Make PVs on ``pv_spans`` (disk file, offset, size), a VG over them, and LVs (name, MiB, stripes),
    then write each LV's filesystem image where lvm2 placed its extents (segment by segment)."""
    with loop_devices(pv_spans) as devs:
        lvm("pvcreate", "-q", *devs, devices=devs)
        lvm("vgcreate", "-q", "-s", "4m", vg, *devs, devices=devs)
        for name, size_mb, stripes in lvs:
            extra = ["-i", str(stripes), "-I", "64k"] if stripes > 1 else []
            lvm("lvcreate", "-q", "-an", "--zero", "n", "-n", name, "-L", f"{size_mb}m", *extra, vg, *devs, devices=devs)
        pe_start = {}
        for line in lvm("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pv_name,pe_start", devices=devs).splitlines():
            dev, start = line.split()
            pe_start[dev] = int(start)
        extent = int(lvm("vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg, devices=devs).strip())
        segments: dict[str, list] = {}
        for line in lvm("lvs", "--segments", "--noheadings", "-o", "lv_name,stripes,stripe_size,seg_start_pe,seg_pe_ranges",
                        "--units", "b", "--nosuffix", vg, devices=devs).splitlines():
            name, stripes, stripe_size, seg_start, ranges = line.split(None, 4)
            segments.setdefault(name, []).append((int(stripes), int(stripe_size), int(seg_start), ranges.split()))
    span_of = dict(zip(devs, pv_spans))
    for name, image in images.items():
        for stripes, stripe_size, seg_start, ranges in segments[name]:
            targets = []  # (disk file, byte offset where each stripe's extents begin)
            for r in ranges:
                dev, pe = r.rsplit(":", 1)
                first, last = (int(x) for x in pe.split("-"))
                disk, offset, _ = span_of[dev]
                targets.append((disk, offset + pe_start[dev] + first * extent, (last - first + 1) * extent))
            _write_segment(image, seg_start * extent, targets, stripes, stripe_size)


def _write_segment(image: Path, image_offset: int, targets: list, stripes: int, stripe_size: int) -> None:
    length = sum(t[2] for t in targets)
    chunk = stripe_size if stripes > 1 else MiB
    with open(image, "rb") as f:
        f.seek(image_offset)
        done = 0
        while done < length and (data := f.read(min(chunk, length - done))):
            if data.count(0) != len(data):
                index = done // chunk
                if stripes > 1:
                    row, column = divmod(index, stripes)
                    disk, at = targets[column][0], targets[column][1] + row * chunk
                else:
                    disk, at = targets[0][0], targets[0][1] + done
                with open(disk, "r+b") as out:
                    out.seek(at)
                    out.write(data)
            done += len(data)


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
        pv_spans = [(out, (1 + 40 + 32) * MiB, (root_mb + 24) * MiB)]
        lvs = [("root", root_mb, 1), ("swap", 8, 1)]
    else:
        pv_mb = root_mb // 2 + 12
        parts = [Part(32, "83", boot_img, bootable=True), Part(pv_mb, "8e"), Part(pv_mb, "8e")]
        assemble(out, name, "dos", parts, 32 + 2 * pv_mb + 2, grub_boot_img())
        pv_spans = [(out, (1 + 32) * MiB, pv_mb * MiB), (out, (1 + 32 + pv_mb) * MiB, pv_mb * MiB)]
        lvs = [("root", root_mb, 2), ("swap", 8, 1)]
    vg = {"gpt-uefi": "rl", "mbr-striped": "centos"}[layout]
    lvm_volume_group(pv_spans, vg, lvs, {"root": root_img})


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


TWO_DISKS = "rhel9-ext4-lvm-two-disks"
RHEL_9 = Distro(
    os_release=('NAME="Red Hat Enterprise Linux"\nVERSION="9.3 (Plow)"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.3"\n'
                'PRETTY_NAME="Red Hat Enterprise Linux 9.3 (Plow)"\n'),
    kernel="5.14.0-362.8.1.el9_3.x86_64",
    hostname="rhel-db",
    extra={"etc/redhat-release": "Red Hat Enterprise Linux release 9.3 (Plow)\n"},
)


def build_two_disks(cache_dir: Path) -> tuple[Path, Path]:
    """An import of two disks whose volume group spans both: disk 1 holds the ESP, /boot and the first
    PV; disk 2 is a whole-disk PV (no partition table). The root LV starts on disk 1 and ends on disk 2."""
    from tests.guest_disks import BUILD_VERSION

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    first, second = (cache_dir / f"{TWO_DISKS}.v{BUILD_VERSION}.disk{i}.raw" for i in (1, 2))
    if first.exists() and second.exists():
        return first, second
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".build-{TWO_DISKS}-") as tmp:
        work = Path(tmp)
        d1, d2 = work / "disk1.raw", work / "disk2.raw"
        tree = work / "root"
        linux_root(tree, RHEL_9)
        write(tree, "etc/fstab", f"/dev/mapper/rhel-root / ext4 defaults 1 1\nUUID={fs_uuid(TWO_DISKS, 'boot')} /boot ext4 defaults 1 2\n")
        boot_tree = work / "boot"
        (tree / "boot").rename(boot_tree)
        (tree / "boot").mkdir()
        boot_img, root_img = work / "boot.ext4", work / "root.ext4"
        make_ext4(boot_img, 32, boot_tree, fs_uuid(TWO_DISKS, "boot"))
        make_ext4(root_img, 96, tree, fs_uuid(TWO_DISKS, "root"))
        esp = work / "esp.img"
        loader = grub_efi_loader(work)
        make_esp(esp, 40, {"EFI/BOOT/BOOTX64.EFI": loader, "EFI/redhat/grubx64.efi": loader},
                 fs_uuid(TWO_DISKS, "esp").replace("-", "")[:8])
        parts = [Part(40, ESP_GUID, esp), Part(32, LINUX_FS_GUID, boot_img), Part(48, LVM_GUID)]
        assemble(d1, TWO_DISKS, "gpt", parts, 40 + 32 + 48 + 2)
        with open(d2, "wb") as f:
            f.truncate(80 * MiB)
        # root first: it takes all of disk 1's PV and continues on disk 2
        lvm_volume_group([(d1, (1 + 40 + 32) * MiB, 48 * MiB), (d2, 0, 80 * MiB)], "rhel",
                         [("root", 96, 1), ("swap", 8, 1)], {"root": root_img})
        os.replace(d2, second)
        os.replace(d1, first)
    return first, second
