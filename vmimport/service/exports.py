"""ExportImage, DescribeExportImageTasks and CancelExportTask: an AMI's boot volume written to a
bucket as VMDK (stream-optimized), VHD (dynamic) or RAW, by a worker (``pipeline.run_export``).

Checked at once: the image (this account's, available, no larger than AWS exports), the format,
the bucket name, the service role (as for imports), one export per image at a time. The bucket's
existence and the role's S3 and KMS permissions are checked by the worker, as on AWS, and fail
the task with a ``ClientError:`` that says what was missing.
"""

from __future__ import annotations

import re
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vmimport.db.ids import new_id
from vmimport.db.models import ExportTask, Snapshot
from vmimport.db.tasks import end_export
from vmimport.jobs import queue

from . import iam, import_rules
from .context import Context
from .sharing import owned_image
from .errors import ApiError, invalid_value, missing
from .idempotency import existing_for_token, request_digest
from .listing import describe_tasks
from .task_cancel import cancel_task
from .tag_store import set_tags, tag_list, tags_for

RESOURCE_TYPE = "export-image-task"
JOB_KIND = "export-image"
MAX_EXPORT_BYTES = 1024 ** 4  # AWS: volumes larger than 1 TiB cannot be exported
# S3's bucket naming rules (the ones every S3 implementation enforces).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024


def export_image(ctx: Context, params: dict) -> dict:
    import_rules.check_client_token(params.get("ClientToken"))
    image_id = params.get("ImageId")
    if not image_id:
        raise missing("ImageId")
    location = params.get("S3ExportLocation") or {}
    bucket, prefix = location.get("S3Bucket"), location.get("S3Prefix") or ""
    if not bucket:
        raise missing("S3ExportLocation.S3Bucket")
    _check_location(bucket, prefix)
    fmt = params["DiskImageFormat"]
    role = params.get("RoleName") or "vmimport"
    import_rules.check_role_name(params.get("RoleName"))
    tags = import_rules.check_tag_specifications(params, RESOURCE_TYPE)
    digest = request_digest(params)
    token = params.get("ClientToken")
    with ctx.db.read() as session:  # the image before the role: another account's is not found
        existing = existing_for_token(session, ExportTask, ctx.account_id, token, digest)
        if existing is not None:
            return render_export(session, existing, with_request=True)
        _check_image(session, ctx, image_id)
    iam.check_service_role(ctx, role)
    try:
        with ctx.db.write() as session:
            existing = existing_for_token(session, ExportTask, ctx.account_id, token, digest)
            if existing is not None:
                return render_export(session, existing, with_request=True)
            _check_not_exporting(session, ctx, image_id)  # again, under the write lock
            task = ExportTask(
                id=new_id(RESOURCE_TYPE), account_id=ctx.account_id, client_token=token,
                request_digest=digest, status="active", status_message="validating",
                progress=0, description=params.get("Description"), image_id=image_id,
                disk_image_format=fmt, s3_bucket=bucket, s3_prefix=prefix or None,
                role_name=role)
            session.add(task)
            session.flush()
            if tags:
                set_tags(session, ctx.account_id, task.id, RESOURCE_TYPE, tags)
            queue.enqueue(session, JOB_KIND, task.id)
            result = render_export(session, task, with_request=True)
        queue.notify_workers()
        return result
    except IntegrityError:  # two requests with the same new token raced; the loser reads
        with ctx.db.read() as session:
            existing = existing_for_token(session, ExportTask, ctx.account_id, token, digest)
            if existing is None:
                raise
            return render_export(session, existing, with_request=True)


def _check_location(bucket: str, prefix: str) -> None:
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise invalid_value("S3ExportLocation.S3Bucket", bucket[:70], "A bucket name is 3-63 "
                            "lower-case letters, digits, dots and hyphens, starting and ending "
                            "with a letter or digit.")
    if len(prefix.encode()) > MAX_KEY_BYTES - 40:  # room for "<task id>.vmdk"
        raise invalid_value("S3ExportLocation.S3Prefix", prefix[:70] + "...",
                            f"The prefix and the exported file's name must fit in an S3 key "
                            f"({MAX_KEY_BYTES} bytes).")


def _check_image(session, ctx: Context, image_id: str) -> None:
    # Only the owner exports: an image shared with the caller is AuthFailure.
    image = owned_image(session, image_id, ctx.account_id)
    if image.state != "available":
        raise ApiError("IncorrectState", f"The image {image_id} is {image.state}; only an "
                       "available image can be exported")
    root = image.mappings[0] if image.mappings else None
    snapshot = session.get(Snapshot, root.snapshot_id) if root is not None else None
    if snapshot is None:
        raise ApiError("InvalidParameter", f"The image {image_id} has no boot volume snapshot "
                       "to export")
    if snapshot.size_bytes > MAX_EXPORT_BYTES:
        raise ApiError("InvalidParameter", f"The boot volume of {image_id} is "
                       f"{snapshot.size_bytes} bytes; volumes larger than 1 TiB cannot be "
                       "exported")
    _check_not_exporting(session, ctx, image_id)


def _check_not_exporting(session, ctx: Context, image_id: str) -> None:
    running = session.scalar(select(ExportTask.id).where(
        ExportTask.account_id == ctx.account_id, ExportTask.image_id == image_id,
        ExportTask.status.in_(("active", "deleting"))).limit(1))
    if running is not None:
        raise ApiError("IncorrectState", f"The image {image_id} is already being exported by "
                       f"{running}; one export task per image can run at a time")


def render_export(session, task: ExportTask, tags: dict | None = None,
                  with_request: bool = False) -> dict:
    """An ExportImageTask as the API shows it (ExportImage's answer adds the request's
    DiskImageFormat and RoleName)."""
    if tags is None:
        tags = tags_for(session, task.account_id, [task.id]).get(task.id, {})
    location = {"S3Bucket": task.s3_bucket}
    if task.s3_prefix:
        location["S3Prefix"] = task.s3_prefix
    out = {"ExportImageTaskId": task.id, "ImageId": task.image_id, "Status": task.status,
           "S3ExportLocation": location, "Tags": tag_list(tags)}
    if task.description is not None:
        out["Description"] = task.description
    if task.status_message and task.status != "completed":
        out["StatusMessage"] = task.status_message
    if task.status in ("active", "deleting") and task.progress is not None:
        out["Progress"] = str(task.progress)
    if with_request:
        out["DiskImageFormat"] = task.disk_image_format
        out["RoleName"] = task.role_name
    return out


def describe_export_image_tasks(ctx: Context, params: dict) -> dict:
    return describe_tasks(
        ctx, params, model=ExportTask, ids=params.get("ExportImageTaskIds"),
        not_found_code="InvalidExportTaskID.NotFound", noun="export task",
        render=lambda session, t, tags: render_export(session, t, tags),
        result_key="ExportImageTasks")


def cancel_export_task(ctx: Context, params: dict) -> dict:
    cancel_task(ctx, ExportTask, params["ExportTaskId"], "InvalidExportTaskID.NotFound",
                "export task", "Cancelled by the user",
                lambda task: end_export(task, "Cancelled by the user"))
    return {}
