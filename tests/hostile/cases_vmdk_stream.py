"""Hostile streamOptimized VMDKs: qemu-img's output with one structure damaged."""

from __future__ import annotations

import struct
import zlib

from . import patch, set_vmdk_descriptor, stream_vmdk, vmdk_markers

CORRUPT = "Provided image file was corrupted. "


def _grains(vmdk: bytes) -> list[tuple[int, bytes]]:
    return [(lba, vmdk[at + 12 : at + 12 + size]) for at, lba, size, _ in vmdk_markers(vmdk) if size]


def _assemble(vmdk: bytes, grains, tail: bytes = b"", eos: bool = True) -> bytes:
    """qemu's header + metadata area, then `grains` [(lba, zlib data)], `tail`, EOS."""
    overhead = struct.unpack_from("<Q", vmdk, 64)[0]
    out = bytearray(vmdk[: overhead * 512])
    for lba, data in grains:
        out += struct.pack("<QI", lba, len(data)) + data
        out += bytes(-len(out) % 512)
    return bytes(out + tail + (bytes(512) if eos else b""))


def _meta(kind: int, sectors: int) -> bytes:
    return struct.pack("<QII", sectors, 0, kind).ljust(512, b"\0")


def _first(tmp):
    return vmdk_markers(stream_vmdk(tmp))[0]


def _eos(vmdk: bytes) -> int:
    return vmdk_markers(vmdk)[-1][0]


def _gt_entry_outside(tmp) -> bytes:
    """No EOS marker (as qemu often writes), and grain table 0 lists a grain far past the end."""
    vmdk = stream_vmdk(tmp)
    gd = struct.unpack_from("<Q", vmdk, 56)[0] * 512
    gt = struct.unpack_from("<I", vmdk, gd)[0] * 512
    return patch(vmdk[: _eos(vmdk)], gt, "<I", 0x7FFFFF00)


def _gd_entry_outside(tmp) -> bytes:
    vmdk = stream_vmdk(tmp)
    gd = struct.unpack_from("<Q", vmdk, 56)[0] * 512
    return patch(vmdk[: _eos(vmdk)], gd, "<I", 0x7FFFFF00)


def _footer_lies(tmp) -> bytes:
    vmdk = stream_vmdk(tmp)
    footer = patch(vmdk[:512], 12, "<Q", 1 << 30)
    return _assemble(vmdk, _grains(vmdk), _meta(3, 1) + footer)


def _descriptor(edit):
    return lambda tmp: set_vmdk_descriptor(stream_vmdk(tmp), edit)


CASES = [
    ("extent naming /etc/passwd", _descriptor(
        lambda t: t.replace("# The Disk Data Base", 'RW 4 FLAT "/etc/passwd" 0\n#')),
     "VMDK embedded descriptor (at file offset 512) lists 2 extents"),
    ("truncated header", lambda tmp: stream_vmdk(tmp)[:100], CORRUPT + "VMDK header ends at byte 100"),
    ("truncated descriptor", lambda tmp: stream_vmdk(tmp)[:2000],
     CORRUPT + "VMDK embedded descriptor (bytes 512-"),
    ("truncated metadata area", lambda tmp: stream_vmdk(tmp)[:30000],
     "VMDK header at offset 0 says grains start at byte 65536"),
    ("truncated mid-marker", lambda tmp: stream_vmdk(tmp)[: _first(tmp)[0] + 6],
     "VMDK stream ends at byte 65542 inside a marker"),
    ("truncated mid-grain", lambda tmp: stream_vmdk(tmp)[: _first(tmp)[0] + 1000],
     "VMDK stream ends at byte 66536 inside the grain at LBA 0"),
    ("truncated at a grain boundary", lambda tmp: stream_vmdk(tmp)[
        : vmdk_markers(stream_vmdk(tmp))[-2][0]], "without an end-of-stream marker, and grain table 0"),
    ("truncated inside EOS", lambda tmp: stream_vmdk(tmp)[: _eos(stream_vmdk(tmp)) + 100],
     "inside a metadata marker that starts at file offset"),
    ("capacity 1 PiB", lambda tmp: patch(stream_vmdk(tmp), 12, "<Q", (1 << 50) // 512),
     "The disk image is too large: the VMDK header (capacity at offset 12) declares a virtual "
     "size of 1125899906842624 bytes (1 PiB)"),
    ("capacity 2^64-1 sectors", lambda tmp: patch(stream_vmdk(tmp), 12, "<Q", 2**64 - 1),
     "The disk image is too large"),
    ("capacity 0", lambda tmp: patch(stream_vmdk(tmp), 12, "<Q", 0),
     "declares a capacity of 0 sectors"),
    ("grain size not a power of two", lambda tmp: patch(stream_vmdk(tmp), 20, "<Q", 100),
     "has a grain size of 100 sectors (offset 20)"),
    ("grain size 2^40 sectors", lambda tmp: patch(stream_vmdk(tmp), 20, "<Q", 1 << 40),
     "has a grain size of 1099511627776 sectors"),
    ("descriptor size lie", lambda tmp: patch(stream_vmdk(tmp), 36, "<Q", 100000),
     "places the embedded descriptor at sector 1 (100000 sectors)"),
    ("descriptor offset past EOF", lambda tmp: patch(stream_vmdk(tmp), 28, "<Q", 2**40),
     "places the embedded descriptor at sector 1099511627776"),
    ("overhead past EOF", lambda tmp: patch(stream_vmdk(tmp), 64, "<Q", 2**40),
     "says grains start at byte 562949953421312"),
    ("compression 0", lambda tmp: patch(stream_vmdk(tmp), 77, "<H", 0),
     "File uses unsupported compression algorithm 0"),
    ("version 9", lambda tmp: patch(stream_vmdk(tmp), 4, "<I", 9), "has version 9"),
    ("flags without compression", lambda tmp: patch(stream_vmdk(tmp), 8, "<I", 3),
     "has flags 0x00000003, without the compressed-grains"),
    ("deflate bomb", lambda tmp: _assemble(stream_vmdk(tmp), [(0, zlib.compress(bytes(64 << 20), 9))]),
     "Uncompressed data has invalid length: VMDK grain at LBA 0 (file offset 65536) inflated to "
     "more than 65536 bytes"),
    ("short grain", lambda tmp: _assemble(stream_vmdk(tmp), [(0, zlib.compress(b"x" * 1000))]),
     "Uncompressed data has invalid length: VMDK grain at LBA 0 (file offset 65536) inflated to "
     "1000 bytes, expected 65536"),
    ("garbage grain", lambda tmp: _assemble(stream_vmdk(tmp), [(0, bytes(range(256)) * 40)]),
     "VMDK grain at LBA 0 (file offset 65536): its 10240 compressed bytes are not valid"),
    ("grain claims 4 GiB compressed", lambda tmp: patch(stream_vmdk(tmp), 65536 + 8, "<I", 0xFFFFFFF0),
     "VMDK grain marker at file offset 65536 (LBA 0) claims 4294967280 compressed bytes"),
    ("grain LBA beyond capacity", lambda tmp: patch(stream_vmdk(tmp), 65536, "<Q", 10**12),
     "VMDK grain marker at file offset 65536 names LBA 1000000000000, beyond the disk's capacity"),
    ("grain LBA backwards", lambda tmp: patch(
        stream_vmdk(tmp), vmdk_markers(stream_vmdk(tmp))[1][0], "<Q", 0),
     "not after the previous grain's LBA 0"),
    ("grain LBA misaligned", lambda tmp: patch(stream_vmdk(tmp), 65536, "<Q", 3),
     "names LBA 3, not aligned to the grain size of 128 sectors"),
    ("grain table marker past EOF", lambda tmp: _assemble(
        stream_vmdk(tmp), _grains(stream_vmdk(tmp))[:1], _meta(1, 10**9), eos=False),
     "inside the grain table of 1000000000 sectors"),
    ("unknown metadata marker", lambda tmp: _assemble(
        stream_vmdk(tmp), _grains(stream_vmdk(tmp))[:1], _meta(9, 0)),
     "has unknown type 9"),
    ("footer disagrees with header", _footer_lies, "footer at offset"),
    ("footer marker of 5 sectors", lambda tmp: _assemble(
        stream_vmdk(tmp), _grains(stream_vmdk(tmp)), _meta(3, 5)),
     "announces 5 sectors; a footer is 1 sector"),
    ("grain table entry outside the file", _gt_entry_outside,
     "lists a grain at byte 1099511496704, past that end"),
    ("grain directory entry outside the file", _gd_entry_outside,
     "its grain table 0 at offset 1099511496704 is not readable"),
    ("parentFileNameHint /etc/passwd", _descriptor(
        lambda t: t.replace("# Extent description", 'parentFileNameHint="/etc/passwd"\n# Extent')),
     "names a parent disk (parentFileNameHint='/etc/passwd')"),
    ("parentCID set", _descriptor(lambda t: t.replace("parentCID=ffffffff", "parentCID=1234abcd")),
     "names a parent disk (parentCID=1234abcd)"),
    ("extent ../../etc/passwd", _descriptor(lambda t: t.replace('SPARSE "', 'SPARSE "../../etc/')),
     "names an extent in another location ('../../etc/"),
    ("descriptor garbage line", _descriptor(lambda t: t + "\n$(cat /etc/shadow)\n"),
     "is neither a setting nor an extent line"),
    ("descriptor extent size lie", _descriptor(lambda t: t.replace("RW ", "RW 1")),
     "declares an extent of 1"),
]
