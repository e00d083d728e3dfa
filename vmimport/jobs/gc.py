"""Garbage collection: packs no snapshot uses any more, crash leftovers of the block store,
half-written exports, abandoned S3 uploads. ``vmimport gc`` runs it once; with the setting
``gc_every_hours`` every worker process keeps a ``GcSchedule``, and the workers of all machines
take turns through one database row so it runs once per interval wherever they are."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, or_, select, update

from vmimport.blockstore.interface import BlockStore, GarbageReport, LeftoverReport
from vmimport.config import Settings
from vmimport.db.models import Job, MaintenanceRun, Snapshot
from vmimport.db.session import Database

log = logging.getLogger("vmimport.gc")
MiB = 2**20
# How often a scheduled worker asks whether it is its turn (the interval itself is global).
CHECK_SECONDS = 300.0
# A manifest is written before its snapshot's row (an import, a copy): one without a row is an
# orphan only once older than any import or copy in flight could be.
ORPHAN_MANIFEST_SECONDS = 6 * 3600


class GcRefused(Exception):
    """The block store cannot be collected now (the file store while imports run)."""


@dataclass
class GcOutcome:
    uploads_removed: int
    upload_bytes: int
    store: GarbageReport
    exports: LeftoverReport
    abandoned_days: float
    orphan_manifests: int = 0

    def lines(self) -> list[str]:
        """What was removed, as ``vmimport gc`` prints it and the schedule logs it."""
        out = [f"removed {self.uploads_removed} abandoned S3 upload(s) older than "
               f"{self.abandoned_days:g} days, {self.upload_bytes / MiB:.1f} MiB",
               f"removed {self.store.packs_removed} unreferenced pack(s), "
               f"{self.store.bytes_removed / MiB:.1f} MiB",
               f"removed {self.store.leftovers.removed} leftover(s) of unfinished writes "
               f"(partial packs, half-written manifests), "
               f"{self.store.leftovers.bytes_removed / MiB:.1f} MiB",
               f"removed {self.exports.removed} half-written export(s) in local buckets, "
               f"{self.exports.bytes_removed / MiB:.1f} MiB",
               f"removed {self.orphan_manifests} manifest(s) of snapshots that no longer exist"]
        moved = self.store.compaction
        if moved.packs:
            out.append(f"compacted {moved.packs} sparse pack(s): moved the "
                       f"{moved.bytes_moved / MiB:.1f} MiB in use into a new pack and rewrote "
                       f"{moved.manifests_rewritten} manifest(s); a later run reclaims their "
                       f"{moved.bytes_to_reclaim / MiB:.1f} MiB once the grace has passed")
        if moved.damaged:
            out.append(f"not compacted, a block in use failed its digest: pack(s) "
                       f"{', '.join(moved.damaged)}")
        if self.store.unreferenced_bytes_kept:
            out.append(f"{self.store.unreferenced_bytes_kept / MiB:.1f} MiB of unreferenced "
                       "blocks remain inside packs that other snapshots still use (packs are "
                       "reclaimed whole; compacted once at most gc_compact_below is in use)")
        return out


def collect(settings: Settings, db: Database, store: BlockStore) -> GcOutcome:
    """One collection. Raises ``GcRefused`` on the file store while imports are queued or
    running (their blocks are in no manifest yet); the object store's writes hold their packs
    in the database, so it is collected alongside them."""
    from vmimport.pipeline.sinks import reclaim_partial_exports
    from vmimport.service.s3_multipart import remove_abandoned

    from vmimport.service.store_buckets import abort_abandoned_uploads

    uploads, upload_bytes = remove_abandoned(settings.buckets_dir,
                                             settings.s3_abandoned_upload_days * 86400)
    shared_uploads, shared_bytes = abort_abandoned_uploads(
        settings, settings.s3_abandoned_upload_days * 86400)
    uploads, upload_bytes = uploads + shared_uploads, upload_bytes + shared_bytes
    looked = time.time()
    with db.read() as session:
        busy = session.scalar(select(func.count()).select_from(Job)
                              .where(Job.state.in_(["queued", "running"])))
    if busy and not getattr(store, "gc_safe_during_imports", False):
        raise GcRefused(f"{busy} import job(s) are queued or running; run it when none are "
                        "(their blocks are not in a manifest yet)")
    grace = settings.gc_leftover_grace_hours * 3600
    orphans = remove_orphan_manifests(db, store, looked - max(grace, ORPHAN_MANIFEST_SECONDS))
    report = store.collect_garbage(grace, written_before=looked,
                                   compact_below=settings.gc_compact_below)
    exports = reclaim_partial_exports(settings, grace)
    return GcOutcome(uploads, upload_bytes, report, exports, settings.s3_abandoned_upload_days,
                     orphans)


def remove_orphan_manifests(db: Database, store: BlockStore, written_before: float) -> int:
    """Delete the manifests written before ``written_before`` whose snapshot has no row: a
    DeleteSnapshot whose manifest delete failed after its commit, or a manifest a compaction
    rewrote just as its snapshot was deleted. Their blocks are then collected as any others.
    How many."""
    candidates = store.manifests_written_before(written_before)
    removed = 0
    for start in range(0, len(candidates), 500):
        batch = candidates[start:start + 500]
        with db.read() as session:
            known = set(session.scalars(select(Snapshot.id).where(Snapshot.id.in_(batch))))
        for snapshot_id in batch:
            if snapshot_id not in known:
                store.delete_manifest(snapshot_id)
                log.info("deleted the manifest of %s: no such snapshot", snapshot_id)
                removed += 1
    return removed


def take_turn(db: Database, worker: str, every: timedelta) -> bool:
    """Whether ``worker`` runs gc now: true for exactly one worker of all machines once
    ``every`` has passed since the last run started (one conditional UPDATE decides)."""
    now = datetime.now(timezone.utc)
    with db.write() as session:
        won = session.execute(
            update(MaintenanceRun)
            .where(MaintenanceRun.name == "gc",
                   or_(MaintenanceRun.started_at.is_(None),
                       MaintenanceRun.started_at <= now - every))
            .values(started_at=now, started_by=worker[:128]))
        return won.rowcount == 1


class GcSchedule:
    """A worker's thread that runs gc when it is this worker's turn (setting
    ``gc_every_hours``); a failed run is logged, and the next interval tries again."""

    def __init__(self, settings: Settings, db: Database, store: BlockStore, worker: str,
                 check_seconds: float = CHECK_SECONDS):
        self.settings, self.db, self.store, self.worker = settings, db, store, worker
        self.every = timedelta(hours=settings.gc_every_hours)
        self.check_seconds = min(check_seconds, self.every.total_seconds())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gc-schedule", daemon=True)

    def start(self) -> "GcSchedule":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                if take_turn(self.db, self.worker, self.every):
                    self._run()
                elif first:  # say once that the schedule is on, and who ran it last
                    with self.db.read() as session:
                        last = session.get(MaintenanceRun, "gc")
                    log.info("scheduled gc every %g h: not due yet (last started %s by %s)",
                             self.settings.gc_every_hours, last.started_at, last.started_by)
            except Exception:  # the database away, say: the next check tries again
                log.exception("scheduled gc: could not take its turn")
            first = False
            self._stop.wait(self.check_seconds)

    def _run(self) -> None:
        log.info("scheduled gc started by %s (every %g h)", self.worker,
                 self.settings.gc_every_hours)
        try:
            outcome = collect(self.settings, self.db, self.store)
        except GcRefused as refused:
            log.info("scheduled gc skipped: %s", refused)
            return
        except Exception:
            log.exception("scheduled gc failed")
            return
        for line in outcome.lines():
            log.info("scheduled gc: %s", line)
