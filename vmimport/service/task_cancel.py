"""Cancelling a task (CancelImportTask, CancelExportTask): only an active task of the caller's
may be; a worker holding it is told to stop, one nobody holds ends at once."""

from __future__ import annotations

import logging
from typing import Callable

from vmimport.jobs import queue

from .context import Context
from .errors import ApiError

log = logging.getLogger("vmimport.service")


def cancel_task(ctx: Context, model, task_id: str, not_found_code: str, noun: str,
                reason: str | None, end_now: Callable) -> None:
    with ctx.db.write() as session:
        task = session.get(model, task_id)
        if task is None or task.account_id != ctx.account_id:
            raise ApiError(not_found_code, f"The {noun} id '{task_id}' does not exist")
        if task.status != "active":
            raise ApiError("IncorrectState", f"The {noun} {task_id} cannot be cancelled: it is "
                           f"{task.status}, and only active tasks can be cancelled")
        task.status = "deleting"
        task.status_message = "deleting"
        task.cancel_reason = reason
        held = queue.request_cancel(session, task.id)
        if not held:
            end_now(task)  # no worker holds it: nothing to stop, so it ends at once
    # The reason is the user's own text: repr() keeps it on one log line.
    log.info("%s %s cancelled by account %s (%s)%s", noun, task_id, ctx.account_id,
             "its worker told to stop" if held else "ended at once: no worker held it",
             f", reason {reason[:200]!r}" if reason else "")
