"""The safety policy for VHD: one function per rule, listed at the end in the order the reader
applies them. Each takes a `VhdImage` and the `Limits` and raises `ImportFailure`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..errors import ImportFailure
from .base import CORRUPTED, SECTOR, UNSUPPORTED, Limits, too_large
from .structs import run_checks
from .vhd_structs import (DIFFERENCING, DYNAMIC, FIXED, FOOTER_COOKIE, HEADER_COOKIE,
                          DynamicHeader, VhdFooter, checksum)

FOOTERS = "Footers not identical"  # AWS's wording for a differencing VHD
MIN_BLOCK, MAX_BLOCK = 64 << 10, 16 << 20  # Hyper-V, Virtual PC, Xen and qemu write 2 MiB


@dataclass(frozen=True)
class VhdImage:
    """What the checks see: the first and last sectors of the file; the dynamic header is
    read from `source` when a check first asks for it (after its place was checked)."""

    source: object  # a formats.Source
    head: bytes  # the first sector: a dynamic disk's footer copy
    tail: bytes  # the last sector: the footer

    @property
    def tail_at(self) -> int:
        return self.source.size - SECTOR

    @cached_property
    def footer(self) -> VhdFooter:
        return VhdFooter.unpack(self.tail)

    @property
    def header_at(self) -> int:
        return self.footer.data_offset

    @cached_property
    def header_raw(self) -> bytes:
        return self.source.read_at(self.header_at, DynamicHeader.SIZE)

    @cached_property
    def header(self) -> DynamicHeader:
        return DynamicHeader.unpack(self.header_raw)

    @property
    def blocks(self) -> int:
        """BAT entries the footer's size needs."""
        return -(-self.footer.current_size // self.header.block_size)


# -- the footer -------------------------------------------------------------------------------

def check_footer_cookie(vhd: VhdImage, limits: Limits) -> None:
    if vhd.tail[:8] != FOOTER_COOKIE:
        if vhd.head[:8] == FOOTER_COOKIE:
            raise ImportFailure(
                f"{CORRUPTED} VHD footer copy at offset 0 has no matching footer at the end "
                f"of the file (offset {vhd.tail_at} holds {bytes(vhd.tail[:8])!r}): the file "
                "is truncated or damaged")
        raise ImportFailure(f"{CORRUPTED} VHD footer at offset {vhd.tail_at} lacks the "
                            f"'conectix' cookie")


def check_footer_checksum(vhd: VhdImage, limits: Limits) -> None:
    _check_sum(f"VHD footer at offset {vhd.tail_at}", vhd.tail_at, vhd.tail, vhd.footer.checksum,
               VhdFooter.CHECKSUM_AT)


def check_footer_version(vhd: VhdImage, limits: Limits) -> None:
    _check_version(f"VHD footer at offset {vhd.tail_at} has file format version",
                   vhd.footer.version)


def _check_sum(what: str, at: int, raw: bytes, stored: int, field: int) -> None:
    computed = checksum(raw, field)
    if stored != computed:
        raise ImportFailure(f"{CORRUPTED} {what} has checksum 0x{stored:08x} (offset "
                            f"{at + field}) but its bytes give 0x{computed:08x}")


def _check_version(what: str, version: int) -> None:
    if version >> 16 != 1:
        raise ImportFailure(f"{UNSUPPORTED} {what} 0x{version:08x}; only version 1.x exists")


def check_disk_type(vhd: VhdImage, limits: Limits) -> None:
    kind = vhd.footer.disk_type
    if kind not in (FIXED, DYNAMIC, DIFFERENCING):
        raise ImportFailure(
            f"{UNSUPPORTED} VHD footer at offset {vhd.tail_at} has disk type {kind}; "
            "expected 2 (fixed), 3 (dynamic) or 4 (differencing)")


def check_footer_copies(vhd: VhdImage, limits: Limits) -> None:
    """A dynamic disk's footer copy at 0 equals its footer."""
    kind = vhd.footer.disk_type
    if kind in (DYNAMIC, DIFFERENCING) and vhd.head != vhd.tail:
        what = ("lacks the 'conectix' cookie of" if vhd.head[:8] != FOOTER_COOKIE
                else "differs from")
        raise ImportFailure(
            f"{FOOTERS}: VHD footer copy at offset 0 {what} the footer at offset "
            f"{vhd.tail_at}, which says this is a {('dynamic', 'differencing')[kind - 3]}"
            " disk, whose two footer copies must be identical (the file is damaged or "
            "was cut short)")


def check_current_size(vhd: VhdImage, limits: Limits) -> None:
    current = vhd.footer.current_size
    if current == 0 or current % SECTOR:
        raise ImportFailure(
            f"{CORRUPTED} VHD footer at offset {vhd.tail_at} declares a current size of "
            f"{current} bytes (offset 48), which is not a positive whole number of sectors")


def check_not_differencing(vhd: VhdImage, limits: Limits) -> None:
    """A differencing disk holds changes to a parent, named in the refusal, never opened."""
    if vhd.footer.disk_type == DIFFERENCING:
        raise ImportFailure(_differencing(vhd, limits))


def _differencing(vhd: VhdImage, limits: Limits) -> str:
    why = (f"{FOOTERS}: VHD footer at offset {vhd.tail_at} says this is a differencing "
           "disk (disk type 4)")
    try:
        run_checks(HEADER_READ_CHECKS, vhd, limits)
    except ImportFailure as exc:
        return f"{why}; its dynamic header is unreadable too ({exc.message})"
    header = vhd.header
    name = header.parent_unicode_name.decode("utf-16-be", errors="replace").split("\0", 1)[0]
    codes = [loc.platform_code.decode("latin-1") for loc in header.locators()
             if loc.platform_code != b"\0\0\0\0"]
    locators = f" and {len(codes)} parent locator(s) ({', '.join(codes)})" if codes else ""
    return (f"{why}: it holds only the changes to a parent disk named {name[:200]!r} "
            f"(dynamic header at offset {vhd.header_at}){locators}, which this server never "
            "opens; merge the chain into one disk (Hyper-V Edit Disk > Merge, or "
            "`qemu-img convert -O vpc child.vhd merged.vhd`) and import that")


def check_virtual_size(vhd: VhdImage, limits: Limits) -> None:
    current = vhd.footer.current_size
    if current > limits.max_virtual_size:
        raise ImportFailure(too_large(f"the VHD footer at offset {vhd.tail_at} (current "
                                      "size at offset 48)", current, limits))


def check_fixed_size(vhd: VhdImage, limits: Limits) -> None:
    """A fixed disk is its data and the footer, nothing else."""
    current = vhd.footer.current_size
    if vhd.footer.disk_type == FIXED and vhd.tail_at != current:
        raise ImportFailure(
            f"{CORRUPTED} fixed VHD footer at offset {vhd.tail_at} declares a disk of "
            f"{current} bytes, but the data before the footer is {vhd.tail_at} bytes")


# -- the dynamic header -----------------------------------------------------------------------

def check_header_placement(vhd: VhdImage, limits: Limits) -> None:
    at = vhd.header_at
    if not (SECTOR <= at and at + DynamicHeader.SIZE <= vhd.tail_at):
        raise ImportFailure(
            f"{CORRUPTED} VHD footer at offset {vhd.tail_at} places the dynamic header at "
            f"offset {at} (data offset, footer offset 16), outside the file's "
            f"{vhd.source.size} bytes")


def check_header_cookie(vhd: VhdImage, limits: Limits) -> None:
    raw = vhd.header_raw
    if raw[:8] != HEADER_COOKIE:
        raise ImportFailure(f"{CORRUPTED} VHD dynamic header at offset {vhd.header_at} lacks "
                            f"the 'cxsparse' cookie (found {bytes(raw[:8])!r})")


def check_header_checksum(vhd: VhdImage, limits: Limits) -> None:
    at = vhd.header_at
    _check_sum(f"VHD dynamic header at offset {at}", at, vhd.header_raw, vhd.header.checksum,
               DynamicHeader.CHECKSUM_AT)


def check_header_version(vhd: VhdImage, limits: Limits) -> None:
    _check_version(f"VHD dynamic header at offset {vhd.header_at} has version",
                   vhd.header.header_version)


def check_block_size(vhd: VhdImage, limits: Limits) -> None:
    block, at = vhd.header.block_size, vhd.header_at
    if not (MIN_BLOCK <= block <= MAX_BLOCK and block & (block - 1) == 0):
        raise ImportFailure(
            f"{UNSUPPORTED} VHD dynamic header at offset {at} has a block size of {block} "
            f"bytes (offset {at + 32}); expected a power of two from {MIN_BLOCK} to "
            f"{MAX_BLOCK} (2 MiB is usual)")


def check_bat_entries(vhd: VhdImage, limits: Limits) -> None:
    """The BAT covers the footer's size."""
    header, at, needed = vhd.header, vhd.header_at, vhd.blocks
    if header.max_table_entries < needed:
        raise ImportFailure(
            f"{CORRUPTED} VHD dynamic header at offset {at} has {header.max_table_entries} BAT "
            f"entries (offset {at + 28}) of {header.block_size} bytes each, too few for the "
            f"footer's current size of {vhd.footer.current_size} bytes ({needed} needed)")


def check_bat_placement(vhd: VhdImage, limits: Limits) -> None:
    table_at, needed, at = vhd.header.table_offset, vhd.blocks, vhd.header_at
    if not (SECTOR <= table_at and table_at + needed * 4 <= vhd.tail_at):
        raise ImportFailure(
            f"{CORRUPTED} VHD dynamic header at offset {at} places the BAT of {needed} entries "
            f"at offset {table_at} (offset {at + 16}); it does not fit inside the file's "
            f"{vhd.source.size} bytes")


# -- the policy, in the order the reader applies it -------------------------------------------

# Before the dynamic header is trusted enough to read a field from it.
HEADER_READ_CHECKS = (check_header_placement, check_header_cookie, check_header_checksum)
FOOTER_CHECKS = (check_footer_cookie, check_footer_checksum, check_footer_version,
                 check_disk_type, check_footer_copies, check_current_size,
                 check_not_differencing, check_virtual_size, check_fixed_size)
# A dynamic disk's header, before its BAT is read.
DYNAMIC_CHECKS = (*HEADER_READ_CHECKS, check_header_version, check_block_size,
                  check_bat_entries, check_bat_placement)
