"""Hostile OVAs: tar tricks (traversal, links, devices, duplicates), OVF tricks (XXE, entity
bombs, hrefs naming host paths or URLs, lying sizes), and wrong digests."""

from __future__ import annotations

import tarfile

from . import MiB, make_ova, manifest, ovf_xml, stream_vmdk, tar_bytes

OVA = "Disk validation failed [Unsupported OVA format] "
CORRUPT = "Provided image file was corrupted. "
XXE = '<!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
LAUGHS = ('<!DOCTYPE Envelope [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
          '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;">]>')


def _disk(href="disk1.vmdk", **extra):
    return {"id": "disk1", "href": href, "capacity": 2 * MiB, **extra}


def _with(*members):
    """OVA = descriptor for disk1.vmdk + the VMDK + `members`."""
    def build(tmp):
        vmdk = stream_vmdk(tmp)
        return tar_bytes([("vm.ovf", ovf_xml([_disk()])), ("disk1.vmdk", vmdk), *members])
    return build


def _link(name, kind, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _ovf(disks, doctype="", vmdk_as=("disk1.vmdk",)):
    def build(tmp):
        vmdk = stream_vmdk(tmp)
        return tar_bytes([("vm.ovf", ovf_xml(disks, doctype=doctype))]
                         + [(name, vmdk) for name in vmdk_as])
    return build


def _bad_digest(tmp):
    vmdk = stream_vmdk(tmp)
    ovf = ovf_xml([_disk()])
    tampered = bytearray(vmdk)
    tampered[-600] ^= 1  # inside the last grain's padding: the disk still reads
    return tar_bytes([("vm.ovf", ovf), ("disk1.vmdk", bytes(tampered)),
                      ("vm.mf", manifest({"vm.ovf": ovf, "disk1.vmdk": vmdk}))])


def _bad_tar_checksum(tmp):
    ova = make_ova([("disk1.vmdk", stream_vmdk(tmp), 2 * MiB)])
    return ova[:148] + b"0012345\0" + ova[156:]


def _truncated_member(tmp):
    ova = make_ova([("disk1.vmdk", stream_vmdk(tmp), 2 * MiB)], with_manifest=False)
    return ova[: len(ova) // 2]


def _nested(tmp):
    inner = make_ova([("disk1.vmdk", stream_vmdk(tmp), 2 * MiB)])
    return tar_bytes([("vm.ovf", ovf_xml([_disk()])), ("disk1.vmdk", inner)])


def _many_disks(tmp):
    disks = [{"id": f"d{n}", "href": f"d{n}.vmdk", "capacity": 2 * MiB} for n in range(40)]
    vmdk = stream_vmdk(tmp)
    return tar_bytes([("vm.ovf", ovf_xml(disks))] + [(d["href"], vmdk) for d in disks])


CASES = [
    ("member ../../etc/cron.d/evil", _with(("../../etc/cron.d/evil", b"* * * * * root sh\n")),
     OVA + "the OVA member '../../etc/cron.d/evil' (tar header at offset"),
    ("member /etc/passwd", _with(("/etc/passwd", b"root::0:0::/:/bin/sh\n")),
     "has an absolute path"),
    ("symlink member to /etc/passwd", _with(_link("vm.mf", tarfile.SYMTYPE, "/etc/passwd")),
     "is a symbolic link pointing to '/etc/passwd'"),
    ("hard link member", _with(_link("disk2.vmdk", tarfile.LNKTYPE, "/etc/shadow")),
     "is a hard link pointing to '/etc/shadow'"),
    ("device member", _with(_link("sda", tarfile.BLKTYPE, "")), "is a block device"),
    ("duplicate disk member", _with(("disk1.vmdk", b"KDMV" + bytes(1020))),
     "holds two members named 'disk1.vmdk'"),
    ("extra file", _with(("payload.sh", b"#!/bin/sh\n")), "extra file 'payload.sh'"),
    ("XXE in the OVF", _ovf([_disk()], doctype=XXE),
     "contains a DTD, an entity declaration or an external reference"),
    ("billion laughs in the OVF", _ovf([_disk()], doctype=LAUGHS),
     "contains a DTD, an entity declaration or an external reference"),
    ("href /etc/passwd", _ovf([_disk(href="/etc/passwd")], vmdk_as=()),
     "references the file '/etc/passwd', which is not a plain file name"),
    ("href ../disk.vmdk", _ovf([_disk(href="../disk.vmdk")], vmdk_as=()),
     "never opens a path from the image"),
    ("href URL", _ovf([_disk(href="https://169.254.169.254/latest/meta-data")], vmdk_as=()),
     "which is not a plain file name"),
    ("referenced disk missing", _ovf([_disk()], vmdk_as=()),
     "references the file 'disk1.vmdk', which is not in the OVA"),
    ("manifest digest wrong", _bad_digest, CORRUPT + "the SHA256 digest of OVA member "
     "'disk1.vmdk' is "),
    ("tar header checksum wrong", _bad_tar_checksum,
     CORRUPT + "OVA tar header at offset 0 has checksum 12345 (octal)"),
    ("member truncated", _truncated_member, "past the end of the archive at byte"),
    ("nested OVA", _nested, "the OVA member 'disk1.vmdk' is itself an OVA"),
    ("40 disks", _many_disks, "declares 40 disks; an image has at most 21 volumes"),
    ("OVF capacity 2^60 bytes", _ovf([_disk(capacity=1, units="byte * 2^60")]),
     "The disk image is too large: the OVF descriptor"),
    ("OVF size lie", _ovf([_disk(size=1)]), "says 'disk1.vmdk' is 1 bytes (ovf:size)"),
]
