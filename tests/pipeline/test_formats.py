"""Tests for vmimport.pipeline.formats: probing, declared/actual checks, RAW and streamOptimized
VMDK readers, and hostile VMDKs.

Every well-formed image is produced by qemu-img (never only by our own writer), and readers are
judged against the raw bytes the image was made from. Hostile images are qemu-img's output with
one structure damaged; each must fail fast with a message naming the structure and offset.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import shutil
import struct
import subprocess
import tarfile
import tracemalloc
import zipfile
import zlib

import pytest

from tests.hostile import vmdk_markers
from tests.sources import BytesSource

from tests.guards import forbid_opening_outside

from vmimport.pipeline.errors import ImportFailure
from vmimport.pipeline.formats import Limits, open_guest_disk, probe_format
from vmimport.pipeline.formats import vmdk_grains, vmdk_stream

QEMU_IMG = shutil.which("qemu-img")
MiB = 1 << 20


# -- sources -----------------------------------------------------------------------------------

class FileSource:
    """A file as a Source; ``bytes_read`` counts what readers asked for."""

    def __init__(self, path):
        self.path, self.description, self.size = str(path), f"file://{path}", os.path.getsize(path)
        self.bytes_read = 0

    def read_at(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        self.bytes_read += len(data)
        return data

    def stream(self, offset: int = 0, chunk_size: int = 8 << 20):
        with open(self.path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(chunk_size):
                self.bytes_read += len(chunk)
                yield chunk


# -- images ------------------------------------------------------------------------------------

def qemu(*args: str) -> None:
    subprocess.run([QEMU_IMG, *args], check=True, capture_output=True)


def mixed_disk(size: int, seed: int = 1) -> bytes:
    """Random, text and zero regions (so grains compress differently and some are skipped)."""
    rng = __import__("random").Random(seed)
    buf = bytearray(size)
    words = [bytes(rng.choice(b"abcdefghij klmnop") for _ in range(rng.randint(2, 9)))
             for _ in range(300)]
    at = 4096
    while at < size:
        n = min(rng.randint(1000, 300_000), size - at)
        kind = rng.randrange(3)
        if kind == 0:
            buf[at : at + n] = rng.randbytes(n)
        elif kind == 1:
            text = b" ".join(rng.choice(words) for _ in range(n // 3))[:n]
            buf[at : at + len(text)] = text
        at += n + rng.choice((0, 512, 70_000, 200_000))
    return bytes(buf)


def to_vmdk(tmp_path, raw: bytes, name: str = "disk") -> bytes:
    src, dst = tmp_path / f"{name}.raw", tmp_path / f"{name}.vmdk"
    src.write_bytes(raw)
    qemu("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(src), str(dst))
    return dst.read_bytes()


def flatten(disk) -> bytes:
    out = bytearray(disk.virtual_size)
    end = 0
    for offset, data in disk.extents():
        assert offset >= end, "extents must be increasing and non-overlapping"
        out[offset : offset + len(data)] = data
        end = offset + len(data)
    assert end <= disk.virtual_size
    return bytes(out)


def sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


def padded(raw: bytes) -> bytes:
    return raw + bytes(-len(raw) % 512)


def markers(vmdk: bytes) -> list[tuple[int, int, int, int]]:
    """(file offset, lba, compressed size or 0, metadata type or -1) of every marker."""
    return vmdk_markers(vmdk)


def grains(vmdk: bytes) -> list[tuple[int, bytes]]:
    return [(lba, vmdk[at + 12 : at + 12 + size]) for at, lba, size, kind in markers(vmdk) if size]


def assemble(vmdk: bytes, new_grains, before_eos: bytes = b"") -> bytes:
    """qemu-img's header + descriptor area, then `new_grains` [(lba, zlib data)], then EOS."""
    overhead = struct.unpack_from("<Q", vmdk, 64)[0]
    out = bytearray(vmdk[: overhead * 512])
    for lba, data in new_grains:
        out += struct.pack("<QI", lba, len(data)) + data
        out += bytes(-len(out) % 512)
    return bytes(out + before_eos + bytes(512))


def meta_marker(kind: int, sectors: int) -> bytes:
    return struct.pack("<QII", sectors, 0, kind).ljust(512, b"\0")


def set_descriptor(vmdk: bytes, edit) -> bytes:
    off, size = (n * 512 for n in struct.unpack_from("<QQ", vmdk, 28))
    text = vmdk[off : off + size].split(b"\0", 1)[0].decode()
    new = edit(text).encode()
    assert len(new) <= size
    return vmdk[:off] + new.ljust(size, b"\0") + vmdk[off + size :]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("formats")
    raw = mixed_disk(3 * MiB + 7 * 512 + 1000)  # not a multiple of 64 KiB nor of 512
    return {"tmp": tmp, "raw": raw, "vmdk": to_vmdk(tmp, raw)}


def fails(source, match: str, declared=None, limits=None) -> str:
    """Open and drain `source`, expecting ImportFailure containing `match` (a hang is caught
    by the suite's timeout, not by a clock here)."""
    with pytest.raises(ImportFailure) as info:
        disk = open_guest_disk(source, declared, limits or Limits())
        for _ in disk.extents():
            pass
    assert info.value.kind == "ClientError"
    assert match in info.value.message, info.value.message
    return info.value.message


# -- RAW -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 4096 + 3, 1000])
def test_raw_extents_pad_last_sector(chunk):
    raw = mixed_disk(2 * MiB + 777, seed=3)
    disk = open_guest_disk(BytesSource(raw, chunk=chunk), "RAW", Limits())
    assert disk.format == "RAW" and disk.virtual_size == len(raw) + 512 - 777 % 512
    assert sha(flatten(disk)) == sha(padded(raw))
    assert disk.bytes_consumed == len(raw)


def test_raw_file_source(tmp_path):
    raw = mixed_disk(5 * MiB + 512, seed=4)
    (tmp_path / "d.img").write_bytes(raw)
    disk = open_guest_disk(FileSource(tmp_path / "d.img"), None, Limits())
    assert flatten(disk) == raw


def test_raw_too_large():
    fails(BytesSource(b"\1" * 4096), "The disk image is too large", limits=Limits(max_virtual_size=2048))


def test_raw_short_stream_is_refused():
    class Shrunk(BytesSource):
        def stream(self, offset=0, chunk_size=8 << 20):
            yield self.data[: self.size // 2]
    fails(Shrunk(b"\1" * 8192), "ended at byte 4096 but its size was 8192 bytes")


def test_empty_image():
    msg = fails(BytesSource(b""), "is empty")
    assert msg == ("Disk validation failed [Unsupported specified file format] "
                   "the image s3://b/k is empty (0 bytes)")


# -- streamOptimized VMDK --------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2, 4])
def test_vmdk_matches_raw(images, threads):
    disk = open_guest_disk(BytesSource(images["vmdk"]), "vmdk", Limits(inflate_threads=threads))
    assert disk.format == "VMDK" and disk.virtual_size == len(padded(images["raw"]))
    assert sha(flatten(disk)) == sha(padded(images["raw"]))
    assert disk.bytes_consumed == len(images["vmdk"])


@pytest.mark.parametrize("chunk", [512, 4099, 65536 + 11])
def test_vmdk_odd_stream_chunks(images, chunk):
    disk = open_guest_disk(BytesSource(images["vmdk"], chunk=chunk), "VMDK", Limits())
    assert flatten(disk) == padded(images["raw"])


def test_vmdk_file_source_and_sizes(tmp_path):
    for size in (64 * 1024, 1 * MiB + 512, 700 * 1024 + 3 * 512):
        raw = mixed_disk(size, seed=size)
        path = tmp_path / "f.vmdk"
        path.write_bytes(to_vmdk(tmp_path, raw))
        disk = open_guest_disk(FileSource(path), "vmdk", Limits())
        assert disk.virtual_size == size and sha(flatten(disk)) == sha(raw)


def test_vmdk_without_libdeflate(images, monkeypatch):
    monkeypatch.setattr(vmdk_grains, "_libdeflate", None)
    disk = open_guest_disk(BytesSource(images["vmdk"]), "vmdk", Limits())
    assert flatten(disk) == padded(images["raw"])


# Sparse formats qemu-img writes: its output options, the declared format, and how many bytes
# beyond the data may be yielded (the rest of an allocation unit the data only partly fills).
LARGE_SPARSE = {
    "vmdk-stream": (["-O", "vmdk", "-o", "subformat=streamOptimized"], "VMDK", 0),
    "vmdk-sparse": (["-O", "vmdk"], "VMDK", 0),
    "vhd": (["-O", "vpc"], "VHD", MiB),  # 2 MiB blocks
    "vhdx": (["-O", "vhdx"], "VHDX", 61 * MiB),  # 32 MiB blocks
    "qcow2": (["-O", "qcow2"], "qcow2", 0),
    "qcow2-zlib": (["-O", "qcow2", "-c"], "qcow2", 0),
}


@pytest.mark.parametrize("name", list(LARGE_SPARSE))
def test_large_virtual_small_data(tmp_path, name):
    """64 GiB virtual, 3 MiB of data at 40 GiB: only the data's grains, blocks or clusters are
    read and yielded, each with the right bytes at the right offset, within seconds."""
    options, declared, slack = LARGE_SPARSE[name]
    path, data, at = tmp_path / "big.raw", os.urandom(3 * MiB), 40 << 30
    with open(path, "wb") as f:
        f.truncate(64 << 30)
        f.seek(at)
        f.write(data)
    qemu("convert", "-f", "raw", *options, str(path), str(tmp_path / "big.img"))
    source = FileSource(tmp_path / "big.img")
    disk = open_guest_disk(source, declared, Limits())
    assert 64 << 30 <= disk.virtual_size < (64 << 30) + 16 * MiB  # VHD: up to its geometry
    yielded = 0
    with open(path, "rb") as f:
        for offset, chunk in disk.extents():
            chunk = getattr(chunk, "tobytes", lambda: bytes(chunk))()
            assert at - slack <= offset and offset + len(chunk) <= at + len(data) + slack
            f.seek(offset)
            assert f.read(len(chunk)) == chunk
            yielded += len(chunk)
    assert len(data) <= yielded <= len(data) + slack
    assert source.bytes_read < 64 * MiB  # the data and the tables that lead to it, not 64 GiB


def test_vmdk_vmware_layout_with_footer(images):
    """GD_AT_END in the header, GT/GD markers and a footer before EOS, as VMware writes."""
    vmdk = images["vmdk"]
    header = bytearray(vmdk[:512])
    footer = bytes(header)  # qemu's header has a real gdOffset: that is the footer copy
    struct.pack_into("<Q", header, 56, vmdk_stream.GD_AT_END)
    tail = (meta_marker(1, 4) + bytes(4 * 512) + meta_marker(2, 1) + bytes(512)
            + meta_marker(3, 1) + footer)
    image = assemble(bytes(header) + vmdk[512:], grains(vmdk), before_eos=tail)
    assert flatten(open_guest_disk(BytesSource(image), "vmdk", Limits())) == padded(images["raw"])
    bad_footer = bytearray(footer)
    struct.pack_into("<Q", bad_footer, 12, 1 << 20)
    image = assemble(vmdk, grains(vmdk), before_eos=meta_marker(3, 1) + bytes(bad_footer))
    fails(BytesSource(image), "footer at offset")


# -- probing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,options,expected", [
    ("qcow2", [], "qcow2"),
    ("vpc", [], "vhd"),
    ("vpc", ["-o", "subformat=fixed"], "vhd"),
    ("vhdx", [], "vhdx"),
    ("vmdk", [], "vmdk-monolithicSparse"),
    ("vmdk", ["-o", "subformat=streamOptimized"], "vmdk-streamOptimized"),
    ("vdi", [], "vdi"),
    ("qed", [], "qed"),
    ("raw", [], "raw"),
])
def test_probe_qemu_images(images, fmt, options, expected):
    tmp = images["tmp"]
    src, dst = tmp / "probe.raw", tmp / f"probe.{fmt}{len(options)}"
    src.write_bytes(images["raw"][: 2 * MiB])
    qemu("convert", "-f", "raw", "-O", fmt, *options, str(src), str(dst))
    assert probe_format(FileSource(dst)) == expected


def test_probe_vmdk_descriptor(images):
    tmp = images["tmp"]
    qemu("create", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(tmp / "flat.vmdk"), "1M")
    assert probe_format(FileSource(tmp / "flat.vmdk")) == "vmdk-descriptor"


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("vm.ovf")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"<ovf>"))
    return out.getvalue()


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("disk.raw", b"\0" * 1000)
    return out.getvalue()


def _zstd(tmp_path) -> bytes:
    if not shutil.which("zstd"):
        return b"\x28\xb5\x2f\xfd" + bytes(100)
    (tmp_path / "z").write_bytes(b"x" * 5000)
    subprocess.run(["zstd", "-q", "-f", str(tmp_path / "z")], check=True)
    return (tmp_path / "z.zst").read_bytes()


def test_probe_archives_and_others(tmp_path):
    payload = b"\0" * 70000 + b"data" * 1000
    iso = bytearray(40 * 2048)
    iso[0x8000:0x8006] = b"\x01CD001"
    cases = {
        "gzip": gzip.compress(payload), "xz": lzma.compress(payload), "bzip2": bz2.compress(payload),
        "zstd": _zstd(tmp_path), "zip": _zip(), "ova": _tar(), "iso9660": bytes(iso),
        "luks": b"LUKS\xba\xbe\x00\x01" + bytes(4000),
        "raw": bytes(1024), "vmdk-descriptor": b"# Disk DescriptorFile\nversion=1\n",
    }
    for expected, data in cases.items():
        assert probe_format(BytesSource(data)) == expected, expected


def test_probe_reads_little():
    class Counting(BytesSource):
        reads: list = []

        def read_at(self, offset, length):
            self.reads.append((offset, length))
            return super().read_at(offset, length)

        def stream(self, *a, **k):
            raise AssertionError("probe must not stream")
    src = Counting(bytes(10 * MiB))
    assert probe_format(src) == "raw"
    assert sum(n for _, n in src.reads) <= 64 * 1024 + 512


# -- declared vs actual ----------------------------------------------------------------------------

def test_declared_vmdk_but_qcow2(images):
    tmp = images["tmp"]
    qemu("create", "-f", "qcow2", str(tmp / "x.qcow2"), "1M")
    msg = fails(FileSource(tmp / "x.qcow2"), "", declared="vmdk")
    assert msg == ("Disk validation failed [Unsupported specified file format] The image was "
                   "declared VMDK but its bytes are a qcow2 image (magic 'QFI\\xfb' at offset 0)")


def test_declared_mismatches(images):
    fails(BytesSource(bytes(4096)), "declared VMDK but its bytes are a raw disk image", "vmdk")
    fails(BytesSource(images["vmdk"]), "declared RAW but its bytes are a streamOptimized VMDK", "raw")
    fails(BytesSource(gzip.compress(b"x")), "declared VHD but its bytes are a gzip archive", "VHD")
    fails(BytesSource(bytes(4096)), "the declared format 'ISO' is not one of", "ISO")


def test_unsupported_formats(images):
    # (VHD, VHDX, qcow2, monolithicSparse VMDK and OVA have readers: see their own test files.)
    tmp = images["tmp"]
    fails(BytesSource(gzip.compress(b"x" * 100)), "is a gzip archive (magic '\\x1f\\x8b' at offset 0)")
    fails(BytesSource(lzma.compress(b"x")), "is an xz archive")
    qemu("create", "-f", "vdi", str(tmp / "v.vdi"), "1M")
    fails(FileSource(tmp / "v.vdi"), "is a VirtualBox VDI image")
    iso = bytearray(40 * 2048)
    iso[0x8000:0x8006] = b"\x01CD001"
    fails(BytesSource(bytes(iso)), "is an ISO 9660 CD/DVD image (magic 'CD001' at offset 32769), "
          "which is not a supported disk image format (OVA, VMDK, VHD, VHDX, RAW, QCOW2)")


# -- hostile streamOptimized VMDKs ----------------------------------------------------------------

CORRUPT = "Provided image file was corrupted. "


def test_truncations(images):
    vmdk = images["vmdk"]
    marks = markers(vmdk)
    first, eos = marks[0], marks[-1]
    assert eos[3] == 0
    fails(BytesSource(vmdk[:100]), CORRUPT + "VMDK header ends at byte 100")
    fails(BytesSource(vmdk[:2000]), CORRUPT + "VMDK embedded descriptor (bytes 512-")
    fails(BytesSource(vmdk[:30000]), CORRUPT + "VMDK header at offset 0 says grains start at byte 65536")
    cut = first[0] + 12 + first[2] // 2
    fails(BytesSource(vmdk[:cut]), CORRUPT + f"VMDK stream ends at byte {cut} inside the grain at "
          f"LBA {first[1]} ({first[2]} compressed bytes) that starts at file offset {first[0]}")
    fails(BytesSource(vmdk[: first[0] + 6]), f"VMDK stream ends at byte {first[0] + 6} inside a marker")
    # qemu often writes no EOS marker: a stream that ends at a marker boundary is complete only
    # if the grain tables in the metadata area list exactly the grains read.
    last = marks[-2]
    fails(BytesSource(vmdk[: last[0]]),
          CORRUPT + f"VMDK stream ends at byte {last[0]} without an end-of-stream marker")
    fails(BytesSource(vmdk[: eos[0] + 100]), f"inside a metadata marker that starts at file offset {eos[0]}")


def test_stream_without_eos_marker_is_complete_when_tables_agree(images):
    vmdk = images["vmdk"]
    eos = markers(vmdk)[-1][0]
    disk = open_guest_disk(BytesSource(vmdk[:eos]), "vmdk", Limits())
    assert flatten(disk) == padded(images["raw"])


def test_truncation_delivers_earlier_grains_first(images):
    vmdk = images["vmdk"]
    last = markers(vmdk)[-2][0]
    disk = open_guest_disk(BytesSource(vmdk[:last]), "vmdk", Limits())
    got = []
    with pytest.raises(ImportFailure, match="without an end-of-stream marker"):
        for offset, data in disk.extents():
            got.append(offset)
    assert len(got) == len(grains(vmdk)) - 1


def test_garbage_grain(images):
    vmdk = images["vmdk"]
    gs = grains(vmdk)
    lba, data = gs[1]
    bad = assemble(vmdk, gs[:1] + [(lba, os.urandom(len(data)))] + gs[2:])
    at = markers(bad)[1][0]
    fails(BytesSource(bad), CORRUPT + f"VMDK grain at LBA {lba} (file offset {at}): its "
          f"{len(data)} compressed bytes are not valid zlib data")


def test_grain_with_wrong_length(images):
    vmdk = images["vmdk"]
    gs = grains(vmdk)
    bad = assemble(vmdk, gs[:2] + [(gs[2][0], zlib.compress(b"x" * 1000))] + gs[3:])
    at = markers(bad)[2][0]
    msg = fails(BytesSource(bad), "Uncompressed data has invalid length: ")
    assert msg == (f"Uncompressed data has invalid length: VMDK grain at LBA {gs[2][0]} (file "
                   f"offset {at}) inflated to 1000 bytes, expected 65536")


@pytest.mark.parametrize("libdeflate", [True, False])
def test_deflate_bomb_is_bounded(images, monkeypatch, libdeflate):
    if not libdeflate:
        monkeypatch.setattr(vmdk_grains, "_libdeflate", None)
    vmdk = images["vmdk"]
    bomb = zlib.compress(bytes(64 * MiB), 9)  # ~64 KiB that inflates to 64 MiB
    bad = assemble(vmdk, [(0, bomb)])
    tracemalloc.start()
    try:
        fails(BytesSource(bad), "Uncompressed data has invalid length: VMDK grain at LBA 0 (file "
              "offset 65536) inflated to more than 65536 bytes, expected 65536")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB


def test_grain_claiming_huge_compressed_size(images):
    vmdk = bytearray(images["vmdk"])
    at = markers(vmdk)[0][0]
    struct.pack_into("<I", vmdk, at + 8, 0xFFFFFFF0)
    fails(BytesSource(vmdk), f"VMDK grain marker at file offset {at} (LBA 0) claims 4294967280")


@pytest.mark.parametrize("which,lba,match", [
    (1, 10**9, "beyond the disk's capacity"),
    (1, 0, "not after the previous grain's LBA 0"),
    (2, 129, "not aligned to the grain size of 128 sectors"),
])
def test_bad_lbas(images, which, lba, match):
    vmdk = bytearray(images["vmdk"])
    at = markers(vmdk)[which][0]
    struct.pack_into("<Q", vmdk, at, lba)
    fails(BytesSource(vmdk), CORRUPT + f"VMDK grain marker at file offset {at} names LBA {lba}, {match}")


def test_capacity_above_limit(images):
    vmdk = bytearray(images["vmdk"])
    struct.pack_into("<Q", vmdk, 12, (1 << 50) // 512)  # 1 PiB
    msg = fails(BytesSource(vmdk), "The disk image is too large")
    assert "1125899906842624 bytes (1 PiB)" in msg and "at most 16 TiB" in msg


def test_header_fields(images):
    vmdk = images["vmdk"]
    bad = bytearray(vmdk)
    struct.pack_into("<H", bad, 77, 0)
    fails(BytesSource(bad), "File uses unsupported compression algorithm 0")
    bad = bytearray(vmdk)
    struct.pack_into("<Q", bad, 20, 100)
    fails(BytesSource(bad), "grain size of 100 sectors")
    bad = bytearray(vmdk)
    struct.pack_into("<Q", bad, 36, 100000)
    fails(BytesSource(bad), "places the embedded descriptor at sector 1 (100000 sectors)")


@pytest.fixture
def only_tmp_paths(tmp_path, monkeypatch):
    """Any open() of a path outside the test's tmp dir fails loudly and is recorded."""
    return forbid_opening_outside(tmp_path, monkeypatch)


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace("parentCID=ffffffff", "parentCID=1234abcd"), "(parentCID=1234abcd)"),
    (lambda t: t.replace("# Extent description", 'parentFileNameHint="/etc/passwd"\n# Extent'),
     "(parentFileNameHint='/etc/passwd')"),
    (lambda t: t.replace('createType="streamOptimized"', 'createType="monolithicSparse"'),
     "compressed grains belong to a streamOptimized VMDK, but its descriptor says otherwise"),
    (lambda t: t.replace('createType="streamOptimized"', 'ddb.x = "1"'), "has createType=None"),
    (lambda t: t.replace("# The Disk Data Base", 'RW 100 FLAT "/etc/passwd" 0\n#'), "lists 2 extents"),
    (lambda t: t.replace('SPARSE "', 'SPARSE "../../etc/'), "names an extent in another location"),
    (lambda t: t.replace("RW ", "RW 1"), "declares an extent of 1"),
    (lambda t: t + "\nwhat is this\n", "is neither a setting nor an extent line"),
])
def test_descriptor_refusals_open_nothing(images, tmp_path, only_tmp_paths, edit, match):
    bad = set_descriptor(images["vmdk"], edit)
    (tmp_path / "bad.vmdk").write_bytes(bad)
    fails(FileSource(tmp_path / "bad.vmdk"), match, declared="vmdk")
    fails(BytesSource(bad), match, declared="vmdk")
    assert only_tmp_paths == []


def test_metadata_marker_unknown_type(images):
    vmdk = images["vmdk"]
    bad = assemble(vmdk, grains(vmdk)[:1], before_eos=meta_marker(9, 0))
    at = markers(bad)[1][0]
    fails(BytesSource(bad), f"VMDK metadata marker at file offset {at} has unknown type 9")


def test_grain_table_runs_past_eof(images):
    vmdk = images["vmdk"]
    bad = assemble(vmdk, grains(vmdk)[:1], before_eos=meta_marker(1, 10**6))[:-512]
    fails(BytesSource(bad), "inside the grain table of 1000000 sectors")
