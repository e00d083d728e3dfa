"""Windows on one NTFS volume: the system directory, SOFTWARE and SYSTEM hives, cmd.exe's PE header."""

from __future__ import annotations

from dataclasses import dataclass, field

from dissect.regf import RegistryHive

from vmimport.inspect.binaries import pe_architecture
from vmimport.inspect.budget import InspectionLimit
from vmimport.inspect.filesystems import GuestFS

SYSTEMROOT_NAMES = ("Windows", "WINNT", "WIN32", "WIN")
CURRENT_VERSION = "Microsoft\\Windows NT\\CurrentVersion"
WINDOWS_11_FIRST_BUILD = 22000


@dataclass
class WindowsRoot:
    systemroot: str
    product_name: str | None = None
    version: str | None = None
    build: int | None = None
    edition: str | None = None
    installation_type: str | None = None
    hostname: str | None = None
    architecture: str | None = None
    notes: list[str] = field(default_factory=list)


def find_systemroot(fs: GuestFS) -> str | None:
    """The Windows directory: has System32, System32/config and System32/cmd.exe (libguestfs's rule)."""
    for name in SYSTEMROOT_NAMES:
        base = "/" + name
        if fs.is_dir(base + "/System32/config") and fs.is_file(base + "/System32/cmd.exe"):
            return base
    return None


def _open_hive(fs: GuestFS, path: str, notes: list[str]):
    fh = fs.open(path)
    if fh is None:
        notes.append(f"{path} is missing")
        return None
    try:
        return RegistryHive(fh)
    except InspectionLimit:
        raise
    except Exception as exc:
        notes.append(f"{path} is not a readable registry hive ({type(exc).__name__}: {exc})")
        return None


def _value(key, name: str):
    try:
        return key.value(name).value
    except Exception:
        return None


def _read_software(fs: GuestFS, root: WindowsRoot) -> None:
    path = root.systemroot + "/System32/config/SOFTWARE"
    hive = _open_hive(fs, path, root.notes)
    if hive is None:
        return
    try:
        key = hive.open(CURRENT_VERSION)
    except InspectionLimit:
        raise
    except Exception:
        root.notes.append(f"{path} has no {CURRENT_VERSION} key")
        return
    product = _value(key, "ProductName")
    major, minor = _value(key, "CurrentMajorVersionNumber"), _value(key, "CurrentMinorVersionNumber")
    if isinstance(major, int) and isinstance(minor, int):
        root.version = f"{major}.{minor}"
    elif isinstance(_value(key, "CurrentVersion"), str):
        root.version = _value(key, "CurrentVersion")
    build = _value(key, "CurrentBuild") or _value(key, "CurrentBuildNumber")
    try:
        root.build = int(str(build).strip()) if build is not None else None
    except ValueError:
        root.notes.append(f"CurrentBuild {build!r} is not a number")
    root.edition = _value(key, "EditionID") if isinstance(_value(key, "EditionID"), str) else None
    itype = _value(key, "InstallationType")
    if isinstance(itype, str) and itype:
        root.installation_type = itype
    elif isinstance(product, str):
        root.installation_type = "Server" if "Server" in product else "Client"
    if isinstance(product, str):
        # Windows 11 still calls itself "Windows 10 ..." in ProductName; the build tells them apart.
        if root.build and root.build >= WINDOWS_11_FIRST_BUILD and product.startswith("Windows 10"):
            product = "Windows 11" + product[len("Windows 10"):]
        root.product_name = product


def _read_system(fs: GuestFS, root: WindowsRoot) -> None:
    path = root.systemroot + "/System32/config/SYSTEM"
    hive = _open_hive(fs, path, root.notes)
    if hive is None:
        return
    try:
        current = _value(hive.open("Select"), "Current")
        key = hive.open(f"ControlSet{int(current):03d}\\Control\\ComputerName\\ComputerName")
        name = _value(key, "ComputerName")
        root.hostname = name if isinstance(name, str) and name else None
    except InspectionLimit:
        raise
    except Exception:
        root.notes.append(f"{path} does not say the computer name")


def inspect_windows_root(fs: GuestFS, systemroot: str) -> WindowsRoot:
    root = WindowsRoot(systemroot=systemroot)
    head = fs.read(systemroot + "/System32/cmd.exe", 4096) or b""
    arch, what = pe_architecture(head)
    root.architecture = arch
    root.notes.append(f"{systemroot.lstrip('/')}/System32/cmd.exe is {what}")
    _read_software(fs, root)
    _read_system(fs, root)
    return root
