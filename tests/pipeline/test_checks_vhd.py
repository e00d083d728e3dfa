"""Each VHD safety check alone: qemu-img's image passes it, the same with one field made
hostile (checksums fixed, unless the checksum is the point) is refused with the message the
user sees."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.hostile import cases_vhd
from tests.pipeline.checks_support import assert_policy_complete, refused
from tests.sources import BytesSource
from vmimport.pipeline.formats import Limits, vhd_checks as vc
from vmimport.pipeline.formats.structs import run_checks
from vmimport.pipeline.formats.vhd_structs import DynamicHeader, VhdFooter, checksum

LIMITS = Limits()


def _vhd(data: bytes) -> vc.VhdImage:
    return vc.VhdImage(BytesSource(data), data[:512], data[-512:])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vhd-checks")
    return {"dynamic": cases_vhd.vhd(tmp), "fixed": cases_vhd.vhd(tmp, fixed=True)}


def _sealed(struct_value, cls) -> bytes:
    raw = bytearray(struct_value.pack())
    raw[cls.CHECKSUM_AT : cls.CHECKSUM_AT + 4] = checksum(raw, cls.CHECKSUM_AT).to_bytes(4, "big")
    return bytes(raw)


def footer(fix: bool = True, copy: bool = True, **changes):
    """The image with footer fields changed (and its copy at 0, for a dynamic disk)."""
    def edit(data: bytes) -> bytes:
        new = replace(VhdFooter.unpack(data, len(data) - 512), **changes)
        raw = _sealed(new, VhdFooter) if fix else new.pack()
        head = raw if copy and data[:8] == b"conectix" else data[:512]
        return head + data[512:-512] + raw
    return edit


def header(fix: bool = True, **changes):
    """The image with dynamic header fields changed."""
    def edit(data: bytes) -> bytes:
        at = VhdFooter.unpack(data).data_offset
        new = replace(DynamicHeader.unpack(data, at), **changes)
        raw = _sealed(new, DynamicHeader) if fix else new.pack()
        return data[:at] + raw + data[at + len(raw):]
    return edit


# (check, base image, how it is made hostile, the refusal says)
CASES = [
    (vc.check_footer_cookie, "dynamic", footer(cookie=b"xxxxxxxx", copy=False),
     "VHD footer copy at offset 0 has no matching footer at the end of the file"),
    (vc.check_footer_cookie, "fixed", footer(cookie=b"xxxxxxxx"),
     "lacks the 'conectix' cookie"),
    (vc.check_footer_checksum, "fixed", footer(fix=False, checksum=0),
     "has checksum 0x00000000 (offset"),
    (vc.check_footer_version, "dynamic", footer(version=0x20000),
     "has file format version 0x00020000; only version 1.x exists"),
    (vc.check_disk_type, "fixed", footer(disk_type=5),
     "has disk type 5; expected 2 (fixed), 3 (dynamic) or 4 (differencing)"),
    (vc.check_footer_copies, "dynamic", footer(copy=False, timestamp=1),
     "Footers not identical: VHD footer copy at offset 0 differs from the footer at offset"),
    (vc.check_current_size, "dynamic", footer(current_size=1000),
     "declares a current size of 1000 bytes (offset 48), which is not a positive whole"),
    (vc.check_not_differencing, "dynamic",
     lambda d: footer(disk_type=4)(header(parent_unicode_name="/etc/passwd".encode(
         "utf-16-be").ljust(512, b"\0"))(d)),
     "Footers not identical: VHD footer at offset 6295040 says this is a differencing disk "
     "(disk type 4): it holds only the changes to a parent disk named '/etc/passwd' (dynamic "
     "header at offset 512), which this server never opens"),
    (vc.check_not_differencing, "dynamic",
     lambda d: footer(disk_type=4)(header(fix=False, checksum=0)(d)),
     "; its dynamic header is unreadable too (Provided image file was corrupted. VHD dynamic "
     "header at offset 512 has checksum 0x00000000"),
    (vc.check_virtual_size, "fixed", footer(current_size=1 << 50),
     "The disk image is too large: the VHD footer at offset"),
    (vc.check_fixed_size, "fixed", lambda d: footer(current_size=len(d))(d),
     "bytes, but the data before the footer is"),
    (vc.check_header_placement, "dynamic", footer(data_offset=1 << 40),
     "places the dynamic header at offset 1099511627776 (data offset, footer offset 16)"),
    (vc.check_header_cookie, "dynamic", header(cookie=b"xxxxxxxx"),
     "VHD dynamic header at offset 512 lacks the 'cxsparse' cookie (found b'xxxxxxxx')"),
    (vc.check_header_checksum, "dynamic", header(fix=False, checksum=0),
     "VHD dynamic header at offset 512 has checksum 0x00000000 (offset 548) but its bytes"),
    (vc.check_header_version, "dynamic", header(header_version=0x20000),
     "has version 0x00020000; only version 1.x exists"),
    (vc.check_block_size, "dynamic", header(block_size=1000),
     "has a block size of 1000 bytes (offset 544); expected a power of two from 65536"),
    (vc.check_block_size, "dynamic", header(block_size=32 << 20), "33554432 bytes"),
    (vc.check_bat_entries, "dynamic", header(max_table_entries=0),
     "has 0 BAT entries (offset 540) of 2097152 bytes each, too few for the footer's current"),
    (vc.check_bat_placement, "dynamic", header(table_offset=1 << 40),
     "places the BAT of 3 entries at offset 1099511627776 (offset 528); it does not fit"),
]


@pytest.mark.parametrize("check,base,edit,message", CASES,
                         ids=[f"{c[0].__name__}-{n}" for n, c in enumerate(CASES)])
def test_check(images, check, base, edit, message):
    data = images[base]
    check(_vhd(data), LIMITS)  # qemu-img's image passes
    assert message in refused(check, _vhd(edit(data)), LIMITS)


@pytest.mark.parametrize("base", ["dynamic", "fixed"])
def test_qemu_images_pass_the_whole_policy(images, base):
    vhd = _vhd(images[base])
    run_checks(vc.FOOTER_CHECKS, vhd, LIMITS)
    if base == "dynamic":
        run_checks(vc.DYNAMIC_CHECKS, vhd, LIMITS)


def test_every_check_is_listed_and_tested():
    assert_policy_complete(vc, {c[0].__name__ for c in CASES})
