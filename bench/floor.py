"""The floor under an uncompressed import: what the least work a block-store import must do
costs on this machine, beside qemu-img and vmimport's own block store, in one run.

    python -m bench.floor [--runs 5] [--cache-dir DIR] [--tiny] [--format raw|vmdk-stream|ova]
                          [--disk bench|guest]

Three ways of turning the bench disk (raw, ~1.2 GiB of data in 4 GiB) into a file of its
non-zero bytes, alternated run by run:

- ``qemu-img``: ``qemu-img convert -O raw`` (the conversion section's baseline);
- ``store``: vmimport's block store in this process (``open_guest_disks`` + ``write_snapshot``:
  read, cut into 512 KiB blocks, fingerprint every block, dedup lookups, pack writes), without the
  API, the queue, inspection or the AMI;
- ``floor``: the least such a store can do: two threads, each taking 8 MiB windows of the file's
  data ranges: one preadv, a fingerprint per block, and the non-zero 64 KiB stretches written
  as ``packs.py`` writes them (calls inside 256 KiB windows, each thread into a file of its
  own) -- nothing else.

The gap between ``store`` and ``floor`` is what the store's bookkeeping costs (cutting extents
into blocks, dedup lookups, the manifest); an import through the server adds ~30-40 ms more
(API, queue, inspection, AMI).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vmimport.blockstore.packs import BLOCK_SIZE, block_digest
from vmimport.pipeline.source import LocalSource
from vmimport.sparse_writes import nonzero_parts, write_segments

from . import disks, guest_disk
from .__main__ import DEFAULT_CACHE
from .conversion import settle
from .server import timed_command

WINDOW = 8 * 1024 * 1024  # the block writer's batch: 16 blocks


def floor_copy(image: Path, out: Path) -> None:
    """Read, fingerprint and write ``image`` the least costly way a block store could (see
    above): the import's own source reader and the block store's block and zero-stretch sizes,
    none of its bookkeeping. Each thread writes a file of its own in the directory ``out`` (as
    the store's threads write packs of their own): the window's non-zero 64 KiB stretches at
    their offsets in the image, through the store's own write function (calls inside 256 KiB
    windows)."""
    source = LocalSource.open(image.parent, image.parent.name, image.name)
    out.mkdir()
    local = threading.local()
    files: list[int] = []

    def window(lo: int, hi: int) -> None:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = memoryview(bytearray(WINDOW))
            local.fd = os.open(out / str(threading.get_ident()),
                               os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            files.append(local.fd)
        view = buf[:hi - lo]
        if source.readv_into(lo, [view]) != hi - lo:
            raise RuntimeError(f"{image} changed while it was read")
        for at in range(0, len(view), BLOCK_SIZE):
            block_digest(view[at:at + BLOCK_SIZE])
        write_segments(local.fd, [(lo + at, part) for at, part in nonzero_parts(0, view)])

    def windows():  # 8 MiB pieces of the file's data ranges, window-aligned
        for start, end in source.data_ranges():
            for at in range(start - start % WINDOW, end, WINDOW):
                yield max(at, start), min(at + WINDOW, end)

    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda w: window(*w), windows()))
    finally:
        source.close()
        for fd in files:
            os.close(fd)


def store_copy(image: Path, out: Path, declared: str = "raw") -> None:
    """vmimport's block store writing ``image`` into a new store at ``out``."""
    from vmimport.blockstore.file_store import FileBlockStore
    from vmimport.blockstore.writer import write_snapshot
    from vmimport.pipeline.formats import Limits, open_guest_disks
    from vmimport.pipeline.source import LocalSource

    source = LocalSource.open(image.parent, image.parent.name, image.name)
    try:
        disk = open_guest_disks(source, declared, Limits())[0]
        # as an import does: grains left to the writer's threads to inflate
        write_snapshot(FileBlockStore(out), disk.virtual_size, disk.deferred_extents())
    finally:
        source.close()


def inflate_floor_copy(image: Path, out: Path, declared: str) -> None:
    """The floor under a compressed import (stream VMDK, OVA): the import's own reader (marker
    checks, grains inflated on its thread pool) cannot be skipped, so it feeds two threads that
    each take ~8 MiB of inflated grains, fingerprint them and write their non-zero 64 KiB
    stretches into a file of their own, as ``floor_copy`` does -- none of the store's
    bookkeeping (cutting into blocks, dedup lookups, manifest)."""
    from vmimport.pipeline.formats import Limits, open_guest_disks

    source = LocalSource.open(image.parent, image.parent.name, image.name)
    out.mkdir()
    local = threading.local()
    files: list[int] = []

    def window(grains: list) -> None:
        if getattr(local, "fd", None) is None:
            local.fd = os.open(out / str(threading.get_ident()),
                               os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            files.append(local.fd)
        segments = []
        for offset, view in grains:
            block_digest(view)
            segments += nonzero_parts(offset, view)
        write_segments(local.fd, segments)

    try:
        disk = open_guest_disks(source, declared, Limits())[0]
        with ThreadPoolExecutor(2) as pool:
            pending: list = []
            grains, held = [], 0
            for offset, data in disk.extents():
                grains.append((offset, memoryview(data).cast("B")))
                held += len(data)
                if held >= WINDOW:
                    pending.append(pool.submit(window, grains))
                    grains, held = [], 0
                    if len(pending) > 3:  # bounded: ~32 MiB of inflated grains held
                        pending.pop(0).result()
            if grains:
                pending.append(pool.submit(window, grains))
            for future in pending:
                future.result()
    finally:
        source.close()
        for fd in files:
            os.close(fd)


def qemu_copy(image: Path, out: Path, fmt: str = "raw") -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, of which system seconds) of ``qemu-img convert -O raw``."""
    timed = timed_command([disks.QEMU_IMG, "convert",
                           *disks.qemu_baseline_args(disks.FORMATS[fmt], image), "-O", "raw",
                           str(out)])
    return timed.seconds, timed.cpu, timed.system


def in_process(copy, image: Path, out: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, of which system seconds) of
    ``copy(image, out)``."""
    cpu0, t0 = os.times(), time.perf_counter()
    copy(image, out)
    seconds, cpu1 = time.perf_counter() - t0, os.times()
    system = cpu1.system - cpu0.system
    return seconds, (cpu1.user - cpu0.user) + system, system


def measure(image: Path, work: Path, runs: int, fmt: str = "raw"
            ) -> dict[str, list[tuple[float, float, float]]]:
    """``runs`` rounds of the three, in an order that rotates each round; every output is
    deleted before the next one starts."""
    out = work / "floor-out"
    declared = disks.FORMATS[fmt].declared
    floor = (floor_copy if fmt == "raw"
             else lambda i, o: inflate_floor_copy(i, o, declared))
    tools = {
        "qemu-img": lambda: qemu_copy(image, out, fmt),
        "store": lambda: in_process(lambda i, o: store_copy(i, o, declared), image, out),
        "floor": lambda: in_process(floor, image, out),
    }
    names = list(tools)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for run in range(runs + 1):  # round 0 is not counted: first writes on this VM cost more
        order = names[run % 3:] + names[:run % 3]
        for name in order:
            try:
                figure = tools[name]()
            finally:
                if out.is_dir():
                    shutil.rmtree(out)
                else:
                    out.unlink(missing_ok=True)
            if run:
                results[name].append(figure)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="rounds; medians are printed")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--tiny", action="store_true", help="a 64 MiB disk: checks the code runs")
    p.add_argument("--format", default="raw", choices=("raw", "vmdk-stream", "ova"),
                   help="the image measured (default raw); for vmdk-stream and ova the floor "
                        "is the inflate + store floor (see inflate_floor_copy)")
    p.add_argument("--disk", default="bench", choices=("bench", "guest"),
                   help="the bench disk, or the realistic guest disk (bench/guest_disk.py)")
    args = p.parse_args(argv)
    if args.disk == "guest":
        raw = guest_disk.guest_raw(args.cache_dir, guest_disk.TINY_GUEST if args.tiny
                                   else guest_disk.GuestSpec())
    else:
        raw = disks.base_raw(args.cache_dir, disks.DiskSpec(
            virtual_size=64 * disks.MiB, data_size=8 * disks.MiB, fs_size=8 * disks.MiB)
            if args.tiny else disks.DiskSpec())
    image = disks.render(raw, disks.FORMATS[args.format])
    work = args.cache_dir / "floor-work"
    work.mkdir(parents=True, exist_ok=True)
    if not args.tiny:
        settle()
    results = measure(image, work, args.runs, args.format)
    qemu = statistics.median(f[0] for f in results["qemu-img"])
    # The kernel's share swings most on this VM (page cache taken back from the host as the
    # writes fault it in), so the range of system seconds is printed beside the medians.
    print(f"{image.name}: median of {args.runs} (wall s, CPU s, speed vs qemu-img; system "
          "CPU s, min-max)")
    for name, figures in results.items():
        wall = statistics.median(f[0] for f in figures)
        cpu = statistics.median(f[1] for f in figures)
        system = [f[2] for f in figures]
        print(f"  {name:9s} {wall:6.3f} s  {cpu:5.2f} CPU-s  x{qemu / wall:4.2f}  "
              f"system {min(system):.2f}-{max(system):.2f}")
    med = {name: (statistics.median(f[0] for f in figures),
                  statistics.median(f[1] for f in figures))
           for name, figures in results.items()}
    floor_wall, floor_cpu = (max(v, 1e-3) for v in med["floor"])  # tiny disks: ~0 CPU-s
    print(f"  the store's distance to the floor: x{med['store'][0] / floor_wall:.2f} wall, "
          f"x{med['store'][1] / floor_cpu:.2f} CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
