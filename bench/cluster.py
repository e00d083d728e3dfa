"""Issue 15's cluster figures on ``scripts/cluster`` (PostgreSQL, SeaweedFS, 2 API processes, 3
workers, each with its own empty data dir, on this machine as a stand-in for several):

- one stream-optimized VMDK import alone, against ``qemu-img convert -O raw`` of the same file;
- ``--imports`` (8) imports of as many different disks at once over the 3 workers: all must
  complete; the wall time, the aggregate rate and each import's time, beside the one alone;
- ``GetSnapshotBlock`` through the second API process (which imported nothing, its data dir
  empty: every block comes from the object store), p50 and p99 over ``--reads`` blocks.

    .venv/bin/python -m bench.cluster [--imports 8] [--data-mib 128] [--reads 200]

The disks (1 GiB virtual, ``--data-mib`` of data each, every one a different seed so that
dedup does not make the concurrent ones free) are built once in the bench cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

from . import disks
from .api_load import percentile
from .disks import GiB, MiB
from .server import client

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("VMIMPORT_BENCH_CACHE",
                            Path(tempfile.gettempdir()) / "vmimport-bench-cache"))


def _cluster(*args) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "cluster"), *map(str, args)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"scripts/cluster {args[0]} failed: {done.stderr[-2000:]}")
    return done.stdout


def _client(state: dict, api: str, service: str = "ec2"):
    return client(state["processes"][api]["endpoint"], service, state["credentials"])


def _store(state: dict):
    s3 = state["s3"]
    return boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id=s3["access_key"], aws_secret_access_key=s3["secret_key"])


def _disk(seed: int, data_mib: int) -> Path:
    spec = disks.DiskSpec(virtual_size=1 * GiB, data_size=data_mib * MiB, fs_size=32 * MiB,
                          seed=100 + seed)
    return disks.render(disks.base_raw(CACHE / "cluster", spec), disks.FORMATS["vmdk-stream"])


def _run_imports(ec2, keys: list[str]) -> dict[str, float]:
    """Start one ImportImage per key at once; each task's seconds from the start to its end."""
    began = time.monotonic()
    tasks = {ec2.import_image(DiskContainers=[{"Format": "vmdk", "UserBucket": {
        "S3Bucket": "images", "S3Key": key}}])["ImportTaskId"]: key for key in keys}
    ended: dict[str, float] = {}
    while len(ended) < len(tasks):
        if time.monotonic() - began > 1800:
            raise SystemExit(f"imports still running after 30 min: {set(tasks) - set(ended)}")
        for task in ec2.describe_import_image_tasks(ImportTaskIds=list(tasks))[
                "ImportImageTasks"]:
            if task["ImportTaskId"] in ended or task["Status"] == "active":
                continue
            if task["Status"] != "completed":
                raise SystemExit(f"{task['ImportTaskId']} ({tasks[task['ImportTaskId']]}) "
                                 f"ended {task['Status']}: {task.get('StatusMessage')}")
            ended[task["ImportTaskId"]] = time.monotonic() - began
        time.sleep(0.2)
    return ended


def _block_reads(ebs, snapshot_id: str, reads: int) -> list[float]:
    """Seconds of each GetSnapshotBlock of up to ``reads`` of the snapshot's blocks."""
    blocks, token = [], None
    while len(blocks) < reads:
        page = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=1000,
                                        **({"NextToken": token} if token else {}))
        blocks += page["Blocks"]
        token = page.get("NextToken")
        if not token:
            break
    seconds = []
    for block in blocks[:reads]:
        began = time.perf_counter()
        ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=block["BlockIndex"],
                               BlockToken=block["BlockToken"])["BlockData"].read()
        seconds.append(time.perf_counter() - began)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imports", type=int, default=8)
    p.add_argument("--data-mib", type=int, default=128)
    p.add_argument("--reads", type=int, default=200)
    args = p.parse_args(argv)
    images = [_disk(n, args.data_mib) for n in range(args.imports + 1)]
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    state = json.loads(_cluster("up", work, "--apis", 2, "--workers", 3))
    try:
        store = _store(state)
        for n, image in enumerate(images):
            store.upload_file(str(image), "images", f"disk{n}.vmdk")
        began = time.perf_counter()
        subprocess.run([disks.QEMU_IMG, "convert", "-f", "vmdk", "-O", "raw", str(images[0]),
                        str(work / "qemu.raw")], check=True)
        qemu = time.perf_counter() - began
        (work / "qemu.raw").unlink()
        one, two = _client(state, "api1"), _client(state, "api2", "ebs")
        alone = _run_imports(one, ["disk0.vmdk"])
        together = _run_imports(one, [f"disk{n}.vmdk" for n in range(1, len(images))])
        last = max(together, key=together.get)
        snapshot = one.describe_import_image_tasks(ImportTaskIds=[last])["ImportImageTasks"][0][
            "SnapshotDetails"][0]["SnapshotId"]
        reads = _block_reads(two, snapshot, args.reads)
    finally:
        _cluster("down", work)
    data = args.data_mib * MiB
    wall = max(together.values())
    result = {
        "disk": {"virtual": 1 * GiB, "data": data, "vmdk_bytes": images[0].stat().st_size},
        "qemu_img_seconds": round(qemu, 2), "alone_seconds": round(alone.popitem()[1], 2),
        "concurrent": {"imports": len(together), "workers": 3, "wall_seconds": round(wall, 2),
                       "median_seconds": round(statistics.median(together.values()), 2),
                       "max_seconds": round(wall, 2),
                       "aggregate_mib_per_s": round(len(together) * data / MiB / wall, 1)},
        "get_snapshot_block": {"reads": len(reads),
                               "p50_ms": round(percentile(reads, 50) * 1000, 2),
                               "p99_ms": round(percentile(reads, 99) * 1000, 2)},
    }
    result["ratio_alone"] = round(result["qemu_img_seconds"] / result["alone_seconds"], 2)
    print(f"qemu-img convert -O raw (one disk): {result['qemu_img_seconds']} s")
    print(f"one import alone: {result['alone_seconds']} s (x{result['ratio_alone']} of qemu-img)")
    c = result["concurrent"]
    print(f"{c['imports']} imports at once over 3 workers: all completed in {c['wall_seconds']} s "
          f"(each {c['median_seconds']} s median, {c['max_seconds']} s max), "
          f"{c['aggregate_mib_per_s']} MiB/s of data together")
    g = result["get_snapshot_block"]
    print(f"GetSnapshotBlock through the API process that imported nothing: {g['reads']} reads, "
          f"p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
