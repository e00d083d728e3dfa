"""One export job: an AMI's boot volume ▶ format writer ▶ sink (the bucket).

The task's role must be allowed ``s3:GetBucketLocation`` and ``s3:GetBucketAcl`` on the bucket
and ``s3:PutObject`` on the object (and, for an encrypted snapshot, ``kms:DescribeKey`` and
``kms:Decrypt`` on its key: AWS refuses encrypted exports, vmimport decrypts them). The object
appears only when complete; a cancelled or failed export leaves nothing. Every failure ends the
task ``deleted`` with a ``ClientError: ...`` / ``ServerError: ...`` message.
"""

from __future__ import annotations

import errno
import logging
import threading
import time

from sqlalchemy import update

from vmimport.blockstore.interface import BlockStore, BlockStoreError
from vmimport.blockstore.reader import SnapshotBlocks
from vmimport.db.models import ExportTask, Image, Snapshot
from vmimport.db.tasks import end_export
from vmimport.jobs import queue
from vmimport.jobs.worker import JobControl
from vmimport.service.snapshot_keys import SnapshotKeyError, snapshot_cipher

from . import access
from .errors import ImportCancelled, ImportFailure
from .job_start import complete, give_back_if_transient, should_run, stop_if_asked
from .formats.vhd_writer import write_vhd
from .formats.vmdk_stream_writer import write_vmdk_stream
from .formats.writers import write_raw
from .sinks import open_sink

log = logging.getLogger("vmimport.pipeline")

PROGRESS_VALIDATED, PROGRESS_CONVERTED = 5, 98


def run_export_job(control: JobControl) -> None:
    db, settings = control.db, control.settings
    store = control.blocks
    with db.read() as session:
        task = session.get(ExportTask, control.task_id)
        if task is not None:
            session.expunge(task)
    sink = None
    try:
        if not should_run(control, task, "export"):
            return
        progress = ExportProgress(control, task)
        blocks = _boot_volume(control, store, task)
        progress.size = blocks.size
        access.check_bucket_owner(db, settings, task, task.s3_bucket)
        bucket_arn = f"arn:aws:s3:::{task.s3_bucket}"
        access.require(db, task, [("s3:GetBucketLocation", bucket_arn),
                                  ("s3:GetBucketAcl", bucket_arn),
                                  ("s3:PutObject", f"{bucket_arn}/{task.object_key}")])
        progress.phase("converting", PROGRESS_VALIDATED)
        sink = _open_sink(settings, db, task, blocks.size)
        started = time.monotonic()
        WRITERS[task.disk_image_format](blocks, sink, progress.converting)
        progress.check()
        sink.commit()
        sink = None
        log.info("export %s: %s of %s (%d bytes) written to s3://%s/%s in %.3fs", task.id,
                 task.disk_image_format, task.image_id, blocks.size, task.s3_bucket,
                 task.object_key, time.monotonic() - started)
        _complete(control, task)
    except ImportCancelled:
        _end(control, sink, None)
    except ImportFailure as failure:
        log.info("export %s failed: %s", task.id, failure.status_message)
        _end(control, sink, failure)
    except SnapshotKeyError as exc:
        _end(control, sink, ImportFailure(f"{exc} (the export reads it decrypted)"))
    except queue.LeaseLost:
        if sink is not None:
            sink.abort()
        raise
    except BlockStoreError as exc:
        _end(control, sink, ImportFailure(f"the block store failed: {exc}", "ServerError"))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        _end(control, sink, ImportFailure(
            f"no space left in the bucket directory {settings.buckets_dir / task.s3_bucket} "
            "for the export", "ServerError"))
    except Exception as exc:  # noqa: BLE001 - the task must end, whatever broke
        give_back_if_transient(control, exc)
        log.exception("export %s: unexpected error", task.id)
        _end(control, sink, ImportFailure(
            f"internal error while exporting ({type(exc).__name__}); the server log has "
            f"details under job {control.job_id}", kind="ServerError"))


WRITERS = {"RAW": write_raw, "VHD": write_vhd,
           "VMDK": lambda blocks, sink, progress: write_vmdk_stream(blocks, sink, progress,
                                                                    threads=2)}


class ExportProgress:
    """Writes Progress/StatusMessage at most twice a second, and is where the writer learns
    that it must stop (cancel, or the lease was lost)."""

    def __init__(self, control: JobControl, task: ExportTask):
        self.control, self.task_id = control, task.id
        self.size = 0  # the guest disk's, once known
        self._last = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        stop_if_asked(self.control)

    def phase(self, message: str, progress: int) -> None:
        self.check()
        self._write(message, progress)

    def converting(self, done: int) -> None:
        self.check()
        if time.monotonic() - self._last < 0.5:
            return
        fraction = done / self.size if self.size else 1.0
        self._write("converting", int(PROGRESS_VALIDATED +
                                      (PROGRESS_CONVERTED - PROGRESS_VALIDATED) * fraction))

    def _write(self, message: str, progress: int) -> None:
        with self._lock:
            self._last = time.monotonic()
            with self.control.db.write() as session:
                session.execute(update(ExportTask).where(ExportTask.id == self.task_id,
                                                         ExportTask.status == "active")
                                .values(status_message=message, progress=progress))


def _boot_volume(control: JobControl, store: BlockStore, task: ExportTask) -> SnapshotBlocks:
    """The image's boot volume as the writers read it, decrypted if the role may use its key."""
    with control.db.read() as session:
        image = session.get(Image, task.image_id)
        root = image.mappings[0] if image is not None and image.mappings else None
        snapshot = session.get(Snapshot, root.snapshot_id) if root is not None else None
    if snapshot is None:
        raise ImportFailure(f"the image {task.image_id} (or its boot volume snapshot) no longer "
                            "exists")
    manifest = store.read_manifest(snapshot.id)
    cipher = snapshot_cipher(control.db, control.settings, manifest, task.account_id,
                             access.role_authorizer(control.db, task))
    return SnapshotBlocks(store, manifest, cipher)


def _open_sink(settings, db, task: ExportTask, size: int):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return open_sink(settings, task.s3_bucket, task.object_key, size, db)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        raise ImportFailure(f"the export bucket {task.s3_bucket} cannot be written on the S3 "
                            f"endpoint: {code or err}") from None
    except BotoCoreError as err:
        raise ImportFailure(f"cannot reach the S3 endpoint to write the export: {err}",
                            "ServerError") from None


def _complete(control: JobControl, task: ExportTask) -> None:
    with control.db.write() as session:
        row = session.get(ExportTask, task.id)
        complete(control, session, row)


def _end(control: JobControl, sink, failure: ImportFailure | None) -> None:
    """Cancelled (failure None) or failed: nothing of the export stays, the task ends deleted."""
    if sink is not None:
        sink.abort()
    with control.db.write() as session:
        row = session.get(ExportTask, control.task_id)
        end_export(row, "Cancelled by the user" if failure is None else failure.status_message)
        state = "done" if failure is None else "failed"
        error = None if failure is None else failure.status_message
        if not queue.finish(session, control.job_id, control.owner, state, error):
            raise queue.LeaseLost(f"job {control.job_id}")

