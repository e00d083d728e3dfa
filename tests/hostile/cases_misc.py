"""Uploads that are not disk images at all (archives, VDI, QED, ISO, LUKS) and polyglots: each
is named for what it is, and nothing is unpacked or guessed at."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import zipfile

from . import MiB, make_ova, qemu_image, stream_vmdk, tar_bytes



def _gzip_bomb(tmp):
    """1 GiB of zeros in ~1 MiB of gzip (64 concatenated members of 16 MiB each): refused
    from its magic, never inflated."""
    return gzip.compress(bytes(16 * MiB), 9) * 64


def _zip_of_ova(tmp):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("vm.ova", make_ova([("disk1.vmdk", stream_vmdk(tmp), 2 * MiB)]))
    return out.getvalue()


def _iso(tmp):
    iso = bytearray(64 * 2048)
    iso[0x8000:0x8006] = b"\x01CD001"
    iso[510:512] = b"\x55\xaa"  # a hybrid ISO also carries an MBR
    return bytes(iso)


def _luks(tmp):
    return b"LUKS\xba\xbe\x00\x02" + bytes(16 * 1024 - 8)


def _tar_of_vmdk(tmp):
    """A tar that is not an OVA: its first member is the disk, not the descriptor."""
    return tar_bytes([("disk1.vmdk", stream_vmdk(tmp))])


def _vmdk_with_gzip_payload(tmp):
    """Looks like gzip in the first bytes, VMDK further on: the first magic decides."""
    return gzip.compress(b"x") + stream_vmdk(tmp)


def _vdi_vmdk_polyglot(tmp):
    """A VDI whose image data is a stream-optimized VMDK: detected and refused as the VDI."""
    vdi = bytearray(qemu_image(tmp, "vdi", size=1 * MiB))
    assert struct.unpack_from("<I", vdi, 64)[0] == 0xBEDA107F
    return bytes(vdi) + stream_vmdk(tmp)


CASES = [
    ("gzip bomb", _gzip_bomb, "is a gzip archive "
     "(magic '\\x1f\\x8b' at offset 0); compressed uploads are not accepted"),
    ("xz", lambda tmp: lzma.compress(stream_vmdk(tmp)), "is an xz archive"),
    ("bzip2", lambda tmp: bz2.compress(stream_vmdk(tmp)), "is a bzip2 archive"),
    ("zstd magic", lambda tmp: b"\x28\xb5\x2f\xfd" + bytes(4096), "is a zstd archive"),
    ("zip of an OVA", _zip_of_ova, "is a zip archive"),
    ("VDI", lambda tmp: qemu_image(tmp, "vdi", size=1 * MiB),
     "is a VirtualBox VDI image (magic '\\x7f\\x10\\xda\\xbe' at offset 64), which is not a "
     "supported disk image format"),
    ("QED", lambda tmp: qemu_image(tmp, "qed", size=1 * MiB), "is a QED image"),
    ("ISO 9660 hybrid", _iso, "is an ISO 9660 CD/DVD image (magic 'CD001' at offset 32769)"),
    ("LUKS", _luks, "is a LUKS-encrypted volume"),
    ("tar of a VMDK, not an OVA", _tar_of_vmdk,
     "Disk validation failed [Unsupported OVA format] the first member of the OVA is "
     "'disk1.vmdk'; an OVA must start with its .ovf descriptor"),
    ("gzip then VMDK", _vmdk_with_gzip_payload, "is a gzip archive"),
    ("VDI carrying a VMDK", _vdi_vmdk_polyglot, "is a VirtualBox VDI image"),
]
