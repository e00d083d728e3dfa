"""Hostile uploads that look like (or claim to be) raw disks: the format is decided from the
bytes, so a descriptor or another format's header inside a "raw" upload is never followed."""

from __future__ import annotations

import subprocess

from . import QEMU_IMG, guest_raw


FLAT_DESCRIPTOR = b"""# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 2048 FLAT "/etc/passwd" 0
"""


def _mbr_with_ustar(tmp):
    """A raw disk whose boot sector happens to hold 'ustar' at byte 257: probed as a tar, and
    refused as a damaged one, never read as a disk with a guessed format."""
    disk = bytearray(guest_raw(1 << 20, seed=3))
    disk[257:262] = b"ustar"
    disk[510:512] = b"\x55\xaa"
    return bytes(disk)


def _qcow2_as_raw(tmp):
    """A qcow2 whose backing file is /etc/passwd, uploaded as if it were a raw disk: converting
    it without an explicit format is how host files leaked (reference/disk-formats.md)."""
    path = tmp / "backed.qcow2"
    # -u: qemu-img itself must not open the backing file either.
    subprocess.run([QEMU_IMG or "qemu-img", "create", "-f", "qcow2", "-u", "-b", "/etc/passwd",
                    "-F", "raw", str(path), "1M"], check=True, capture_output=True)
    return path.read_bytes()


CASES = [
    ("flat descriptor naming /etc/passwd", lambda tmp: FLAT_DESCRIPTOR,
     "is a VMDK text descriptor (it names extent "
     "files instead of holding the disk)"),
    ("empty upload", lambda tmp: b"", "is empty (0 bytes)"),
    ("descriptor with BOM and split extents", lambda tmp: b"\xef\xbb\xbf" + FLAT_DESCRIPTOR.replace(
        b'FLAT "/etc/passwd" 0', b'SPARSE "../../../var/lib/secret-s001.vmdk"'),
     "is a VMDK text descriptor"),
    ("boot sector with ustar at 257", _mbr_with_ustar,
     "Provided image file was corrupted. OVA tar header at offset 0 has checksum"),
    ("qcow2 with backing /etc/passwd as raw", _qcow2_as_raw,
     "qcow2 header at offset 0 names a backing file '/etc/passwd'"),
]
