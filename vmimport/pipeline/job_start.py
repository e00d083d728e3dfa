"""What every task job (import, export) shares: whether to run at all, where it learns to stop,
and how it ends completed."""

from __future__ import annotations

from datetime import datetime, timezone

from vmimport.jobs import queue
from vmimport.jobs.worker import JobControl

from .errors import ImportCancelled, ImportFailure


def should_run(control: JobControl, task, noun: str) -> bool:
    """False when there is nothing to do (the task vanished, or an earlier attempt finished
    it: the job is closed here); raises ``ImportCancelled`` for a cancelled task and
    ``ImportFailure`` once the job was attempted more often than ``max_attempts``."""
    if task is None:
        finish_job_only(control, "failed", "task vanished")
        return False
    if task.status == "deleting" or control.cancel_requested.is_set():
        raise ImportCancelled()
    if task.status != "active":
        finish_job_only(control, "done")
        return False
    if control.attempt > control.settings.max_attempts:
        raise ImportFailure(f"the {noun} was attempted {control.attempt - 1} times and its "
                            "worker stopped each time; giving up", kind="ServerError")
    return True


def give_back_if_transient(control: JobControl, exc: BaseException) -> None:
    """A failure of the database itself (``Database.is_transient``: a dropped connection, a
    deadlock, a statement cancelled) says nothing about the image: rather than end the task
    ``ServerError``, give the job back for another attempt, which resumes from the last
    finished volume. Returns (and the caller ends the task) for any other failure, or when
    this was the last attempt ``max_attempts`` allows."""
    if not control.db.is_transient(exc) or control.attempt >= control.settings.max_attempts:
        return
    try:
        queue.give_back(control.db, control.job_id, control.owner)
    except Exception:  # the database is still away: the lease runs out by itself
        pass
    raise queue.GivenBack(f"job {control.job_id} (task {control.task_id}), attempt "
                          f"{control.attempt}: the database failed ({type(exc).__name__}: "
                          f"{getattr(exc, 'orig', exc)}); given back for another attempt") from exc


def finish_job_only(control: JobControl, state: str, error: str | None = None) -> None:
    with control.db.write() as session:
        queue.finish(session, control.job_id, control.owner, state, error)


def stop_if_asked(control: JobControl) -> None:
    """Where a running job learns that it must stop: its lease was lost, or a cancel."""
    if control.lease_lost.is_set():
        raise queue.LeaseLost(f"job {control.job_id}")
    if control.cancel_requested.is_set():
        raise ImportCancelled()


def complete(control: JobControl, session, row) -> None:
    """The task ``row`` and its job end completed, in the caller's write ``session``."""
    row.status = "completed"
    row.status_message = None
    row.progress = None
    row.finished_at = datetime.now(timezone.utc)
    if not queue.finish(session, control.job_id, control.owner, "done"):
        raise queue.LeaseLost(f"job {control.job_id}")
