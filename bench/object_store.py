"""The bench disk's stream-optimized VMDK imported into the object-store block store (a
SeaweedFS server on loopback) vs ``qemu-img convert -O raw`` of the same file, same run.

    .venv/bin/python -m bench.object_store [VMDK]   # default: the cached bench disk

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

DEFAULT_VMDK = Path(tempfile.gettempdir()) / "vmimport-bench-cache" / \
    f"base-{disks.DiskSpec().key}.vmdk"


def import_into_object_store(vmdk: Path, endpoint: str, access: str, secret: str) -> dict:
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
    with LocalSource.open(vmdk.parent, vmdk.parent.name, vmdk.name) as source:
        disk = open_guest_disks(source, "vmdk", Limits())[0]
        manifest = write_snapshot(store, disk.virtual_size, disk.extents())
    store.write_manifest("snap-bench", manifest)
    cpu_now = os.times()
    return {"seconds": time.perf_counter() - began, "blocks": len(manifest.blocks),
            "cpu_seconds": cpu_now.user + cpu_now.system - cpu.user - cpu.system,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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

    vmdk = Path(argv[0]) if argv else DEFAULT_VMDK
    with tempfile.TemporaryDirectory() as work, \
            S3Server(Path(work) / "s3", volume_size_limit_mb=1024) as s3:
        s3.client().create_bucket(Bucket="bench")
        began = time.perf_counter()
        subprocess.run([disks.QEMU_IMG, "convert", "-f", "vmdk", "-O", "raw", str(vmdk),
                        str(Path(work) / "out.raw")], check=True)
        qemu = time.perf_counter() - began
        (Path(work) / "out.raw").unlink()
        weed_before = _cpu_seconds(s3._proc.pid)
        child = subprocess.run([sys.executable, "-m", "bench.object_store", "--import",
                                str(vmdk), s3.endpoint_url, s3.access_key, s3.secret_key],
                               check=True, capture_output=True, text=True)
        result = json.loads(child.stdout.splitlines()[-1])
        weed = _cpu_seconds(s3._proc.pid) - weed_before
    print(f"qemu-img convert -O raw: {qemu:.2f} s")
    print(f"import into the object store: {result['seconds']:.2f} s "
          f"({result['cpu_seconds']:.2f} CPU-s in vmimport), {result['blocks']} blocks, "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    print(f"SeaweedFS meanwhile: {weed:.2f} CPU-s")
    print(f"ratio (qemu-img / import): {qemu / result['seconds']:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
