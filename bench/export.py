"""Export: ExportImage end to end (ExportImage -> task completed, the object in a local bucket)
of an AMI imported from the bench's base disk, as VMDK, VHD and RAW, against ``qemu-img
convert`` of the same raw disk into a file, in the same turns as the conversion section
(``take_turns``). Each format's export is first checked once with ``qemu-img compare``, so a
fast wrong writer cannot win."""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import disks
from .conversion import BUCKET, POLL, compared_runs, import_once, take_turns
from .disks import MiB
from .server import MemorySampler, Timed, VmimportServer, cpu_seconds, timed_command


@dataclass(frozen=True)
class ExportFormat:
    name: str  # DiskImageFormat
    qemu_args: tuple[str, ...]  # qemu-img convert's output options for the same format
    qemu_fmt: str  # how qemu-img reads the result back (compare)
    target: float  # speed target vs qemu-img (x), issue 14


EXPORT_FORMATS = (
    ExportFormat("VMDK", ("-O", "vmdk", "-o", "subformat=streamOptimized"), "vmdk", 2.0),
    ExportFormat("VHD", ("-O", "vpc"), "vpc", 1.0),
    ExportFormat("RAW", ("-O", "raw"), "raw", 1.0),
)
EXPORT_BUCKET = "exports"


@dataclass
class ExportResult:
    status: str  # completed | deleted | timeout
    seconds: float  # ExportImage call -> the task's finished_at
    message: str = ""
    peak_rss: int = 0  # the server's process tree's peak PSS (see MemorySampler)
    cpu: float = 0.0
    write_seconds: float | None = None  # the worker's writer and sink alone (its log)
    path: Path | None = None  # the object, while it is kept


@dataclass
class OutputCheck:
    identical: bool
    message: str
    size: int = 0
    allocated: int = 0


def export_once(server: VmimportServer, ec2, image_id: str, fmt: ExportFormat,
                sampler: MemorySampler | None = None, keep: bool = False,
                timeout: float = 900) -> ExportResult:
    """One ExportImage into the local bucket, timed to the task's ``finished_at`` (read from
    the server's database, so the poll interval adds nothing); the object is deleted unless
    ``keep``."""
    if sampler is not None:
        sampler.reset()
    cpu0 = cpu_seconds(server.pid)
    t0_wall, t0 = time.time(), time.perf_counter()
    task_id = ec2.export_image(ImageId=image_id, DiskImageFormat=fmt.name,
                               S3ExportLocation={"S3Bucket": EXPORT_BUCKET})["ExportImageTaskId"]
    while True:
        task = ec2.describe_export_image_tasks(
            ExportImageTaskIds=[task_id])["ExportImageTasks"][0]
        elapsed = time.perf_counter() - t0
        if task["Status"] in ("completed", "deleted"):
            status = task["Status"]
            break
        if elapsed > timeout:
            ec2.cancel_export_task(ExportTaskId=task_id)
            status = "timeout"
            break
        time.sleep(POLL)
    finished = server.finished_at(task_id, "export_tasks") if status == "completed" else None
    path = server.data_dir / "buckets" / EXPORT_BUCKET / f"{task_id}.{fmt.name.lower()}"
    result = ExportResult(status, finished - t0_wall if finished is not None else elapsed,
                          task.get("StatusMessage", ""), sampler.peak if sampler else 0,
                          cpu_seconds(server.pid) - cpu0, _write_seconds(server, task_id),
                          path if keep else None)
    if not keep:
        path.unlink(missing_ok=True)
    return result


def _write_seconds(server: VmimportServer, task_id: str) -> float | None:
    """The worker's "written to ... in <s>s" line: the writer and sink without the API, the
    queue and the task's bookkeeping."""
    found = re.search(rf"export {re.escape(task_id)}: .* written to \S+ in ([0-9.]+)s",
                      server.log_path.read_text(errors="replace"))
    return float(found.group(1)) if found else None


class QemuExport:
    """``qemu-img convert`` of the raw disk into ``out`` in the format; each output deleted
    right after its run, its sizes kept."""

    def __init__(self, fmt: ExportFormat, raw: Path, out: Path):
        self.args = [disks.QEMU_IMG, "convert", "-f", "raw", str(raw), *fmt.qemu_args,
                     str(out)]
        self.out = out
        self.size = self.allocated = 0

    def __call__(self) -> Timed:
        try:
            timed = timed_command(self.args)
            stat = self.out.stat()
            self.size, self.allocated = stat.st_size, stat.st_blocks * 512
            return timed
        finally:
            self.out.unlink(missing_ok=True)


def check_output(server: VmimportServer, ec2, image_id: str, fmt: ExportFormat,
                 raw: Path) -> OutputCheck:
    """One export kept long enough to compare it with the raw disk and to measure it."""
    ours = export_once(server, ec2, image_id, fmt, keep=True)
    try:
        if ours.status != "completed":
            return OutputCheck(False, f"export {ours.status}: {ours.message}")
        compared = subprocess.run([disks.QEMU_IMG, "compare", "-f", "raw", "-F", fmt.qemu_fmt,
                                   str(raw), str(ours.path)], capture_output=True, text=True)
        stat = ours.path.stat()
        return OutputCheck(compared.returncode == 0,
                           (compared.stdout + compared.stderr).strip()[:300],
                           stat.st_size, stat.st_blocks * 512)
    finally:
        ours.path.unlink(missing_ok=True)


def import_base(server: VmimportServer, ec2, raw: Path) -> str:
    """The AMI every export starts from: the base disk imported once."""
    key = f"export/{raw.name}"
    server.put(BUCKET, key, raw)
    imported = import_once(server, ec2, key, "raw")
    server.drop(BUCKET, key)
    if imported.status != "completed":
        raise RuntimeError(f"importing the base disk for the exports failed: {imported.message}")
    task = ec2.describe_import_image_tasks(
        ImportTaskIds=[imported.task_id])["ImportImageTasks"][0]
    return task["ImageId"]


def run_export(server: VmimportServer, ec2, sampler: MemorySampler, raw: Path, runs: int,
               work: Path, log) -> list[dict]:
    (server.data_dir / "buckets" / EXPORT_BUCKET).mkdir(parents=True, exist_ok=True)
    image_id = import_base(server, ec2, raw)
    rows = []
    for fmt in EXPORT_FORMATS:
        row = {"section": "export", "format": fmt.name, "target_speedup": fmt.target,
               "qemu_command": f"qemu-img convert -f raw {' '.join(fmt.qemu_args)}"}
        rows.append(row)
        check = check_output(server, ec2, image_id, fmt, raw)
        qemu_run = QemuExport(fmt, raw, work / f"qemu-out.{fmt.name.lower()}")
        qemu, ours = take_turns(
            qemu_run, lambda: export_once(server, ec2, image_id, fmt, sampler), runs,
            completed=lambda result: result.status == "completed")
        row.update(identical=check.identical, compare=check.message,
                   vmimport_bytes=check.size, vmimport_allocated_bytes=check.allocated,
                   qemu_bytes=qemu_run.size, qemu_allocated_bytes=qemu_run.allocated)
        row.update(compared_runs(qemu, ours, fmt.target))
        row["vmimport_write_seconds"] = [r.write_seconds for r in ours]
        if row["status"] == "error":
            log(f"  {fmt.name:5s} export failed: {row['message'][:200]}")
            continue
        q, v = row["qemu_median"], row["vmimport_median"]
        written = [r.write_seconds for r in ours if r.write_seconds is not None]
        row["size_ratio"] = round(check.allocated / max(1, qemu_run.allocated), 3)
        row["vmimport_write_median"] = round(statistics.median(written), 3) if written else None
        log(f"  {fmt.name:5s} vmimport {v:6.2f}s (write {row['vmimport_write_median']}s, "
            f"{row['vmimport_cpu_median']:.2f} CPU-s, {check.size / MiB:.0f} MiB)  "
            f"qemu-img {q:6.2f}s ({row['qemu_cpu_median']:.2f} CPU-s, "
            f"{qemu_run.size / MiB:.0f} MiB)  x{q / v:5.2f} (target {fmt.target}x)  "
            f"PSS {row['vmimport_peak_rss'] / MiB:.0f} MiB  "
            + ("identical" if check.identical else f"DIFFERS: {check.message}"))
    return rows
