"""VHDX reader: qemu-img's dynamic and fixed VHDXs read back exactly as `qemu-img convert -O raw`,
the current header is chosen by sequence number, unallocated space is skipped, and every hostile
case is refused."""

from __future__ import annotations

import os
import struct
import uuid

import pytest

from tests.hostile import cases_vhdx
from tests.pipeline.test_formats import (MiB, BytesSource, FileSource, fails, flatten, mixed_disk,
                                         only_tmp_paths, sha)  # noqa: F401 (fixture)
from tests.pipeline.test_formats_vhd import CountingSource, render, written_by_qemu_io
from vmimport.pipeline.formats import Limits, open_guest_disk

KiB = 1024


@pytest.fixture(scope="module")
def raw():
    return mixed_disk(11 * MiB + 5 * 512 + 1000, seed=12)  # not a multiple of 1 MiB nor of 512


@pytest.mark.parametrize("options", [
    [], ["-o", "block_size=1M"], ["-o", "subformat=fixed"], ["-o", "block_state_zero=off"],
], ids=["dynamic", "dynamic-1M-blocks", "fixed", "no-block-state-zero"])
def test_vhdx_matches_qemu(tmp_path, raw, options):
    image, expected = render(tmp_path, raw, "vhdx", *options)
    source = CountingSource(image)
    disk = open_guest_disk(source, "vhdx", Limits())
    assert disk.format == "VHDX" and disk.virtual_size == len(expected)
    assert sha(flatten(disk)) == sha(expected)
    assert len(source.reads) <= 12


def test_vhdx_file_source_and_sizes(tmp_path):
    for size in (512, MiB, 3 * MiB + 512, 33 * MiB - 4096):
        data = mixed_disk(size, seed=size) if size > 4096 else os.urandom(size)
        image, expected = render(tmp_path, data, "vhdx", "-o", "block_size=1M")
        (tmp_path / "f.vhdx").write_bytes(image)
        assert flatten(open_guest_disk(FileSource(tmp_path / "f.vhdx"), None, Limits())) == expected


def test_vhdx_current_header_is_the_newest_valid_one(tmp_path, raw):
    image, expected = render(tmp_path, raw, "vhdx")
    # header 1 damaged: header 2 is used
    bad = bytearray(image)
    bad[64 * KiB + 100] ^= 1
    assert flatten(open_guest_disk(BytesSource(bytes(bad)), "vhdx", Limits())) == expected
    # both valid; the one with the higher sequence number names a log: refused
    seq = [struct.unpack_from("<Q", image, at + 8)[0] for at in (64 * KiB, 128 * KiB)]
    newer = (64 * KiB, 128 * KiB)[seq.index(max(seq))]
    older = (64 * KiB, 128 * KiB)[seq.index(min(seq))] if seq[0] != seq[1] else None
    dirty = bytearray(image)
    dirty[newer + 48 : newer + 64] = uuid.uuid4().bytes_le
    cases_vhdx.fix_crc(dirty, newer, 4 * KiB)
    fails(BytesSource(bytes(dirty)), f"VHDX log is not empty (header at offset {newer} names log")
    if older is not None:  # the older header's log is ignored
        dirty = bytearray(image)
        dirty[older + 48 : older + 64] = uuid.uuid4().bytes_le
        cases_vhdx.fix_crc(dirty, older, 4 * KiB)
        assert flatten(open_guest_disk(BytesSource(bytes(dirty)), "vhdx", Limits())) == expected


def test_vhdx_zero_and_unmapped_blocks_read_as_zeros(tmp_path, raw):
    image, expected = render(tmp_path, raw, "vhdx", "-o", "block_size=1M")
    bad = bytearray(image)
    want = bytearray(expected)
    for index, state in ((0, 2), (1, 3), (2, 1), (3, 0)):
        cases_vhdx.set_bat(bad, index, state, 0)
        want[index * MiB : (index + 1) * MiB] = bytes(MiB)
    assert flatten(open_guest_disk(BytesSource(bytes(bad)), "vhdx", Limits())) == bytes(want)


def test_vhdx_differencing_opens_nothing(tmp_path, only_tmp_paths):
    (tmp_path / "child.vhdx").write_bytes(cases_vhdx.differencing(tmp_path))
    msg = fails(FileSource(tmp_path / "child.vhdx"), "differencing disk", declared="vhdx")
    assert "'/etc/passwd'" in msg and "never opens" in msg
    assert only_tmp_paths == []


@pytest.mark.parametrize("name,build,match", cases_vhdx.CASES, ids=[c[0] for c in cases_vhdx.CASES])
def test_vhdx_hostile(tmp_path, name, build, match):
    msg = fails(BytesSource(build(tmp_path)), match)
    assert "VHDX" in msg


@pytest.mark.parametrize("options", [["-o", "block_size=1M"], []], ids=["1M-blocks", "default"])
def test_vhdx_written_out_of_order(tmp_path, options):
    image, expected = written_by_qemu_io(tmp_path, "vhdx", *options)
    assert flatten(open_guest_disk(BytesSource(image), "vhdx", Limits())) == expected
