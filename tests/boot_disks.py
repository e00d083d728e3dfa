"""Linux disks that really boot (and broken variants), for the boot check's tests and bench.

Built without mounts or loop devices from Debian packages: the kernel of ``linux-image-amd64``
(fetched once with ``apt-get download`` into the cache and unpacked with ``dpkg-deb -x``), an
initramfs of ``busybox-static`` packed with ``cpio`` (it loads the disk drivers, mounts
``root=`` and hands over to BusyBox init on the root filesystem), the root as ``mkfs.ext4 -d``,
and the boot loader: syslinux on a FAT partition (``mkfs.vfat`` + ``mcopy`` + ``syslinux``'s
mtools installer, syslinux's ``mbr.bin`` in the MBR) for BIOS, a ``grub-mkstandalone`` EFI
image on an EFI System Partition for UEFI. Partition tables by ``sfdisk``.

``python -m tests.boot_disks DIR`` builds them all into DIR.
"""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.guest_disks import DEBIAN_12, fs_uuid, linux_root, make_ext4, run, write

BUILD_VERSION = 1
MiB = 1024 * 1024
BOOT_MB, ROOT_MB = 40, 24
MARKER = "vmimport-boot-check: init reached"  # boot_check.READY_LINE
TOOLS = ("qemu-system-x86_64", "sfdisk", "mkfs.vfat", "mcopy", "syslinux", "grub-mkstandalone",
         "cpio", "dpkg-deb", "mkfs.ext4")
# What each disk is, and the message fragment its boot check must end with (None: boots).
CASES = {
    "boot-bios": None,
    "boot-uefi": None,
    "boot-bios-no-initramfs": "kernel panic: VFS: Unable to mount root fs",
    "boot-bios-wrong-root": "kernel panic: Attempted to kill init",
    "boot-bios-corrupt-vbr": "Missing operating system",
}
# The drivers the initramfs loads, in order (q35's AHCI controller, the disk, ext4).
MODULES = ("scsi_common", "scsi_mod", "libata", "libahci", "ahci", "crc64",
           "crc64_rocksoft_generic", "crc64_rocksoft", "crct10dif_common", "crct10dif_generic",
           "crc_t10dif", "t10_pi", "sd_mod", "crc16",
           "mbcache", "jbd2", "crc32c_generic", "libcrc32c", "ext4")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m.ko; done
root=$(sed -n 's/.*root=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
i=0; while [ ! -b "$root" ] && [ $i -lt 20 ]; do sleep 0.25; i=$((i+1)); done
if [ ! -b "$root" ]; then echo "ALERT! $root does not exist."; exit 1; fi
mount -o ro "$root" /newroot || { echo "ALERT! cannot mount $root"; exit 1; }
umount /proc /sys; mount --move /dev /newroot/dev 2>/dev/null
exec switch_root /newroot /sbin/init
"""


def kernel_dir(cache: Path) -> Path:
    """The unpacked Debian kernel package (downloaded once into the cache)."""
    unpacked = cache / "linux-image"
    if (unpacked / ".done").exists():
        return unpacked
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(debs / "linux-image-[0-9]*.deb")):
        depends = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], check=True,
                                 capture_output=True, text=True).stdout
        package = next(line.split()[-1] for line in depends.splitlines()
                       if "Depends: linux-image-" in line)
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True,
                       capture_output=True)
    shutil.rmtree(unpacked, ignore_errors=True)
    run("dpkg-deb", "-x", glob.glob(str(debs / "linux-image-[0-9]*.deb"))[0], unpacked)
    (unpacked / ".done").touch()
    return unpacked


def _initramfs(kernel: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for d in ("bin", "proc", "sys", "dev", "newroot", "modules"):
            (root / d).mkdir()
        shutil.copy("/bin/busybox", root / "bin/busybox")
        write(root, "init", INIT, 0o755)
        found = {Path(p).name.split(".ko")[0]: p
                 for p in glob.glob(str(kernel / "lib/modules/*/kernel/**/*.ko*"), recursive=True)}
        order = []
        for name in MODULES:
            path = found.get(name) or found.get(name.replace("_", "-"))
            if path is None:
                continue  # built into this kernel
            data = Path(path).read_bytes()
            if path.endswith(".xz"):
                data = subprocess.run(["xz", "-dc"], input=data, capture_output=True,
                                      check=True).stdout
            (root / "modules" / f"{name}.ko").write_bytes(data)
            order.append(name)
        write(root, "modules.order", "\n".join(order) + "\n")
        files = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root, check=True,
                               capture_output=True).stdout
        archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                                 input=files, capture_output=True, check=True).stdout
        out.write_bytes(gzip.compress(archive, 6, mtime=0))


def _root_fs(img: Path, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        linux_root(root, DEBIAN_12)
        shutil.copy("/bin/busybox", root / "usr/bin/busybox")
        os.symlink("../bin/busybox", root / "usr/sbin/init")
        (root / "usr/bin/sh").unlink()  # linux_root's is the host's bash, which needs its libs
        os.symlink("busybox", root / "usr/bin/sh")
        write(root, "etc/fstab", "/dev/sda2 / ext4 ro 0 1\n")
        write(root, "etc/inittab", f"::sysinit:/usr/bin/busybox echo {MARKER}\n"
                                   "::once:/usr/bin/busybox poweroff -f\n")
        make_ext4(img, ROOT_MB, root, fs_uuid(name, "root"))


def _esp_or_boot(img: Path, files: dict[str, Path], label: str) -> None:
    img.unlink(missing_ok=True)
    run("mkfs.vfat", "-C", "-n", label, img, str(BOOT_MB * 1024))
    dirs = sorted({str(Path(rel).parent) for rel in files if str(Path(rel).parent) != "."})
    for d in dirs:
        parts = Path(d).parts
        for depth in range(1, len(parts) + 1):
            subprocess.run(["mmd", "-D", "s", "-i", str(img), "::/" + "/".join(parts[:depth])],
                           capture_output=True)
    for rel, src in files.items():
        run("mcopy", "-o", "-i", img, src, f"::/{rel}")


def _disk(out: Path, table: str, parts: list[Path]) -> None:
    """A disk with ``parts`` laid out from 1 MiB by sfdisk (``table``: its script head)."""
    size = MiB + sum(p.stat().st_size for p in parts) + MiB
    with open(out, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "-q", str(out)], input=table.encode(), check=True,
                   capture_output=True)
    offset = MiB
    with open(out, "r+b") as f:
        for part in parts:
            f.seek(offset)
            f.write(part.read_bytes())
            offset += part.stat().st_size


def build(name: str, cache: Path) -> Path:
    out = cache / f"{name}.v{BUILD_VERSION}.raw"
    if out.exists():
        return out
    kernel = kernel_dir(cache)
    work = cache / f"{name}.parts"
    work.mkdir(parents=True, exist_ok=True)
    vmlinuz = Path(glob.glob(str(kernel / "boot/vmlinuz-*"))[0])
    initrd = work / "initrd.img"
    _initramfs(kernel, initrd)
    root = work / "root.ext4"
    _root_fs(root, name)
    rootdev = "/dev/sda9" if name == "boot-bios-wrong-root" else "/dev/sda2"
    cmdline = f"root={rootdev} console=ttyS0 panic=-1 quiet loglevel=4"
    boot = work / "boot.vfat"
    if name == "boot-uefi":
        cfg = work / "grub.cfg"
        cfg.write_text("set timeout=0\ninsmod part_gpt\ninsmod fat\nsearch --no-floppy --file --set=root /vmlinuz\n"
                       f"linux /vmlinuz {cmdline}\ninitrd /initrd.img\nboot\n")
        efi = work / "BOOTX64.EFI"
        run("grub-mkstandalone", "-O", "x86_64-efi", "-o", efi,
            "--locales=", "--fonts=", "--themes=", f"boot/grub/grub.cfg={cfg}")
        _esp_or_boot(boot, {"EFI/BOOT/BOOTX64.EFI": efi, "vmlinuz": vmlinuz,
                            "initrd.img": initrd}, "ESP")
        table = (f"label: gpt\nstart=2048, size={BOOT_MB * 2048}, "
                 "type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
                 f"size={ROOT_MB * 2048}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
        _disk(out.with_suffix(".tmp"), table, [boot, root])
    else:
        cfg = work / "syslinux.cfg"
        initrd_line = "" if name == "boot-bios-no-initramfs" else "  INITRD /initrd.img\n"
        cfg.write_text(f"DEFAULT linux\nTIMEOUT 0\nPROMPT 0\nSERIAL 0 115200\nLABEL linux\n"
                       f"  KERNEL /vmlinuz\n{initrd_line}  APPEND {cmdline}\n")
        _esp_or_boot(boot, {"syslinux.cfg": cfg, "vmlinuz": vmlinuz, "initrd.img": initrd},
                     "BOOT")
        run("syslinux", "--install", boot)
        if name == "boot-bios-corrupt-vbr":
            with open(boot, "r+b") as f:  # the partition's boot code, BPB kept
                f.seek(0x5A)
                f.write(b"\xff" * (0x1FE - 0x5A) + b"\0\0")
        table = (f"label: dos\nstart=2048, size={BOOT_MB * 2048}, type=c, bootable\n"
                 f"size={ROOT_MB * 2048}, type=83\n")
        _disk(out.with_suffix(".tmp"), table, [boot, root])
        with open(out.with_suffix(".tmp"), "r+b") as f:
            f.write(Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440])
    shutil.rmtree(work)
    out.with_suffix(".tmp").rename(out)
    return out


def build_all(cache: Path) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    return {name: build(name, cache) for name in CASES}


if __name__ == "__main__":
    for name, path in build_all(Path(sys.argv[1])).items():
        print(name, path)
