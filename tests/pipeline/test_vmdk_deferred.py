"""Stream-optimized VMDK grains left to the block writer (``deferred_extents``, issue 22): the
disk's bytes and the same snapshot as from inflated extents, ``GrainRun`` slices, and faults
found on the writer's threads worded as the reader words them, the first in file order first.

Images are qemu-img's (tests.hostile's builders); damaged ones are rebuilt grain by grain."""

from __future__ import annotations

import struct
import zlib

import pytest

from tests.hostile import guest_raw, make_ova, stream_vmdk, vmdk_markers
from tests.sources import BytesSource
from vmimport.blockstore.file_store import FileBlockStore
from vmimport.blockstore.writer import write_snapshot
from vmimport.pipeline.errors import ImportFailure
from vmimport.pipeline.formats import Limits, open_guest_disk, open_guest_disks, vmdk_grains
from vmimport.pipeline.formats.vmdk_grains import GrainRun

MiB = 1 << 20
CORRUPT = "Provided image file was corrupted. "
SIZE = 5 * MiB + 7 * 512 + 1000  # not a multiple of a grain, a block nor a sector


@pytest.fixture(scope="module")
def disk_images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deferred")
    raw = guest_raw(SIZE, seed=7)
    return raw + bytes(-len(raw) % 512), stream_vmdk(tmp, size=SIZE, seed=7)


def grains(vmdk: bytes) -> list[tuple[int, bytes]]:
    return [(lba, vmdk[at + 12:at + 12 + size]) for at, lba, size, _ in vmdk_markers(vmdk) if size]


def assemble(vmdk: bytes, new_grains, eos: bool = True) -> bytes:
    """qemu-img's header and metadata area, then ``new_grains`` [(lba, zlib data)], then EOS."""
    overhead = struct.unpack_from("<Q", vmdk, 64)[0]
    out = bytearray(vmdk[:overhead * 512])
    for lba, data in new_grains:
        out += struct.pack("<QI", lba, len(data)) + data
        out += bytes(-len(out) % 512)
    return bytes(out + (bytes(512) if eos else b""))


def deferred_bytes(disk) -> bytes:
    out = bytearray(disk.virtual_size)
    end = 0
    for offset, run in disk.deferred_extents():
        assert isinstance(run, GrainRun) and offset >= end
        out[offset:offset + len(run)] = run.tobytes()
        end = offset + len(run)
    return bytes(out)


def stored(disk, tmp_path) -> dict[int, str]:
    manifest = write_snapshot(FileBlockStore(tmp_path / "store"), disk.virtual_size,
                              disk.deferred_extents())
    return {index: ref.digest for index, ref in manifest.blocks.items()}


def stored_fails(data: bytes, tmp_path, match: str, declared="vmdk") -> str:
    with pytest.raises(ImportFailure) as info:
        for disk in open_guest_disks(BytesSource(data), declared, Limits()):
            stored(disk, tmp_path)
    assert info.value.kind == "ClientError"
    assert match in info.value.message, info.value.message
    return info.value.message


def test_runs_give_the_disks_bytes(disk_images):
    raw, vmdk = disk_images
    disk = open_guest_disk(BytesSource(vmdk), "vmdk", Limits())
    assert deferred_bytes(disk) == raw
    runs = list(open_guest_disk(BytesSource(vmdk), "vmdk", Limits()).deferred_extents())
    assert len(runs) < len(grains(vmdk))  # neighbouring grains travel together


def test_run_slices(disk_images):
    _, vmdk = disk_images
    disk = open_guest_disk(BytesSource(vmdk), "vmdk", Limits())
    run = max((run for _, run in disk.deferred_extents()), key=len)
    whole = run.tobytes()
    assert len(run) >= 3 * 65536
    for start, stop in [(0, len(run)), (65536, 3 * 65536), (1000, 70000), (65535, 65537),
                        (5, 5), (len(run) - 3, len(run) + 100)]:
        assert run[start:stop].tobytes() == whole[start:stop], (start, stop)
    assert run[1000:200000][64536:70000].tobytes() == whole[65536:71000]


def test_same_snapshot_as_inflated_extents_and_raw(disk_images, tmp_path):
    raw, vmdk = disk_images
    deferred = stored(open_guest_disk(BytesSource(vmdk), "vmdk", Limits()), tmp_path / "a")
    manifest = write_snapshot(FileBlockStore(tmp_path / "b"), len(raw),
                              open_guest_disk(BytesSource(vmdk), "vmdk", Limits()).extents())
    assert deferred == {index: ref.digest for index, ref in manifest.blocks.items()}
    assert deferred == stored(open_guest_disk(BytesSource(raw), "raw", Limits()), tmp_path / "c")
    assert len(deferred) >= 8


@pytest.mark.parametrize("libdeflate", [True, False])
@pytest.mark.parametrize("damage,match", [
    (lambda data: bytes(range(256)) * 40, "compressed bytes are not valid zlib data"),
    (lambda data: zlib.compress(b"x" * 1000), "inflated to 1000 bytes, expected 65536"),
    (lambda data: zlib.compress(bytes(64 * MiB), 9), "inflated to more than 65536 bytes"),
])
def test_grain_faults_found_by_the_writer(disk_images, tmp_path, monkeypatch, libdeflate,
                                          damage, match):
    if not libdeflate:
        monkeypatch.setattr(vmdk_grains, "_libdeflate", None)
    _, vmdk = disk_images
    gs = grains(vmdk)
    lba, data = gs[5]
    bad = assemble(vmdk, gs[:5] + [(lba, damage(data))] + gs[6:])
    message = stored_fails(bad, tmp_path, f"VMDK grain at LBA {lba} (file offset ")
    assert match in message


@pytest.mark.parametrize("which", [3, -3])  # in a batch sent to the writer / the last, unsent
def test_first_fault_in_file_order_wins(disk_images, tmp_path, which):
    """A grain that does not inflate, before the stream is cut short: the reader meets the cut
    first, but the grain lies earlier in the file, and its fault is the one reported."""
    _, vmdk = disk_images
    gs = grains(vmdk)
    n = which % len(gs)
    damaged = gs[:n] + [(gs[n][0], b"\x78\x9c" + bytes(100))] + gs[n + 1:]
    cut = assemble(vmdk, damaged, eos=False)[:-100]  # mid-grain: the reader's own fault
    with pytest.raises(ImportFailure, match="without an end-of-stream marker"):
        for _ in open_guest_disk(BytesSource(cut), "vmdk", Limits()).deferred_extents():
            pass
    stored_fails(cut, tmp_path, f"VMDK grain at LBA {gs[n][0]} (file offset ")


def test_fault_in_an_ova_member_names_the_member(disk_images, tmp_path):
    raw, vmdk = disk_images
    gs = grains(vmdk)
    bad = assemble(vmdk, gs[:2] + [(gs[2][0], bytes(range(256)) * 40)] + gs[3:])
    ova = make_ova([("disk1.vmdk", bad, len(raw))], with_manifest=False)
    message = stored_fails(ova, tmp_path, "compressed bytes are not valid zlib data", "ova")
    assert "(in OVA member 'disk1.vmdk', whose data starts at offset " in message
    assert message.endswith(" of the archive)"), message
    good = make_ova([("disk1.vmdk", vmdk, len(raw))])
    disk = open_guest_disks(BytesSource(good), "ova", Limits())[0]
    assert stored(disk, tmp_path / "good") == stored(
        open_guest_disk(BytesSource(raw), "raw", Limits()), tmp_path / "raw")
