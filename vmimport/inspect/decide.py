"""Decide Platform, Architecture, BootMode, LicenseType and UsageOperation as AWS VM Import does.

Rules: ec2-import-api.md §2.2-2.3 and os-inspection.md §1. A refusal raises ``ImportFailure``
whose message starts with AWS's text for that class of failure, so scripts that match on AWS's
messages keep working, and goes on with what vmimport found, so a person knows what to fix.
"""

from __future__ import annotations

from vmimport.inspect.bootmode import FALLBACK_LOADERS, WINDOWS_LOADER, has_loader
from vmimport.inspect.model import Decision, Inspection
from vmimport.messages import sentence_case
from vmimport.pipeline.errors import ImportFailure

NO_PARTITIONS = "No valid partitions. Not a valid volume."
UNKNOWN_OS = "Unknown OS / Missing OS files."
NOT_BOOTABLE = "No bootable partition found"
MULTIPLE_ROOTS = "Unsupported configuration - Multiple directories found"
NO_FSTAB = "Invalid configuration - Could not read fstab"
UNSUPPORTED = "Unsupported configuration -"

LINUX_USAGE = {
    "RunInstances": "Linux/UNIX",
    "RunInstances:0004": "Linux with SQL Server Standard",
    "RunInstances:0100": "Linux with SQL Server Enterprise",
    "RunInstances:0200": "Linux with SQL Server Web",
}
WINDOWS_USAGE = {
    "RunInstances:0002": "Windows",
    "RunInstances:0800": "Windows BYOL",
    "RunInstances:0006": "Windows with SQL Server Standard",
    "RunInstances:0102": "Windows with SQL Server Enterprise",
    "RunInstances:0202": "Windows with SQL Server Web",
}
TWO_TIB = 2 * 1024**4
WINDOWS_11_FIRST_BUILD = 22000


def _fail(prefix: str, detail: str) -> ImportFailure:
    # Details end in findings that begin in lower case: each sentence gets its capital.
    return ImportFailure(sentence_case(f"{prefix} {detail}".strip()))


def _found(insp: Inspection, limit: int = 4) -> str:
    """The most telling findings, for the end of a refusal message."""
    notes = [f for f in insp.findings if f not in insp.unreadable_volumes][:limit]
    return ("Found: " + "; ".join(notes) + ".") if notes else ""


def decide(inspection: Inspection, requested: dict) -> Decision:
    req = {k: (v if v not in ("", None) else None) for k, v in (requested or {}).items()}
    insp = inspection
    _check_requested(req)
    _check_os(insp)
    platform = insp.os_family
    arch = _architecture(insp, req)
    boot_mode = _boot_mode(insp, req)
    license_type, usage = _license(insp, req)
    details = (WINDOWS_USAGE if platform == "Windows" else LINUX_USAGE)[usage]
    return Decision(
        platform=platform,
        architecture=arch,
        boot_mode=boot_mode,
        license_type=license_type,
        usage_operation=usage,
        platform_details=details,
        description=_description(insp),
    )


def _check_requested(req: dict) -> None:
    hv = req.get("Hypervisor")
    if hv is not None and hv != "xen":
        raise _fail(UNSUPPORTED, f"Hypervisor {hv!r} is not supported; the only value is 'xen'.")
    arch = req.get("Architecture")
    if arch is not None and arch not in ("x86_64", "i386"):
        raise _fail(UNSUPPORTED, f"Architecture {arch!r} cannot be imported with ImportImage (i386 or x86_64 only); "
                    "arm64 disks go through ImportSnapshot and RegisterImage.")
    platform = req.get("Platform")
    if platform is not None and platform not in ("Windows", "Linux"):
        raise _fail(UNSUPPORTED, f"Platform {platform!r} is not one of Windows, Linux.")
    mode = req.get("BootMode")
    if mode is not None and mode not in ("legacy-bios", "uefi"):
        raise _fail(UNSUPPORTED, f"BootMode {mode!r} is not accepted on import (legacy-bios or uefi).")
    lic = req.get("LicenseType")
    if lic is not None and lic not in ("AWS", "BYOL", "Auto"):
        raise _fail(UNSUPPORTED, f"LicenseType {lic!r} is not one of AWS, BYOL.")
    if lic not in (None, "Auto") and req.get("UsageOperation") is not None:
        raise _fail(UNSUPPORTED, "LicenseType and UsageOperation cannot both be given.")


def _check_os(insp: Inspection) -> None:
    if insp.partition_scheme is None:
        if insp.bare_filesystem:
            what = insp.bare_filesystem + ("" if " " in insp.bare_filesystem else " filesystem")
            article = "an" if what.startswith("LVM") else "a"
            raise _fail(NO_PARTITIONS, f"The disk has no MBR or GPT partition table: it holds {article} {what} "
                        "directly. Import a disk image with a partition table and a boot loader.")
        raise _fail(NO_PARTITIONS, _found(insp) or "The disk has no MBR or GPT partition table.")
    if not insp.partitions:
        raise _fail(NO_PARTITIONS, _found(insp))
    if insp.encrypted and insp.os_family is None:
        raise _fail(UNSUPPORTED, "encrypted volumes cannot be imported: " + "; ".join(insp.encrypted) + ".")
    if insp.root_count > 1:
        roots = next((f for f in insp.findings if f.startswith("Linux roots")), f"{insp.root_count} Linux roots")
        raise _fail(MULTIPLE_ROOTS, f"({roots}). A boot disk must hold one operating system.")
    if insp.root_count and insp.windows_roots:
        dual = next((f for f in insp.findings if "dual-boot" in f), "Linux and Windows")
        raise _fail(MULTIPLE_ROOTS, f"({dual}). Dual-boot disks cannot be imported.")
    if insp.os_family is None:
        if not any(p.filesystem for p in insp.partitions) and not insp.unreadable_volumes:
            parts = ", ".join(f"partition {p.number} (type {p.type})" for p in insp.partitions)
            raise _fail(NO_PARTITIONS, f"No partition holds a filesystem vmimport can read (ext2/3/4, XFS, Btrfs, NTFS, FAT): {parts}.")
        why = "No Linux root (/etc, /bin and /etc/fstab) or Windows directory (Windows/System32/config) was found."
        if insp.unreadable_volumes:
            why += " Volumes vmimport cannot read: " + "; ".join(insp.unreadable_volumes) + "."
        if insp.incomplete:
            why = "Inspection stopped before an operating system was found."
        raise _fail(UNKNOWN_OS, f"{why} {_found(insp, 6)}")
    if insp.os_family == "Linux" and not insp.fstab_found:
        raise _fail(NO_FSTAB, f"({_root_where(insp)} has no /etc/fstab file).")


def _root_where(insp: Inspection) -> str:
    return insp.root_description or f"partition {insp.root_partition} ({insp.root_filesystem})"


def _architecture(insp: Inspection, req: dict) -> str:
    where = _root_where(insp)
    evidence = next((f.split(": ", 1)[1] for f in insp.findings
                     if f.startswith(f"{where}: ") and (" is an ELF" in f or " is a PE" in f)), None)
    if insp.architecture is None:
        raise _fail(UNKNOWN_OS, f"The {insp.os_family} system on {where} has no readable "
                    f"{'ELF' if insp.os_family == 'Linux' else 'PE'} executable to tell its architecture. {_found(insp, 6)}")
    arch = insp.architecture
    evidence = f" ({evidence})" if evidence else ""
    if insp.os_family == "Linux" and arch == "arm64":
        raise _fail(UNSUPPORTED, f"arm64 Linux cannot be imported with ImportImage{evidence}; "
                    "use ImportSnapshot and RegisterImage --architecture arm64.")
    if insp.os_family == "Linux" and arch in ("i386", "arm", "x32"):
        raise _fail(UNSUPPORTED, f"32-bit Linux is not supported{evidence}; only 64-bit x86 Linux can be imported.")
    if arch not in ("x86_64", "i386"):
        raise _fail(UNSUPPORTED, f"{insp.os_family} for {arch} cannot be imported{evidence}; only x86 is supported.")
    want_platform = req.get("Platform")
    if want_platform is not None and want_platform != insp.os_family:
        raise _fail(UNSUPPORTED, f"Platform {want_platform} was requested but the disk holds {insp.os_family} "
                    f"({insp.os_name or insp.distribution or 'unknown version'} on {where}).")
    want_arch = req.get("Architecture")
    if want_arch is not None and want_arch != arch:
        raise _fail(UNSUPPORTED, f"Architecture {want_arch} was requested but the disk's system is {arch}{evidence}.")
    return arch


def _boot_mode(insp: Inspection, req: dict) -> str:
    modes = set(insp.boot_modes)
    reasons = [f for f in insp.findings if f.startswith(("no legacy BIOS", "no UEFI", "EFI System Partition"))]
    if "uefi" in modes:
        if insp.os_family == "Linux":
            fallback = FALLBACK_LOADERS.get(insp.architecture or "x86_64", FALLBACK_LOADERS["x86_64"])
            if not has_loader(insp.efi_loaders, fallback):
                modes.discard("uefi")
                reasons.insert(0, f"UEFI Linux needs the fallback loader {fallback} on the EFI System Partition, "
                               f"which holds only {', '.join(insp.efi_loaders)}")
        elif not (has_loader(insp.efi_loaders, WINDOWS_LOADER) or has_loader(insp.efi_loaders, FALLBACK_LOADERS["x86_64"])
                  or has_loader(insp.efi_loaders, FALLBACK_LOADERS["i386"])):
            modes.discard("uefi")
            reasons.append(f"the EFI System Partition has neither {WINDOWS_LOADER} nor EFI/BOOT/BOOTX64.EFI")
    detail = "; ".join(reasons)
    win11 = insp.os_family == "Windows" and insp.windows_installation_type == "Client" and (insp.windows_build or 0) >= WINDOWS_11_FIRST_BUILD
    wanted = req.get("BootMode")
    if wanted is not None and wanted not in modes:
        can = " and ".join(sorted(modes)) if modes else "neither legacy BIOS nor UEFI"
        raise _fail(NOT_BOOTABLE, f"for BootMode {wanted}: the disk boots with {can}. {detail}.".replace(". .", "."))
    if not modes:
        raise _fail(NOT_BOOTABLE, f"(neither legacy BIOS nor UEFI): {detail}.")
    if win11 and "uefi" not in modes:
        raise _fail(UNSUPPORTED, f"{insp.os_name or 'Windows 11'} (build {insp.windows_build}) needs UEFI, "
                    "and the disk has no UEFI boot loader.")
    if wanted is not None:
        return wanted
    if len(modes) == 1:
        return next(iter(modes))
    if win11:
        return "uefi"
    if insp.os_family == "Windows":
        primaries = [p for p in insp.partitions if p.number <= 4]
        if insp.disk_size >= TWO_TIB or len(primaries) > 4:
            return "uefi"
    return "legacy-bios"


def _license(insp: Inspection, req: dict) -> tuple[str, str]:
    windows = insp.os_family == "Windows"
    client = windows and insp.windows_installation_type != "Server"
    what = insp.os_name or insp.distribution or insp.os_family
    usage = req.get("UsageOperation")
    lic = req.get("LicenseType")
    lic = None if lic == "Auto" else lic
    if usage is not None:
        table = WINDOWS_USAGE if windows else LINUX_USAGE
        if usage not in table:
            raise _fail(UNSUPPORTED, f"UsageOperation {usage} is not valid for {insp.os_family}; "
                        f"valid: {', '.join(table)}.")
        lic = "BYOL" if (not windows or usage == "RunInstances:0800") else "AWS"
    if lic == "AWS" and not windows:
        raise _fail(UNSUPPORTED, f"LicenseType AWS is not available for Linux ({what}): Linux imports are BYOL.")
    if lic == "AWS" and client:
        raise _fail(UNSUPPORTED, f"LicenseType AWS is not available for {what}, a Windows client edition: "
                    "client editions are imported as BYOL.")
    if lic is None:
        lic = "AWS" if windows and not client else "BYOL"
    if usage is None:
        usage = ("RunInstances:0002" if lic == "AWS" else "RunInstances:0800") if windows else "RunInstances"
    return lic, usage


def _description(insp: Inspection) -> str:
    name = insp.os_name or " ".join(filter(None, (insp.distribution, insp.version))) or insp.os_family
    if insp.os_family == "Windows":
        tail = ".".join(filter(None, (insp.version, str(insp.windows_build) if insp.windows_build else None)))
    else:
        tail = insp.kernel
    return " - ".join(filter(None, (f"AWS-VMImport service: {insp.os_family}", name, tail)))
