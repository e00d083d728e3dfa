"""The ``copy-image`` job: an encrypted CopyImage's blocks re-sealed under the copy's key (the
source opened with its own), then the image ``available`` — or ``failed`` with a StateReason
and its snapshots in ``error``, their manifests dropped. The call (``service/copy_image.py``)
has checked the keys already; this meets only what changed since (a key disabled, the source
deleted) and the block store's own failures."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from vmimport.blockstore.interface import BlockStoreError
from vmimport.blockstore.writer import reseal_snapshot
from vmimport.db.models import Image, Snapshot
from vmimport.jobs import queue
from vmimport.jobs.worker import JobControl
from vmimport.service import snapshot_keys

from .job_start import finish_job_only

log = logging.getLogger("vmimport.copy")

KEY_REASON = "Client.InvalidKMSKey.InvalidState"
SERVER_REASON = "Server.InternalError"


class CopyFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def run_copy_job(control: JobControl) -> None:
    with control.db.read() as session:
        image = session.get(Image, control.task_id)
        if image is None or image.state != "pending":  # deregistered, or an attempt ended it
            finish_job_only(control, "done")
            return
        account = image.account_id
        volumes = [session.get(Snapshot, m.snapshot_id) for m in image.mappings]
        work = [(v.id, v.source_snapshot_id, v.kms_key_id) for v in volumes if v is not None]
    written: list[str] = []
    try:
        if control.attempt > control.settings.max_attempts:
            raise CopyFailed(SERVER_REASON, f"the copy was attempted {control.attempt - 1} "
                             "times and its worker stopped each time; giving up")
        for copy_id, source_id, key_arn in work:
            if control.lease_lost.is_set():
                raise queue.LeaseLost(f"job {control.job_id}")
            _copy_volume(control, account, copy_id, source_id, key_arn)
            written.append(copy_id)
    except CopyFailed as exc:
        log.warning("copy to %s failed: %s", control.task_id, exc)
        for snapshot_id in written:
            control.blocks.delete_manifest(snapshot_id)
        _end(control, [], "failed", exc.code, str(exc))
        return
    _end(control, written, "available")


def _copy_volume(control: JobControl, account: str, copy_id: str, source_id: str | None,
                 key_arn: str | None) -> None:
    db, settings, store = control.db, control.settings, control.blocks
    with db.read() as session:
        if source_id is None or session.get(Snapshot, source_id) is None:
            raise CopyFailed(SERVER_REASON, f"the source snapshot {source_id} was deleted "
                             "during the copy")
    try:
        manifest = store.read_manifest(source_id)
        if key_arn is None:  # a plaintext volume of an image that also has encrypted ones
            store.write_manifest(copy_id, manifest)
            return
        key = snapshot_keys.resolve_task_key(db, settings, account, key_arn)
        sealing = key.sealing(db, settings, copy_id)
        source_cipher = snapshot_keys.snapshot_cipher(db, settings, manifest, account)
        store.write_manifest(copy_id, reseal_snapshot(store, manifest, source_cipher,
                                                      sealing.cipher, sealing.record))
    except snapshot_keys.SnapshotKeyError as exc:
        raise CopyFailed(KEY_REASON, str(exc)) from None
    except (BlockStoreError, OSError) as exc:
        raise CopyFailed(SERVER_REASON, f"the block store failed: {exc}") from None


def _end(control: JobControl, written: list[str], state: str, code: str | None = None,
         message: str | None = None) -> None:
    now = datetime.now(timezone.utc)
    with control.db.write() as session:
        image = session.get(Image, control.task_id)
        if not queue.finish(session, control.job_id, control.owner,
                            "done" if state == "available" else "failed", message):
            raise queue.LeaseLost(f"job {control.job_id}")
        if image is None:  # deregistered while it was copied: its manifests go too
            for snapshot_id in written:
                if session.get(Snapshot, snapshot_id) is None:
                    control.blocks.delete_manifest(snapshot_id)
            return
        image.state, image.state_reason_code, image.state_reason_message = state, code, message
        for mapping in image.mappings:
            snapshot = session.get(Snapshot, mapping.snapshot_id)
            if snapshot is not None:
                snapshot.state = "completed" if state == "available" else "error"
                snapshot.completed_at = now
