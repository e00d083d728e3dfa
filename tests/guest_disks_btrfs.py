"""Guest disks with the Linux root in a Btrfs subvolume (Fedora's ``root``, openSUSE's ``@`` snapshots).

btrfs-progs 6.2 (Debian 12) has no ``mkfs.btrfs --subvol`` and creates subvolumes only on a mounted
filesystem, so these images are made by ``mkfs.btrfs``, mounted through a loop device in a private
temporary directory, filled with ``btrfs subvolume create/snapshot/set-default`` and ``cp -a``, and
unmounted again (always, even when a step fails).
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import tempfile
from pathlib import Path

from tests.guest_disks import (
    ESP_GUID, FEDORA_39, LINUX_FS_GUID, UEFI, Distro, Part, _lx, assemble, fs_uuid, grub_efi_loader, linux_root, make_esp,
    run, write,
)

OPENSUSE_155 = Distro(
    os_release=('NAME="openSUSE Leap"\nVERSION="15.5"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.5"\n'
                'PRETTY_NAME="openSUSE Leap 15.5"\n'),
    kernel="5.14.21-150500.55.39-default",
    hostname="suse-erp",
)


@contextlib.contextmanager
def mounted(img: Path, where: Path):
    where.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False, capture_output=True)


@contextlib.contextmanager
def _machine_wide_turn():
    """The kernel knows a Btrfs filesystem by its UUID, and these fixtures' UUIDs are fixed (the
    disks are reproducible): mkfs.btrfs refuses one that another test run on this machine has
    mounted at that moment ("non-unique UUID"), so runs take turns from mkfs to umount."""
    with open(Path(tempfile.gettempdir()) / "vmimport-btrfs-fixtures.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _subvolume_fs(img: Path, name: str, work: Path, tree: Path, layout: str) -> None:
    img.unlink(missing_ok=True)
    with open(img, "wb") as f:
        f.truncate(200 * 1024 * 1024)
    with _machine_wide_turn():
        _fill_subvolumes(img, name, work, tree, layout)


def _fill_subvolumes(img: Path, name: str, work: Path, tree: Path, layout: str) -> None:
    run("mkfs.btrfs", "-q", "-f", "-U", fs_uuid(name, "root"), "-L", layout, img)
    with mounted(img, work / "mnt") as mnt:
        if layout == "fedora":  # root, home and boot subvolumes under the top level (the default)
            for sub in ("root", "home", "boot"):
                run("btrfs", "-q", "subvolume", "create", mnt / sub)
            run("cp", "-a", f"{tree / 'boot'}/.", mnt / "boot")
            subprocess.run(["rm", "-rf", str(tree / "boot")], check=True)
            (tree / "boot").mkdir()
            run("cp", "-a", f"{tree}/.", mnt / "root")
            # an old snapshot of the root: also looks like a root, but its fstab does not mount it at /
            run("btrfs", "-q", "subvolume", "snapshot", mnt / "root", mnt / "root-snapshot-1")
        else:  # openSUSE: @, @/home, @/.snapshots, and the root in snapshot 1, made the default
            run("btrfs", "-q", "subvolume", "create", mnt / "@")
            for sub in ("@/home", "@/.snapshots"):
                run("btrfs", "-q", "subvolume", "create", mnt / sub)
            (mnt / "@/.snapshots/1").mkdir()
            run("btrfs", "-q", "subvolume", "create", mnt / "@/.snapshots/1/snapshot")
            run("cp", "-a", f"{tree}/.", mnt / "@/.snapshots/1/snapshot")
            run("btrfs", "subvolume", "set-default", mnt / "@/.snapshots/1/snapshot")


def _btrfs_disk(out: Path, name: str, work: Path, *, layout: str) -> None:
    distro = FEDORA_39 if layout == "fedora" else OPENSUSE_155
    tree = work / "root"
    linux_root(tree, distro)
    u = fs_uuid(name, "root")
    if layout == "fedora":
        fstab = (f"UUID={u} / btrfs subvol=root,compress=zstd:1 0 0\nUUID={u} /boot btrfs subvol=boot 0 0\n"
                 f"UUID={u} /home btrfs subvol=home,compress=zstd:1 0 0\n")
    else:
        fstab = (f"UUID={u} / btrfs defaults 0 0\nUUID={u} /home btrfs subvol=/@/home 0 0\n"
                 f"UUID={u} /.snapshots btrfs subvol=/@/.snapshots 0 0\n")
    write(tree, "etc/fstab", fstab)
    root_img = work / "root.btrfs"
    _subvolume_fs(root_img, name, work, tree, layout)
    esp = work / "esp.img"
    loader = grub_efi_loader(work)
    make_esp(esp, 40, {"EFI/BOOT/BOOTX64.EFI": loader}, fs_uuid(name, "esp").replace("-", "")[:8])
    parts = [Part(40, ESP_GUID, esp), Part(200, LINUX_FS_GUID, root_img)]
    assemble(out, name, "gpt", parts, 242)


RECIPES = {
    "fedora39-btrfs-subvol-root-gpt-uefi": (
        lambda o, n, w: _btrfs_disk(o, n, w, layout="fedora"),
        _lx(distribution="fedora", version="39", os_name="Fedora Linux 39 (Cloud Edition)", boot_modes=UEFI,
            partition_scheme="gpt", hostname="fedora-ci", kernel="6.5.6-300.fc39.x86_64", boot_mode="uefi"),
    ),
    "opensuse155-btrfs-subvol-at-gpt-uefi": (
        lambda o, n, w: _btrfs_disk(o, n, w, layout="opensuse"),
        _lx(distribution="opensuse-leap", version="15.5", os_name="openSUSE Leap 15.5", boot_modes=UEFI,
            partition_scheme="gpt", hostname="suse-erp", kernel="5.14.21-150500.55.39-default", boot_mode="uefi"),
    ),
}
