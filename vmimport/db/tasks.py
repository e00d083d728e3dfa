"""Final states of an import or export task, shared by the API (cancel before any worker started) and the
pipeline (failure, or cancel noticed by the worker)."""

from datetime import datetime, timezone

from .models import ExportTask, ImportTask


def mark_cancelled(task: ImportTask) -> None:
    reason = f": {task.cancel_reason}" if task.cancel_reason else ""
    _end(task, f"Cancelled by the user{reason}")


def mark_failed(task: ImportTask, status_message: str) -> None:
    _end(task, status_message)


def _end(task: ImportTask, status_message: str) -> None:
    task.status = "deleted"
    task.status_message = status_message
    task.progress = None
    task.finished_at = datetime.now(timezone.utc)
    for disk in task.disks:
        disk.status = "deleted"
        disk.status_message = None
        disk.progress = None


def end_export(task: ExportTask, status_message: str) -> None:
    """A cancelled or failed export ends ``deleted`` (as on AWS), saying why."""
    task.status = "deleted"
    task.status_message = status_message
    task.progress = None
    task.finished_at = datetime.now(timezone.utc)
