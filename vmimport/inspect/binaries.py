"""Architecture from executable headers: ELF (Linux) and PE (Windows)."""

from __future__ import annotations

import struct

ELF_MACHINES = {
    3: "i386", 62: "x86_64", 183: "arm64", 40: "arm", 8: "mips", 20: "ppc", 21: "ppc64",
    22: "s390x", 243: "riscv64", 50: "ia64", 2: "sparc", 43: "sparc64", 258: "loongarch64",
}
PE_MACHINES = {0x14C: "i386", 0x8664: "x86_64", 0xAA64: "arm64", 0x1C0: "arm", 0x1C4: "arm", 0x200: "ia64"}


def elf_architecture(head: bytes) -> tuple[str | None, str]:
    """(architecture, description) of an ELF header; architecture None when not an ELF."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None, "not an ELF file"
    elf_class, data = head[4], head[5]
    if data not in (1, 2) or elf_class not in (1, 2):
        return None, "a damaged ELF header"
    machine = struct.unpack_from("<H" if data == 1 else ">H", head, 18)[0]
    bits = 32 if elf_class == 1 else 64
    arch = ELF_MACHINES.get(machine, f"elf-machine-{machine}")
    if arch == "x86_64" and bits == 32:
        arch = "x32"
    return arch, f"an ELF{bits} {arch} executable"


def pe_architecture(head: bytes) -> tuple[str | None, str]:
    """(architecture, description) of a PE image header; architecture None when not a PE image."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        return None, "not a PE image"
    e_lfanew = struct.unpack_from("<I", head, 0x3C)[0]
    if e_lfanew + 26 > len(head) or head[e_lfanew : e_lfanew + 4] != b"PE\0\0":
        return None, "a DOS executable without a PE header"
    machine = struct.unpack_from("<H", head, e_lfanew + 4)[0]
    magic = struct.unpack_from("<H", head, e_lfanew + 24)[0]
    kind = {0x10B: "PE32", 0x20B: "PE32+"}.get(magic, "PE")
    arch = PE_MACHINES.get(machine, f"pe-machine-0x{machine:04x}")
    return arch, f"a {kind} {arch} image"
