"""Windows dynamic disks (LDM) for the inspection tests.

No Linux tool creates an LDM database, so this small generator writes one following the published
layout (the Linux-NTFS project's LDM documentation, as Linux's block/partitions/ldm.c reads it):
a PRIVHEAD at sector 6 and at the end of the disk, a TOCBLOCK and a VMDB in the private region (the
last MiB), then 128-byte VBLK records for the disk group, the disk, each volume, its component(s)
and their partitions (extents). The volumes' contents are real: NTFS made by ``mkntfs`` and filled
by ``wimlib-imagex``, as for the basic Windows fixtures. Note the limit of this evidence: the
database is written by our own code, checked only against the same published layout the reader
follows (no independent tool reads it back here).
"""

from __future__ import annotations

import struct
from pathlib import Path

from tests.guest_disks import (
    MBR_WINDOWS_LIKE_CODE, WIN_2019, Expected, MiB, fs_uuid, make_ntfs, windows_root,
)

PRIVATE_SECTORS = 2048  # the last MiB of the disk
PUBLIC_START = 63  # sectors; as on a disk converted from basic


def _var(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def _vnum(n: int) -> bytes:
    return _var(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))


def _vblk(seq: int, kind: int, body: bytes, flags: int = 0) -> bytes:
    head = b"VBLK" + struct.pack(">IIHH", seq, seq, 0, 1) + struct.pack(">HBBI", 0, flags, kind, len(body))
    rec = head + body
    assert len(rec) <= 128, len(rec)
    return rec.ljust(128, b"\0")


def _volume(obj: int, name: str, vtype: str, n_comps: int, size: int, guid: bytes) -> bytes:
    return (_vnum(obj) + _var(name.encode()) + _var(vtype.encode()) + _var(b"") + b"\0" * 14
            + bytes([4 if vtype == "raid5" else 3]) + b"\0\x01" + b"\0" * 3 + b"\0" + _vnum(n_comps) + b"\0" * 16
            + _vnum(size) + b"\0" * 4 + b"\x07" + guid)


def _component(obj: int, name: str, ctype: int, children: int, parent: int) -> bytes:
    return (_vnum(obj) + _var(name.encode()) + _var(b"ACTIVE") + bytes([ctype]) + b"\0" * 4 + _vnum(children)
            + b"\0" * 16 + _vnum(parent))


def _partition(obj: int, name: str, start: int, voff: int, size: int, parent: int, disk: int) -> bytes:
    return (_vnum(obj) + _var(name.encode()) + b"\0" * 12 + struct.pack(">QQ", start, voff) + _vnum(size)
            + _vnum(parent) + _vnum(disk))


def write_ldm(f, disk_sectors: int, volumes: list[tuple[str, str, int, list[tuple[int, int]]]]) -> None:
    """Write an LDM database. ``volumes``: (name, vtype "gen"/"raid5", component type 1/2/3,
    [(start sector on disk, sectors)...] one per extent, in volume order)."""
    private_start = disk_sectors - PRIVATE_SECTORS
    public_size = private_start - PUBLIC_START
    disk_guid = str(fs_uuid("ldm", "disk")).encode()
    group_guid = str(fs_uuid("ldm", "group")).encode()
    ph = bytearray(512)
    ph[0:8] = b"PRIVHEAD"
    struct.pack_into(">HH", ph, 0x0C, 2, 12)
    ph[0x30 : 0x30 + len(disk_guid)] = disk_guid
    ph[0xB0 : 0xB0 + len(group_guid)] = group_guid
    ph[0xF0:0xF8] = b"WIN-Dg0\0"
    struct.pack_into(">QQQQ", ph, 0x11B, PUBLIC_START, public_size, private_start, PRIVATE_SECTORS)
    records = [_vblk(1, 0x35, _vnum(1) + _var(b"WIN-Dg0") + _var(group_guid) + b"\0" * 12),
               _vblk(2, 0x34, _vnum(2) + _var(b"Disk1") + _var(disk_guid) + _var(b"") + b"\0" * 12)]
    obj = 3
    for name, vtype, ctype, extents in volumes:
        vol, comp = obj, obj + 1
        obj += 2
        size = sum(n for _, n in extents)
        guid = fs_uuid("ldm", name).encode()[:16]
        records.append(_vblk(len(records) + 1, 0x51, _volume(vol, name, vtype, 1, size, guid)))
        records.append(_vblk(len(records) + 1, 0x32, _component(comp, name + "-01", ctype, len(extents), vol)))
        voff = 0
        for i, (start, size) in enumerate(extents):
            records.append(_vblk(len(records) + 1, 0x33, _partition(obj, f"Disk1-{obj:02d}", start - PUBLIC_START, voff, size,
                                                                     comp, 2)))
            obj += 1
            voff += size
    vmdb = bytearray(512)
    vmdb[0:4] = b"VMDB"
    first = 512  # VBLKs start in the sector after the VMDB
    last_seq = first // 128 + len(records)
    struct.pack_into(">IIIHHH", vmdb, 4, last_seq, 128, first, 1, 4, 10)
    vmdb[0x16:0x1D] = b"WIN-Dg0"
    vmdb[0x35 : 0x35 + len(group_guid)] = group_guid
    kinds = [r[0x13] for r in records]
    struct.pack_into(">QQIIII", vmdb, 0x75, 1, 1, kinds.count(0x51), kinds.count(0x32), kinds.count(0x33),
                     kinds.count(0x34))
    toc = bytearray(512)
    toc[0:8] = b"TOCBLOCK"
    toc[0x24:0x2A] = b"config"
    struct.pack_into(">Q", toc, 0x2E, 17)
    toc[0x46:0x49] = b"log"
    # the TOCBLOCK is 1 sector into the private region for Linux's ldm.c, 2 for libldm: write both
    for sector, data in ((6, ph), (disk_sectors - 1, ph), (private_start + 1, toc), (private_start + 2, toc),
                         (private_start + 17, vmdb)):
        f.seek(sector * 512)
        f.write(data)
    f.seek((private_start + 17) * 512 + first)
    f.write(b"".join(records))


def _dynamic_disk(out: Path, name: str, work: Path, *, layout: str) -> None:
    """layout: simple (C: a simple volume) | spanned | striped | raid5 (C: made of two extents) | nodb."""
    tree = work / "win"
    windows_root(tree, WIN_2019, bios=True)
    ntfs = work / "c.ntfs"
    start = 2048
    make_ntfs(ntfs, 128, tree, start, work)
    total = (1 + 128 + 8 + 1) * MiB // 512  # gap, C:, a second extent's room, the private region
    with open(out, "wb") as f:
        f.truncate(total * 512)
        mbr = bytearray(512)
        mbr[:len(MBR_WINDOWS_LIKE_CODE)] = MBR_WINDOWS_LIKE_CODE
        struct.pack_into("<B3sB3sII", mbr, 446, 0x80, b"\xfe\xff\xff", 0x42, b"\xfe\xff\xff",
                         PUBLIC_START, total - PRIVATE_SECTORS - PUBLIC_START)
        mbr[440:444] = struct.pack("<I", 0x1D2C3B4A)
        mbr[510:512] = b"\x55\xaa"
        f.write(mbr)
        with open(ntfs, "rb") as src:
            f.seek(start * 512)
            while chunk := src.read(MiB):
                f.write(chunk)
        c_sectors = 128 * MiB // 512
        extents = [(start, c_sectors)]
        if layout in ("spanned", "striped", "raid5"):
            extents = [(start, c_sectors - 8 * 2048), (start + c_sectors, 8 * 2048)]
        if layout != "nodb":
            vtype, ctype = {"simple": ("gen", 2), "spanned": ("gen", 2), "striped": ("gen", 1), "raid5": ("raid5", 3)}[layout]
            write_ldm(f, total, [("Volume1", vtype, ctype, extents)])


WIN = dict(os_family="Windows", os_name="Windows Server 2019 Datacenter", version="10.0", architecture="x86_64",
           partition_scheme="mbr", hostname="WIN-SRV2019", windows_installation_type="Server", windows_build=17763,
           root_count=0)
UNKNOWN = "Unknown OS / Missing OS files."

RECIPES = {
    "win2019-ntfs-dynamic-simple-mbr-bios": (
        lambda o, n, w: _dynamic_disk(o, n, w, layout="simple"),
        Expected(**WIN, boot_modes=frozenset({"legacy-bios"}), boot_mode="legacy-bios", license_type="AWS",
                 usage_operation="RunInstances:0002", platform_details="Windows"),
    ),
    "win2019-dynamic-spanned": (lambda o, n, w: _dynamic_disk(o, n, w, layout="spanned"),
                                Expected(refusal=UNKNOWN, partition_scheme="mbr", root_count=0)),
    "win2019-dynamic-striped": (lambda o, n, w: _dynamic_disk(o, n, w, layout="striped"),
                                Expected(refusal=UNKNOWN, partition_scheme="mbr", root_count=0)),
    "win2019-dynamic-raid5": (lambda o, n, w: _dynamic_disk(o, n, w, layout="raid5"),
                              Expected(refusal=UNKNOWN, partition_scheme="mbr", root_count=0)),
    "win2019-dynamic-no-database": (lambda o, n, w: _dynamic_disk(o, n, w, layout="nodb"),
                                    Expected(refusal=UNKNOWN, partition_scheme="mbr", root_count=0)),
}
