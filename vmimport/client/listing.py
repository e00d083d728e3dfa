"""``vmimport tasks [--watch]``, ``vmimport images``, ``vmimport snapshots``: the caller's
import and export tasks, AMIs and snapshots, as tables or JSON."""

from __future__ import annotations

import time

from botocore.exceptions import ClientError as BotoError
from rich.live import Live

from . import output
from .session import ClientError, error_text, resolve

WATCH_SECONDS = 2.0


def _pages(call, key: str, **params) -> list[dict]:
    items, token = [], None
    while True:
        page = call(**params, **({"NextToken": token} if token else {}))
        items += page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return items


def _tasks(ec2) -> dict:
    return {"ImportImageTasks": _pages(ec2.describe_import_image_tasks, "ImportImageTasks"),
            "ImportSnapshotTasks": _pages(ec2.describe_import_snapshot_tasks,
                                          "ImportSnapshotTasks"),
            "ExportImageTasks": _pages(ec2.describe_export_image_tasks, "ExportImageTasks")}


def _tasks_table(found: dict):
    rows = []
    for task in found["ImportImageTasks"]:
        rows.append([task["ImportTaskId"], "image", task.get("Status"), task.get("Progress"),
                     task.get("StatusMessage"), task.get("ImageId")])
    for task in found["ImportSnapshotTasks"]:
        detail = task.get("SnapshotTaskDetail", {})
        rows.append([task["ImportTaskId"], "snapshot", detail.get("Status"),
                     detail.get("Progress"), detail.get("StatusMessage"),
                     detail.get("SnapshotId")])
    for task in found["ExportImageTasks"]:
        target = task.get("S3ExportLocation", {})
        rows.append([task["ExportImageTaskId"], "export", task.get("Status"),
                     task.get("Progress"), task.get("StatusMessage"),
                     f"s3://{target.get('S3Bucket', '')}/{target.get('S3Prefix', '')}"])
    return output.table("tasks", ["task", "kind", "status", "%", "message", "result"], rows)


def tasks(args) -> int:
    ec2 = resolve(args).client("ec2")
    try:
        if args.output == "json":
            output.print_json(_tasks(ec2))
        elif not args.watch:
            output.stdout.print(_tasks_table(_tasks(ec2)))
        else:
            with Live(_tasks_table(_tasks(ec2)), console=output.stdout) as live:
                try:
                    while True:
                        time.sleep(WATCH_SECONDS)
                        live.update(_tasks_table(_tasks(ec2)))
                except KeyboardInterrupt:
                    pass  # the way out of --watch
    except BotoError as exc:
        raise ClientError(error_text(exc)) from None
    return 0


def images(args) -> int:
    ec2 = resolve(args).client("ec2")
    try:
        found = ec2.describe_images(Owners=["self"])["Images"]
    except BotoError as exc:
        raise ClientError(error_text(exc)) from None
    if args.output == "json":
        output.print_json(found)
        return 0
    rows = [[i["ImageId"], i.get("Name"), i.get("State"), i.get("PlatformDetails"),
             i.get("Architecture"), i.get("BootMode"), i.get("CreationDate"),
             ", ".join(m.get("Ebs", {}).get("SnapshotId", "")
                       for m in i.get("BlockDeviceMappings", []) if m.get("Ebs"))]
            for i in sorted(found, key=lambda i: i.get("CreationDate", ""))]
    output.stdout.print(output.table("images", ["AMI", "name", "state", "platform", "arch",
                                                "boot mode", "created", "snapshots"], rows))
    return 0


def snapshots(args) -> int:
    ec2 = resolve(args).client("ec2")
    try:
        found = _pages(ec2.describe_snapshots, "Snapshots", OwnerIds=["self"])
    except BotoError as exc:
        raise ClientError(error_text(exc)) from None
    if args.output == "json":
        output.print_json(found)
        return 0
    rows = [[s["SnapshotId"], f"{s.get('VolumeSize')} GiB", s.get("State"),
             "yes" if s.get("Encrypted") else "no", s.get("StartTime"), s.get("Description")]
            for s in sorted(found, key=lambda s: str(s.get("StartTime", "")))]
    output.stdout.print(output.table("snapshots", ["snapshot", "size", "state", "encrypted",
                                                   "started", "description"], rows))
    return 0
