"""Each VMDK safety check alone: qemu-img's header (or descriptor) passes it, the same with one
field made hostile is refused with the message the user sees."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.hostile import qemu_image, spaced_raw, stream_vmdk
from tests.pipeline.checks_support import assert_policy_complete, refused
from vmimport.pipeline.formats import Limits, vmdk_checks as vc
from vmimport.pipeline.formats.vmdk_descriptor import Descriptor, parse_descriptor
from vmimport.pipeline.formats.vmdk_structs import SparseExtentHeader

LIMITS = Limits()


def _extent(data: bytes) -> vc.Extent:
    return vc.Extent(SparseExtentHeader.unpack(data), "VMDK header at offset 0", len(data))


def _descriptor(data: bytes, create_type: str) -> vc.EmbeddedDescriptor:
    h = SparseExtentHeader.unpack(data)
    at = h.descriptor_offset * 512
    desc = parse_descriptor(data[at : at + h.descriptor_size * 512], at)
    return vc.EmbeddedDescriptor(desc, create_type, h.capacity, at)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vmdk-checks")
    stream, sparse = stream_vmdk(tmp), qemu_image(tmp, "vmdk", raw=spaced_raw(5))
    return {"stream": (_extent(stream), _descriptor(stream, "streamOptimized")),
            "sparse": (_extent(sparse), _descriptor(sparse, "monolithicSparse"))}


# (check, image kind, header fields made hostile, the refusal says)
HEADER_CASES = [
    (vc.check_magic, "stream", {"magic": b"COWD"}, "VMDK header at offset 0 lacks the 'KDMV' "
     "magic (found b'COWD')"),
    (vc.check_version, "stream", {"version": 9}, "has version 9; sparse extents are versions 1"),
    (vc.check_version, "sparse", {"version": 0}, "has version 0;"),
    (vc.check_stream_flags, "stream", {"flags": 3}, "has flags 0x00000003, without the "
     "compressed-grains (0x10000) and markers (0x20000) bits"),
    (vc.check_deflate, "stream", {"compress_algorithm": 0},
     "File uses unsupported compression algorithm 0: VMDK header at offset 0 (offset 77)"),
    (vc.check_not_compressed, "sparse", {"flags": 0x30003},
     "has flags 0x00030003 and compression 0: compressed grains belong to a streamOptimized"),
    (vc.check_not_compressed, "sparse", {"compress_algorithm": 1}, "and compression 1"),
    (vc.check_grain_size, "stream", {"grain_size": 100}, "has a grain size of 100 sectors "
     "(offset 20); it must be a power of two of at most 2048 sectors"),
    (vc.check_grain_size, "sparse", {"grain_size": 4096}, "grain size of 4096 sectors"),
    (vc.check_grain_size, "sparse", {"grain_size": 0}, "grain size of 0 sectors"),
    (vc.check_grain_table_entries, "sparse", {"gtes_per_gt": 0},
     "has 0 entries per grain table (offset 44); expected 1 to 4096"),
    (vc.check_grain_table_entries, "stream", {"gtes_per_gt": 4097}, "4097 entries"),
    (vc.check_capacity, "stream", {"capacity": 0}, "declares a capacity of 0 sectors"),
    (vc.check_virtual_size, "sparse", {"capacity": (1 << 50) // 512},
     "The disk image is too large: the VMDK header (capacity at offset 12) declares a virtual "
     "size of 1125899906842624 bytes (1 PiB)"),
    (vc.check_overhead_in_file, "stream", {"overhead": 2**40},
     "says grains start at byte 562949953421312 (overHead at offset 64) but the file ends"),
    (vc.check_has_descriptor, "sparse", {"descriptor_offset": 0, "descriptor_size": 0},
     "(descriptor offset and size at offsets 28 and 36 are 0): this file has no embedded "
     "descriptor"),
    (vc.check_descriptor_placement, "stream", {"descriptor_size": 100000},
     "places the embedded descriptor at sector 1 (100000 sectors), outside the"),
    (vc.check_descriptor_placement, "sparse", {"descriptor_offset": 0}, "at sector 0"),
    (vc.check_grain_directory_placement, "sparse", {"gd_offset": 1 << 40},
     "places the grain directory of 1 entries at sector 1099511627776 (offset 56)"),
    (vc.check_grain_directory_placement, "sparse", {"gd_offset": 2**64 - 1},
     "places the grain directory"),
]


@pytest.mark.parametrize("check,kind,fields,message", HEADER_CASES,
                         ids=[f"{c[0].__name__}-{c[1]}-{'-'.join(c[2])}" for c in HEADER_CASES])
def test_header_check(images, check, kind, fields, message):
    extent = images[kind][0]
    check(extent, LIMITS)  # qemu-img's header passes
    hostile = replace(extent, header=replace(extent.header, **fields))
    assert message in refused(check, hostile, LIMITS)


def test_footer_matches_header(images):
    extent = images["stream"][0]
    vc.check_footer_matches(extent, extent.header)
    footer = replace(extent, header=replace(extent.header, capacity=1 << 21),
                     where="VMDK footer at offset 9000")
    assert refused(vc.check_footer_matches, footer, extent.header).endswith(
        "VMDK footer at offset 9000 disagrees with the header: capacity 2097152 vs 4096 "
        "sectors, grain 128 vs 128 sectors")


def _keys(**changes):
    return lambda d: Descriptor({**d.keys, **changes}, d.extents)


def _extent_line(**changes):
    def edit(d):
        access, sectors, kind, name, offset = d.extents[0]
        line = dict(access=access, sectors=sectors, kind=kind, name=name, offset=offset)
        line.update(changes)
        return Descriptor(d.keys, [tuple(line.values())])
    return edit


# (check, image kind, how the descriptor is made hostile, the refusal says)
DESCRIPTOR_CASES = [
    (vc.check_descriptor_not_empty, "sparse", lambda d: Descriptor(),
     "VMDK descriptor area at offset 512 (it is empty): this file has no embedded descriptor"),
    (vc.check_create_type, "sparse", _keys(createtype="twoGbMaxExtentSparse"),
     "has createType='twoGbMaxExtentSparse'; a hosted sparse VMDK without compressed grains "
     'must be createType="monolithicSparse"'),
    (vc.check_create_type, "stream", _keys(createtype="monolithicSparse"),
     'compressed grains must be createType="streamOptimized"'),
    (vc.check_no_parent, "stream", _keys(parentcid="1234abcd"),
     "names a parent disk (parentCID=1234abcd): this is a delta (child) disk"),
    (vc.check_no_parent, "sparse", _keys(parentfilenamehint="/etc/passwd"),
     "names a parent disk (parentFileNameHint='/etc/passwd'), which this server never opens"),
    (vc.check_single_extent, "stream",
     lambda d: Descriptor(d.keys, d.extents + [("RW", 4, "FLAT", "/etc/passwd", 0)]),
     "lists 2 extents; a streamOptimized VMDK has exactly one, the file itself"),
    (vc.check_extent_kind, "sparse", _extent_line(kind="FLAT"),
     "has a RW FLAT extent; a monolithicSparse VMDK has one RW SPARSE extent"),
    (vc.check_extent_kind, "stream", _extent_line(access="NOACCESS"), "has a NOACCESS SPARSE"),
    (vc.check_extent_is_this_file, "stream", _extent_line(name="../../etc/passwd"),
     "names an extent in another location ('../../etc/passwd')"),
    (vc.check_extent_size, "sparse", _extent_line(sectors=1),
     "declares an extent of 1 sectors at offset 0, but the header's capacity is"),
    (vc.check_extent_size, "stream", _extent_line(offset=7), "sectors at offset 7"),
]


@pytest.mark.parametrize("check,kind,edit,message", DESCRIPTOR_CASES,
                         ids=[f"{c[0].__name__}-{c[1]}-{n}" for n, c in enumerate(DESCRIPTOR_CASES)])
def test_descriptor_check(images, check, kind, edit, message):
    descriptor = images[kind][1]
    check(descriptor)  # qemu-img's descriptor passes
    hostile = replace(descriptor, descriptor=edit(descriptor.descriptor))
    assert message in refused(check, hostile)


def test_every_check_is_listed_and_tested():
    tested = {c[0].__name__ for c in HEADER_CASES + DESCRIPTOR_CASES}
    assert_policy_complete(vc, tested | {"check_footer_matches"}, {"check_footer_matches"})


def test_lists_follow_the_readers_order():
    """The stream reader refuses a bad magic before anything else; the sparse reader, which
    the detector chose from the magic, checks the version first."""
    assert vc.STREAM_HEADER_CHECKS[0] is vc.check_magic
    assert vc.SPARSE_HEADER_CHECKS[0] is vc.check_version
    assert vc.SPARSE_DESCRIPTOR_CHECKS[0] is vc.check_descriptor_not_empty
