"""Each OVA tar check alone: a header and a member as tarfile writes them pass it, the same
made hostile is refused with the message the user sees."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.hostile import tar_bytes
from tests.pipeline.checks_support import assert_policy_complete, refused
from vmimport.pipeline.formats import tar
from vmimport.pipeline.formats.tar import TarEntry, TarHeader

MEMBER = TarEntry("disk1.vmdk", b"0", b"", 1000, 1024, 1536)
ARCHIVE = 4096


@pytest.fixture(scope="module")
def header():
    return TarHeader.unpack(tar_bytes([("disk.ovf", b"<Envelope/>")]))


HEADER_CASES = [
    (tar.check_header_checksum, {"checksum": b"0000000\0"},
     "OVA tar header at offset 512 has checksum 0 (octal) but its bytes sum to"),
    (tar.check_header_checksum, {"checksum": b"notoctal"}, "which is not an octal number"),
    (tar.check_ustar, {"magic": b"abcde\0"},
     "the tar header at offset 512 is not a ustar header (magic b'abcde\\x00'); an OVA is a "
     "ustar archive"),
]


@pytest.mark.parametrize("check,fields,message", HEADER_CASES,
                         ids=[f"{c[0].__name__}-{n}" for n, c in enumerate(HEADER_CASES)])
def test_header_check(header, check, fields, message):
    check(header, 512)  # tarfile's header passes
    assert message in refused(check, replace(header, **fields), 512)


MEMBER_CASES = [
    (tar.check_regular_file, {"kind": b"2", "link": b"/etc/passwd"},
     "the OVA member 'disk1.vmdk' (tar header at offset 1024) is a symbolic link pointing to "
     "'/etc/passwd'; an OVA may hold only regular files"),
    (tar.check_regular_file, {"kind": b"5"}, "is a directory; an OVA may hold only regular"),
    (tar.check_known_type, {"kind": b"Z"}, "has the unknown tar entry type b'Z'"),
    (tar.check_safe_name, {"name": "/etc/passwd"},
     "the OVA member '/etc/passwd' (tar header at offset 1024) has an absolute path"),
    (tar.check_safe_name, {"name": "C:disk.vmdk"}, "has an absolute path"),
    (tar.check_safe_name, {"name": "x/../../etc/passwd"}, "'..' (path traversal)"),
    (tar.check_safe_name, {"name": "./"}, "has an empty or invalid name"),
    (tar.check_unique_name, {"name": "./ova.mf"},
     "the OVA holds two members named 'ova.mf' (the second at offset 1024)"),
    (tar.check_inside_archive, {"size": 3000},
     "OVA member 'disk1.vmdk' (tar header at offset 1024) declares 3000 bytes from offset "
     "1536, past the end of the archive at byte 4096"),
]


@pytest.mark.parametrize("check,fields,message", MEMBER_CASES,
                         ids=[f"{c[0].__name__}-{n}" for n, c in enumerate(MEMBER_CASES)])
def test_member_check(check, fields, message):
    names = {"disk.ovf", "ova.mf"}
    check(MEMBER, names, ARCHIVE)  # a plain member passes
    assert message in refused(check, replace(MEMBER, **fields), names, ARCHIVE)


def test_every_check_is_listed_and_tested():
    assert_policy_complete(tar, {c[0].__name__ for c in HEADER_CASES + MEMBER_CASES})
