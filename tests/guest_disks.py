"""Realistic guest disks for the inspection tests, built from Debian tools only.

Nothing is mounted and no loop device is used: each filesystem is made as its own image file
(``mkfs.ext4 -d``, ``mkfs.xfs -p protofile``, ``mkfs.btrfs --rootdir``, ``mkfs.vfat`` + mtools,
``mkntfs`` + ``wimlib-imagex apply``), the partition table is written by ``sfdisk`` on a sparse
file, and the filesystem images are copied in at their partition offsets. Registry hives are real
(an empty regf hive edited by ``hivexregedit --merge``), the UEFI loader is a real GRUB image
(``grub-mkimage``), the BIOS boot code is GRUB's ``boot.img``, and ``/usr/bin/bash`` is the host's
x86_64 ELF (or a crafted i386/arm64 ELF header for the refusal cases).

Use::

    path = build("ubuntu2204-ext4-mbr-bios", cache_dir)   # raw disk image, built once per cache_dir
    for name, expected in FIXTURES.items(): ...

Build and time them all from the repository root with ``python -m tests.guest_disks DIR`` (not as
``python tests/guest_disks.py``: ``tests/inspect`` would then shadow the standard ``inspect`` module).

``EXPECTED`` results are what ``inspect_disk`` + ``decide`` (with no user-given values) must give.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BUILD_VERSION = 1  # bump when a fixture's recipe changes, so cached disks are rebuilt
MiB = 1024 * 1024
FAKE_TIME = "1700000000"  # 2023-11-14, for reproducible timestamps

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
LINUX_FS_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
MS_BASIC_DATA_GUID = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
MS_RESERVED_GUID = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"


@dataclass(frozen=True)
class Expected:
    """What inspection and the default decision must report for a fixture."""

    refusal: str | None = None  # the expected ImportFailure message prefix, or None when accepted
    os_family: str | None = None
    distribution: str | None = None
    version: str | None = None
    os_name: str | None = None
    architecture: str | None = None
    boot_modes: frozenset[str] = frozenset()
    partition_scheme: str | None = None
    hostname: str | None = None
    kernel: str | None = None
    boot_mode: str | None = None  # decided (no user-given BootMode)
    license_type: str | None = None
    usage_operation: str | None = None
    platform_details: str | None = None
    windows_installation_type: str | None = None
    windows_build: int | None = None
    root_count: int | None = None


# ---------------------------------------------------------------- guest file contents


@dataclass(frozen=True)
class Distro:
    os_release: str | None
    kernel: str
    hostname: str
    extra: dict[str, str] = field(default_factory=dict)  # path -> content


UBUNTU_2204 = Distro(
    os_release=(
        'PRETTY_NAME="Ubuntu 22.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
        'VERSION="22.04.3 LTS (Jammy Jellyfish)"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\n'
    ),
    kernel="5.15.0-91-generic",
    hostname="ubuntu-web",
    extra={
        "etc/lsb-release": 'DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_DESCRIPTION="Ubuntu 22.04.3 LTS"\n',
        "etc/debian_version": "bookworm/sid\n",
    },
)
DEBIAN_12 = Distro(
    os_release=(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
        'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
    ),
    kernel="6.1.0-13-amd64",
    hostname="debian-db",
    extra={"etc/debian_version": "12.2\n"},
)
ROCKY_9 = Distro(
    os_release=(
        'NAME="Rocky Linux"\nVERSION="9.3 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
        'VERSION_ID="9.3"\nPRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n'
    ),
    kernel="5.14.0-362.8.1.el9_3.x86_64",
    hostname="rocky-app",
    extra={"etc/redhat-release": "Rocky Linux release 9.3 (Blue Onyx)\n", "etc/rocky-release": "Rocky Linux release 9.3 (Blue Onyx)\n"},
)
FEDORA_39 = Distro(
    os_release=(
        'NAME="Fedora Linux"\nVERSION="39 (Cloud Edition)"\nID=fedora\nVERSION_ID=39\n'
        'PRETTY_NAME="Fedora Linux 39 (Cloud Edition)"\n'
    ),
    kernel="6.5.6-300.fc39.x86_64",
    hostname="fedora-ci",
    extra={"etc/fedora-release": "Fedora release 39 (Thirty Nine)\n", "etc/redhat-release": "Fedora release 39 (Thirty Nine)\n"},
)
CENTOS_6 = Distro(  # before os-release existed: only the release file says what it is
    os_release=None,
    kernel="2.6.32-754.el6.x86_64",
    hostname="legacy-centos",
    extra={"etc/redhat-release": "CentOS release 6.10 (Final)\n", "etc/centos-release": "CentOS release 6.10 (Final)\n"},
)


def elf_header(machine: int, elf_class: int) -> bytes:
    """A minimal, valid ELF executable header (ELF32 for class 1, ELF64 for class 2)."""
    ident = b"\x7fELF" + bytes([elf_class, 1, 1, 0]) + bytes(8)
    if elf_class == 1:
        hdr = ident + struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, 0x08048000, 52, 0, 0, 52, 32, 0, 40, 0, 0)
    else:
        hdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x400000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    return hdr + bytes(4096 - len(hdr))


def pe_header(machine: int, pe32_plus: bool) -> bytes:
    """A minimal PE image header: DOS stub pointing at a COFF header with an optional header."""
    dos = bytearray(0x80)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x80)
    opt_size = 240 if pe32_plus else 224
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", machine, 1, 0x5F5E1000, 0, 0, opt_size, 0x0022)
    opt = bytearray(opt_size)
    struct.pack_into("<HBB", opt, 0, 0x20B if pe32_plus else 0x10B, 14, 0)
    struct.pack_into("<I", opt, 16, 0x1000)  # AddressOfEntryPoint
    if pe32_plus:
        struct.pack_into("<Q", opt, 24, 0x140000000)  # ImageBase
    else:
        struct.pack_into("<I", opt, 28, 0x400000)
    struct.pack_into("<II", opt, 32, 0x1000, 0x200)  # SectionAlignment, FileAlignment
    struct.pack_into("<HH", opt, 40, 10, 0)  # OS version
    struct.pack_into("<HH", opt, 48, 10, 0)  # subsystem version
    struct.pack_into("<II", opt, 56, 0x3000, 0x400)  # SizeOfImage, SizeOfHeaders
    struct.pack_into("<H", opt, 68, 3)  # Subsystem: console
    section = struct.pack("<8sIIIIIIHHI", b".text", 0x100, 0x1000, 0x200, 0x400, 0, 0, 0, 0, 0x60000020)
    img = bytes(dos) + coff + bytes(opt) + section
    return img + bytes(0x600 - len(img))


ELF_I386 = (3, 1)
ELF_AARCH64 = (183, 2)
PE_AMD64, PE_I386, PE_ARM64 = 0x8664, 0x14C, 0xAA64
MBR_WINDOWS_LIKE_CODE = bytes.fromhex("33c08ed0bc007cfb5007501ffcbe1b7cbf1b0650") + b"\x90" * 20


def write(root: Path, rel: str, data: str | bytes, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def linux_root(root: Path, distro: Distro, bash: bytes | None = None, fstab: bool = True) -> None:
    """A small but realistic usr-merged Linux root tree."""
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "boot/grub", "var/log", "home", "root", "tmp", "dev", "proc", "sys"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        os.symlink(target, root / link)
    if bash is None:
        shutil.copyfile("/bin/bash", root / "usr/bin/bash")
        (root / "usr/bin/bash").chmod(0o755)
    else:
        write(root, "usr/bin/bash", bash, 0o755)
    os.symlink("bash", root / "usr/bin/sh")
    if distro.os_release is not None:
        write(root, "usr/lib/os-release", distro.os_release)
        (root / "etc").mkdir(exist_ok=True)
        os.symlink("../usr/lib/os-release", root / "etc/os-release")  # as on systemd distributions
    write(root, "etc/hostname", distro.hostname + "\n")
    write(root, "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {distro.hostname}\n")
    if fstab:
        write(root, "etc/fstab", "UUID=6e2b3c1a-0000-4000-8000-000000000001 / ext4 defaults 0 1\n")
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    for rel, content in distro.extra.items():
        write(root, rel, content)
    write(root, f"boot/vmlinuz-{distro.kernel}", b"MZ" + bytes(0x200) + b"HdrS" + bytes(1024))
    write(root, f"boot/initrd.img-{distro.kernel}", b"\x1f\x8b" + bytes(512))
    write(root, "boot/grub/grub.cfg", f"menuentry 'Linux' {{\n linux /boot/vmlinuz-{distro.kernel} root=/dev/sda1\n}}\n")


# ---------------------------------------------------------------- registry hives


def empty_hive(name: str) -> bytes:
    """An empty regf hive: base block, one hbin holding the root key and its security cell."""
    base = bytearray(4096)
    struct.pack_into("<4sIIQIIIIII", base, 0, b"regf", 1, 1, 0, 1, 3, 0, 1, 0x20, 0x1000)
    struct.pack_into("<I", base, 44, 1)
    fname = name.encode("utf-16-le")[:64]
    base[48 : 48 + len(fname)] = fname
    checksum = 0
    for i in range(127):
        checksum ^= struct.unpack_from("<I", base, i * 4)[0]
    struct.pack_into("<I", base, 508, checksum)
    hbin = bytearray(4096)
    struct.pack_into("<4sII", hbin, 0, b"hbin", 0, 0x1000)
    root_off, sk_off = 0x20, 0x78
    keyname = b"ROOT"
    nk = struct.pack("<2sHQ" + "I" * 15 + "HH", b"nk", 0x2C, 0, 0, 0xFFFFFFFF, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF,
                     0, 0xFFFFFFFF, sk_off, 0xFFFFFFFF, 0, 0, 0, 0, 0, len(keyname), 0) + keyname
    cell = struct.pack("<i", -((4 + len(nk) + 7) // 8 * 8)) + nk
    assert root_off + (4 + len(nk) + 7) // 8 * 8 == sk_off
    hbin[root_off : root_off + len(cell)] = cell
    sd = struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 0)
    sk = struct.pack("<2sHIIII", b"sk", 0, sk_off, sk_off, 1, len(sd)) + sd
    cell = struct.pack("<i", -((4 + len(sk) + 7) // 8 * 8)) + sk
    hbin[sk_off : sk_off + len(cell)] = cell
    free_off = sk_off + (4 + len(sk) + 7) // 8 * 8
    struct.pack_into("<i", hbin, free_off, 0x1000 - free_off)
    return bytes(base + hbin)


def reg_value(value: str | int) -> str:
    if isinstance(value, int):
        return f"dword:{value:08x}"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_hive(path: Path, name: str, keys: dict[str, dict[str, str | int]]) -> None:
    """Write a real hive holding ``keys`` (every parent key is listed, as the .reg format needs)."""
    path.write_bytes(empty_hive(name))
    lines = ["Windows Registry Editor Version 5.00", ""]
    done: set[str] = set()
    for key, values in keys.items():
        parts = key.split("\\")
        for i in range(1, len(parts) + 1):
            parent = "\\".join(parts[:i])
            if parent in done:
                continue
            done.add(parent)
            lines.append(f"[\\{parent}]")
            for vname, vvalue in (keys.get(parent, {}) if parent == key else {}).items():
                lines.append(f'"{vname}"={reg_value(vvalue)}')
            lines.append("")
    reg = path.with_suffix(".reg")
    reg.write_text("\n".join(lines) + "\n")
    subprocess.run(["hivexregedit", "--merge", str(path), str(reg)], check=True)
    reg.unlink()


@dataclass(frozen=True)
class WindowsVersion:
    product_name: str
    build: int
    edition_id: str
    installation_type: str
    hostname: str
    major: int = 10
    minor: int = 0
    current_version: str = "6.3"


WIN_2019 = WindowsVersion("Windows Server 2019 Datacenter", 17763, "ServerDatacenter", "Server", "WIN-SRV2019")
WIN_2022 = WindowsVersion("Windows Server 2022 Standard", 20348, "ServerStandard", "Server", "WIN-SRV2022")
WIN_10 = WindowsVersion("Windows 10 Pro", 19045, "Professional", "Client", "DESKTOP-W10")
WIN_11 = WindowsVersion("Windows 10 Enterprise", 22631, "Enterprise", "Client", "DESKTOP-W11")  # sic: 11 says "10"
WIN_7_32 = WindowsVersion("Windows 7 Professional", 7601, "Professional", "Client", "WIN7-X86", 0, 0, "6.1")


def windows_root(root: Path, ver: WindowsVersion, machine: int = PE_AMD64, bios: bool = True) -> None:
    sys32 = root / "Windows" / "System32"
    (sys32 / "config").mkdir(parents=True)
    (sys32 / "drivers").mkdir()
    write(root, "Windows/System32/cmd.exe", pe_header(machine, machine != PE_I386))
    write(root, "Windows/System32/ntoskrnl.exe", pe_header(machine, machine != PE_I386))
    write(root, "Windows/explorer.exe", pe_header(machine, machine != PE_I386))
    software = {
        "Microsoft\\Windows NT\\CurrentVersion": {
            "ProductName": ver.product_name,
            "CurrentBuild": str(ver.build),
            "CurrentBuildNumber": str(ver.build),
            "EditionID": ver.edition_id,
            "InstallationType": ver.installation_type,
            "CurrentVersion": ver.current_version,
            "SystemRoot": "C:\\Windows",
        }
    }
    if ver.major:
        software["Microsoft\\Windows NT\\CurrentVersion"]["CurrentMajorVersionNumber"] = ver.major
        software["Microsoft\\Windows NT\\CurrentVersion"]["CurrentMinorVersionNumber"] = ver.minor
    make_hive(sys32 / "config" / "SOFTWARE", "SOFTWARE", software)
    make_hive(
        sys32 / "config" / "SYSTEM",
        "SYSTEM",
        {
            "Select": {"Current": 1, "Default": 1, "LastKnownGood": 1},
            "ControlSet001\\Control\\ComputerName\\ComputerName": {"ComputerName": ver.hostname},
        },
    )
    (root / "Users" / "Public").mkdir(parents=True)
    (root / "Program Files").mkdir()
    if bios:
        write(root, "bootmgr", b"BOOTMGR" + bytes(4096))
        write(root, "Boot/BCD", empty_hive("BCD"))


# ---------------------------------------------------------------- filesystem images


def _env() -> dict[str, str]:
    return dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME, SOURCE_DATE_EPOCH=FAKE_TIME, LC_ALL="C")


def run(*cmd: str | Path, **kw) -> None:
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), **kw)


def fs_uuid(name: str, tag: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmimport-test/{name}/{tag}"))


def make_ext4(img: Path, size_mb: int, src: Path | None, uid: str) -> None:
    img.unlink(missing_ok=True)
    args = ["mkfs.ext4", "-q", "-F", "-U", uid, "-E", f"hash_seed={uid}", "-L", "root"]
    if src is not None:
        args += ["-d", str(src)]
    run(*args, img, f"{size_mb}M")


def xfs_protofile(src: Path) -> str:
    lines = ["/dev/null", "0 0", "d--755 0 0"]

    def walk(d: Path, depth: int) -> None:
        for entry in sorted(d.iterdir()):
            pad = " " * depth
            name = entry.name
            if entry.is_symlink():
                lines.append(f"{pad}{name} l--777 0 0 {os.readlink(entry)}")
            elif entry.is_dir():
                lines.append(f"{pad}{name} d--755 0 0")
                walk(entry, depth + 1)
                lines.append(f"{pad}$")
            else:
                mode = oct(entry.stat().st_mode & 0o777)[2:]
                lines.append(f"{pad}{name} ---{mode} 0 0 {entry}")

    walk(src, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def make_xfs(img: Path, size_mb: int, src: Path, uid: str) -> None:
    proto = img.with_suffix(".proto")
    proto.write_text(xfs_protofile(src))
    img.unlink(missing_ok=True)
    with open(img, "wb") as f:
        f.truncate(size_mb * MiB)
    run("mkfs.xfs", "-q", "-f", "-m", f"uuid={uid}", "-L", "root", "-p", proto, img)
    proto.unlink()


def make_btrfs(img: Path, size_mb: int, src: Path, uid: str) -> None:
    img.unlink(missing_ok=True)
    with open(img, "wb") as f:
        f.truncate(size_mb * MiB)
    run("mkfs.btrfs", "-q", "-f", "-U", uid, "-L", "root", "--rootdir", src, img)


def make_esp(img: Path, size_mb: int, files: dict[str, bytes], volume_id: str) -> None:
    """FAT32 ESP labelled ``EFI`` (the label trips dissect.fat's path lookup: see os-inspection.md)."""
    img.unlink(missing_ok=True)
    run("mkfs.vfat", "-F", "32", "-s", "1", "-n", "EFI", "-i", volume_id, "-C", img, str(size_mb * 1024))
    made: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        for rel, data in files.items():
            parts = rel.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    run("mmd", "-i", img, "::/" + d)
                    made.add(d)
            local = Path(tmp) / parts[-1]
            local.write_bytes(data)
            run("mcopy", "-i", img, local, "::/" + rel)


def make_ntfs(img: Path, size_mb: int, src: Path, start_sector: int, work: Path) -> None:
    img.unlink(missing_ok=True)
    with open(img, "wb") as f:
        f.truncate(size_mb * MiB)
    run("mkntfs", "-F", "-Q", "-q", "-s", "512", "-p", str(start_sector), "-H", "255", "-S", "63", "-T", "-L", "Windows", img)
    wim = work / "tree.wim"
    run("wimlib-imagex", "capture", src, wim, "--no-acls")
    run("wimlib-imagex", "apply", wim, "1", img)
    wim.unlink()


_loader_cache: dict[str, bytes] = {}


def grub_efi_loader(work: Path) -> bytes:
    """A real x86_64 GRUB EFI image (PE32+), as grub-install puts on an ESP."""
    if "x64" not in _loader_cache:
        out = work / "grubx64.efi"
        run("grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/debian", "-o", out, "part_gpt", "part_msdos", "fat", "ext2", "normal")
        _loader_cache["x64"] = out.read_bytes()
        out.unlink()
    return _loader_cache["x64"]


def grub_boot_img() -> bytes:
    return Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()


# ---------------------------------------------------------------- disks


@dataclass
class Part:
    size_mb: int
    type: str  # sfdisk type: "83", "ef", "7", or a GPT GUID
    image: Path | None = None
    bootable: bool = False


def assemble(out: Path, name: str, label: str | None, parts: list[Part], size_mb: int,
             boot_code: bytes | None = None, hybrid_mbr: list[tuple[int, int, bool]] | None = None) -> None:
    """Write the partition table with sfdisk, then copy each filesystem image in (sparsely)."""
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(size_mb * MiB)
    starts = []
    start = 1 * MiB // 512
    for p in parts:
        starts.append(start)
        start += p.size_mb * MiB // 512
    if label:
        ident = uuid.uuid5(uuid.NAMESPACE_URL, f"vmimport-test/{name}")
        lines = [f"label: {label}", "unit: sectors"]
        lines.append(f"label-id: {ident}" if label == "gpt" else f"label-id: 0x{ident.int & 0xFFFFFFFF:08x}")
        lines.append("")
        for i, (p, s) in enumerate(zip(parts, starts), 1):
            entry = f"start={s}, size={p.size_mb * MiB // 512}, type={p.type}"
            if label == "gpt":
                entry += f", uuid={uuid.uuid5(ident, str(i))}"
            if p.bootable:
                entry += ", bootable"
            lines.append(entry)
        subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(out)], input="\n".join(lines) + "\n",
                       text=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(out, "r+b") as f:
        for p, s in zip(parts, starts):
            if p.image is not None:
                sparse_copy(p.image, f, s * 512)
        if boot_code is not None:
            f.seek(0)
            f.write(boot_code[:440])
        if hybrid_mbr is not None:  # (first partition index, type byte, active) entries after the 0xEE one
            f.seek(446)
            entries = [struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0xEE, b"\xfe\xff\xff", 1, starts[0] - 1)]
            for idx, ptype, active in hybrid_mbr:
                entries.append(struct.pack("<B3sB3sII", 0x80 if active else 0, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff",
                                           starts[idx], parts[idx].size_mb * MiB // 512))
            f.write(b"".join(entries).ljust(64, b"\0"))


def sparse_copy(src: Path, dst, offset: int) -> None:
    with open(src, "rb") as f:
        pos = 0
        while chunk := f.read(MiB):
            if chunk.count(0) != len(chunk):
                dst.seek(offset + pos)
                dst.write(chunk)
            pos += len(chunk)


def _linux_disk(out: Path, name: str, work: Path, *, distro: Distro, fs: str, layout: str, bash: bytes | None = None,
                esp_files: dict[str, bytes] | None = None, boot_code: bool | None = None, second_root: Distro | None = None,
                fstab: bool = True) -> None:
    """layout: mbr-bios | gpt-uefi | gpt-hybrid (BIOS boot + ESP) | hybrid-mbr | mbr-none | gpt-uefi-custom"""
    tree = work / "root"
    linux_root(tree, distro, bash, fstab)
    size_mb = {"ext4": 200, "xfs": 320, "btrfs": 200}[fs]
    root_img = work / f"root.{fs}"
    {"ext4": make_ext4, "xfs": make_xfs, "btrfs": make_btrfs}[fs](root_img, size_mb, tree, fs_uuid(name, "root"))
    parts: list[Part] = []
    loader = grub_efi_loader(work)
    if esp_files is None:
        esp_files = {"EFI/BOOT/BOOTX64.EFI": loader, f"EFI/{distro.hostname.split('-')[0]}/grubx64.efi": loader}
    gpt = layout in ("gpt-uefi", "gpt-hybrid", "hybrid-mbr")
    if layout in ("gpt-hybrid", "hybrid-mbr"):
        parts.append(Part(1, BIOS_BOOT_GUID))
    if gpt:
        esp = work / "esp.img"
        make_esp(esp, 40, esp_files, fs_uuid(name, "esp").replace("-", "")[:8])
        parts.append(Part(40, ESP_GUID, esp))
        parts.append(Part(size_mb, LINUX_FS_GUID, root_img))
    else:
        parts.append(Part(size_mb, "83", root_img, bootable=(layout == "mbr-bios")))
    if second_root is not None:
        tree2 = work / "root2"
        linux_root(tree2, second_root)
        img2 = work / "root2.ext4"
        make_ext4(img2, 200, tree2, fs_uuid(name, "root2"))
        parts.append(Part(200, LINUX_FS_GUID if gpt else "83", img2))
    if boot_code is None:
        boot_code = layout in ("mbr-bios", "gpt-hybrid", "hybrid-mbr")
    hybrid = None
    if layout == "hybrid-mbr":
        hybrid = [(1, 0xEF, False), (2, 0x83, True)]
    total = sum(p.size_mb for p in parts) + 2
    assemble(out, name, "gpt" if gpt else "dos", parts, total, grub_boot_img() if boot_code else None, hybrid)


def _windows_disk(out: Path, name: str, work: Path, *, ver: WindowsVersion, uefi: bool, machine: int = PE_AMD64) -> None:
    tree = work / "win"
    windows_root(tree, ver, machine, bios=not uefi)
    ntfs = work / "c.ntfs"
    if uefi:
        bootmgfw = pe_header(machine, machine != PE_I386)
        esp = work / "esp.img"
        make_esp(esp, 40, {"EFI/Microsoft/Boot/bootmgfw.efi": bootmgfw, "EFI/Microsoft/Boot/BCD": empty_hive("BCD"),
                           "EFI/Boot/bootx64.efi": bootmgfw}, fs_uuid(name, "esp").replace("-", "")[:8])
        # 1 MiB gap + 40 MiB ESP + 16 MiB MSR precede C:
        make_ntfs(ntfs, 128, tree, (1 + 40 + 16) * MiB // 512, work)
        parts = [Part(40, ESP_GUID, esp), Part(16, MS_RESERVED_GUID), Part(128, MS_BASIC_DATA_GUID, ntfs)]
        assemble(out, name, "gpt", parts, 40 + 16 + 128 + 2)
    else:
        make_ntfs(ntfs, 128, tree, MiB // 512, work)
        assemble(out, name, "dos", [Part(128, "7", ntfs, bootable=True)], 130, MBR_WINDOWS_LIKE_CODE)


def _whole_disk_fs(out: Path, name: str, work: Path) -> None:
    tree = work / "root"
    linux_root(tree, UBUNTU_2204)
    make_ext4(out, 200, tree, fs_uuid(name, "root"))


def _random(out: Path, name: str, work: Path) -> None:
    import random

    rng = random.Random(4)
    with open(out, "wb") as f:
        f.write(rng.randbytes(4 * MiB))
        f.truncate(64 * MiB)


def _data_only(out: Path, name: str, work: Path) -> None:
    tree = work / "data"
    for i in range(20):
        write(tree, f"backups/2023/db-{i:02d}.sql", f"-- dump {i}\n" * 100)
    write(tree, "etc/app.conf", "key=value\n")  # an /etc alone does not make a root
    img = work / "data.ext4"
    make_ext4(img, 100, tree, fs_uuid(name, "data"))
    assemble(out, name, "dos", [Part(100, "83", img)], 102)


def _hostile_loop(out: Path, name: str, work: Path) -> None:
    """Symlink loops where the inspector looks, and a directory with many entries."""
    tree = work / "root"
    (tree / "etc").mkdir(parents=True)
    os.symlink("bin", tree / "bin")  # /bin -> bin (self loop)
    os.symlink("os-release", tree / "etc/os-release")
    os.symlink("../etc/fstab2", tree / "etc/fstab")
    os.symlink("fstab", tree / "etc/fstab2")
    (tree / "usr").mkdir()
    os.symlink("../usr", tree / "usr/usr")
    (tree / "boot").mkdir()
    for i in range(3000):
        (tree / "boot" / f"vmlinuz-1.{i}.0").symlink_to(f"vmlinuz-1.{i + 1}.0")
    img = work / "root.ext4"
    make_ext4(img, 100, tree, fs_uuid(name, "root"))
    assemble(out, name, "dos", [Part(100, "83", img, bootable=True)], 102, grub_boot_img())


def _corrupt_superblock(out: Path, name: str, work: Path) -> None:
    _linux_disk(out, name, work, distro=UBUNTU_2204, fs="ext4", layout="mbr-bios")
    with open(out, "r+b") as f:  # partition 1 starts at 1 MiB; garble superblock fields and group descriptors
        f.seek(MiB + 1024 + 0x18)
        f.write(b"\xff" * 8)  # s_log_block_size, s_log_cluster_size: absurd block size
        f.seek(MiB + 4096)
        f.write(bytes(range(256)) * 16)


def _corrupt_metadata(out: Path, name: str, work: Path) -> None:
    """A sane superblock over garbage group descriptors and inode tables."""
    _linux_disk(out, name, work, distro=UBUNTU_2204, fs="ext4", layout="mbr-bios")
    import random

    rng = random.Random(7)
    with open(out, "r+b") as f:
        f.seek(MiB + 4096)
        f.write(rng.randbytes(4096))  # group descriptors
        f.seek(MiB + 1024 * 1024)
        f.write(rng.randbytes(8 * MiB))  # where the first inode table and directories live


# name -> (recipe, expected)
ACCEPT_LINUX = dict(os_family="Linux", architecture="x86_64", license_type="BYOL", usage_operation="RunInstances",
                    platform_details="Linux/UNIX", root_count=1)


def _lx(**kw) -> Expected:
    return Expected(**{**ACCEPT_LINUX, **kw})


BIOS, UEFI, DUAL = frozenset({"legacy-bios"}), frozenset({"uefi"}), frozenset({"legacy-bios", "uefi"})
_arm_loader = pe_header(PE_ARM64, True)

RECIPES = {
    "ubuntu2204-ext4-mbr-bios": (
        lambda o, n, w: _linux_disk(o, n, w, distro=UBUNTU_2204, fs="ext4", layout="mbr-bios"),
        _lx(distribution="ubuntu", version="22.04", os_name="Ubuntu 22.04.3 LTS", boot_modes=BIOS, partition_scheme="mbr",
            hostname="ubuntu-web", kernel="5.15.0-91-generic", boot_mode="legacy-bios"),
    ),
    "debian12-ext4-gpt-uefi": (
        lambda o, n, w: _linux_disk(o, n, w, distro=DEBIAN_12, fs="ext4", layout="gpt-uefi"),
        _lx(distribution="debian", version="12", os_name="Debian GNU/Linux 12 (bookworm)", boot_modes=UEFI,
            partition_scheme="gpt", hostname="debian-db", kernel="6.1.0-13-amd64", boot_mode="uefi"),
    ),
    "debian12-btrfs-gpt-hybrid": (
        lambda o, n, w: _linux_disk(o, n, w, distro=DEBIAN_12, fs="btrfs", layout="gpt-hybrid"),
        _lx(distribution="debian", version="12", os_name="Debian GNU/Linux 12 (bookworm)", boot_modes=DUAL,
            partition_scheme="gpt", hostname="debian-db", kernel="6.1.0-13-amd64", boot_mode="legacy-bios"),
    ),
    "rocky9-xfs-gpt-uefi": (
        lambda o, n, w: _linux_disk(o, n, w, distro=ROCKY_9, fs="xfs", layout="gpt-uefi"),
        _lx(distribution="rocky", version="9.3", os_name="Rocky Linux 9.3 (Blue Onyx)", boot_modes=UEFI,
            partition_scheme="gpt", hostname="rocky-app", kernel="5.14.0-362.8.1.el9_3.x86_64", boot_mode="uefi"),
    ),
    "rocky9-xfs-mbr-bios": (
        lambda o, n, w: _linux_disk(o, n, w, distro=ROCKY_9, fs="xfs", layout="mbr-bios"),
        _lx(distribution="rocky", version="9.3", os_name="Rocky Linux 9.3 (Blue Onyx)", boot_modes=BIOS,
            partition_scheme="mbr", hostname="rocky-app", kernel="5.14.0-362.8.1.el9_3.x86_64", boot_mode="legacy-bios"),
    ),
    "fedora39-btrfs-gpt-uefi": (
        lambda o, n, w: _linux_disk(o, n, w, distro=FEDORA_39, fs="btrfs", layout="gpt-uefi"),
        _lx(distribution="fedora", version="39", os_name="Fedora Linux 39 (Cloud Edition)", boot_modes=UEFI,
            partition_scheme="gpt", hostname="fedora-ci", kernel="6.5.6-300.fc39.x86_64", boot_mode="uefi"),
    ),
    "centos6-ext4-mbr-bios": (
        lambda o, n, w: _linux_disk(o, n, w, distro=CENTOS_6, fs="ext4", layout="mbr-bios"),
        _lx(distribution="centos", version="6.10", os_name="CentOS release 6.10 (Final)", boot_modes=BIOS,
            partition_scheme="mbr", hostname="legacy-centos", kernel="2.6.32-754.el6.x86_64", boot_mode="legacy-bios"),
    ),
    "ubuntu2204-xfs-hybrid-mbr": (
        lambda o, n, w: _linux_disk(o, n, w, distro=UBUNTU_2204, fs="xfs", layout="hybrid-mbr"),
        _lx(distribution="ubuntu", version="22.04", os_name="Ubuntu 22.04.3 LTS", boot_modes=DUAL,
            partition_scheme="hybrid", hostname="ubuntu-web", kernel="5.15.0-91-generic", boot_mode="legacy-bios"),
    ),
    "win2019-ntfs-mbr-bios": (
        lambda o, n, w: _windows_disk(o, n, w, ver=WIN_2019, uefi=False),
        Expected(os_family="Windows", os_name="Windows Server 2019 Datacenter", version="10.0", architecture="x86_64",
                 boot_modes=BIOS, partition_scheme="mbr", hostname="WIN-SRV2019", boot_mode="legacy-bios",
                 license_type="AWS", usage_operation="RunInstances:0002", platform_details="Windows",
                 windows_installation_type="Server", windows_build=17763, root_count=0),
    ),
    "win2022-ntfs-gpt-uefi": (
        lambda o, n, w: _windows_disk(o, n, w, ver=WIN_2022, uefi=True),
        Expected(os_family="Windows", os_name="Windows Server 2022 Standard", version="10.0", architecture="x86_64",
                 boot_modes=UEFI, partition_scheme="gpt", hostname="WIN-SRV2022", boot_mode="uefi",
                 license_type="AWS", usage_operation="RunInstances:0002", platform_details="Windows",
                 windows_installation_type="Server", windows_build=20348, root_count=0),
    ),
    "win10-ntfs-mbr-bios": (
        lambda o, n, w: _windows_disk(o, n, w, ver=WIN_10, uefi=False),
        Expected(os_family="Windows", os_name="Windows 10 Pro", version="10.0", architecture="x86_64",
                 boot_modes=BIOS, partition_scheme="mbr", hostname="DESKTOP-W10", boot_mode="legacy-bios",
                 license_type="BYOL", usage_operation="RunInstances:0800", platform_details="Windows BYOL",
                 windows_installation_type="Client", windows_build=19045, root_count=0),
    ),
    "win11-ntfs-gpt-uefi": (
        lambda o, n, w: _windows_disk(o, n, w, ver=WIN_11, uefi=True),
        Expected(os_family="Windows", os_name="Windows 11 Enterprise", version="10.0", architecture="x86_64",
                 boot_modes=UEFI, partition_scheme="gpt", hostname="DESKTOP-W11", boot_mode="uefi",
                 license_type="BYOL", usage_operation="RunInstances:0800", platform_details="Windows BYOL",
                 windows_installation_type="Client", windows_build=22631, root_count=0),
    ),
    "win7-x86-ntfs-mbr-bios": (
        lambda o, n, w: _windows_disk(o, n, w, ver=WIN_7_32, uefi=False, machine=PE_I386),
        Expected(os_family="Windows", os_name="Windows 7 Professional", version="6.1", architecture="i386",
                 boot_modes=BIOS, partition_scheme="mbr", hostname="WIN7-X86", boot_mode="legacy-bios",
                 license_type="BYOL", usage_operation="RunInstances:0800", platform_details="Windows BYOL",
                 windows_installation_type="Client", windows_build=7601, root_count=0),
    ),
    # ---- refusals
    "no-partition-table": (_whole_disk_fs, Expected(refusal="No valid partitions. Not a valid volume.", partition_scheme=None)),
    "random-bytes": (_random, Expected(refusal="No valid partitions. Not a valid volume.", partition_scheme=None)),
    "data-only": (_data_only, Expected(refusal="Unknown OS / Missing OS files.", partition_scheme="mbr", root_count=0)),
    "no-bootloader": (
        lambda o, n, w: _linux_disk(o, n, w, distro=UBUNTU_2204, fs="ext4", layout="mbr-none", boot_code=False),
        Expected(refusal="No bootable partition found", os_family="Linux", architecture="x86_64", boot_modes=frozenset(),
                 partition_scheme="mbr", root_count=1),
    ),
    "uefi-no-fallback": (
        lambda o, n, w: _linux_disk(o, n, w, distro=UBUNTU_2204, fs="ext4", layout="gpt-uefi",
                                    esp_files={"EFI/ubuntu/grubx64.efi": grub_efi_loader(w), "EFI/ubuntu/grub.cfg": b"set root=(hd0,gpt2)\n"}),
        Expected(refusal="No bootable partition found", os_family="Linux", architecture="x86_64", boot_modes=UEFI,
                 partition_scheme="gpt", root_count=1),
    ),
    "linux-i386": (
        lambda o, n, w: _linux_disk(o, n, w, distro=UBUNTU_2204, fs="ext4", layout="mbr-bios", bash=elf_header(*ELF_I386)),
        Expected(refusal="Unsupported configuration - 32-bit Linux", os_family="Linux", architecture="i386",
                 boot_modes=BIOS, partition_scheme="mbr", root_count=1),
    ),
    "linux-arm64": (
        lambda o, n, w: _linux_disk(o, n, w, distro=DEBIAN_12, fs="ext4", layout="gpt-uefi", bash=elf_header(*ELF_AARCH64),
                                    esp_files={"EFI/BOOT/BOOTAA64.EFI": _arm_loader, "EFI/debian/grubaa64.efi": _arm_loader}),
        Expected(refusal="Unsupported configuration - arm64 Linux", os_family="Linux", architecture="arm64",
                 boot_modes=UEFI, partition_scheme="gpt", root_count=1),
    ),
    "two-linux-roots": (
        lambda o, n, w: _linux_disk(o, n, w, distro=UBUNTU_2204, fs="ext4", layout="mbr-bios", second_root=DEBIAN_12),
        Expected(refusal="Unsupported configuration - Multiple directories found", os_family="Linux", boot_modes=BIOS,
                 partition_scheme="mbr", root_count=2),
    ),
    "linux-no-fstab": (
        lambda o, n, w: _linux_disk(o, n, w, distro=UBUNTU_2204, fs="ext4", layout="mbr-bios", fstab=False),
        Expected(refusal="Invalid configuration - Could not read fstab", os_family="Linux", boot_modes=BIOS,
                 partition_scheme="mbr", root_count=1),
    ),
    # ---- hostile filesystems: must be answered quickly, whatever the answer
    "hostile-symlink-loops": (_hostile_loop, Expected(refusal="Unknown OS / Missing OS files.", partition_scheme="mbr", root_count=0)),
    "hostile-corrupt-superblock": (_corrupt_superblock, Expected(refusal="Unknown OS / Missing OS files.", partition_scheme="mbr", root_count=0)),
    "hostile-corrupt-metadata": (_corrupt_metadata, Expected(refusal="Unknown OS / Missing OS files.", partition_scheme="mbr", root_count=0)),
}

if __name__ == "__main__":  # run as a script: take the recipes from the imported module, which has them all
    from tests.guest_disks import RECIPES as _ALL  # noqa: E402

    RECIPES.update(_ALL)
else:
    from tests.guest_disks_btrfs import RECIPES as _BTRFS  # noqa: E402 (these use the helpers above)
    from tests.guest_disks_ldm import RECIPES as _LDM  # noqa: E402
    from tests.guest_disks_lvm import RECIPES as _LVM  # noqa: E402

    RECIPES.update(_LVM)
    RECIPES.update(_BTRFS)
    RECIPES.update(_LDM)
LAYOUT_NAMES: list[str] = [n for n in RECIPES if "lvm" in n or "subvol" in n or "dynamic" in n]  # issue 20's layouts

EXPECTED: dict[str, Expected] = {name: exp for name, (_, exp) in RECIPES.items()}
NAMES: list[str] = list(RECIPES)
ACCEPTED: list[str] = [n for n, e in EXPECTED.items() if e.refusal is None]
REFUSED: list[str] = [n for n, e in EXPECTED.items() if e.refusal is not None]


def build(name: str, cache_dir: Path) -> Path:
    """The raw disk image for fixture ``name``, built into ``cache_dir`` unless already there."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / f"{name}.v{BUILD_VERSION}.raw"
    if out.exists():
        return out
    recipe, _ = RECIPES[name]
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".build-{name}-") as tmp:
        work = Path(tmp)
        partial = work / "disk.raw"
        try:
            recipe(partial, name, work)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"building {name}: {e.cmd} failed: {e.stderr.decode(errors='replace') if e.stderr else ''}") from e
        os.replace(partial, out)
    return out


def build_all(cache_dir: Path, names: list[str] | None = None) -> dict[str, Path]:
    return {name: build(name, cache_dir) for name in (names or NAMES)}


if __name__ == "__main__":  # python -m tests.guest_disks DIR [NAME...]: build and time the fixtures
    import sys
    import time

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/vmimport-guest-disks")
    t0 = time.monotonic()
    for n in sys.argv[2:] or NAMES:
        t = time.monotonic()
        p = build(n, target)
        print(f"{n:32s} {time.monotonic() - t:6.2f}s {p.stat().st_size // MiB:5d} MiB  {p}")
    print(f"total {time.monotonic() - t0:.1f}s")
