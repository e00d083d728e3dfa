"""monolithicSparse VMDK reader: qemu-img's `-O vmdk` output reads back exactly as
`qemu-img convert -O raw`, unallocated grains are skipped, and every hostile case is refused
without opening a file the descriptor names."""

from __future__ import annotations

import os

import pytest

from tests.hostile import cases_vmdk_sparse
from tests.pipeline.test_formats import (MiB, BytesSource, FileSource, fails, flatten, mixed_disk,
                                         only_tmp_paths, qemu, sha)  # noqa: F401 (fixture)
from tests.pipeline.test_formats_vhd import CountingSource, render, written_by_qemu_io
from vmimport.pipeline.formats import Limits, open_guest_disk


@pytest.fixture(scope="module")
def raw():
    return mixed_disk(9 * MiB + 5 * 512 + 1000, seed=14)  # not a multiple of 64 KiB nor of 512


@pytest.mark.parametrize("options", [[], ["-o", "compat6"], ["-o", "zeroed_grain=on"],
                                     ["-o", "hwversion=6,adapter_type=lsilogic"]],
                         ids=["default", "compat6", "zeroed-grain", "hwversion6"])
def test_vmdk_sparse_matches_qemu(tmp_path, raw, options):
    image, expected = render(tmp_path, raw, "vmdk", *options)
    source = CountingSource(image)
    disk = open_guest_disk(source, "vmdk", Limits())
    assert disk.format == "VMDK" and disk.virtual_size == len(expected)
    assert sha(flatten(disk)) == sha(expected)
    assert len(source.reads) <= 8, source.reads


def test_vmdk_sparse_file_source_and_sizes(tmp_path):
    for size in (512, 64 * 1024, 3 * MiB + 512, 33 * MiB - 4096):
        data = mixed_disk(size, seed=size) if size > 4096 else os.urandom(size)
        image, expected = render(tmp_path, data, "vmdk")
        (tmp_path / "f.vmdk").write_bytes(image)
        assert flatten(open_guest_disk(FileSource(tmp_path / "f.vmdk"), None, Limits())) == expected


def test_vmdk_sparse_several_grain_tables(tmp_path):
    image = cases_vmdk_sparse.two_tables(tmp_path)
    (tmp_path / "t.vmdk").write_bytes(image)
    qemu("convert", "-f", "vmdk", "-O", "raw", str(tmp_path / "t.vmdk"), str(tmp_path / "t.raw"))
    disk = open_guest_disk(BytesSource(image), "vmdk", Limits())
    assert flatten(disk) == (tmp_path / "t.raw").read_bytes()


def test_vmdk_sparse_zeroed_grain_entries(tmp_path, raw):
    image, expected = render(tmp_path, raw, "vmdk", "-o", "zeroed_grain=on")
    m = cases_vmdk_sparse.first_grain(image)
    zeroed = cases_vmdk_sparse.set_gt(image, m, 1)
    want = bytearray(expected)
    want[m * 65536 : (m + 1) * 65536] = bytes(65536)
    assert flatten(open_guest_disk(BytesSource(zeroed), "vmdk", Limits())) == bytes(want)


@pytest.mark.parametrize("case", ["vmdk-sparse-parent-hint-etc-passwd",
                                  "vmdk-sparse-flat-extent-etc-passwd",
                                  "vmdk-sparse-extent-elsewhere"])
def test_vmdk_sparse_named_files_are_never_opened(tmp_path, only_tmp_paths, case):
    build = dict((name, b) for name, b, _ in cases_vmdk_sparse.CASES)[case]
    (tmp_path / "x.vmdk").write_bytes(build(tmp_path))
    fails(FileSource(tmp_path / "x.vmdk"), "VMDK embedded descriptor", declared="vmdk")
    assert only_tmp_paths == []


@pytest.mark.parametrize("name,build,match", cases_vmdk_sparse.CASES,
                         ids=[c[0] for c in cases_vmdk_sparse.CASES])
def test_vmdk_sparse_hostile(tmp_path, name, build, match):
    msg = fails(BytesSource(build(tmp_path)), match)
    assert "VMDK" in msg


@pytest.mark.parametrize("options", [[], ["-o", "zeroed_grain=on"]], ids=["default", "zeroed-grain"])
def test_vmdk_sparse_written_out_of_order(tmp_path, options):
    image, expected = written_by_qemu_io(tmp_path, "vmdk", *options)
    assert flatten(open_guest_disk(BytesSource(image), "vmdk", Limits())) == expected
