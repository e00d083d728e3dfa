"""Linux on one filesystem: libguestfs's root rule, distribution, version, kernel, hostname, architecture."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from vmimport.inspect.binaries import elf_architecture
from vmimport.inspect.filesystems import GuestFS

ARCH_PROBES = ("/bin/bash", "/bin/ls", "/bin/echo", "/bin/rm", "/bin/sh", "/usr/bin/bash", "/usr/bin/ls")

# release files, most specific first: (path, distribution id or None to derive from the text)
RELEASE_FILES = (
    ("/etc/oracle-release", "ol"),
    ("/etc/rocky-release", "rocky"),
    ("/etc/almalinux-release", "almalinux"),
    ("/etc/centos-release", "centos"),
    ("/etc/fedora-release", "fedora"),
    ("/etc/system-release", None),
    ("/etc/redhat-release", None),
    ("/etc/SuSE-release", "sles"),
    ("/etc/alpine-release", "alpine"),
    ("/etc/arch-release", "arch"),
    ("/etc/gentoo-release", "gentoo"),
    ("/etc/debian_version", "debian"),
)
REDHAT_NAMES = (
    ("Red Hat Enterprise Linux", "rhel"), ("CentOS", "centos"), ("Rocky", "rocky"), ("AlmaLinux", "almalinux"),
    ("Oracle Linux", "ol"), ("Fedora", "fedora"), ("Amazon Linux", "amzn"), ("Scientific Linux", "scientific"),
)
KERNEL_RE = re.compile(r"^(?:vmlinuz|vmlinux|kernel|Image)-(\d[\w.+~-]*)$")


@dataclass
class LinuxRoot:
    distribution: str | None = None
    version: str | None = None
    os_name: str | None = None
    hostname: str | None = None
    kernel: str | None = None
    architecture: str | None = None
    fstab: bool = False
    fstab_entries: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def root_verdict(fs: GuestFS) -> tuple[bool, str | None]:
    """libguestfs's rule: /etc, /bin (directory or link to usr/bin), and /etc/fstab or /etc/hosts.

    Returns (is_root, why_not) where why_not explains a near miss (has /etc but ...)."""
    if not fs.is_dir("/etc"):
        return False, None
    has_bin = fs.is_dir("/bin") or fs.is_dir("/usr/bin")
    has_conf = fs.is_file("/etc/fstab") or fs.is_file("/etc/hosts")
    if has_bin and has_conf:
        return True, None
    missing = []
    if not has_bin:
        missing.append("/bin or /usr/bin")
    if not has_conf:
        missing.append("/etc/fstab or /etc/hosts")
    return False, "has /etc but no " + " and no ".join(missing)


def _text(fs: GuestFS, path: str, limit: int = 16384) -> str | None:
    data = fs.read(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def parse_key_values(text: str) -> dict[str, str]:
    """os-release / lsb-release syntax: KEY=value with shell quoting."""
    result = {}
    for line in text.splitlines()[:200]:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
            value = parts[0] if parts else ""
        except ValueError:
            value = value.strip("\"'")
        result[key.strip()] = value
    return result


def _distro(fs: GuestFS, root: LinuxRoot) -> None:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = _text(fs, path)
        if text:
            kv = parse_key_values(text)
            if kv.get("ID"):
                root.distribution = kv["ID"].lower()
                root.version = kv.get("VERSION_ID") or None
                root.os_name = kv.get("PRETTY_NAME") or " ".join(filter(None, (kv.get("NAME"), kv.get("VERSION")))) or None
                _refine_version(fs, root)
                return
    text = _text(fs, "/etc/lsb-release")
    if text:
        kv = parse_key_values(text)
        if kv.get("DISTRIB_ID"):
            root.distribution = kv["DISTRIB_ID"].lower()
            root.version = kv.get("DISTRIB_RELEASE") or None
            root.os_name = kv.get("DISTRIB_DESCRIPTION") or None
            return
    for path, distro in RELEASE_FILES:
        text = _text(fs, path, 4096)
        if not text or not text.strip():
            continue
        first = text.strip().splitlines()[0].strip()
        if distro is None:
            distro = next((d for name, d in REDHAT_NAMES if name in first), "redhat-based")
        if distro == "debian":
            root.distribution, root.version = "debian", first
            root.os_name = f"Debian GNU/Linux {first}"
            return
        if distro == "sles":
            kv = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", text, re.M))
            root.version = kv.get("VERSION", "") + (f".{kv['PATCHLEVEL']}" if kv.get("PATCHLEVEL") else "") or None
        else:
            m = re.search(r"(\d+(?:\.\d+)*)", first)
            root.version = m.group(1) if m else None
        root.distribution, root.os_name = distro, first
        return


def _refine_version(fs: GuestFS, root: LinuxRoot) -> None:
    """Debian's os-release has only the major version; debian_version has the point release."""
    if root.distribution == "debian" and root.version and "." not in root.version:
        text = _text(fs, "/etc/debian_version", 256)
        if text and re.fullmatch(r"\d+\.\d+", text.strip()) and text.strip().split(".")[0] == root.version:
            root.notes.append(f"/etc/debian_version says {text.strip()}")


def _version_key(version: str) -> list:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+~_]", version)]


def kernels_in(fs: GuestFS, directory: str = "/boot") -> list[str]:
    names = fs.listdir(directory, limit=2000)
    found = [m.group(1) for n in names if (m := KERNEL_RE.match(n))]
    return sorted(found, key=_version_key)


def _architecture(fs: GuestFS, root: LinuxRoot) -> None:
    for path in ARCH_PROBES:
        head = fs.read(path, 64)
        if head is None:
            continue
        arch, what = elf_architecture(head)
        if arch:
            root.architecture = arch
            root.notes.append(f"{path} is {what}")
            return
        root.notes.append(f"{path} is {what}")
    root.notes.append("no ELF executable among " + ", ".join(ARCH_PROBES))


MAX_FSTAB_LINES = 1000


def fstab_entries(fs: GuestFS) -> list[tuple[str, str, str, str]]:
    """(spec, mount point, type, options) of each /etc/fstab line, octal escapes (\\040) decoded."""
    text = _text(fs, "/etc/fstab", 65536) or ""
    entries = []
    for line in text.splitlines()[:MAX_FSTAB_LINES]:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        fields = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), f) for f in fields]
        entries.append((fields[0], fields[1], fields[2] if len(fields) > 2 else "", fields[3] if len(fields) > 3 else ""))
    return entries


def inspect_linux_root(fs: GuestFS) -> LinuxRoot:
    root = LinuxRoot()
    _distro(fs, root)
    _architecture(fs, root)
    root.fstab = fs.is_file("/etc/fstab")
    if root.fstab:
        root.fstab_entries = fstab_entries(fs)
    hostname = _text(fs, "/etc/hostname", 256)
    if hostname and hostname.strip():
        root.hostname = hostname.strip().splitlines()[0].strip()
    else:
        net = _text(fs, "/etc/sysconfig/network", 4096)
        if net:
            root.hostname = parse_key_values(net).get("HOSTNAME") or None
    kernels = kernels_in(fs)
    if kernels:
        root.kernel = kernels[-1]
    return root
