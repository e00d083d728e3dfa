"""ImportImage, ImportSnapshot, their Describe calls and CancelImportTask: creating tasks,
idempotency (ClientToken), the task state machine as the API shows it, and cancellation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy.exc import IntegrityError

from vmimport.db.models import ImportTask, TaskDisk
from vmimport.db.tasks import mark_cancelled
from vmimport.jobs import queue

from . import iam, import_rules
from .context import Context
from .errors import ApiError
from .idempotency import existing_for_token, request_digest
from vmimport.db.ids import new_id
from .listing import describe_owned
from .tag_store import set_tags, tag_list, tags_for

IMAGE_TASK, SNAPSHOT_TASK = "image", "snapshot"
_RESOURCE_TYPE = {IMAGE_TASK: "import-image-task", SNAPSHOT_TASK: "import-snapshot-task"}


def _existing_for_token(session, ctx: Context, token: str | None, digest: str, kind: str):
    return existing_for_token(session, ImportTask, ctx.account_id, token, digest,
                              lambda task: task.kind == kind)


def _create_task(ctx: Context, params: dict, kind: str, disks: list[dict], tags: list[dict],
                 fields: dict) -> dict:
    digest = request_digest(params)
    token = params.get("ClientToken")
    try:
        with ctx.db.write() as session:
            existing = _existing_for_token(session, ctx, token, digest, kind)
            if existing is not None:
                return render_task(session, ctx, existing)
            task = ImportTask(
                id=new_id(_RESOURCE_TYPE[kind]), account_id=ctx.account_id, kind=kind,
                client_token=token, request_digest=digest, status="active",
                status_message="pending", progress=1 if kind == IMAGE_TASK else 3,
                description=params.get("Description"),
                encrypted=bool(params.get("Encrypted")), kms_key_id=params.get("KmsKeyId"),
                role_name=params.get("RoleName") or "vmimport",
                client_data=_jsonable(params.get("ClientData")), **fields)
            for position, disk in enumerate(disks):
                bucket = disk.get("UserBucket") or {}
                task.disks.append(TaskDisk(
                    position=position, description=disk.get("Description"),
                    device_name=disk.get("DeviceName"), declared_format=disk.get("Format"),
                    format=disk.get("Format"), url=disk.get("Url"),
                    s3_bucket=bucket.get("S3Bucket"), s3_key=bucket.get("S3Key"),
                    source_snapshot_id=disk.get("SnapshotId"), status="active",
                    disk_image_size=0.0))
            session.add(task)
            session.flush()
            if tags:
                set_tags(session, ctx.account_id, task.id, _RESOURCE_TYPE[kind], tags)
            queue.enqueue(session, f"import-{kind}", task.id)
            result = render_task(session, ctx, task)
        queue.notify_workers()  # committed: a worker in this process may start now
        return result
    except IntegrityError:
        # Two requests with the same new token raced; the loser reads the winner's task.
        with ctx.db.read() as session:
            existing = _existing_for_token(session, ctx, token, digest, kind)
            if existing is None:
                raise
            return render_task(session, ctx, existing)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def import_image(ctx: Context, params: dict) -> dict:
    disks = import_rules.check_import_image(params)
    tags = import_rules.check_tag_specifications(params, "import-image-task")
    # The user's values as given (None = decide from the disk); inspection fills the rest in.
    fields = dict(
        architecture=params.get("Architecture"), platform=params.get("Platform"),
        boot_mode=params.get("BootMode"), hypervisor=params.get("Hypervisor"),
        license_type=params.get("LicenseType"), usage_operation=params.get("UsageOperation"),
        license_specifications=params.get("LicenseSpecifications"))
    iam.check_service_role(ctx, params.get("RoleName") or "vmimport")
    result = _create_task(ctx, params, IMAGE_TASK, disks, tags, fields)
    result.pop("BootMode", None)  # ImportImage's result has no BootMode; the Describe call does
    return result


def import_snapshot(ctx: Context, params: dict) -> dict:
    import_rules.check_client_token(params.get("ClientToken"))
    container = params.get("DiskContainer")
    if not container:
        raise ApiError("MissingParameter", "The request must contain the parameter DiskContainer")
    disk = import_rules.check_disk_container(container, "DiskContainer",
                                             import_rules.SNAPSHOT_FORMATS)
    import_rules.check_encryption(params)
    tags = import_rules.check_tag_specifications(params, "import-snapshot-task")
    import_rules.check_role_name(params.get("RoleName"))
    iam.check_service_role(ctx, params.get("RoleName") or "vmimport")
    return _create_task(ctx, params, SNAPSHOT_TASK, [disk], tags, {})


def render_task(session, ctx: Context, task: ImportTask, tags: dict | None = None) -> dict:
    """An ImportImageTask or ImportSnapshotTask as the API shows it."""
    if tags is None:
        tags = tags_for(session, ctx.account_id, [task.id]).get(task.id, {})
    active = task.status in ("active", "deleting")
    details = [_render_disk(d, task) for d in task.disks]
    if task.kind == SNAPSHOT_TASK:
        detail = details[0]
        detail.pop("DeviceName", None)
        detail["Encrypted"] = bool(task.encrypted)
        if task.kms_key_id:
            detail["KmsKeyId"] = task.kms_key_id
        # The task's own state is what the SnapshotImported waiter looks at.
        detail["Status"] = task.status
        if task.status_message:
            detail["StatusMessage"] = task.status_message
        else:
            detail.pop("StatusMessage", None)
        if active and task.progress is not None:
            detail["Progress"] = str(task.progress)
        else:
            detail.pop("Progress", None)
        out = {"ImportTaskId": task.id, "SnapshotTaskDetail": detail, "Tags": tag_list(tags)}
        if task.description is not None:
            out["Description"] = task.description
        return out
    out = {
        "ImportTaskId": task.id, "Status": task.status, "SnapshotDetails": details,
        "Tags": tag_list(tags), "Encrypted": bool(task.encrypted),
        "Architecture": task.architecture, "Platform": task.platform,
        "BootMode": task.boot_mode, "Hypervisor": task.hypervisor,
        "LicenseType": task.license_type, "UsageOperation": task.usage_operation,
        "KmsKeyId": task.kms_key_id, "Description": task.description,
        "ImageId": task.image_id,
        "LicenseSpecifications": task.license_specifications or None,
    }
    if task.status_message and task.status != "completed":
        out["StatusMessage"] = task.status_message
    if active and task.progress is not None:
        out["Progress"] = str(task.progress)
    return {k: v for k, v in out.items() if v is not None}


def _render_disk(disk: TaskDisk, task: ImportTask) -> dict:
    out = {"DiskImageSize": float(disk.disk_image_size or 0.0), "Status": disk.status}
    for key, value in (("Description", disk.description), ("DeviceName", disk.device_name),
                       ("Format", disk.format), ("SnapshotId", disk.snapshot_id),
                       ("Url", _shown_url(disk.url))):
        if value is not None:
            out[key] = value
    if disk.s3_bucket is not None:
        out["UserBucket"] = {"S3Bucket": disk.s3_bucket, "S3Key": disk.s3_key}
    if disk.status_message and disk.status != "completed":
        out["StatusMessage"] = disk.status_message
    if disk.status == "active" and disk.progress is not None:
        out["Progress"] = str(disk.progress)
    return out


def _shown_url(url: str | None) -> str | None:
    """An http(s) URL without its query string: a presigned URL's signature is a credential."""
    if url and url.split("://", 1)[0].lower() in ("http", "https"):
        return url.split("?", 1)[0]
    return url


def _describe(ctx: Context, params: dict, kind: str, result_key: str) -> dict:
    horizon = datetime.now(timezone.utc) - timedelta(days=ctx.settings.task_retention_days)

    def unknown_task(ids):
        return ApiError("InvalidConversionTaskId",
                        f"The import task id '{ids[0]}' does not exist (or finished more than "
                        f"{ctx.settings.task_retention_days:g} days ago)")

    return describe_owned(
        ctx, params, model=ImportTask, ids=params.get("ImportTaskIds"),
        not_found=unknown_task, where=[ImportTask.kind == kind],
        visible=lambda t: t.finished_at is None or t.finished_at >= horizon,
        attributes=lambda t, name: [t.status] if name == "task-state" else None,
        render=lambda session, t, tags: render_task(session, ctx, t, tags),
        result_key=result_key, page_bounds=(1, 500))


def describe_import_image_tasks(ctx: Context, params: dict) -> dict:
    return _describe(ctx, params, IMAGE_TASK, "ImportImageTasks")


def describe_import_snapshot_tasks(ctx: Context, params: dict) -> dict:
    return _describe(ctx, params, SNAPSHOT_TASK, "ImportSnapshotTasks")


def cancel_import_task(ctx: Context, params: dict) -> dict:
    task_id = params.get("ImportTaskId")
    if not task_id:
        raise ApiError("MissingParameter", "The request must contain the parameter ImportTaskId")
    with ctx.db.write() as session:
        task = session.get(ImportTask, task_id)
        if task is None or task.account_id != ctx.account_id:
            raise ApiError("InvalidConversionTaskId",
                           f"The import task id '{task_id}' does not exist")
        if task.status != "active":
            raise ApiError("IncorrectState",
                           f"The import task {task_id} cannot be cancelled: it is "
                           f"{task.status}, and only active tasks can be cancelled")
        reason = params.get("CancelReason")
        task.status = "deleting"
        task.status_message = "deleting"
        task.cancel_reason = reason
        if not queue.request_cancel(session, task.id):
            # No worker holds it: nothing to stop, so it is deleted at once.
            mark_cancelled(task)
    return {"ImportTaskId": task_id, "PreviousState": "active", "State": "deleting"}
