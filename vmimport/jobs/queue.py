"""Durable jobs in the database: enqueue, claim with a lease, heartbeat, cancel, finish.

A worker owns a job while its lease lasts and renews it by heartbeat. A worker that dies stops
renewing; once the lease has expired any worker may claim the job again (``attempts`` counts the
claims). On PostgreSQL claiming uses ``FOR UPDATE SKIP LOCKED``; on SQLite the write transaction
(``BEGIN IMMEDIATE``) already serialises claimers.
"""

from __future__ import annotations

import errno
import os
import select as io_select  # sqlalchemy.select is the other one here
import threading
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from vmimport.db.models import Job


# How an enqueue wakes idle workers at once instead of at their next poll: `serve`'s worker
# process sleeps on the read end of a pipe whose write end the API process holds
# (`add_wake_pipe` / `listen_for_wakes`). Other workers (`vmimport worker` on its own) find jobs
# by polling the database and sleep on an Event between polls, which their own stop() sets.
_work_arrived = threading.Event()
_wake_pipes: list[int] = []  # write ends, in the API process
_wake_fd: int | None = None  # read end, in a worker process
_local_read: int | None = None  # see listen_for_wakes
parent_gone = threading.Event()  # the read end hit EOF: the process holding the write end died
_on_parent_gone = None  # see listen_for_wakes


def add_wake_pipe(write_fd: int) -> None:
    os.set_blocking(write_fd, False)
    _wake_pipes.append(write_fd)


def listen_for_wakes(read_fd: int, on_parent_gone=None) -> None:
    """Sleep on ``read_fd`` between polls; ``on_parent_gone()`` is called once when its write
    end is closed (the process holding it died)."""
    global _wake_fd, _local_read, _on_parent_gone
    os.set_blocking(read_fd, False)
    _wake_fd = read_fd
    _on_parent_gone = on_parent_gone
    # In that process notify_workers is WorkerPool.stop's: a pipe of its own, never drained,
    # ends every wait from then on, so the threads stop without waiting out a poll.
    _local_read, local_write = os.pipe()
    add_wake_pipe(local_write)


def notify_workers() -> None:
    """Call after the transaction that enqueued a job has committed."""
    _work_arrived.set()
    for fd in list(_wake_pipes):
        try:
            os.write(fd, b"!")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.EBADF):  # that worker process is gone
                _wake_pipes.remove(fd)


def wait_for_work(timeout: float) -> None:
    if _wake_fd is None:
        if _work_arrived.wait(timeout):
            _work_arrived.clear()
        return
    if parent_gone.is_set():  # nothing will write to the pipe again: just poll
        time.sleep(timeout)
        return
    readable, _, _ = io_select.select([_wake_fd, _local_read], [], [], timeout)
    if _wake_fd in readable:
        try:
            if os.read(_wake_fd, 4096) == b"" and not parent_gone.is_set():
                parent_gone.set()
                if _on_parent_gone is not None:
                    _on_parent_gone()
        except BlockingIOError:
            pass  # another thread of this process took the wake-up: it is a poll all the same


class LeaseLost(Exception):
    """Another worker took the job over (our lease expired); stop working on it at once."""


class GivenBack(Exception):
    """The job stopped on a passing failure (the database's) and was given back: the next
    claim takes it up again as another attempt."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def enqueue(session: Session, kind: str, task_id: str) -> Job:
    job = Job(kind=kind, task_id=task_id, state="queued")
    session.add(job)
    return job


def claim(db, owner: str, lease_seconds: float, kinds: list[str] | None = None) -> Job | None:
    """Take the oldest job that is queued, or running with an expired lease."""
    now = _now()
    claimable = (select(Job)
                 .where(or_(Job.state == "queued",
                            (Job.state == "running") & (Job.lease_expires_at < now)))
                 .order_by(Job.id).limit(1))
    if kinds:
        claimable = claimable.where(Job.kind.in_(kinds))
    # Look before taking the write lock: every idle worker thread claims when an enqueue wakes
    # them, all but one in vain, and on SQLite each of those write transactions made the
    # running import's next write (and the API's) wait for the lock.
    with db.read() as session:
        if session.scalar(claimable.with_only_columns(Job.id)) is None:
            return None
    with db.write() as session:
        job = session.scalar(claimable if db.is_sqlite
                             else claimable.with_for_update(skip_locked=True))
        if job is None:
            return None
        job.state = "running"
        job.lease_owner = owner
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
        job.heartbeat_at = now
        job.attempts += 1
        job.updated_at = now
        session.flush()
        session.expunge(job)
        return job


def heartbeat(db, job_id: int, owner: str, lease_seconds: float) -> bool:
    """Renew the lease; returns whether a cancel was requested. Raises LeaseLost if the job
    is no longer ours."""
    now = _now()
    with db.write() as session:
        result = session.execute(
            update(Job).where(Job.id == job_id, Job.lease_owner == owner,
                              Job.state == "running")
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds),
                    heartbeat_at=now, updated_at=now)
            .returning(Job.cancel_requested))
        row = result.first()
    if row is None:
        raise LeaseLost(f"job {job_id} is no longer leased by {owner}")
    return bool(row[0])


def request_cancel(session: Session, task_id: str) -> bool:
    """Flag the task's job for cancellation. Returns True if a worker is (or may be) running
    it and will finish the cancellation, False if it was still queued (now cancelled here)."""
    job = session.scalar(select(Job).where(Job.task_id == task_id,
                                           Job.state.in_(["queued", "running"])))
    if job is None:
        return False
    job.updated_at = _now()
    if job.state == "queued":
        job.state = "done"
        job.last_error = "cancelled before it started"
        return False
    job.cancel_requested = True
    return True


def finish(session: Session, job_id: int, owner: str, state: str,
           error: str | None = None) -> bool:
    """Mark the job done/failed, in the caller's transaction (together with the task's final
    state). Returns False if the job is no longer ours — the caller must then roll back."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == owner, Job.state == "running")
        .values(state=state, last_error=error, lease_expires_at=None, updated_at=_now()))
    return result.rowcount == 1


def give_back(db, job_id: int, owner: str) -> None:
    """Release ``owner``'s lease at once (no owner, expired now), so that any worker claims the
    job again without waiting out the lease; its heartbeat then finds the job gone."""
    with db.write() as session:
        session.execute(
            update(Job).where(Job.id == job_id, Job.lease_owner == owner,
                              Job.state == "running")
            .values(lease_owner=None, lease_expires_at=_now(), updated_at=_now()))


def still_owned(session: Session, job_id: int, owner: str) -> bool:
    job = session.get(Job, job_id)
    return job is not None and job.lease_owner == owner and job.state == "running"
