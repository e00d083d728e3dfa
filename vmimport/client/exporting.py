"""``vmimport export ami-... out.vmdk``: ExportImage to a bucket, followed to its end, then the
file downloaded (and removed from the bucket unless --keep)."""

from __future__ import annotations

import time
from pathlib import Path

from botocore.exceptions import ClientError as BotoError

from . import output
from .importing import POLL_SECONDS
from .session import ClientError, error_text, resolve
from .transfer import download, ensure_bucket

FORMATS = {".vmdk": "VMDK", ".vhd": "VHD", ".raw": "RAW", ".img": "RAW"}


def add_arguments(parser) -> None:
    parser.add_argument("image_id", metavar="AMI", help="the image to export (ami-...)")
    parser.add_argument("target", help="the file to write: .vmdk, .vhd or .raw decides the "
                        "format unless --format says")
    parser.add_argument("--format", choices=["VMDK", "VHD", "RAW"], type=str.upper)
    parser.add_argument("--bucket", default="vmimport-exports", help="where the export is "
                        "written before the download (created if missing)")
    parser.add_argument("--prefix", default="exports/", help="key prefix in the bucket")
    parser.add_argument("--role-name", help="the service role (default vmimport)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the exported object in the bucket after the download")


def run(args) -> int:
    target = Path(args.target)
    fmt = args.format or FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ClientError(f"{target}: name a .vmdk, .vhd or .raw file, or give --format")
    endpoint = resolve(args)
    quiet = args.output == "json"
    ec2, s3 = endpoint.client("ec2"), endpoint.client("s3")
    ensure_bucket(s3, args.bucket, endpoint.region)
    params = {"ImageId": args.image_id, "DiskImageFormat": fmt,
              "S3ExportLocation": {"S3Bucket": args.bucket, "S3Prefix": args.prefix}}
    if args.role_name:
        params["RoleName"] = args.role_name
    try:
        task_id = ec2.export_image(**params)["ExportImageTaskId"]
        output.stderr.print(f"{task_id} started")
        task = _follow(ec2, task_id, quiet)
    except BotoError as exc:
        raise ClientError(error_text(exc)) from None
    except KeyboardInterrupt:
        ec2.cancel_export_task(ExportTaskId=task_id)
        output.stderr.print(f"{task_id} cancelled")
        return 130
    if task.get("Status") != "completed":
        if quiet:
            output.print_json({"Task": task})
        raise ClientError(f"{task_id} failed: {task.get('StatusMessage') or task.get('Status')}")
    key = f"{args.prefix}{task_id}.{fmt.lower()}"
    download(endpoint, args.bucket, key, target, quiet)
    if not args.keep:
        s3.delete_object(Bucket=args.bucket, Key=key)
    if quiet:
        output.print_json({"Task": task, "File": str(target), "Bytes": target.stat().st_size})
    else:
        output.stdout.print(f"{args.image_id} exported to {target} "
                            f"({target.stat().st_size / 2**20:.1f} MiB, {fmt})")
    return 0


def _follow(ec2, task_id: str, quiet: bool) -> dict:
    with output.task_progress(quiet) as progress:
        bar = progress.add_task(task_id, total=100, phase="active")
        while True:
            task = ec2.describe_export_image_tasks(ExportImageTaskIds=[task_id])[
                "ExportImageTasks"][0]
            if task.get("Status") in ("completed", "deleted"):
                return task
            progress.update(bar, completed=float(task.get("Progress") or 0),
                            phase=task.get("StatusMessage") or task.get("Status", ""))
            time.sleep(POLL_SECONDS)
