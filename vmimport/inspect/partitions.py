"""The partition table: MBR (with logical partitions), GPT, and hybrid MBR+GPT.

Parsed here rather than with dissect.volume because inspection needs what dissect.volume does not
report (MBR boot code, the active flag of a hybrid MBR, whether the MBR is protective or hybrid)
and must stay bounded on hostile tables (a looping EBR chain, a GPT claiming 2^32 entries).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field

from vmimport.inspect.budget import BoundedReader
from vmimport.inspect.model import PartitionInfo

SECTOR = 512
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
MAX_GPT_ENTRIES = 1024
MAX_LOGICAL = 128
EXTENDED_TYPES = (0x05, 0x0F, 0x85)
GPT_LEGACY_BIOS_BOOTABLE = 1 << 2


@dataclass
class PartitionTable:
    scheme: str | None  # "mbr" | "gpt" | "hybrid" | None
    partitions: list[PartitionInfo] = field(default_factory=list)
    boot_code: bytes = b""  # MBR bytes 0..439
    findings: list[str] = field(default_factory=list)

    @property
    def has_boot_code(self) -> bool:
        return any(self.boot_code)


@dataclass
class _MbrEntry:
    active: bool
    type: int
    lba: int
    sectors: int


def _mbr_entries(sector: bytes) -> list[_MbrEntry] | None:
    entries = []
    for i in range(4):
        flag, ptype, lba, count = struct.unpack_from("<B3xB3xII", sector, 446 + 16 * i)
        if flag not in (0x00, 0x80):
            return None  # not a partition table: boot indicators are 0x00 or 0x80 only
        entries.append(_MbrEntry(flag == 0x80, ptype, lba, count))
    return entries


def _looks_like_vbr(sector: bytes) -> bool:
    """A filesystem boot sector (FAT, NTFS, exFAT, BitLocker) at LBA 0 is not an MBR."""
    oem = sector[3:11]
    return (
        any(m in oem for m in (b"NTFS", b"MSDOS", b"MSWIN", b"EXFAT", b"-FVE-FS-", b"mkfs.fat", b"mkdosfs"))
        or sector[82:87] == b"FAT32"
        or sector[54:59] in (b"FAT12", b"FAT16")
    )


def read_partition_table(disk: BoundedReader) -> PartitionTable:
    sectors_total = disk.size // SECTOR
    sector0 = disk.pread(0, SECTOR)
    table = PartitionTable(scheme=None, boot_code=sector0[:440])
    if len(sector0) < SECTOR or sector0[510:512] != b"\x55\xaa":
        table.findings.append("sector 0 has no MBR signature (0x55AA): the disk has no MBR or GPT partition table")
        table.boot_code = b""
        return table
    if _looks_like_vbr(sector0):
        table.findings.append("sector 0 is a filesystem boot sector, not a partition table")
        table.boot_code = b""
        return table
    entries = _mbr_entries(sector0)
    if entries is None:
        table.findings.append("sector 0 has a 0x55AA signature but its partition entries are invalid")
        table.boot_code = b""
        return table

    used = [e for e in entries if e.type != 0]
    if any(e.type == 0xEE for e in used):
        gpt = _read_gpt(disk, sectors_total, table.findings)
        if gpt is not None:
            others = [e for e in used if e.type != 0xEE]
            table.scheme = "hybrid" if others else "gpt"
            for p in gpt:  # a hybrid MBR entry covering a GPT partition lends it its active flag
                for e in others:
                    if e.lba * SECTOR == p.start and e.active:
                        p.active = True
            table.partitions = gpt
            return table
        table.findings.append("protective MBR (type 0xEE) without a readable GPT")

    table.scheme = "mbr"
    number = 5
    for i, e in enumerate(entries, 1):
        if e.type == 0:
            continue
        if e.type in EXTENDED_TYPES:
            for logical in _read_logical(disk, e.lba, sectors_total, table.findings):
                logical.number = number
                number += 1
                table.partitions.append(logical)
            continue
        part = _make(i, e.lba, e.sectors, f"0x{e.type:02x}", e.active, sectors_total, table.findings)
        if part:
            table.partitions.append(part)
    if not table.partitions:
        table.findings.append("the MBR partition table has no partitions")
    return table


def _make(number: int, lba: int, count: int, ptype: str, active: bool, total: int, findings: list[str]) -> PartitionInfo | None:
    if lba == 0 or count == 0:
        findings.append(f"partition {number} is empty or starts at sector 0; ignored")
        return None
    if lba >= total:
        findings.append(f"partition {number} starts at sector {lba}, beyond the end of the disk ({total} sectors); ignored")
        return None
    if lba + count > total:
        findings.append(f"partition {number} ends beyond the end of the disk; truncated to the disk")
        count = total - lba
    return PartitionInfo(number=number, start=lba * SECTOR, size=count * SECTOR, type=ptype, active=active)


def _read_logical(disk: BoundedReader, ext_lba: int, total: int, findings: list[str]) -> list[PartitionInfo]:
    parts = []
    seen = set()
    ebr_lba = ext_lba
    while len(parts) < MAX_LOGICAL:
        if ebr_lba in seen or ebr_lba >= total:
            findings.append("the extended partition's chain loops or leaves the disk; stopped following it")
            break
        seen.add(ebr_lba)
        sector = disk.pread(ebr_lba * SECTOR, SECTOR)
        entries = _mbr_entries(sector) if sector[510:512] == b"\x55\xaa" else None
        if entries is None:
            findings.append(f"invalid extended boot record at sector {ebr_lba}")
            break
        data, link = entries[0], entries[1]
        if data.type != 0:
            p = _make(0, ebr_lba + data.lba, data.sectors, f"0x{data.type:02x}", data.active, total, findings)
            if p:
                parts.append(p)
        if link.type not in EXTENDED_TYPES or link.lba == 0:
            break
        ebr_lba = ext_lba + link.lba
    return parts


def _read_gpt(disk: BoundedReader, total: int, findings: list[str]) -> list[PartitionInfo] | None:
    header = _gpt_header(disk, 1, findings)
    if header is None and total > 1:
        header = _gpt_header(disk, total - 1, findings)
        if header is not None:
            findings.append("the primary GPT header is damaged; the backup GPT header was used")
    if header is None:
        return None
    entries_lba, count, entry_size, entries_crc = header
    if count > MAX_GPT_ENTRIES or entry_size < 128 or entry_size > 4096 or entry_size % 8:
        findings.append(f"the GPT header declares {count} entries of {entry_size} bytes; not a sane GPT")
        return None
    raw = disk.pread(entries_lba * SECTOR, count * entry_size)
    if zlib.crc32(raw) != entries_crc:
        findings.append("the GPT partition entry array fails its CRC check; read anyway")
    parts = []
    for i in range(len(raw) // entry_size):
        entry = raw[i * entry_size : (i + 1) * entry_size]
        type_guid = uuid.UUID(bytes_le=entry[0:16])
        if type_guid.int == 0:
            continue
        first, last, attrs = struct.unpack_from("<QQQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", "replace").split("\x00")[0]
        if last < first:
            findings.append(f"GPT partition {i + 1} ends before it starts; ignored")
            continue
        p = _make(i + 1, first, last - first + 1, str(type_guid).upper(), bool(attrs & GPT_LEGACY_BIOS_BOOTABLE), total, findings)
        if p:
            p.label = name or None
            parts.append(p)
    return parts


def _gpt_header(disk: BoundedReader, lba: int, findings: list[str]) -> tuple[int, int, int, int] | None:
    hdr = disk.pread(lba * SECTOR, SECTOR)
    if hdr[:8] != b"EFI PART":
        return None
    size = struct.unpack_from("<I", hdr, 12)[0]
    if not 92 <= size <= SECTOR:
        return None
    crc = struct.unpack_from("<I", hdr, 16)[0]
    check = bytearray(hdr[:size])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != crc:
        findings.append(f"the GPT header at sector {lba} fails its CRC check")
        return None
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", hdr, 72)
    return entries_lba, count, entry_size, entries_crc
