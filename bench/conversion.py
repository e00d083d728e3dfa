"""Conversion and growth: whole imports through the API (ImportImage -> completed AMI) against
``qemu-img convert -O raw`` of the same file, in short series of each tool taking turns, each
series after an untimed run of its own (see ``timed_runs``)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from . import disks
from .disks import FORMATS, Format, MiB
from .server import MemorySampler, Timed, VmimportServer, cpu_seconds, timed_command

BUCKET = "bench"
RSS_LIMIT = 256 * MiB
T, R = TypeVar("T"), TypeVar("R")
POLL = 0.5  # DescribeImportImageTasks poll interval: only tells when to look (see import_once)


@dataclass
class ImportResult:
    status: str  # completed | deleted | timeout
    seconds: float
    message: str = ""
    progress: int | None = None
    peak_rss: int = 0  # the process tree's peak PSS (see MemorySampler)
    cpu: float = 0.0
    task_id: str = ""
    polled_seconds: float = 0.0
    peak_rss_sum: int = 0  # the peak of its RSS summed over the processes (shared pages twice)
    store_seconds: float | None = None  # the worker's conversion and storing alone


def import_once(server: VmimportServer, ec2, key: str, declared: str, timeout: float = 1800,
                sampler: MemorySampler | None = None) -> ImportResult:
    """ImportImage of ``bucket/key``, polled until completed or deleted. A task still running
    after ``timeout`` seconds is cancelled and reported as 'timeout'.

    The time is from just before the ImportImage call to the moment the server marked the task
    completed (its ``finished_at``, committed in the transaction that registers the AMI, read
    from the server's database), so the poll interval neither adds to it nor, by polling
    often, loads the server it measures. The polled time is kept as ``polled_seconds``."""
    if sampler is not None:
        sampler.reset()
    cpu0 = cpu_seconds(server.pid)
    t0_wall = time.time()
    t0 = time.perf_counter()
    task_id = ec2.import_image(
        Description=f"bench {key}",
        DiskContainers=[{"Format": declared, "UserBucket": {"S3Bucket": BUCKET, "S3Key": key}}],
    )["ImportTaskId"]
    progress = None
    while True:
        task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
        elapsed = time.perf_counter() - t0
        status = task.get("Status")
        if task.get("Progress"):
            progress = int(task["Progress"])
        if status in ("completed", "deleted"):
            break
        if elapsed > timeout:
            ec2.cancel_import_task(ImportTaskId=task_id)
            _wait_gone(ec2, task_id)
            status = "timeout"
            break
        time.sleep(POLL)
    finished = server.finished_at(task_id) if status == "completed" else None
    seconds = finished - t0_wall if finished is not None else elapsed
    return ImportResult(status, seconds, task.get("StatusMessage", ""), progress,
                        sampler.peak if sampler else 0, cpu_seconds(server.pid) - cpu0, task_id,
                        polled_seconds=elapsed, peak_rss_sum=sampler.peak_rss if sampler else 0,
                        store_seconds=server.stored_seconds(task_id))


def _wait_gone(ec2, task_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
        if task["Status"] in ("completed", "deleted"):
            return
        time.sleep(0.2)


SERIES = 3  # timed runs of one tool in a row (after an untimed one), before the other's turn


def timed_runs(server: VmimportServer, ec2, fmt: Format, image: Path, key: str, runs: int,
               work: Path, timeout: float, sampler: MemorySampler
               ) -> tuple[list[Timed], list[ImportResult]]:
    """``runs`` timed ``qemu-img convert``s and ``runs`` timed imports of one image, taking
    turns as ``take_turns`` says; each run's output (qemu-img's raw file, the imported blocks)
    is deleted right after it."""
    server.clear_blocks()

    def import_and_clear() -> ImportResult:
        result = import_once(server, ec2, key, fmt.declared, timeout, sampler)
        server.clear_blocks()
        return result

    return take_turns(lambda: qemu_once(fmt, image, work / "qemu-out.raw"), import_and_clear,
                      runs, completed=lambda result: result.status == "completed")


def take_turns(baseline: Callable[[], T], ours: Callable[[], R], runs: int,
               completed: Callable[[R], bool] = lambda result: True
               ) -> tuple[list[T], list[R]]:
    """``runs`` timed runs of each tool, in short series (``SERIES`` runs after an untimed
    one), the tools taking turns and the first one alternating (qemu-img, vmimport, vmimport,
    qemu-img, ...), after ``settle``. Stops at the first of our runs not ``completed``.

    Each run after one of its own tool: on this VM (see bench/README.md) a run's cost depends
    on what ran just before it, and not alike for both tools. With single runs interleaved (as
    until 2026-11-27), a qemu-img convert of the raw bench disk right after an import and the
    deletion of its blocks took 0.70-1.03 s, one right after qemu-img 0.45-0.52 s; on other
    days it was the import that paid after the other tool. The untimed run absorbs that, and
    the first writes after ``settle``'s pause (memory idle for seconds costs 2-4x). The turns
    spread both tools over the same stretch of time: with one series each, a full run on
    2026-11-27 caught a slow spell of the machine in the imports' series (fixed VHD: imports
    0.39 -> 0.48 s median from a run ten minutes before, qemu-img 0.44 -> 0.45 s)."""
    settle()
    theirs: list[T] = []
    mine: list[R] = []

    def baseline_series(count: int) -> bool:
        baseline()
        theirs.extend(baseline() for _ in range(count))
        return True

    def our_series(count: int) -> bool:  # False once one of our runs did not complete
        ours()
        for _ in range(count):
            mine.append(ours())
            if not completed(mine[-1]):
                return False
        return True

    turn = 0
    while len(theirs) < runs:
        count = min(SERIES, runs - len(theirs))
        first, second = ((baseline_series, our_series) if turn % 2 == 0
                         else (our_series, baseline_series))
        if not (first(count) and second(count)):
            break
        turn += 1
    return theirs, mine


def compared_runs(qemu: list[Timed], ours: list, target: float) -> dict:
    """What every row of our tool against qemu-img holds: each run's seconds, CPU seconds and
    peak memory, then (status 'measured') the medians, the speed-up and whether speed and
    memory meet their targets; status 'error' if one of ``ours`` (results with ``status``,
    ``seconds``, ``cpu``, ``peak_rss``, ``message``) did not complete."""
    row = {"qemu_seconds": [round(t.seconds, 3) for t in qemu],
           "qemu_cpu_seconds": [round(t.cpu, 2) for t in qemu],
           "qemu_peak_rss": max(t.peak_rss for t in qemu),
           "vmimport_seconds": [round(r.seconds, 3) for r in ours],
           "vmimport_cpu_seconds": [round(r.cpu, 2) for r in ours],
           "vmimport_peak_rss": max(r.peak_rss for r in ours)}
    failed = [r for r in ours if r.status != "completed"]
    if failed:
        return {**row, "status": "error", "message": f"{failed[0].status}: {failed[0].message}"}
    q = statistics.median(t.seconds for t in qemu)
    v = statistics.median(r.seconds for r in ours)
    return {**row, "status": "measured", "qemu_median": round(q, 3),
            "vmimport_median": round(v, 3), "speedup": round(q / v, 3),
            "speed_pass": q / v >= target, "rss_pass": row["vmimport_peak_rss"] <= RSS_LIMIT,
            "qemu_cpu_median": round(statistics.median(t.cpu for t in qemu), 2),
            "vmimport_cpu_median": round(statistics.median(r.cpu for r in ours), 2)}


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}s"


def settle(seconds: float = 3.0) -> None:
    """Before the timed runs of an image: write back what rendering it (and deleting earlier
    outputs) left to the disk, and let it go quiet, so that this does not land inside the first
    runs (a first import used to take 2-4x its later time)."""
    os.sync()
    time.sleep(seconds)


def qemu_once(fmt: Format, image: Path, out: Path) -> Timed:
    """Wall seconds, peak RSS and CPU seconds of ``qemu-img convert <fmt> -O raw`` to
    ``out``."""
    try:
        return timed_command([disks.QEMU_IMG, "convert", *disks.qemu_baseline_args(fmt, image),
                              "-O", "raw", str(out)])
    finally:
        out.unlink(missing_ok=True)


# ------------------------------------------------------------------ support probing


def probe_support(server: VmimportServer, ec2, names: list[str], spec: disks.DiskSpec,
                  cache: Path, log) -> dict[str, dict]:
    """Import a tiny disk in each format: completed = supported; a task refused saying the
    format is not supported = 'unsupported'; any other failure = 'error' (with the message)."""
    tiny = disks.DiskSpec(virtual_size=96 * MiB, data_size=8 * MiB, fs_size=16 * MiB,
                          seed=spec.seed)
    raw = disks.base_raw(cache / "probe", tiny)
    support = {}
    for name in names:
        fmt = FORMATS[name]
        image = disks.render(raw, fmt)
        key = f"probe/{image.name}"
        server.put(BUCKET, key, image)
        result = import_once(server, ec2, key, fmt.declared, timeout=120)
        server.drop(BUCKET, key)
        msg = result.message or ""
        if result.status == "completed":
            support[name] = {"status": "supported"}
        elif "not supported" in msg or "Unsupported specified file format" in msg:
            support[name] = {"status": "unsupported", "message": msg}
        else:
            support[name] = {"status": "error", "message": msg or result.status}
        log(f"  probe {name:17s} {support[name]['status']}"
            + (f" ({msg[:100]})" if support[name]["status"] == "error" else ""))
    return support


# ------------------------------------------------------------------ conversion


def run_conversion(server: VmimportServer, ec2, sampler: MemorySampler, names: list[str],
                   support: dict, base: Path, runs: int, work: Path, log,
                   timeout: float = 900, profile: set[str] = frozenset(),
                   profile_dir: Path | None = None, disk: str = "bench") -> list[dict]:
    """``profile``: formats to import once more under py-spy (not counted in the figures).
    ``disk``: which bench disk ``base`` is ("bench", "guest"), named in every row."""
    rows = []
    label = "" if disk == "bench" else f" [{disk}]"
    for name in names:
        fmt = FORMATS[name]
        row = {"section": "conversion", "format": name, "disk": disk,
               "target_speedup": fmt.target}
        rows.append(row)
        if support[name]["status"] != "supported":
            row.update(status=support[name]["status"], message=support[name].get("message", ""))
            log(f"  {name + label:17s} {row['status']}")
            continue
        t = time.perf_counter()
        image = disks.render(base, fmt)
        row["render_seconds"] = round(time.perf_counter() - t, 2)
        row["image_bytes"] = image.stat().st_size
        row["image_allocated_bytes"] = image.stat().st_blocks * 512
        key = f"conv/{image.name}"
        server.put(BUCKET, key, image)
        qemu, ours = timed_runs(server, ec2, fmt, image, key, runs, work, timeout, sampler)
        if name in profile and profile_dir is not None:
            from .profile import PySpy, log_summary

            server.clear_blocks()
            with PySpy(server.pid, profile_dir / f"profile-import-{name}-{disk}.txt") as spy:
                import_once(server, ec2, key, fmt.declared, timeout)
            row["profile"] = spy.summary()
        server.drop(BUCKET, key)
        server.clear_blocks()
        row.update(compared_runs(qemu, ours, fmt.target))
        row["vmimport_store_seconds"] = [r.store_seconds and round(r.store_seconds, 3)
                                         for r in ours]
        row["vmimport_polled_seconds"] = [round(r.polled_seconds, 3) for r in ours]
        row["vmimport_peak_rss_sum"] = max(r.peak_rss_sum for r in ours)
        if row["status"] == "error":
            log(f"  {name + label:17s} import failed: {row['message'][:200]}")
            continue
        q, v = row["qemu_median"], row["vmimport_median"]
        stored = [r.store_seconds for r in ours if r.store_seconds is not None]
        row["vmimport_store_median"] = round(statistics.median(stored), 3) if stored else None
        log(f"  {name + label:17s} vmimport {v:7.2f}s (store {_seconds(row['vmimport_store_median'])}, "
            f"{row['vmimport_cpu_median']:.2f} CPU-s)  qemu-img {q:7.2f}s "
            f"({row['qemu_cpu_median']:.2f} CPU-s)  x{q / v:5.2f} (target {fmt.target}x)  "
            f"PSS {row['vmimport_peak_rss'] / MiB:.0f} MiB")
        if "profile" in row:
            log_summary(row["profile"], log)
    return rows


# ------------------------------------------------------------------ growth


def run_growth(server: VmimportServer, ec2, sampler: MemorySampler, names: list[str],
               support: dict, spec: disks.DiskSpec, sizes: list[int], runs: int, cache: Path,
               work: Path, log, timeout: float) -> list[dict]:
    """The same data at growing virtual sizes: time and RSS relative to the smallest size."""
    rows = []
    for name in names:
        if support.get(name, {}).get("status") != "supported":
            rows.append({"section": "growth", "format": name,
                         "status": support.get(name, {}).get("status", "unsupported")})
            continue
        fmt = FORMATS[name]
        first = None
        for size in sizes:
            row = {"section": "growth", "format": name, "virtual_size": size}
            rows.append(row)
            raw = disks.grown_raw(cache, spec, size)
            image = disks.render(raw, fmt)
            key = f"growth/{image.name}"
            server.put(BUCKET, key, image)
            qemu, ours = timed_runs(server, ec2, fmt, image, key, runs, work, timeout, sampler)
            server.drop(BUCKET, key)
            server.clear_blocks()
            row["qemu_median"] = round(statistics.median(t.seconds for t in qemu), 3)
            row["vmimport_seconds"] = [round(r.seconds, 3) for r in ours]
            row["vmimport_peak_rss"] = max(r.peak_rss for r in ours)
            last = ours[-1]
            if last.status == "timeout":
                done = max(0, (last.progress or 5) - 5) / 80  # Progress climbs 5 -> 85
                row.update(status="timeout", vmimport_median=round(last.seconds, 3),
                           progress=last.progress,
                           estimated_seconds=round(last.seconds / done, 1) if done else None,
                           message=f"cancelled after {timeout:.0f}s at Progress "
                                   f"{last.progress}%")
            elif last.status != "completed":
                row.update(status="error", message=last.message)
                log(f"  {name:17s} {disks.human(size):>8s}  failed: {last.message[:200]}")
                continue
            else:
                row.update(status="measured",
                           vmimport_median=round(statistics.median(r.seconds for r in ours), 3))
            if first is None:
                first = row
                row.update(time_ratio=1.0, rss_ratio=1.0, pass_=True)
            else:
                row["time_ratio"] = round(row["vmimport_median"] / first["vmimport_median"], 3)
                row["rss_ratio"] = round(row["vmimport_peak_rss"] / first["vmimport_peak_rss"], 3)
                row["pass_"] = (row["status"] == "measured" and row["time_ratio"] <= 1.2
                                and row["rss_ratio"] <= 1.2)
            extra = (f" (timeout; estimated {row.get('estimated_seconds')}s in full)"
                     if row["status"] == "timeout" else "")
            log(f"  {name:17s} {disks.human(size):>8s}  vmimport {row['vmimport_median']:7.2f}s "
                f"x{row['time_ratio']:.2f} of {disks.human(sizes[0])}  PSS {row['vmimport_peak_rss'] / MiB:.0f} "
                f"MiB  qemu-img {row['qemu_median']:.2f}s{extra}")
            if row["status"] == "timeout":
                break  # a larger size would only take longer
    return rows
