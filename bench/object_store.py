"""The bench disk's stream-optimized VMDK (or RAW) imported into the object-store block store
(a SeaweedFS server on loopback) vs ``qemu-img convert -O raw`` of the same file, same run.

    .venv/bin/python -m bench.object_store [VMDK]   # default: the cached bench disk
    .venv/bin/python -m bench.object_store --raw    # the cached bench disk's RAW

The import runs in a child process (``--import``) so that its peak RSS is the import's alone;
wall time of each is printed with the ratio (qemu-img time / import time: > 1 is faster).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import disks

CACHE = Path(tempfile.gettempdir()) / "vmimport-bench-cache"
DEFAULT_VMDK = CACHE / f"base-{disks.DiskSpec().key}.vmdk"
DEFAULT_RAW = CACHE / f"base-{disks.DiskSpec().key}.raw"


def import_into_object_store(image: Path, endpoint: str, access: str, secret: str) -> dict:
    from vmimport.blockstore.backends import open_block_store
    from vmimport.blockstore.writer import write_snapshot
    from vmimport.config import Settings
    from vmimport.pipeline.formats import Limits, open_guest_disks
    from vmimport.pipeline.source import LocalSource

    settings = Settings(data_dir=Path(tempfile.mkdtemp()), blocks_url="s3://bench/run/",
                        blocks_s3_endpoint_url=endpoint, blocks_s3_access_key=access,
                        blocks_s3_secret_key=secret)
    from vmimport.db.session import Database

    Database(settings.sqlalchemy_url).migrate()  # the shared dedup index and pack holds
    store = open_block_store(settings, check=True)
    began, cpu = time.perf_counter(), os.times()
    with LocalSource.open(image.parent, image.parent.name, image.name) as source:
        disk = open_guest_disks(source, _format(image), Limits())[0]
        manifest = write_snapshot(store, disk.virtual_size, disk.extents())
    store.write_manifest("snap-bench", manifest)
    cpu_now = os.times()
    return {"seconds": time.perf_counter() - began, "blocks": len(manifest.blocks),
            "cpu_seconds": cpu_now.user + cpu_now.system - cpu.user - cpu.system,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _format(image: Path) -> str:
    return "raw" if image.suffix == ".raw" else "vmdk"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--import"]:
        print(json.dumps(import_into_object_store(Path(argv[1]), *argv[2:5])))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.s3server import S3Server

    image = DEFAULT_RAW if argv == ["--raw"] else Path(argv[0]) if argv else DEFAULT_VMDK
    with tempfile.TemporaryDirectory() as work, \
            S3Server(Path(work) / "s3", volume_size_limit_mb=1024) as s3:
        s3.client().create_bucket(Bucket="bench")
        began = time.perf_counter()
        subprocess.run([disks.QEMU_IMG, "convert", "-f", _format(image), "-O", "raw",
                        str(image), str(Path(work) / "out.raw")], check=True)
        qemu = time.perf_counter() - began
        (Path(work) / "out.raw").unlink()
        weed_before = _cpu_seconds(s3._proc.pid)
        child = subprocess.run([sys.executable, "-m", "bench.object_store", "--import",
                                str(image), s3.endpoint_url, s3.access_key, s3.secret_key],
                               check=True, capture_output=True, text=True)
        result = json.loads(child.stdout.splitlines()[-1])
        weed = _cpu_seconds(s3._proc.pid) - weed_before
        floor, floor_cpu = _store_floor(s3, result["blocks"] * BLOCK)
    print(f"qemu-img convert -O raw: {qemu:.2f} s")
    print(f"import into the object store: {result['seconds']:.2f} s "
          f"({result['cpu_seconds']:.2f} CPU-s in vmimport), {result['blocks']} blocks, "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    print(f"SeaweedFS meanwhile: {weed:.2f} CPU-s")
    print(f"ratio (qemu-img / import): {qemu / result['seconds']:.2f}x")
    print(f"the store's floor, the same bytes PUT straight to SeaweedFS (8 MiB objects, 2 "
          f"threads, no vmimport): {floor:.2f} s, SeaweedFS {floor_cpu:.2f} CPU-s; best ratio "
          f"any importer could reach here: {qemu / floor:.2f}x")


BLOCK = 512 * 1024


def _store_floor(s3, size: int) -> tuple[float, float]:
    """Seconds (and SeaweedFS CPU-s) to PUT ``size`` bytes of incompressible data straight to
    the store, with the block store's own client settings (unsigned payloads): what no
    importer into it can beat on this machine."""
    from concurrent.futures import ThreadPoolExecutor

    from vmimport.blockstore.object_client import make_client

    client = make_client(s3.endpoint_url, s3.access_key, s3.secret_key, "us-east-1")
    piece = os.urandom(8 << 20)
    bucket = f"floor-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    count = -(-size // len(piece))
    cpu, began = _cpu_seconds(s3._proc.pid), time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: client.put_object(Bucket=bucket, Key=f"p{n}",
                                                  Body=n.to_bytes(8, "big") + piece[8:]),
                      range(count)))
    return time.perf_counter() - began, _cpu_seconds(s3._proc.pid) - cpu


if __name__ == "__main__":
    main(sys.argv[1:])
