"""One import job, start to finish: source ▶ format ▶ blockstore ▶ register.

Each finished volume is a checkpoint: its snapshot (manifest + row) is committed together with
the disk's ``snapshot_id``, so a job resumed by another worker skips it. Every failure ends the
task ``deleted`` with a ``ClientError: ...`` / ``ServerError: ...`` message, and the snapshots the
task had made are removed (no AMI refers to them).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from sqlalchemy import update

from vmimport.blockstore.store import BlockStore, BlockStoreError
from vmimport.blockstore.writer import write_snapshot
from vmimport.db.models import ImportTask, Snapshot, TaskDisk
from vmimport.db.tasks import mark_cancelled, mark_failed
from vmimport.jobs import queue
from vmimport.jobs.worker import JobControl
from vmimport.db.ids import new_id

from .errors import ImportCancelled, ImportFailure
from .formats import Limits, open_guest_disk
from .register import register_image
from .source import open_source

log = logging.getLogger("vmimport.pipeline")

# Where each phase puts the task's Progress (AWS shows a climbing percentage).
PROGRESS_VALIDATING, PROGRESS_CONVERTING, PROGRESS_CONVERTED, PROGRESS_AMI = 2, 5, 85, 95
GIB = 1024 ** 3


def run_import_job(control: JobControl) -> None:
    db, settings = control.db, control.settings
    store = BlockStore(settings.blocks_dir)
    with db.read() as session:
        task = session.get(ImportTask, control.task_id)
        disks = list(task.disks) if task else []
    if task is None:
        _finish_job_only(control, "failed", "task vanished")
        return
    try:
        if task.status == "deleting" or control.cancel_requested.is_set():
            raise ImportCancelled()
        if task.status != "active":  # already finished by an earlier attempt
            _finish_job_only(control, "done")
            return
        if control.attempt > settings.max_attempts:
            raise ImportFailure(f"the import was attempted {control.attempt - 1} times and its "
                                "worker stopped each time; giving up", kind="ServerError")
        if task.encrypted:
            raise ImportFailure("Encrypted imports are not supported yet by this server "
                                "(KMS is not implemented); import without Encrypted/KmsKeyId")
        reporter = ProgressReporter(control, task, disks)
        for disk in disks:
            if disk.snapshot_id and store.has_manifest(disk.snapshot_id):
                continue  # finished by an earlier attempt
            _import_disk(control, store, task, disk, reporter)
        reporter.phase("preparing ami" if task.kind == "image" else "completing",
                       PROGRESS_AMI)
        _complete(control, task)
    except ImportCancelled:
        _end_task(control, store, failure=None)
    except ImportFailure as failure:
        log.info("task %s failed: %s", task.id, failure.status_message)
        _end_task(control, store, failure=failure)
    except queue.LeaseLost:
        raise
    except BlockStoreError as exc:
        _end_task(control, store, ImportFailure(f"the block store failed: {exc}", "ServerError"))
    except Exception as exc:
        log.exception("task %s: unexpected error", task.id)
        _end_task(control, store, ImportFailure(
            f"internal error while importing ({type(exc).__name__}); the server log has "
            f"details under job {control.job_id}", kind="ServerError"))


class ProgressReporter:
    """Writes Progress/StatusMessage to the database at most a few times a second, and is
    where the pipeline learns that it must stop (cancel, or the lease was lost)."""

    def __init__(self, control: JobControl, task: ImportTask, disks: list[TaskDisk]):
        self.control = control
        self.task_id = task.id
        self.kind = task.kind
        self.disk_count = len(disks)
        self._last_write = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        if self.control.lease_lost.is_set():
            raise queue.LeaseLost(f"job {self.control.job_id}")
        if self.control.cancel_requested.is_set():
            raise ImportCancelled()

    def phase(self, message: str, progress: int, disk: TaskDisk | None = None,
              disk_values: dict | None = None) -> None:
        self.check()
        self._write(message, progress, disk, disk_values or {})

    def converting(self, disk: TaskDisk, done: int, total: int) -> None:
        self.check()
        now = time.monotonic()
        if now - self._last_write < 0.5:
            return
        fraction = done / total if total else 1.0
        share = (PROGRESS_CONVERTED - PROGRESS_CONVERTING) / self.disk_count
        progress = int(PROGRESS_CONVERTING + share * (disk.position + fraction))
        self._write("converting", progress, disk, {"progress": max(1, int(fraction * 100))})

    def _write(self, message, progress, disk, disk_values) -> None:
        with self._lock:
            self._last_write = time.monotonic()
            with self.control.db.write() as session:
                session.execute(update(ImportTask)
                                .where(ImportTask.id == self.task_id,
                                       ImportTask.status == "active")
                                .values(status_message=message, progress=progress))
                if disk is not None and disk_values:
                    session.execute(update(TaskDisk).where(TaskDisk.id == disk.id)
                                    .values(**disk_values))


def _import_disk(control: JobControl, store: BlockStore, task: ImportTask, disk: TaskDisk,
                 reporter: ProgressReporter) -> None:
    settings = control.settings
    reporter.phase("validating", PROGRESS_VALIDATING, disk,
                   {"status_message": "validating", "progress": 0})
    if disk.source_snapshot_id:
        manifest, size, fmt = _copy_snapshot_source(control, store, task, disk)
        disk_image_size = size
    else:
        source = open_source(settings, bucket=disk.s3_bucket, key=disk.s3_key, url=disk.url)
        try:
            limits = Limits(max_virtual_size=settings.max_virtual_size,
                            inflate_threads=settings.inflate_threads)
            guest = open_guest_disk(source, disk.declared_format, limits)
            fmt, size, disk_image_size = guest.format, guest.virtual_size, source.size
            reporter.phase("validated", PROGRESS_CONVERTING, disk,
                           {"status_message": "validated", "format": fmt,
                            "disk_image_size": float(disk_image_size)})
            manifest = write_snapshot(
                store, size, guest.extents(),
                on_progress=lambda done: reporter.converting(disk, done, size))
        finally:
            source.close()
    reporter.check()
    snapshot_id = new_id("snapshot")
    store.write_manifest(snapshot_id, manifest)
    now = datetime.now(timezone.utc)
    with control.db.write() as session:
        if not queue.still_owned(session, control.job_id, control.owner):
            store.delete_manifest(snapshot_id)
            raise queue.LeaseLost(f"job {control.job_id}")
        session.add(Snapshot(
            id=snapshot_id, account_id=task.account_id,
            description=f"Created by AWS-VMImport service for {task.id}",
            state="completed", volume_size=max(1, -(-size // GIB)), size_bytes=size,
            stored_bytes=len(manifest.blocks) * manifest.block_size, encrypted=False,
            source_task_id=task.id, started_at=now, completed_at=now))
        row = session.get(TaskDisk, disk.id)
        row.snapshot_id = snapshot_id
        row.status = "completed"
        row.status_message = None
        row.progress = None
        row.format = fmt
        row.disk_image_size = float(disk_image_size)
    disk.snapshot_id = snapshot_id


def _copy_snapshot_source(control, store, task, disk):
    """DiskContainer.SnapshotId: the guest disk is an existing snapshot of this account; the new
    snapshot shares its blocks (a manifest copy, no data is moved)."""
    with control.db.read() as session:
        source = session.get(Snapshot, disk.source_snapshot_id)
        if source is None or source.account_id != task.account_id:
            raise ImportFailure(f"Disk validation failed [Invalid snapshot] the snapshot "
                                f"{disk.source_snapshot_id} does not exist in this account")
        if source.state != "completed":
            raise ImportFailure(f"the snapshot {source.id} is {source.state}, not completed")
        if source.encrypted:
            raise ImportFailure(f"the snapshot {source.id} is encrypted; encrypted snapshots "
                                "are not supported yet by this server")
    manifest = store.read_manifest(source.id)
    return manifest, manifest.size_bytes, disk.declared_format


def _complete(control: JobControl, task: ImportTask) -> None:
    with control.db.write() as session:
        row = session.get(ImportTask, task.id)
        if row.status != "active":
            raise ImportCancelled()  # cancelled between the last check and now
        if task.kind == "image":
            register_image(session, row)
        row.status = "completed"
        row.status_message = None
        row.progress = None
        row.finished_at = datetime.now(timezone.utc)
        if not queue.finish(session, control.job_id, control.owner, "done"):
            raise queue.LeaseLost(f"job {control.job_id}")


def _end_task(control: JobControl, store: BlockStore, failure: ImportFailure | None) -> None:
    """Cancelled (failure None) or failed: the task ends ``deleted``; its snapshots go."""
    doomed = []
    with control.db.write() as session:
        task = session.get(ImportTask, control.task_id)
        for disk in task.disks:
            if disk.snapshot_id:
                snapshot = session.get(Snapshot, disk.snapshot_id)
                if snapshot is not None:
                    session.delete(snapshot)
                doomed.append(disk.snapshot_id)
                disk.snapshot_id = None
        if failure is None:
            mark_cancelled(task)
        else:
            mark_failed(task, failure.status_message)
        state = "done" if failure is None else "failed"
        error = None if failure is None else failure.status_message
        if not queue.finish(session, control.job_id, control.owner, state, error):
            raise queue.LeaseLost(f"job {control.job_id}")
    for snapshot_id in doomed:
        store.delete_manifest(snapshot_id)


def _finish_job_only(control: JobControl, state: str, error: str | None = None) -> None:
    with control.db.write() as session:
        queue.finish(session, control.job_id, control.owner, state, error)
