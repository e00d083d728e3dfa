"""Each qcow2 safety check alone: qemu-img's image passes it, the same with one field made
hostile is refused with the message the user sees."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from tests.hostile import qemu_image, spaced_raw
from tests.pipeline.checks_support import assert_policy_complete, refused
from vmimport.pipeline.formats import Limits, qcow2_checks as qc
from vmimport.pipeline.formats.qcow2_structs import EXT_CRYPTO, EXT_DATA_FILE, Qcow2Header
from vmimport.pipeline.formats.structs import run_checks

LIMITS = Limits()


def _image(data: bytes) -> qc.Qcow2Image:
    header = Qcow2Header.unpack(data)
    return qc.Qcow2Image(header, data[: 1 << header.cluster_bits], len(data))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qcow2-checks")
    return {name: _image(qemu_image(tmp, "qcow2", *options, raw=spaced_raw(9)))
            for name, options in (("v3", ()), ("v2", ("-o", "compat=0.10")),
                                  ("zstd", ("-o", "compression_type=zstd")))}


def fields(**changes):
    """The image with header fields changed."""
    return lambda image: replace(image, header=replace(image.header, **changes))


def v3(**changes):
    """The image with version 3 fields changed (they are read from the first cluster)."""
    def edit(image):
        packed = replace(image.v3, **changes).pack()
        cluster = image.first_cluster
        return replace(image, first_cluster=cluster[:72] + packed + cluster[72 + len(packed):])
    return edit


def cluster_bytes(at: int, data: bytes, **changes):
    """The image with `data` written into its first cluster at `at` (and v3 fields changed)."""
    def edit(image):
        image = v3(**changes)(image) if changes else image
        cluster = image.first_cluster
        return replace(image, first_cluster=cluster[:at] + data + cluster[at + len(data):])
    return edit


def extension(kind: int, payload: bytes):
    def edit(image):
        at = image.v3.header_length
        return cluster_bytes(at, struct.pack(">II", kind, len(payload)) + payload +
                             bytes(-len(payload) % 8) + bytes(8))(image)
    return edit


def truncated(length: int, **changes):
    def edit(image):
        image = v3(**changes)(image) if changes else image
        return replace(image, first_cluster=image.first_cluster[:length])
    return edit


# (check, base image, how it is made hostile, the refusal says)
CASES = [
    (qc.check_version, "v3", fields(version=4),
     "qcow2 header at offset 0 has version 4 (offset 4); only versions 2 and 3 exist"),
    (qc.check_cluster_bits, "v3", fields(cluster_bits=8), "has cluster_bits 8 (offset 20); "
     "qemu allows 9 to 21"),
    (qc.check_cluster_bits, "v2", fields(cluster_bits=22), "has cluster_bits 22"),
    (qc.check_v3_header_complete, "v3", truncated(100),
     "qcow2 version 3 header ends at byte 100"),
    (qc.check_header_length, "v3", v3(header_length=100),
     "has header_length 100 (offset 100); expected a multiple of 8 from 104 to the cluster"),
    (qc.check_header_length, "v3", truncated(150, header_length=200),
     "has header_length 200 (offset 100), but the file ends at byte 150"),
    (qc.check_extensions_fit, "v3", cluster_bytes(112, struct.pack(">II", 0x12345678, 70000)),
     "qcow2 header extension 0x12345678 at offset 112 claims 70000 bytes, past the end of the "
     "first cluster (65536 bytes)"),
    (qc.check_no_backing_file, "v3",
     lambda i: fields(backing_file_offset=4000, backing_file_size=11)(
         cluster_bytes(4000, b"/etc/passwd")(i)),
     "names a backing file '/etc/passwd' (backing_file_offset 4000, at offset 8): the image "
     "holds only the changes to that file, which this server never opens"),
    (qc.check_no_backing_file, "v2", fields(backing_file_offset=1 << 40), "backing file ''"),
    (qc.check_no_data_file, "v3", v3(incompatible_features=4),
     "declares an external data file '' (incompatible feature bit 2 / data-file extension)"),
    (qc.check_no_data_file, "v3", extension(EXT_DATA_FILE, b"/dev/sda"),
     "declares an external data file '/dev/sda'"),
    (qc.check_not_encrypted, "v3", fields(crypt_method=1),
     "says the image is encrypted (crypt_method 1 at offset 32)"),
    (qc.check_not_encrypted, "v3", extension(EXT_CRYPTO, bytes(16)), "(crypt_method 0 at"),
    (qc.check_not_marked_corrupt, "v3", v3(incompatible_features=2),
     "has the corrupt bit set (incompatible feature bit 1)"),
    (qc.check_known_features, "v3", v3(incompatible_features=1 << 5),
     "has unknown incompatible feature bits 0x20 (offset 72)"),
    (qc.check_subcluster_size, "v3",
     lambda i: fields(cluster_bits=12)(v3(incompatible_features=16)(i)),
     "uses extended L2 entries (incompatible feature bit 4) with 4096-byte clusters; "
     "subclusters need at least 16 KiB"),
    (qc.check_compression_type, "v3", cluster_bytes(104, b"\1", header_length=112),
     "names compression type 1 without incompatible feature bit 3"),
    (qc.check_compression_type, "zstd", cluster_bytes(104, b"\2"),
     "File uses unsupported compression algorithm 2: qcow2 header at offset 0 (offset 104)"),
    (qc.check_virtual_size, "v3", fields(size=1 << 50),
     "The disk image is too large: the qcow2 header (size at offset 24) declares"),
    (qc.check_virtual_size, "v2", fields(size=1000),
     "declares a size of 1000 bytes (offset 24), not a positive whole number of sectors"),
    (qc.check_l1_size, "v3", fields(l1_size=0),
     "has an L1 table of 0 entries (offset 36), too few for a"),
    (qc.check_l1_size, "v3", fields(cluster_bits=9, size=1 << 40, l1_size=2**32 - 1),
     "needs an L1 table of 268435456 bytes for a 1099511627776-byte disk with 512-byte "
     "clusters; qemu's limit is 33554432"),
    (qc.check_l1_placement, "v3", fields(l1_table_offset=12345),
     "places the L1 table at offset 12345 (offset 40): it must be cluster-aligned"),
    (qc.check_l1_placement, "v3", fields(l1_table_offset=1 << 40), "at offset 1099511627776"),
]


@pytest.mark.parametrize("check,base,edit,message", CASES,
                         ids=[f"{c[0].__name__}-{n}" for n, c in enumerate(CASES)])
def test_check(images, check, base, edit, message):
    image = images[base]
    check(image, LIMITS)  # qemu-img's image passes
    assert message in refused(check, edit(image), LIMITS)


@pytest.mark.parametrize("base", ["v3", "v2", "zstd"])
def test_qemu_images_pass_the_whole_policy(images, base):
    run_checks(qc.HEADER_CHECKS + qc.IMAGE_CHECKS, images[base], LIMITS)


def test_every_check_is_listed_and_tested():
    assert_policy_complete(qc, {c[0].__name__ for c in CASES})
