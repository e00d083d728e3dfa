"""``DescribeImportTaskDetail`` (vmimport's own call, beyond EC2's shapes): one import task in
full — the phases it passed with their times, every disk with its sizes, and what inspection
found on the boot volume. The console's task detail and the CLI's summary read it."""

from __future__ import annotations

from datetime import datetime

from vmimport.db.models import ImportTask, Snapshot

from .context import Context
from .errors import ApiError


def describe_import_task_detail(ctx: Context, params: dict) -> dict:
    task_id = params["ImportTaskId"]
    with ctx.db.read() as session:
        task = session.get(ImportTask, task_id)
        if task is None or task.account_id != ctx.account_id:
            raise ApiError("ResourceNotFoundException",
                           f"The import task {task_id} does not exist in this account")
        snapshots = {s.id: s for s in session.query(Snapshot).filter(
            Snapshot.id.in_([d.snapshot_id for d in task.disks if d.snapshot_id]))}
        disks = [_disk(number, disk, snapshots.get(disk.snapshot_id))
                 for number, disk in enumerate(task.disks, 1)]
        # Inside the session: phases and inspection are loaded on first use (deferred).
        return {"ImportTaskId": task.id, "Kind": task.kind, "Status": task.status,
                "StatusMessage": task.status_message, "Progress": task.progress,
                "CreatedAt": task.created_at, "FinishedAt": task.finished_at,
                "Phases": _phases(task), "Disks": disks, "Inspection": task.inspection}


def _phases(task: ImportTask) -> list[dict]:
    """Queued when created, the worker's phases, and the end (completed, or deleted: failed or
    cancelled) when it finished."""
    phases = [{"Phase": "queued", "Time": task.created_at}]
    for entry in task.phases or []:
        phase = {"Phase": entry["Phase"], "Time": datetime.fromisoformat(entry["Time"])}
        if entry.get("Disk") is not None:
            phase["Disk"] = entry["Disk"]
        phases.append(phase)
    if task.finished_at is not None:
        phases.append({"Phase": task.status, "Time": task.finished_at})
    return phases


def _disk(number: int, disk, snapshot: Snapshot | None) -> dict:
    if disk.s3_bucket:
        source = f"s3://{disk.s3_bucket}/{disk.s3_key}"
    else:
        source = disk.url or disk.source_snapshot_id
    found = {"DiskNumber": number, "Source": source, "Format": disk.format,
             "DiskImageSize": int(disk.disk_image_size or 0), "Status": disk.status,
             "StatusMessage": disk.status_message, "SnapshotId": disk.snapshot_id}
    if snapshot is not None:
        found.update(VirtualSize=snapshot.size_bytes, StoredBytes=snapshot.stored_bytes,
                     SharedBlocks=snapshot.shared_blocks, Encrypted=snapshot.encrypted)
    return found
