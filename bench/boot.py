"""The ``boot`` section: what the boot check (setting ``boot_check``) costs per image.

The bootable disks of ``tests/boot_disks.py`` (BIOS/syslinux and UEFI/GRUB, a Debian kernel
and a BusyBox initramfs, 66 MiB) are imported with the boot check on, one at a time; the
baseline is the same import on a server with it off, in the same run. Reported: the import's
time both ways (ImportImage call to the task's ``finished_at``), the boot check's own time
(the worker log's "booted ... in N s" line) and its share of the import.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from pathlib import Path

from .server import VmimportServer, client

IMAGES = ("boot-bios", "boot-uefi")


def _import(server, ec2, disk: Path, n: int) -> tuple[str, float]:
    bucket, key = "bench-boot", f"{disk.stem}-{n}.raw"
    server.put(bucket, key, disk)
    started = time.time()
    task_id = ec2.import_image(DiskContainers=[
        {"Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": key}}])["ImportTaskId"]
    while True:
        task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
        if task["Status"] in ("completed", "deleted"):
            break
        time.sleep(0.2)
    if task["Status"] != "completed":
        raise RuntimeError(f"{disk.name}: {task.get('StatusMessage')}")
    return task_id, server.finished_at(task_id) - started


def run_boot(cache: Path, work: Path, runs: int, log) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests import boot_disks

    disks = {name: boot_disks.build(name, cache / "boot-disks") for name in IMAGES}
    rows = []
    with VmimportServer(work / "boot-on", env={"VMIMPORT_BOOT_CHECK": "true"}) as on, \
            VmimportServer(work / "boot-off") as off:
        ec2_on, ec2_off = client(on.endpoint), client(off.endpoint)
        for name, disk in disks.items():
            with_check, without, booting = [], [], []
            for n in range(runs):
                _, seconds = _import(off, ec2_off, disk, n)
                without.append(seconds)
                task_id, seconds = _import(on, ec2_on, disk, n)
                with_check.append(seconds)
                found = re.findall(rf"task {task_id}: booted \(.*\) in ([0-9.]+)s",
                                   on.log_path.read_text(errors="replace"))
                booting.append(float(found[-1]))
            row = {"image": name, "runs": runs,
                   "import_without_seconds": round(statistics.median(without), 2),
                   "import_with_seconds": round(statistics.median(with_check), 2),
                   "boot_check_seconds": round(statistics.median(booting), 2)}
            row["boot_share"] = round(row["boot_check_seconds"] / row["import_with_seconds"], 3)
            row["ratio"] = round(row["import_with_seconds"] / row["import_without_seconds"], 1)
            log(f"  {name}: import {row['import_without_seconds']}s without the check, "
                f"{row['import_with_seconds']}s with it (x{row['ratio']}); the boot itself "
                f"{row['boot_check_seconds']}s = {row['boot_share']:.0%} of the import")
            rows.append(row)
    return rows
