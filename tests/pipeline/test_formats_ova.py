"""Tests for OVA (vmimport.pipeline.formats.ova/ovf): members read in place, disks in the
descriptor's order, manifest digests, and every refusal of the tar walk and the OVF parser.

OVAs are built here with Python's tarfile around VMDKs made by qemu-img; the OVF text is written
by the tests (tests/hostile's builders).
"""

from __future__ import annotations

import hashlib
import os
import tarfile

import pytest

from tests.sources import BytesSource as _BytesSource

from tests.guards import forbid_opening_outside

from tests.hostile import (MiB, VMDK_SPARSE_URI, guest_raw, make_ova, manifest,
                           ovf_xml, qemu_image, stream_vmdk, tar_bytes)
from vmimport.pipeline.errors import ImportFailure
from vmimport.pipeline import formats
from vmimport.pipeline.formats import Limits, open_guest_disk, open_guest_disks
from vmimport.pipeline.formats.ova import MemberSource, walk_tar

OVA = "Disk validation failed [Unsupported OVA format] "
CORRUPT = "Provided image file was corrupted. "


def BytesSource(data: bytes, description: str = "s3://b/vm.ova", chunk: int | None = None):
    return _BytesSource(data, description, chunk)


def flatten(disk) -> bytes:
    out = bytearray(disk.virtual_size)
    end = 0
    for offset, data in disk.extents():
        assert offset >= end
        out[offset : offset + len(data)] = data
        end = offset + len(data)
    return bytes(out)


def padded(raw: bytes) -> bytes:
    return raw + bytes(-len(raw) % 512)


def fails(data: bytes, match: str, declared="ova", limits=None) -> str:
    with pytest.raises(ImportFailure) as info:
        for disk in open_guest_disks(BytesSource(data), declared, limits or Limits()):
            for _ in disk.extents():
                pass
    assert info.value.kind == "ClientError"
    assert match in info.value.message, info.value.message
    return info.value.message


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("ova")


@pytest.fixture(scope="module")
def three(tmp):
    """Three distinct guest disks and their streamOptimized VMDKs."""
    raws = [guest_raw(MiB + n * 256 * 1024, seed=10 + n) for n in range(3)]
    vmdks = [stream_vmdk(tmp, size=len(r), seed=10 + n) for n, r in enumerate(raws)]
    return raws, vmdks


# -- reading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("with_manifest", [True, "SHA1", "SHA512", False])
@pytest.mark.parametrize("chunk", [None, 4099])
def test_one_disk_ova(tmp, with_manifest, chunk):
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    ova = make_ova([("disk1.vmdk", vmdk, len(raw))], with_manifest=with_manifest)
    disks = open_guest_disks(BytesSource(ova, chunk=chunk), "ova", Limits())
    assert len(disks) == 1
    disk = disks[0]
    assert disk.format == "VMDK" and disk.virtual_size == len(raw)
    assert flatten(disk) == raw
    # The single-disk entry point (one disk per DiskContainer) takes a one-disk OVA.
    assert flatten(open_guest_disk(BytesSource(ova), "OVA", Limits())) == raw
    assert flatten(open_guest_disks(BytesSource(ova), None)[0]) == raw


def test_three_disks_in_descriptor_order(three):
    raws, vmdks = three
    names = ["a.vmdk", "b.vmdk", "c.vmdk"]
    # Tar order a, b, c; the hardware items attach disk3 (c) first, then disk1 (a), disk2 (b).
    ova = make_ova([(n, v, len(r)) for n, v, r in zip(names, vmdks, raws)],
                   attach=["disk3", "disk1", "disk2"])
    disks = open_guest_disks(BytesSource(ova), "ova")
    assert [d.name for d in disks] == ["c.vmdk", "a.vmdk", "b.vmdk"]
    assert [flatten(d) for d in disks] == [padded(raws[2]), padded(raws[0]), padded(raws[1])]
    # Disks no item attaches come last, in DiskSection order.
    ova = make_ova([(n, v, len(r)) for n, v, r in zip(names, vmdks, raws)], attach=["disk2"])
    assert [d.name for d in open_guest_disks(BytesSource(ova), "ova")] == \
        ["b.vmdk", "a.vmdk", "c.vmdk"]
    with pytest.raises(ImportFailure, match="holds 3 disks; this import takes one disk per"):
        open_guest_disk(BytesSource(ova), "ova")


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_dialects_and_long_names(tmp, fmt):
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    name = ("d" * 150 + ".vmdk") if fmt != tarfile.USTAR_FORMAT else "disk1.vmdk"
    ova = make_ova([(name, vmdk, len(raw))], fmt=fmt)
    assert flatten(open_guest_disks(BytesSource(ova), "ova")[0]) == raw


def test_dot_slash_member_names(tmp):
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    ovf = ovf_xml([{"id": "disk1", "href": "disk1.vmdk", "capacity": len(raw)}])
    ova = tar_bytes([("./vm.ovf", ovf), ("./disk1.vmdk", vmdk)])
    assert flatten(open_guest_disks(BytesSource(ova), "ova")[0]) == raw


def test_ovf_2_namespace_and_units(tmp):
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    ovf = ovf_xml([{"id": "d", "href": "disk1.vmdk", "capacity": 2, "units": "byte * 2^20"}],
                  version=2)
    ova = tar_bytes([("vm.ovf", ovf), ("disk1.vmdk", vmdk)])
    assert flatten(open_guest_disks(BytesSource(ova), "ova")[0]) == raw


def test_non_disk_referenced_file_and_cert(tmp):
    """An NVRAM file referenced by ovf:/file/ is allowed (and its digest checked), as is a .cert."""
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    nvram = os.urandom(8192)
    ovf = ovf_xml([{"id": "disk1", "href": "disk1.vmdk", "capacity": len(raw)}],
                  extra_files=[{"href": "vm.nvram", "id": "nv"}],
                  extra_items="<Item><rasd:HostResource>ovf:/file/nv</rasd:HostResource>"
                              "<rasd:ResourceType>1</rasd:ResourceType></Item>")
    files = {"vm.ovf": ovf, "disk1.vmdk": vmdk, "vm.nvram": nvram}
    ova = tar_bytes(list(files.items()) + [("vm.mf", manifest(files)), ("vm.cert", b"cert")])
    disks = open_guest_disks(BytesSource(ova), "ova")
    assert len(disks) == 1 and flatten(disks[0]) == raw
    bad = tar_bytes(list(files.items()) + [("vm.mf", manifest({**files, "vm.nvram": b"x"}))])
    fails(bad, CORRUPT + "the SHA256 digest of OVA member 'vm.nvram' is ")


def test_member_source_is_bounded_and_streams_only_its_member(tmp):
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    ova = make_ova([("disk1.vmdk", vmdk, len(raw))], with_manifest=False)
    members = walk_tar(BytesSource(ova))
    assert [m.name for m in members] == ["vm.ovf", "disk1.vmdk"]
    sub = MemberSource(BytesSource(ova), members[1])
    assert sub.size == len(vmdk) and sub.read_at(0, 4) == b"KDMV"
    assert sub.read_at(len(vmdk) - 10, 100) == vmdk[-10:] and sub.read_at(len(vmdk), 5) == b""
    assert b"".join(sub.stream(100, 1000)) == vmdk[100:]
    parent = BytesSource(ova)
    disk = open_guest_disks(parent, "ova")[0]
    flatten(disk)
    assert parent.streamed <= len(vmdk) + 8 * MiB  # never the whole rest of the archive twice


def test_manifest_checked_for_random_access_readers(tmp):
    """A reader that never streams: the digest is computed in a separate pass by verify()."""
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    ova = make_ova([("disk1.vmdk", vmdk, len(raw))], with_manifest=False)
    member = walk_tar(BytesSource(ova))[1]
    good = MemberSource(BytesSource(ova), member, {"SHA256": hashlib.sha256(vmdk).hexdigest()})
    good.read_at(0, 512)
    good.verify("vm.mf")
    bad = MemberSource(BytesSource(ova), member, {"SHA1": "0" * 40})
    with pytest.raises(ImportFailure, match="the SHA1 digest of OVA member 'disk1.vmdk' is "):
        bad.verify("vm.mf")
    # Streaming a middle part and then verifying fills the gaps and hashes each byte once.
    mid = MemberSource(BytesSource(ova), member, {"SHA256": hashlib.sha256(vmdk).hexdigest()})
    for _ in mid.stream(70000, 5000):
        pass
    for _ in mid.stream(1000, 3000):
        pass
    mid.verify("vm.mf")


def test_manifest_mismatch_names_file_and_both_digests(tmp):
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    ova = make_ova([("disk1.vmdk", vmdk, len(raw))])
    # Flip one byte inside a grain's padding (after the compressed data): the disk still reads.
    from tests.hostile import vmdk_markers
    at, _, size, _ = vmdk_markers(vmdk)[0]
    pad = at + 12 + size
    assert pad % 512
    bad_vmdk = bytearray(vmdk)
    bad_vmdk[pad] ^= 0xFF
    files = {"vm.ovf": None, "disk1.vmdk": bytes(bad_vmdk)}
    good_mf = manifest({"disk1.vmdk": vmdk})
    ovf = ovf_xml([{"id": "disk1", "href": "disk1.vmdk", "capacity": len(raw)}])
    ova = tar_bytes([("vm.ovf", ovf), ("disk1.vmdk", files["disk1.vmdk"]), ("vm.mf", good_mf)])
    msg = fails(ova, CORRUPT + "the SHA256 digest of OVA member 'disk1.vmdk' is "
                + hashlib.sha256(bytes(bad_vmdk)).hexdigest())
    assert f"but the manifest 'vm.mf' says {hashlib.sha256(vmdk).hexdigest()}" in msg
    # The bad descriptor digest is found before any disk is read.
    mf = manifest({"vm.ovf": b"other", "disk1.vmdk": vmdk})
    fails(tar_bytes([("vm.ovf", ovf), ("disk1.vmdk", vmdk), ("vm.mf", mf)]),
          "the SHA256 digest of OVA member 'vm.ovf' is")


def test_monolithic_sparse_member(tmp):
    """monolithicSparse VMDK inside an OVA: read once the sparse reader is registered, else the
    clear 'not supported yet' refusal (from open_guest_disk), named by member."""
    raw = guest_raw()
    sparse = qemu_image(tmp, "vmdk", raw=raw)
    ova = make_ova([("disk1.vmdk", sparse, len(raw))], fmt_uri=VMDK_SPARSE_URI)
    if "vmdk-monolithicSparse" in formats._READERS:
        disks = open_guest_disks(BytesSource(ova), "ova")
        assert flatten(disks[0]) == raw
    else:
        fails(ova, "monolithicSparse VMDK images are not supported yet")


def test_not_an_ova_is_one_disk(tmp):
    raw = guest_raw()
    disks = open_guest_disks(BytesSource(raw), None)
    assert len(disks) == 1 and disks[0].format == "RAW"
    disks = open_guest_disks(BytesSource(stream_vmdk(tmp)), "vmdk")
    assert flatten(disks[0]) == raw
    with pytest.raises(ImportFailure, match="declared VMDK but its bytes are a tar"):
        open_guest_disks(BytesSource(make_ova([("d.vmdk", stream_vmdk(tmp), len(raw))])), "vmdk")


# -- refusals ------------------------------------------------------------------------------------

def _base(tmp):
    raw, vmdk = guest_raw(), stream_vmdk(tmp)
    return raw, vmdk, ovf_xml([{"id": "disk1", "href": "disk1.vmdk", "capacity": len(raw)}])


def _info(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _patch_header(ova: bytes, index: int, edit) -> bytes:
    """Apply `edit(bytearray header)` to the `index`-th tar header, then fix its checksum."""
    at, n = 0, 0
    while True:
        if n == index:
            break
        size = int(ova[at + 124 : at + 136].split(b"\0")[0].strip() or b"0", 8)
        at += 512 + -(-size // 512) * 512
        n += 1
    header = bytearray(ova[at : at + 512])
    edit(header)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return ova[:at] + bytes(header) + ova[at + 512 :]


def _refusals(tmp):
    raw, vmdk, ovf = _base(tmp)
    ok = [("vm.ovf", ovf), ("disk1.vmdk", vmdk)]
    ova = tar_bytes(ok)
    many = [{"id": f"d{n}", "href": f"d{n}.vmdk", "capacity": len(raw)} for n in range(22)]
    lol = ('<!DOCTYPE Envelope [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">'
           '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>')
    xxe = '<!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    disk = {"id": "disk1", "href": "disk1.vmdk", "capacity": len(raw)}
    return {
        "dotdot member": (tar_bytes(ok + [("../../etc/cron.d/x", b"x")]),
                          OVA + "the OVA member '../../etc/cron.d/x' (tar header at offset"),
        "absolute member": (tar_bytes(ok + [("/etc/passwd", b"x")]), "has an absolute path"),
        "symlink": (tar_bytes(ok + [(_info("vm.mf", tarfile.SYMTYPE, "/etc/passwd"), None)]),
                    "is a symbolic link pointing to '/etc/passwd'"),
        "hardlink": (tar_bytes(ok + [(_info("x.vmdk", tarfile.LNKTYPE, "disk1.vmdk"), None)]),
                     "is a hard link"),
        "char device": (tar_bytes(ok + [(_info("null", tarfile.CHRTYPE), None)]),
                        "is a character device"),
        "block device": (tar_bytes(ok + [(_info("sda", tarfile.BLKTYPE), None)]),
                         "is a block device"),
        "fifo": (tar_bytes(ok + [(_info("p", tarfile.FIFOTYPE), None)]), "is a FIFO"),
        "directory": (tar_bytes([("vm.ovf", ovf), (_info("dir", tarfile.DIRTYPE), None),
                                 ("disk1.vmdk", vmdk)]), "is a directory"),
        "duplicate": (tar_bytes(ok + [("disk1.vmdk", vmdk)]),
                      "holds two members named 'disk1.vmdk'"),
        "extra file": (tar_bytes(ok + [("notes.txt", b"hi")]),
                       "the OVA holds the extra file 'notes.txt' (tar header at offset"),
        "two manifests": (tar_bytes(ok + [("a.mf", b""), ("b.mf", b"")]), "extra file 'b.mf'"),
        "missing file": (tar_bytes([("vm.ovf", ovf)]),
                         "references the file 'disk1.vmdk', which is not in the OVA"),
        "ovf not first": (tar_bytes([("disk1.vmdk", vmdk), ("vm.ovf", ovf)]),
                          "the first member of the OVA is 'disk1.vmdk'"),
        "href path": (tar_bytes([("vm.ovf", ovf_xml([{**disk, "href": "sub/disk1.vmdk"}])),
                                 ("sub/disk1.vmdk", vmdk)]),
                      "references the file 'sub/disk1.vmdk', which is not a plain file name"),
        "href dotdot": (tar_bytes([("vm.ovf", ovf_xml([{**disk, "href": "../../etc/passwd"}]))]),
                        "never opens a path from the image"),
        "href url": (tar_bytes([("vm.ovf", ovf_xml([{**disk, "href": "http://x/d.vmdk"}]))]),
                     "'http://x/d.vmdk', which is not a plain file name"),
        "xxe": (tar_bytes([("vm.ovf", ovf_xml([disk], doctype=xxe)), ("disk1.vmdk", vmdk)]),
                "contains a DTD, an entity declaration or an external reference"),
        "billion laughs": (tar_bytes([("vm.ovf", ovf_xml([disk], doctype=lol)),
                                      ("disk1.vmdk", vmdk)]), "entity expansion bombs"),
        "not xml": (tar_bytes([("vm.ovf", b"<Envelope><References>"), ("disk1.vmdk", vmdk)]),
                    "is not well-formed XML"),
        "wrong root": (tar_bytes([("vm.ovf", b"<html/>"), ("disk1.vmdk", vmdk)]),
                       "has root element <html>, not <Envelope>"),
        # Found by the OVF fuzz target: an unknown codec made the parser raise LookupError.
        "unknown encoding": (tar_bytes([("vm.ovf", b'<?xml version="1.0" encoding="U-F-8"?>'
                                                   b"<Envelope/>"), ("disk1.vmdk", vmdk)]),
                             "declares an encoding Python does not know"),
        "no disks": (tar_bytes([("vm.ovf", ovf_xml([]))]), "declares no disks"),
        "22 disks": (tar_bytes([("vm.ovf", ovf_xml(many))]),
                     "declares 22 disks; an image has at most 21"),
        "unknown fileRef": (tar_bytes([("vm.ovf", ovf_xml([{**disk, "fileRef": "nope"}]))]),
                            "has ovf:fileRef='nope', which no References/File declares"),
        "attach unknown": (tar_bytes([("vm.ovf", ovf_xml([disk], ["disk9"])), ("disk1.vmdk", vmdk)]),
                           "attaches the disk 'disk9', which DiskSection does not declare"),
        "attach twice": (tar_bytes([("vm.ovf", ovf_xml([disk], ["disk1", "disk1"])),
                                    ("disk1.vmdk", vmdk)]), "attaches the disk 'disk1' a second time"),
        "size lie": (tar_bytes([("vm.ovf", ovf_xml([{**disk, "size": 12345}])), ("disk1.vmdk", vmdk)]),
                     "says 'disk1.vmdk' is 12345 bytes (ovf:size) but the OVA member is"),
        "capacity lie": (tar_bytes([("vm.ovf", ovf_xml([{**disk, "capacity": 4 * MiB}])),
                                    ("disk1.vmdk", vmdk)]),
                         f"has a capacity of {4 * MiB} bytes, but the VMDK image in it is"),
        "capacity huge": (tar_bytes([("vm.ovf", ovf_xml([{**disk, "capacity": 1, "units": "byte * 2^50"}])),
                                     ("disk1.vmdk", vmdk)]), "The disk image is too large: the OVF"),
        "bad units": (tar_bytes([("vm.ovf", ovf_xml([{**disk, "units": "furlongs"}])),
                                 ("disk1.vmdk", vmdk)]), "capacityAllocationUnits='furlongs'"),
        "raw under vmdk uri": (tar_bytes([("vm.ovf", ovf), ("disk1.vmdk", raw)]),
                               "declared VMDK but its bytes are a raw disk image"),
        "nested ova": (tar_bytes([("vm.ovf", ovf), ("disk1.vmdk", ova)]),
                       "the OVA member 'disk1.vmdk' is itself an OVA"),
        "empty member": (tar_bytes([("vm.ovf", ovf), ("disk1.vmdk", b"")]), "is empty (0 bytes)"),
        "bad checksum": (ova[:148] + b"0000000\0" + ova[156:],
                         CORRUPT + "OVA tar header at offset 0 has checksum 0 (octal)"),
        "truncated header": (ova[:512 + 1536 + 100], "inside the tar header that starts at offset"),
        "truncated member": (ova[: len(ova) - len(vmdk) // 2 - 1024],
                             "declares %d bytes from offset" % len(vmdk)),
        "not ustar": (_patch_header(ova, 1, lambda h: h.__setitem__(slice(257, 263), b"xxxxx\0")),
                      "is not a ustar header (magic b'xxxxx\\x00')"),
        "bad size field": (_patch_header(ova, 1, lambda h: h.__setitem__(slice(124, 136), b"zzzz\0" * 2 + b"\0\0")),
                           "has size b'zzzz', which is not an octal number"),
        "base256 size": (_patch_header(ova, 1, lambda h: h.__setitem__(slice(124, 136), b"\x80" + b"\xff" * 11)),
                         "past the end of the archive"),
        "gnu sparse": (_patch_header(ova, 1, lambda h: h.__setitem__(156, ord("S"))), "is a GNU sparse file"),
        "unknown type": (_patch_header(ova, 1, lambda h: h.__setitem__(156, ord("Z"))),
                         "has the unknown tar entry type b'Z'"),
        "manifest lists missing": (tar_bytes(ok + [("vm.mf", manifest({"other.vmdk": b""}))]),
                                   "lists 'other.vmdk', which is not a file of this OVA"),
        "manifest garbage": (tar_bytes(ok + [("vm.mf", b"MD5(disk1.vmdk)= 00\n")]),
                             "line 1: 'MD5(disk1.vmdk)= 00' is not an 'SHA1(file)= hex'"),
        "two systems": (tar_bytes([("vm.ovf", ovf.replace(b"</Envelope>", b"<VirtualSystem/></Envelope>")),
                                   ("disk1.vmdk", vmdk)]), "describes 2 virtual systems"),
        "parentRef": (tar_bytes([("vm.ovf", ovf.replace(b"<Disk ", b'<Disk ovf:parentRef="x" ')),
                                 ("disk1.vmdk", vmdk)]), "names a parent disk (ovf:parentRef)"),
        "blank disk": (tar_bytes([("vm.ovf", ovf.replace(b'ovf:fileRef="file1" ', b"")),
                                  ("disk1.vmdk", vmdk)]), "has no ovf:fileRef"),
        "chunked": (tar_bytes([("vm.ovf", ovf.replace(b"<File ", b'<File ovf:chunkSize="100" ')),
                               ("disk1.vmdk", vmdk)]), "ovf:chunkSize"),
        "pax sparse": (tar_bytes([("vm.ovf", ovf), (_pax_sparse("disk1.vmdk"), vmdk)],
                                 tarfile.PAX_FORMAT), "is a sparse file (pax GNU.sparse)"),
    }


def _pax_sparse(name):
    info = tarfile.TarInfo(name)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    return info


REFUSALS = ["dotdot member", "absolute member", "symlink", "hardlink", "char device",
            "block device", "fifo", "directory", "duplicate", "extra file", "two manifests",
            "missing file", "ovf not first", "href path", "href dotdot", "href url", "xxe",
            "billion laughs", "not xml", "wrong root", "unknown encoding", "no disks", "22 disks",
            "unknown fileRef",
            "attach unknown", "attach twice", "size lie", "capacity lie", "capacity huge",
            "bad units", "raw under vmdk uri", "nested ova", "empty member", "bad checksum",
            "truncated header", "truncated member", "not ustar", "bad size field",
            "base256 size", "gnu sparse", "unknown type", "manifest lists missing",
            "manifest garbage", "two systems", "parentRef", "blank disk", "chunked",
            "pax sparse"]


@pytest.fixture(scope="module")
def refusals(tmp):
    cases = _refusals(tmp)
    assert sorted(cases) == sorted(REFUSALS)
    return cases


@pytest.fixture
def only_tmp_paths(tmp, monkeypatch):
    """Any open() of a path outside the module's tmp dir fails loudly and is recorded."""
    return forbid_opening_outside(tmp, monkeypatch)


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals(refusals, only_tmp_paths, case):
    data, match = refusals[case]
    msg = fails(data, match)
    assert only_tmp_paths == []
    assert msg.startswith(("Disk validation failed [Unsupported", "Provided image file was "
                           "corrupted.", "The disk image is too large")), msg


def test_empty_and_mismatched_declarations(tmp):
    fails(b"", "is empty (0 bytes)")
    ova = make_ova([("disk1.vmdk", stream_vmdk(tmp), 2 * MiB)])
    fails(ova, "declared RAW but its bytes are a tar (OVA) archive", declared="raw")


def test_many_headers_bounded(tmp):
    raw, vmdk, ovf = _base(tmp)
    members = [("vm.ovf", ovf), ("disk1.vmdk", vmdk)] + [(f"x{n}", b"") for n in range(80)]
    fails(tar_bytes(members), "more than 64 tar headers")


VHD_URI = "http://technet.microsoft.com/en-us/library/bb676673.aspx"
QCOW2_URI = "http://www.gnome.org/~markmc/qcow-image-format.html"


@pytest.mark.parametrize("fmt,options,uri,detected", [
    ("vpc", (), VHD_URI, "vhd"),
    ("vmdk", (), VMDK_SPARSE_URI, "vmdk-monolithicSparse"),
    ("qcow2", (), QCOW2_URI, "qcow2"),
])
def test_other_formats_inside_an_ova_with_manifest(tmp, fmt, options, uri, detected):
    """Readers that may use read_at only: the manifest digest is then checked in a separate
    pass when extents() ends — good digests read, a bad one fails after the data. Formats
    whose reader is not registered yet meet their clear 'not supported yet' refusal."""
    raw = guest_raw()
    image = qemu_image(tmp, fmt, *options, raw=raw)
    good = make_ova([("disk1.img", image, None)], fmt_uri=uri, ovf=ovf_xml(
        [{"id": "disk1", "href": "disk1.img", "capacity": "${size}", "format": uri}]))
    if detected not in formats._READERS:
        fails(good, "images are not supported yet by this server")
        return
    disk = open_guest_disks(BytesSource(good), "ova")[0]
    flat = flatten(disk)
    assert flat[: len(raw)] == raw and not any(flat[len(raw):])
    files = {"vm.ovf": ovf_xml([{"id": "disk1", "href": "disk1.img", "capacity": "${size}",
                                 "format": uri}]), "disk1.img": image}
    wrong = tar_bytes(list(files.items()) + [("vm.mf", manifest({**files, "disk1.img": b"x"}))])
    msg = fails(wrong, CORRUPT + "the SHA256 digest of OVA member 'disk1.img' is "
                + hashlib.sha256(image).hexdigest())
    assert f"says {hashlib.sha256(b'x').hexdigest()}" in msg
