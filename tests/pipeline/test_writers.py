"""The export writers, checked by tools that are not ours: what each writes must be the same
disk to `qemu-img compare` and `qemu-img check`, and read back through our own readers."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from vmimport.pipeline.formats import Limits, open_guest_disks
from vmimport.pipeline.formats.ranges import FileRange
from vmimport.pipeline.formats.vhd_writer import write_vhd
from vmimport.pipeline.source import LocalSource
from vmimport.pipeline.formats.vmdk_stream_writer import write_vmdk_stream
from vmimport.pipeline.formats.writers import READ_AHEAD, READ_BATCH, write_raw

from ..helpers import make_raw_disk

BLOCK = 512 * 1024
WRITERS = {"raw": (write_raw, "raw"), "vhd": (write_vhd, "vpc"),
           "vmdk": (write_vmdk_stream, "vmdk")}


class RawFileBlocks:
    """A raw disk file as a writer's input: the 512 KiB blocks that are not all zeros."""

    block_size = BLOCK

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.reads: list[int] = []
        with open(path, "rb") as f:
            self._allocated = [i for i in range(-(-self.size // BLOCK))
                               if f.read(BLOCK).count(0) != min(BLOCK, self.size - i * BLOCK)]

    def allocated(self) -> list[int]:
        return list(self._allocated)

    def read(self, index: int) -> bytes:
        self.reads.append(index)
        with open(self.path, "rb") as f:
            return os.pread(f.fileno(), BLOCK, index * BLOCK)


class FileSink:
    def __init__(self, path: Path):
        self.file = open(path, "wb")

    def write(self, data) -> None:
        self.file.write(data)

    def skip(self, length: int) -> None:
        self.file.seek(length, os.SEEK_CUR)

    @property
    def position(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.truncate()  # a hole at the end still counts
        self.file.close()


def export(raw: Path, kind: str, out: Path) -> Path:
    write, _ = WRITERS[kind]
    sink = FileSink(out)
    progress: list[int] = []
    blocks = RawFileBlocks(raw)
    write(blocks, sink, progress.append)
    sink.close()
    assert progress and progress[-1] == blocks.size and progress == sorted(progress)
    assert blocks.reads == blocks.allocated()  # each data block read once, in order
    return out


def qemu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def sha256_of_guest(image: Path) -> str:
    """Our own reader's view of the image, as the bytes of the whole disk."""
    fd = os.open(image, os.O_RDONLY)
    try:
        return _sha256_of_guest(LocalSource(fd, image.stat().st_size, str(image)))
    finally:
        os.close(fd)


def _sha256_of_guest(source) -> str:
    disk = next(iter(open_guest_disks(source, None, Limits())))
    digest, end = hashlib.sha256(), 0
    for offset, data in disk.extents():
        if isinstance(data, FileRange):  # a stretch the reader leaves for its consumer to read
            buffer = bytearray(len(data))
            data.read_into(memoryview(buffer))
            data = buffer
        digest.update(bytes(offset - end))
        digest.update(data)
        end = offset + len(data)
    digest.update(bytes(disk.virtual_size - end))
    return digest.hexdigest()


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    # Random, text-like and zero regions; a size that is no multiple of a block or a grain.
    return make_raw_disk(tmp_path_factory.mktemp("writers") / "disk.raw",
                         40 * 1024 * 1024 + 7 * 512, seed=11, data_fraction=0.4)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_qemu_img_reads_the_same_disk(disk, kind, tmp_path):
    out = export(disk, kind, tmp_path / f"out.{kind}")
    _, qemu_format = WRITERS[kind]
    info = qemu("info", "-f", qemu_format, str(out))
    assert info.returncode == 0, info.stderr
    compared = qemu("compare", "-f", "raw", "-F", qemu_format, str(disk), str(out))
    assert compared.returncode == 0, compared.stdout + compared.stderr
    if kind == "vmdk":
        checked = qemu("check", "-f", "vmdk", str(out))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "create type: streamOptimized" in qemu("info", str(out)).stdout


@pytest.mark.parametrize("kind", ["vhd", "vmdk"])
def test_our_readers_read_the_same_disk(disk, kind, tmp_path):
    out = export(disk, kind, tmp_path / f"out.{kind}")
    with open(disk, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    if kind == "vhd":
        assert sha256_of_guest(out) == want
    else:  # whole grains: the disk is padded to 64 KiB with zeros
        padded = disk.stat().st_size + (-disk.stat().st_size % (64 * 1024))
        with open(disk, "rb") as f:
            want = hashlib.sha256(f.read() + bytes(padded - disk.stat().st_size)).hexdigest()
        assert sha256_of_guest(out) == want


def test_an_empty_disk(tmp_path):
    empty = tmp_path / "empty.raw"
    with open(empty, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    for kind, (_, qemu_format) in WRITERS.items():
        out = export(empty, kind, tmp_path / f"exported.{kind}")
        compared = qemu("compare", "-f", "raw", "-F", qemu_format, str(empty), str(out))
        assert compared.returncode == 0, (kind, compared.stdout + compared.stderr)
    # Nothing but metadata: no grain, no VHD block.
    assert (tmp_path / "exported.vmdk").stat().st_size < 64 * 1024
    assert (tmp_path / "exported.vhd").stat().st_size < 64 * 1024


def test_blocks_are_read_ahead_a_bounded_number_at_a_time(tmp_path):
    """Reading overlaps the writing (``read_ahead``) but never runs further ahead than its
    batches: memory stays bounded whatever the disk's size."""
    bound = (READ_AHEAD + 2) * READ_BATCH  # queued batches, and the one being written
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(3 * bound * BLOCK))
    blocks = RawFileBlocks(raw)
    sink = FileSink(tmp_path / "out.raw")
    held, written = [], []
    read, write = blocks.read, sink.write
    blocks.read = lambda index: held.append(len(blocks.reads) - len(written)) or read(index)
    sink.write = lambda data: written.append(len(data)) or write(data)
    write_raw(blocks, sink)
    sink.close()
    assert blocks.reads == blocks.allocated() and len(written) == 3 * bound
    assert READ_BATCH < max(held) <= bound


def test_a_stopped_export_stops(disk, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first(done):
        raise Stop

    for kind, (write, _) in WRITERS.items():
        sink = FileSink(tmp_path / f"stopped.{kind}")
        with pytest.raises(Stop):
            write(RawFileBlocks(disk), sink, stop_after_first)
        sink.close()
