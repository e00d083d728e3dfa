"""Decide an image's real format from its magic bytes, never from its name or declared Format.

Only the first 64 KiB and the last 512 bytes are read, so probing an object in S3 costs two
small ranged GETs. Each rule names the bytes it matched, because the user sees that evidence
when the declared Format and the bytes disagree. "raw" means that nothing matched.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

HEAD = 64 * 1024
TAIL = 512


@dataclass(frozen=True)
class Detection:
    format: str  # one of the probe_format() names
    what: str  # "a qcow2 image", for messages
    evidence: str  # "magic 'QFI\\xfb' at offset 0"


def _magic(data: bytes, offset: int) -> str:
    """The matched bytes as the user would recognise them: quoted text with escapes."""
    return f"magic {repr(bytes(data))[1:]} at offset {offset}"


def _vmdk_kind(head: bytes) -> tuple[str, str]:
    """A hosted sparse extent (KDMV) is stream-optimized or not; the descriptor says which.

    The embedded descriptor usually sits at sector 1 and is a few KiB, so it is in `head`.
    Without a readable descriptor, the header's compressed-grains flag decides.
    """
    desc_off, desc_size = struct.unpack_from("<QQ", head, 28) if len(head) >= 44 else (0, 0)
    text = head[desc_off * 512 : (desc_off + desc_size) * 512] if 0 < desc_off < 128 else b""
    m = re.search(rb'createType\s*=\s*"?([A-Za-z0-9_]+)', text)
    if m:
        kind = m.group(1).decode()
        if kind.lower() == "streamoptimized":
            return "vmdk-streamOptimized", "a streamOptimized VMDK image"
        return "vmdk-monolithicSparse", f"a {kind} VMDK image"
    flags = struct.unpack_from("<I", head, 8)[0] if len(head) >= 12 else 0
    if flags & 0x10000:
        return "vmdk-streamOptimized", "a streamOptimized VMDK image"
    return "vmdk-monolithicSparse", "a monolithicSparse VMDK image"


def _bzip2(head: bytes) -> bool:
    return (
        head[:3] == b"BZh"
        and head[3:4] in b"123456789"
        and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")
    )


# (offset, magic, format, what) checked in order on the first 64 KiB.
_HEAD_RULES: list[tuple[int, bytes, str, str]] = [
    (0, b"QFI\xfb", "qcow2", "a qcow2 image"),
    (0, b"conectix", "vhd", "a dynamic VHD image"),
    (0, b"vhdxfile", "vhdx", "a VHDX image"),
    (0, b"QED\x00", "qed", "a QED image"),
    (0, b"LUKS\xba\xbe", "luks", "a LUKS-encrypted volume"),
    (0, b"\x1f\x8b", "gzip", "a gzip archive"),
    (0, b"\xfd7zXZ\x00", "xz", "an xz archive"),
    (0, b"\x28\xb5\x2f\xfd", "zstd", "a zstd archive"),
    (0, b"PK\x03\x04", "zip", "a zip archive"),
    (0, b"PK\x05\x06", "zip", "a zip archive"),
    (64, struct.pack("<I", 0xBEDA107F), "vdi", "a VirtualBox VDI image"),
    (257, b"ustar", "ova", "a tar (OVA) archive"),
    (0x8001, b"CD001", "iso9660", "an ISO 9660 CD/DVD image"),
    (0x8801, b"CD001", "iso9660", "an ISO 9660 CD/DVD image"),
    (0x9001, b"CD001", "iso9660", "an ISO 9660 CD/DVD image"),
]

_DESCRIPTOR = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*#\s*Disk DescriptorFile", re.IGNORECASE)


def detect(source) -> Detection:
    """Probe `source` (see `formats.Source`) and say what it is and why we think so."""
    size = source.size
    head = source.read_at(0, min(HEAD, size)) if size else b""
    if head[:4] in (b"KDMV", b"COWD"):
        fmt, what = _vmdk_kind(head)
        if head[:4] == b"COWD":
            fmt, what = "vmdk-monolithicSparse", "a COWD (ESX 2) sparse VMDK image"
        return Detection(fmt, what, _magic(head[:4], 0))
    if _DESCRIPTOR.match(head[:256]):
        return Detection(
            "vmdk-descriptor",
            "a VMDK text descriptor (it names extent files instead of holding the disk)",
            "text '# Disk DescriptorFile' at offset 0",
        )
    if _bzip2(head):
        return Detection("bzip2", "a bzip2 archive", _magic(head[:4], 0))
    for offset, magic, fmt, what in _HEAD_RULES:
        if head[offset : offset + len(magic)] == magic:
            return Detection(fmt, what, _magic(magic, offset))
    if size >= TAIL:
        tail_at = size - TAIL
        tail = head[tail_at:] if tail_at + TAIL <= len(head) else source.read_at(tail_at, TAIL)
        if tail[:8] == b"conectix":
            return Detection("vhd", "a fixed VHD image", f"footer 'conectix' at offset {tail_at}")
    return Detection("raw", "a raw disk image", "no known magic in the first 64 KiB or the footer")


def probe_format(source) -> str:
    """One of: raw, vmdk-streamOptimized, vmdk-monolithicSparse, vmdk-descriptor, qcow2, vhd,
    vhdx, vdi, qed, ova, gzip, xz, bzip2, zstd, zip, iso9660, luks."""
    return detect(source).format
