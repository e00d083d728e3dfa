"""Windows dynamic disks (LDM): find the simple volumes in the LDM database of an MBR dynamic disk.

The layout followed is the published one (the Linux-NTFS project's LDM documentation, as Linux's
block/partitions/ldm.c reads it): a PRIVHEAD at sector 6 gives the public region (where volumes
live) and the private region holding the database; the VMDB sits 17 sectors into the private
region and is followed by fixed-size VBLK records, big-endian, with variable-length fields (a length
byte, then the bytes). Records of type 0x51 are volumes, 0x32 components (1 striped, 2 concatenated,
3 RAID-5), 0x33 partitions (extents placed in the public region). Only a volume made of one
component holding one extent (a simple volume) is read; the others are reported with their kind.
Records spread over several VBLKs (names over ~60 bytes) are not reassembled: they are reported.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SECTOR = 512
PRIVHEAD_SECTOR = 6
VMDB_SECTOR = 17  # within the private region
MAX_VBLKS = 4096
MAX_VBLK_SIZE = 4096
COMPONENT_KIND = {1: "striped", 2: "spanned", 3: "RAID-5"}


class LdmError(Exception):
    """An LDM database that cannot be read; the message says why."""


@dataclass
class Extent:
    start: int  # bytes from the start of the disk
    volume_offset: int  # bytes into its volume
    size: int


@dataclass
class DynamicVolume:
    id: int
    name: str
    kind: str  # "simple", "spanned", "striped", "RAID-5", "mirrored"
    extents: list[Extent] = field(default_factory=list)


def _var(buf: bytes, at: int) -> tuple[bytes, int]:
    """A variable-length field at ``at``: (its bytes, the offset after it)."""
    if at >= len(buf):
        raise LdmError("a VBLK record ends inside a field")
    n = buf[at]
    if at + 1 + n > len(buf):
        raise LdmError("a VBLK field runs past its record")
    return buf[at + 1 : at + 1 + n], at + 1 + n


def _num(raw: bytes) -> int:
    if len(raw) > 8:
        raise LdmError("a VBLK number is longer than 8 bytes")
    return int.from_bytes(raw, "big")


def read_ldm(reader, disk_size: int) -> list[DynamicVolume]:
    """The volumes in the LDM database of the dynamic disk read by ``reader``; LdmError if unreadable."""
    ph = reader.pread(PRIVHEAD_SECTOR * SECTOR, SECTOR)
    if ph[:8] != b"PRIVHEAD":
        raise LdmError("no PRIVHEAD at sector 6 (a dynamic disk's LDM header)")
    public_start, public_size, private_start, private_size = struct.unpack_from(">QQQQ", ph, 0x11B)
    sectors = disk_size // SECTOR
    if public_start + public_size > sectors or private_start + private_size > sectors or private_size <= VMDB_SECTOR:
        raise LdmError("the PRIVHEAD places its regions outside the disk")
    vmdb_at = (private_start + VMDB_SECTOR) * SECTOR
    vmdb = reader.pread(vmdb_at, SECTOR)
    if vmdb[:4] != b"VMDB":
        raise LdmError("no VMDB where the PRIVHEAD says the LDM database is")
    last_seq, vblk_size, first_vblk = struct.unpack_from(">III", vmdb, 4)
    if not 128 <= vblk_size <= MAX_VBLK_SIZE or vblk_size % 128 or last_seq > MAX_VBLKS:
        raise LdmError(f"implausible VMDB (VBLK size {vblk_size}, {last_seq} records)")
    raw = reader.pread(vmdb_at + first_vblk, max(0, last_seq - first_vblk // vblk_size) * vblk_size)
    volumes: dict[int, tuple[str, str]] = {}
    components: dict[int, tuple[int, int]] = {}  # id -> (volume id, type)
    parts: list[tuple[int, Extent]] = []  # (component id, extent)
    split = 0
    for i in range(0, len(raw) - vblk_size + 1, vblk_size):
        rec = raw[i : i + vblk_size]
        if rec[:4] != b"VBLK":
            continue
        nrec = struct.unpack_from(">H", rec, 0x0E)[0]
        if nrec == 0:
            continue
        if nrec > 1:
            split += 1
            continue
        kind = rec[0x13]
        obj_raw, at = _var(rec, 0x18)
        name_raw, at = _var(rec, at)
        obj = _num(obj_raw)
        if kind == 0x51:
            vtype, at = _var(rec, at)
            _, at = _var(rec, at)  # unknown
            raid5 = vtype.lower() == b"raid5" or (at + 14 < len(rec) and rec[at + 14] == 4)  # after the 14-byte state
            volumes[obj] = (name_raw.decode("ascii", "replace"), "raid5" if raid5 else "gen")
        elif kind == 0x32:
            _, at = _var(rec, at)  # volume state
            ctype = rec[at]
            _, at = _var(rec, at + 5)  # children count
            parent, _ = _var(rec, at + 16)
            components[obj] = (_num(parent), ctype)
        elif kind == 0x33:
            start, voff = struct.unpack_from(">QQ", rec, at + 12)
            size, at = _var(rec, at + 28)
            parent, _ = _var(rec, at)
            parts.append((_num(parent), Extent((public_start + start) * SECTOR, voff * SECTOR, _num(size) * SECTOR)))
    if split:
        raise LdmError(f"{split} LDM records span several VBLKs, which vmimport does not reassemble")
    result = []
    for vid, (name, vtype) in volumes.items():
        comps = [(cid, ctype) for cid, (parent, ctype) in components.items() if parent == vid]
        vol = DynamicVolume(vid, name, "simple")
        vol.extents = sorted((e for cid, _ in comps for p, e in parts if p == cid), key=lambda e: e.volume_offset)
        if vtype.lower() == "raid5" or any(t == 3 for _, t in comps):
            vol.kind = "RAID-5"
        elif len(comps) > 1:
            vol.kind = "mirrored"
        elif comps and comps[0][1] == 1:
            vol.kind = "striped"
        elif len(vol.extents) > 1:
            vol.kind = "spanned"
        for e in vol.extents:
            if e.start + e.size > disk_size:
                raise LdmError(f"volume {name} has an extent beyond the end of the disk")
        result.append(vol)
    return result
