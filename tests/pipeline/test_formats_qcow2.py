"""qcow2 reader: qemu-img's qcow2 in every variant (v2/v3, cluster sizes, zlib and zstd compressed,
extended L2 subclusters, preallocated, zero clusters, internal snapshots) reads back exactly as
`qemu-img convert -O raw`; unallocated space is skipped; inflation is bounded and parallel; every
hostile case is refused and no named file is opened."""

from __future__ import annotations

import os
import subprocess
import tracemalloc

import pytest

from tests.hostile import cases_qcow2
from tests.pipeline.test_formats import (MiB, BytesSource, FileSource, fails, flatten, mixed_disk,
                                         only_tmp_paths, qemu, sha)  # noqa: F401 (fixture)
from tests.pipeline.test_formats_vhd import QEMU_IO, CountingSource, render, written_by_qemu_io
from vmimport.pipeline.formats import Limits, open_guest_disk, qcow2


@pytest.fixture(scope="module")
def raw():
    return mixed_disk(9 * MiB + 5 * 512 + 1000, seed=13)  # not a multiple of any cluster size


VARIANTS = {
    "v2": ["-o", "compat=0.10"],
    "v3": ["-o", "compat=1.1"],
    "zlib": ["-c"],
    "zlib-v2": ["-c", "-o", "compat=0.10"],
    "zstd": ["-c", "-o", "compression_type=zstd"],
    "512-byte-clusters": ["-o", "cluster_size=512"],
    "2M-clusters-zlib": ["-c", "-o", "cluster_size=2M"],
    "4k-clusters-zstd": ["-c", "-o", "cluster_size=4096,compression_type=zstd"],
    "preallocated-metadata": ["-o", "preallocation=metadata"],
    "preallocated-full": ["-o", "preallocation=full"],
    "lazy-refcounts": ["-o", "lazy_refcounts=on"],
    "extended-l2": ["-o", "extended_l2=on"],
    "extended-l2-zstd": ["-c", "-o", "extended_l2=on,compression_type=zstd"],
}


@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())
@pytest.mark.parametrize("threads", [1, 3])
def test_qcow2_matches_qemu(tmp_path, raw, options, threads):
    image, expected = render(tmp_path, raw, "qcow2", *options)
    source = CountingSource(image)
    disk = open_guest_disk(source, "qcow2", Limits(inflate_threads=threads))
    assert disk.format == "QCOW2" and disk.virtual_size == len(expected)
    assert sha(flatten(disk)) == sha(expected)


def test_qcow2_reads_are_coalesced(tmp_path, raw):
    for options in ([], ["-c"]):
        image, _ = render(tmp_path, raw, "qcow2", *options)
        source = CountingSource(image)
        flatten(open_guest_disk(source, "qcow2", Limits()))
        assert len(source.reads) <= 8, source.reads


def test_qcow2_file_source_and_sizes(tmp_path):
    for size in (512, 64 * 1024, 3 * MiB + 512, 5 * MiB - 4096):
        data = mixed_disk(size, seed=size) if size > 4096 else os.urandom(size)
        for options in ([], ["-c"], ["-c", "-o", "compression_type=zstd"]):
            image, expected = render(tmp_path, data, "qcow2", *options)
            (tmp_path / "f.qcow2").write_bytes(image)
            disk = open_guest_disk(FileSource(tmp_path / "f.qcow2"), None, Limits())
            assert flatten(disk) == expected


def test_qcow2_zero_clusters_and_discard(tmp_path, raw):
    """v3 zero clusters (bit 0), written with qemu-io-free means: convert, then zero a range."""
    image, expected = render(tmp_path, raw, "qcow2")
    data = bytearray(image)
    m = cases_qcow2._first_data(bytes(data))
    entry = cases_qcow2.l2_entry(bytes(data), m)
    data = bytearray(cases_qcow2.set_l2(bytes(data), m, entry | 1))  # preallocated zero
    want = bytearray(expected)
    want[m * 65536 : (m + 1) * 65536] = bytes(65536)
    assert flatten(open_guest_disk(BytesSource(bytes(data)), "qcow2", Limits())) == bytes(want)


def test_qcow2_dirty_bit_is_accepted(tmp_path, raw):
    image, expected = render(tmp_path, raw, "qcow2", "-o", "lazy_refcounts=on")
    dirty = cases_qcow2.patch(image, 72, ">Q", 1)
    assert flatten(open_guest_disk(BytesSource(dirty), "qcow2", Limits())) == expected


def test_qcow2_without_libdeflate(tmp_path, raw, monkeypatch):
    monkeypatch.setattr(qcow2, "_libdeflate", None)
    image, expected = render(tmp_path, raw, "qcow2", "-c")
    assert flatten(open_guest_disk(BytesSource(image), "qcow2", Limits())) == expected


@pytest.mark.parametrize("options", [[], ["-c"]], ids=["plain", "zlib"])
def test_qcow2_truncation(tmp_path, raw, options):
    """Whatever is delivered before the fault is right; the fault names the cluster."""
    image, expected = render(tmp_path, raw, "qcow2", *options)
    disk = open_guest_disk(BytesSource(image[: len(image) * 3 // 4]), "qcow2", Limits())
    with pytest.raises(Exception, match="past the end of the file at byte"):
        for offset, data in disk.extents():
            assert bytes(data) == expected[offset : offset + len(data)]


def test_qcow2_header_longer_than_the_file(tmp_path, raw):
    """Found by the header fuzz target: a v3 header whose header_length (112, as qemu writes
    it) runs past the end of a file cut at byte 104 raised IndexError."""
    image, _ = render(tmp_path, raw, "qcow2")
    assert int.from_bytes(image[100:104], "big") == 112
    fails(BytesSource(image[:104]), "has header_length 112 (offset 100), but the file ends at "
                                    "byte 104")


def test_qcow2_bomb_is_bounded_in_memory(tmp_path):
    image = cases_qcow2.with_compressed(cases_qcow2.qcow2(tmp_path, "-c"),
                                        cases_qcow2.raw_deflate(bytes(64 * MiB)))
    tracemalloc.start()
    try:
        fails(BytesSource(image), "inflated to more than 65536 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 * MiB


@pytest.mark.parametrize("case", ["qcow2-backing-etc-passwd", "qcow2-backing-qcow2-v2",
                                  "qcow2-external-data-file"])
def test_qcow2_named_files_are_never_opened(tmp_path, only_tmp_paths, case):
    build = dict((name, b) for name, b, _ in cases_qcow2.CASES)[case]
    (tmp_path / "x.qcow2").write_bytes(build(tmp_path))
    fails(FileSource(tmp_path / "x.qcow2"), "never opens", declared="qcow2")
    assert only_tmp_paths == []


@pytest.mark.parametrize("name,build,match", cases_qcow2.CASES,
                         ids=[c[0] for c in cases_qcow2.CASES])
def test_qcow2_hostile(tmp_path, name, build, match):
    msg = fails(BytesSource(build(tmp_path)), match)
    assert "qcow2" in msg


@pytest.mark.parametrize("options", [[], ["-o", "compat=0.10"], ["-o", "cluster_size=4096"],
                                     ["-o", "extended_l2=on,cluster_size=128k"]],
                         ids=["v3", "v2", "4k-clusters", "extended-l2"])
def test_qcow2_written_out_of_order_with_snapshot(tmp_path, options):
    """Out-of-order allocation, zero writes, discard, and an internal snapshot taken before
    more writes (its clusters are shared with the active table, refcount 2)."""
    image, _ = written_by_qemu_io(tmp_path, "qcow2", *options, extra=("discard 10M 64k",))
    path = tmp_path / "io.qcow2"
    qemu("snapshot", "-c", "before", str(path))
    subprocess.run([QEMU_IO, "-f", "qcow2", "-c", "write -P 0x66 1M 64k", "-c",
                    "write -P 0x67 40M 64k", "-c", "write -P 0x68 20M 4k", "-c",
                    "write -P 0x69 20M 12k", "-c", "write -z 20M 4k", "-c", "write -P 0x6a 30M 5k",
                    str(path)], check=True, capture_output=True)
    qemu("convert", "-f", "qcow2", "-O", "raw", str(path), str(tmp_path / "now.raw"))
    disk = open_guest_disk(FileSource(path), "qcow2", Limits())
    assert flatten(disk) == (tmp_path / "now.raw").read_bytes()


# -- clusters that follow each other in the file: each is checked and claimed ---------------

def _random_then_zeros(tmp_path, clusters: int, total: int):
    """A qcow2 (64 KiB clusters) by qemu-img of ``clusters`` clusters of random data followed
    by zeros up to ``total`` clusters: its L2 table maps guest clusters 0..clusters-1 to one
    contiguous run of host clusters and leaves the rest unallocated."""
    cluster = 64 * 1024
    raw = os.urandom(clusters * cluster) + bytes((total - clusters) * cluster)
    image, _ = render(tmp_path, raw, "qcow2")
    l2 = cases_qcow2.l2_at(image)
    hosts = [cases_qcow2.l2_entry(image, m) & qcow2.L1_OFFSET for m in range(clusters)]
    assert hosts == list(range(hosts[0], hosts[0] + clusters * cluster, cluster))
    return image, l2, cluster


def _point(image: bytes, entry: int, host: int, count: int, cluster: int) -> bytes:
    """L2 entries ``entry`` .. ``entry + count - 1`` pointed at ``count`` host clusters that
    follow each other from ``host`` on."""
    for k in range(count):
        image = cases_qcow2.set_l2(image, entry + k, 1 << 63 | (host + k * cluster))
    return image


def test_qcow2_run_past_the_end_names_the_first_entry_outside(tmp_path):
    image, l2, cluster = _random_then_zeros(tmp_path, 16, 64)
    end = len(image) + 2 * cluster  # two more clusters in the file; the run names four
    image += os.urandom(2 * cluster)
    image = _point(image, 20, len(image) - 2 * cluster, 4, cluster)
    fails(BytesSource(image), f"qcow2 L2 entry 22 of table 0 (at offset {l2 + 8 * 22}) places a "
                              f"data cluster at offset {end}: not cluster-aligned or past the end "
                              f"of the file at byte {end}")


def test_qcow2_run_overlapping_another_names_the_first_shared_cluster(tmp_path):
    image, l2, cluster = _random_then_zeros(tmp_path, 16, 64)
    extra = len(image)
    image += os.urandom(4 * cluster)
    image = _point(image, 20, extra + 2 * cluster, 2, cluster)  # a run of two, and a run of
    image = _point(image, 30, extra, 4, cluster)  # four whose third cluster is their first
    fails(BytesSource(image), f"qcow2 data cluster for guest offset {32 * cluster} (entry at "
                              f"offset {l2 + 8 * 32}) uses the host cluster at offset "
                              f"{extra + 2 * cluster}, which another table or cluster already uses")


def test_qcow2_cluster_inside_an_earlier_run_is_caught(tmp_path):
    """A run claims every cluster it covers, not only its first."""
    image, l2, cluster = _random_then_zeros(tmp_path, 16, 64)
    data = cases_qcow2.l2_entry(image, 0) & qcow2.L1_OFFSET
    image = _point(image, 40, data + 9 * cluster, 1, cluster)
    fails(BytesSource(image), f"qcow2 data cluster for guest offset {40 * cluster} (entry at "
                              f"offset {l2 + 8 * 40}) uses the host cluster at offset "
                              f"{data + 9 * cluster}, which another table or cluster already uses")
