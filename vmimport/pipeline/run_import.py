"""One import job, start to finish: source ▶ format ▶ blockstore ▶ register.

Each finished volume is a checkpoint: its snapshot (manifest + row) is committed together with
the disk's ``snapshot_id``, so a job resumed by another worker skips it. Every failure ends the
task ``deleted`` with a ``ClientError: ...`` / ``ServerError: ...`` message, and the snapshots the
task had made are removed (no AMI refers to them).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone

from sqlalchemy import update

from vmimport.blockstore.interface import BlockStore, BlockStoreFull
from vmimport.blockstore.manifest import BlockStoreError, Manifest
from vmimport.blockstore.reader import SnapshotBlocks
from vmimport.blockstore.writer import write_snapshot
from vmimport.db.models import ImportTask, Snapshot, TaskDisk
from vmimport.db.tasks import mark_cancelled, mark_failed
from vmimport.jobs import queue
from vmimport.jobs.worker import JobControl
from vmimport.db.ids import new_id
from vmimport.inspect import Decision, decide, inspect_disk
from vmimport.service.sharing import may_read_snapshot
from vmimport.service import snapshot_keys
from vmimport.service.snapshot_keys import SnapshotKeyError, TaskKey

from . import access, encryption
from .boot_check import check_boot
from .errors import ImportCancelled, ImportFailure
from .job_start import complete, give_back_if_transient, should_run, stop_if_asked
from .formats import Limits, open_guest_disks
from .register import register_imported_image
from .source import open_source
from .task_record import add_phase, inspection_record

log = logging.getLogger("vmimport.pipeline")

# Where each phase puts the task's Progress (AWS shows a climbing percentage).
PROGRESS_VALIDATING, PROGRESS_CONVERTING, PROGRESS_CONVERTED, PROGRESS_AMI = 2, 5, 85, 95
PROGRESS_BOOTING, PROGRESS_BOOTED = 88, 93
GIB = 1024 ** 3
MAX_VOLUMES = 21


def run_import_job(control: JobControl) -> None:
    db, settings = control.db, control.settings
    store = control.blocks
    with db.read() as session:
        task = session.get(ImportTask, control.task_id)
        disks = list(task.disks) if task else []
    try:
        if not should_run(control, task, "import"):
            return
        key = encryption.task_key(db, settings, task)  # now, asynchronously, as on AWS
        reporter = ProgressReporter(control, task, disks)
        # The first volume this attempt writes is the boot volume unless an earlier attempt
        # wrote it: its manifest is kept (only it: one takes 57 MiB per 100 GiB of data) so
        # inspection need not read it back.
        first_written: tuple[str, Manifest] | None = None
        for disk in _pending_disks(control, store):
            written = _import_disk(control, store, task, key, disk, reporter)
            first_written = first_written or written
        booting = task.kind == "image" and control.settings.boot_check
        # AWS's order: ... converting, preparing to boot, booting, booted, preparing ami.
        reporter.phase("preparing to boot" if booting else
                       "preparing ami" if task.kind == "image" else "completing",
                       PROGRESS_CONVERTED if booting else PROGRESS_AMI)
        decision = (_inspect_boot_volume(control, store, task, first_written)
                    if task.kind == "image" else None)
        if booting:
            decision = _boot_check(control, store, task, decision, reporter)
            reporter.phase("preparing ami", PROGRESS_AMI)
        _complete(control, task, decision)
    except ImportCancelled:
        _end_task(control, store, failure=None)
    except ImportFailure as failure:
        log.info("task %s failed: %s", task.id, failure.status_message)
        _end_task(control, store, failure=failure)
    except SnapshotKeyError as exc:
        log.info("task %s failed: %s", task.id, exc)
        _end_task(control, store, ImportFailure(str(exc)))
    except queue.LeaseLost:
        raise
    except BlockStoreFull as exc:
        log.error("task %s: %s", task.id, exc)
        _end_task(control, store, ImportFailure(f"the import stopped: {exc}", "ServerError"))
    except BlockStoreError as exc:
        _end_task(control, store, ImportFailure(f"the block store failed: {exc}", "ServerError"))
    except Exception as exc:
        if db.is_out_of_space(exc):  # the write that ends the task may fail too; it is tried
            log.error("task %s: the database's disk is full (%s)", task.id, exc)
            _end_task(control, store, ImportFailure(
                f"the import stopped: no space left for the database ({db.location()})",
                "ServerError"))
            return
        give_back_if_transient(control, exc)
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
        self.done = sum(1 for d in disks if d.snapshot_id)  # finished by an earlier attempt
        self._last_write = 0.0
        self._message: str | None = None
        self._throttled_disk, self._throttle_start = None, 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        stop_if_asked(self.control)

    def phase(self, message: str, progress: int, disk: TaskDisk | None = None,
              disk_values: dict | None = None) -> None:
        self.check()
        self._write(message, progress, disk, disk_values or {})

    def converting(self, disk: TaskDisk, done: int, total: int, data_done: int) -> None:
        """``done``: guest bytes passed (holes included), for progress; ``data_done``: bytes
        of data read, which is what the throttle limits (a hole costs no I/O)."""
        self.check()
        self._throttle(disk, data_done)
        now = time.monotonic()
        if now - self._last_write < 0.5 and self._message == "converting":
            return  # the first "converting" is written at once, then twice a second
        fraction = done / total if total else 1.0
        share = (PROGRESS_CONVERTED - PROGRESS_CONVERTING) / self.disk_count
        progress = int(PROGRESS_CONVERTING + share * (min(self.done, self.disk_count - 1)
                                                       + fraction))
        self._write("converting", progress, disk, {"progress": max(1, int(fraction * 100))})

    def _throttle(self, disk: TaskDisk, done: int) -> None:
        """Keep one import under ``import_max_bytes_per_second`` (bytes of data read from the
        source; holes of a sparse disk are not read, so not counted), so imports leave I/O
        for the rest of the host; still answers a cancel while it waits."""
        rate = self.control.settings.import_max_bytes_per_second
        if not rate:
            return
        if self._throttled_disk != disk.id:
            self._throttled_disk, self._throttle_start = disk.id, time.monotonic()
        while (wait := done / rate - (time.monotonic() - self._throttle_start)) > 0:
            time.sleep(min(wait, 0.1))
            self.check()

    def _write(self, message, progress, disk, disk_values) -> None:
        with self._lock:
            self._last_write = time.monotonic()
            entered = message != self._message
            self._message = message
            with self.control.db.write() as session:
                if entered:  # a new phase (or disk): kept with its time for the detail
                    row = session.get(ImportTask, self.task_id)
                    if row is not None and row.status == "active":
                        add_phase(row, message, disk.position + 1 if disk is not None else None)
                session.execute(update(ImportTask)
                                .where(ImportTask.id == self.task_id,
                                       ImportTask.status == "active")
                                .values(status_message=message, progress=progress))
                if disk is not None and disk_values:
                    session.execute(update(TaskDisk).where(TaskDisk.id == disk.id)
                                    .values(**disk_values))


def _tallied(extents, tally: list[int]):
    """``extents`` as they are, adding the bytes of data each holds to ``tally[0]``."""
    for offset, data in extents:
        tally[0] += len(data)
        yield offset, data


def _pending_disks(control: JobControl, store: BlockStore):
    """The task's disks without a finished snapshot, in order, re-read after each one (an OVA
    adds rows for its other disks while its first is imported). A disk whose snapshot exists
    was finished by an earlier attempt and is skipped: that is the checkpoint."""
    while True:
        with control.db.read() as session:
            task = session.get(ImportTask, control.task_id)
            pending = [d for d in task.disks
                       if not (d.snapshot_id and store.has_manifest(d.snapshot_id))]
        if not pending:
            return
        yield pending[0]


def _add_container_members(control: JobControl, disk: TaskDisk, count: int,
                           reporter: "ProgressReporter") -> None:
    """A container with several disks (OVA) becomes one TaskDisk row per disk, the first time
    it is opened; each row is then imported (and checkpointed) on its own."""
    if count <= 1 or disk.member_index != 0:
        return
    with control.db.write() as session:
        task = session.get(ImportTask, control.task_id)
        if any(d.position == disk.position and d.member_index > 0 for d in task.disks):
            return  # added by an earlier attempt
        total = len(task.disks) + count - 1
        if total > MAX_VOLUMES:
            raise ImportFailure(
                f"Disk validation failed [Unsupported OVA format] disk container "
                f"{disk.position + 1} holds {count} disks, which makes {total} volumes; an "
                f"imported image can have at most {MAX_VOLUMES}")
        for member in range(1, count):
            task.disks.append(TaskDisk(
                position=disk.position, member_index=member, description=disk.description,
                declared_format=disk.declared_format, format=disk.format, url=disk.url,
                s3_bucket=disk.s3_bucket, s3_key=disk.s3_key, status="active",
                disk_image_size=0.0))
    reporter.disk_count = total


def _import_disk(control: JobControl, store: BlockStore, task: ImportTask, key: TaskKey | None,
                 disk: TaskDisk, reporter: ProgressReporter) -> tuple[str, Manifest]:
    settings = control.settings
    reporter.phase("validating", PROGRESS_VALIDATING, disk,
                   {"status_message": "validating", "progress": 0})
    snapshot_id = new_id("snapshot")
    sealing = key.sealing(control.db, settings, snapshot_id) if key is not None else None
    if disk.source_snapshot_id:
        manifest, size, fmt = _copy_snapshot_source(control, store, task, disk, sealing)
        disk_image_size = size
    else:
        access.check_source(control.db, task, disk, settings)
        source = open_source(settings, bucket=disk.s3_bucket, key=disk.s3_key, url=disk.url,
                             db=control.db)
        try:
            limits = Limits(max_virtual_size=settings.max_virtual_size,
                            inflate_threads=settings.inflate_threads)
            guests = open_guest_disks(source, disk.declared_format, limits)
            _add_container_members(control, disk, len(guests), reporter)
            guest = guests[disk.member_index]
            member = getattr(guest, "source", None)  # an OVA member: its own size
            fmt, size = guest.format, guest.virtual_size
            disk_image_size = member.size if member is not None else source.size
            reporter.phase("validated", PROGRESS_CONVERTING, disk,
                           {"status_message": "validated", "format": fmt,
                            "disk_image_size": float(disk_image_size)})
            started = time.monotonic()
            data = [0]  # bytes of data the extents held so far
            manifest = write_snapshot(
                store, size, _tallied(guest.deferred_extents(), data),
                on_progress=lambda done: reporter.converting(disk, done, size, data[0]),
                cipher=sealing and sealing.cipher, encryption=sealing and sealing.record)
            log.info("task %s: %s volume %d stored in %.3fs (%d blocks, %d of them shared "
                     "with blocks stored already)", task.id, fmt, disk.position + 1,
                     time.monotonic() - started, len(manifest.blocks), manifest.shared_blocks)
        finally:
            source.close()
    reporter.check()
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
            stored_bytes=len(manifest.blocks) * manifest.block_size,
            shared_blocks=manifest.shared_blocks,
            encrypted=bool(task.encrypted), kms_key_id=task.kms_key_id if task.encrypted else None,
            source_task_id=task.id, started_at=now, completed_at=now))
        row = session.get(TaskDisk, disk.id)
        row.snapshot_id = snapshot_id
        row.status = "completed"
        row.status_message = None
        row.progress = None
        row.format = fmt
        row.disk_image_size = float(disk_image_size)
    disk.snapshot_id = snapshot_id
    reporter.done += 1
    return snapshot_id, manifest


def _copy_snapshot_source(control, store, task, disk, sealing):
    """DiskContainer.SnapshotId: the guest disk is an existing snapshot of this account (or
    one shared with it); the new snapshot shares its blocks (a manifest copy, no data is
    moved)."""
    with control.db.read() as session:
        source = session.get(Snapshot, disk.source_snapshot_id)
        if source is None or not may_read_snapshot(source, task.account_id):
            raise ImportFailure(f"Disk validation failed [Invalid snapshot] the snapshot "
                                f"{disk.source_snapshot_id} does not exist in this account "
                                "(nor is it shared with it)")
        if source.state != "completed":
            raise ImportFailure(f"the snapshot {source.id} is {source.state}, not completed")
    manifest = encryption.copy_source_snapshot(control.db, control.settings, store, task,
                                               source, store.read_manifest(source.id), sealing)
    return manifest, manifest.size_bytes, disk.declared_format


def _inspect_boot_volume(control: JobControl, store: BlockStore, task: ImportTask,
                         known: tuple[str, Manifest] | None) -> Decision:
    """ImportImage: read the boot volume (the first disk) back from its snapshot, find out what
    it is, and decide Platform/Architecture/BootMode/licensing as AWS does (or refuse).
    ``known``: (snapshot id, manifest) in hand; any other manifest is read from the store."""
    with control.db.read() as session:
        snapshot_ids = [d.snapshot_id for d in session.get(ImportTask, task.id).disks]
    snapshot_id = snapshot_ids[0]
    manifests = [known[1] if known is not None and known[0] == sid else store.read_manifest(sid)
                 for i, sid in enumerate(snapshot_ids) if i == 0 or sid]
    with contextlib.ExitStack() as stack:  # the other disks: for volume groups that span them
        disks = [stack.enter_context(encryption.snapshot_reader(control.db, control.settings, store,
                                                                task, m)) for m in manifests]
        inspection = inspect_disk(disks[0], manifests[0].size_bytes,
                                  deadline_seconds=control.settings.inspect_deadline_seconds,
                                  other_disks=[(d, m.size_bytes) for d, m in zip(disks[1:], manifests[1:])])
    log.info("task %s: boot volume %s inspected in %.3fs: %s", task.id, snapshot_id,
             inspection.seconds, _inspection_summary(inspection))
    with control.db.write() as session:  # kept before deciding: a refusal shows it too
        session.get(ImportTask, task.id).inspection = inspection_record(inspection)
    return decide(inspection, {
        "Platform": task.platform, "Architecture": task.architecture,
        "BootMode": task.boot_mode, "LicenseType": task.license_type,
        "UsageOperation": task.usage_operation, "Hypervisor": task.hypervisor})


def _boot_check(control: JobControl, store: BlockStore, task: ImportTask, decision: Decision,
                reporter: ProgressReporter) -> Decision:
    """The ``booting`` phase (setting ``boot_check``): the boot volume must come up in QEMU;
    the AMI's description then says so."""
    if decision.platform != "Linux":
        # Windows is not watched yet (its boot manager prints nothing on the serial port).
        log.info("task %s: boot check skipped: only Linux guests are checked", task.id)
        return decision
    settings = control.settings
    reporter.phase("booting", PROGRESS_BOOTING)
    with control.db.read() as session:
        snapshot_id = session.get(ImportTask, task.id).disks[0].snapshot_id
    manifest = store.read_manifest(snapshot_id)
    cipher = snapshot_keys.snapshot_cipher(control.db, settings, manifest, task.account_id)
    result = check_boot(SnapshotBlocks(store, manifest, cipher), decision.boot_mode,
                        seconds=settings.boot_check_seconds,
                        memory_mib=settings.boot_check_memory_mib,
                        work_dir=settings.data_dir / "boot-check", stop=reporter.check)
    log.info("task %s: booted (%s) in %.1fs", task.id, result.reached, result.seconds)
    reporter.phase("booted", PROGRESS_BOOTED)
    return replace(decision, description=f"{decision.description} - booted ({result.reached}, "
                                         f"{decision.boot_mode})")


def _inspection_summary(inspection) -> str:
    """What inspection found, or why it found no operating system (its findings say why)."""
    if inspection.os_family is None:
        why = "; ".join(inspection.findings[-3:]) or "no partition or filesystem held one"
        return f"no operating system found ({why})"
    modes = ", ".join(sorted(inspection.boot_modes)) or "none found"
    name = inspection.os_name or inspection.os_family
    architecture = inspection.architecture or "architecture unknown"
    return f"{name} ({architecture}), kernel {inspection.kernel or 'unknown'}, boot modes {modes}"


def _complete(control: JobControl, task: ImportTask, decision: Decision | None) -> None:
    with control.db.write() as session:
        row = session.get(ImportTask, task.id)
        if row.status != "active":
            raise ImportCancelled()  # cancelled between the last check and now
        if decision is not None:
            row.platform, row.architecture = decision.platform, decision.architecture
            row.boot_mode, row.license_type = decision.boot_mode, decision.license_type
            row.usage_operation = decision.usage_operation
        if task.kind == "image":
            register_imported_image(session, row, decision)
        complete(control, session, row)


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

