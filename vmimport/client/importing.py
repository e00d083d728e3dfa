"""``vmimport import``: a disk (a local file, uploaded first; an s3:// object; an https:// URL)
to an AMI (ImportImage) or a snapshot (ImportSnapshot), followed to its end."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError as BotoError

from . import output
from .session import ClientError, Endpoint, error_text, resolve
from .transfer import upload

FORMATS = {".vmdk": "VMDK", ".vhd": "VHD", ".vhdx": "VHDX", ".ova": "OVA", ".raw": "RAW",
           ".img": "RAW", ".qcow2": "QCOW2"}
POLL_SECONDS = 1.0


def add_arguments(parser) -> None:
    parser.add_argument("source", help="a local file (uploaded through the S3 API first), "
                        "s3://bucket/key, or an https:// URL")
    parser.add_argument("--snapshot", action="store_true",
                        help="ImportSnapshot: a snapshot only, no AMI (and no inspection)")
    parser.add_argument("--format", help="VMDK, VHD, VHDX, OVA, RAW, QCOW2 (default: from the "
                        "file name; the server checks the bytes either way)")
    parser.add_argument("--description")
    parser.add_argument("--encrypted", action="store_true", help="encrypt the snapshots")
    parser.add_argument("--kms-key-id", help="the KMS key (default with --encrypted: "
                        "alias/aws/ebs)")
    parser.add_argument("--boot-mode", choices=["legacy-bios", "uefi", "uefi-preferred"])
    parser.add_argument("--platform", choices=["Linux", "Windows"])
    parser.add_argument("--architecture", choices=["x86_64", "i386", "arm64"])
    parser.add_argument("--license-type", choices=["AWS", "BYOL"])
    parser.add_argument("--role-name", help="the service role (default vmimport)")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="a tag for the task and what it creates (repeatable)")
    parser.add_argument("--bucket", default="vmimport-uploads", help="where a local file is "
                        "uploaded (created if missing; default vmimport-uploads)")
    parser.add_argument("--key", help="the uploaded object's key (default: the file's name)")
    parser.add_argument("--no-wait", action="store_true",
                        help="print the task id and return once the task is created")


def run(args) -> int:
    endpoint = resolve(args)
    quiet = args.output == "json"
    container = _disk_container(endpoint, args, quiet)
    ec2 = endpoint.client("ec2")
    try:
        task_id = _start(ec2, args, container)
    except BotoError as exc:
        raise ClientError(error_text(exc)) from None
    if args.no_wait:
        if quiet:
            output.print_json({"ImportTaskId": task_id})
        else:
            output.stdout.print(task_id)
        return 0
    output.stderr.print(f"{task_id} started")
    try:
        task = follow(ec2, task_id, args.snapshot, quiet)
    except KeyboardInterrupt:
        return _interrupted(ec2, task_id, args.snapshot)
    return _report(endpoint, task, args.snapshot, quiet)


def _disk_container(endpoint: Endpoint, args, quiet: bool) -> dict:
    source = args.source
    container: dict = {}
    if args.format or Path(source).suffix.lower() in FORMATS:
        container["Format"] = (args.format or FORMATS[Path(source).suffix.lower()]).upper()
    if source.startswith("s3://"):
        bucket, _, key = source[5:].partition("/")
        if not bucket or not key:
            raise ClientError(f"{source}: an S3 source is s3://bucket/key")
        container["UserBucket"] = {"S3Bucket": bucket, "S3Key": key}
    elif source.startswith(("https://", "http://")):
        container["Url"] = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ClientError(f"{source}: no such file")
        key = args.key or path.name
        upload(endpoint, path, args.bucket, key, quiet)
        container["UserBucket"] = {"S3Bucket": args.bucket, "S3Key": key}
    if args.description:
        container["Description"] = args.description
    return container


def _tags(specs: list[str]) -> list[dict]:
    tags = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise ClientError(f"--tag {spec!r}: a tag is KEY=VALUE")
        tags.append({"Key": key, "Value": value})
    return tags


def _start(ec2, args, container: dict) -> str:
    params: dict = {}
    for name, value in (("Description", args.description), ("KmsKeyId", args.kms_key_id),
                        ("RoleName", args.role_name)):
        if value:
            params[name] = value
    if args.encrypted or args.kms_key_id:
        params["Encrypted"] = True
    tags = _tags(args.tag)
    if args.snapshot:
        if tags:
            params["TagSpecifications"] = [{"ResourceType": "import-snapshot-task",
                                            "Tags": tags}]
        return ec2.import_snapshot(DiskContainer=container, **params)["ImportTaskId"]
    for name, value in (("BootMode", args.boot_mode), ("Platform", args.platform),
                        ("Architecture", args.architecture),
                        ("LicenseType", args.license_type)):
        if value:
            params[name] = value
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "import-image-task", "Tags": tags}]
    return ec2.import_image(DiskContainers=[container], **params)["ImportTaskId"]


def describe(ec2, task_id: str, snapshot: bool) -> tuple[dict, dict]:
    """(the task, its status part: the task itself for images, SnapshotTaskDetail else)."""
    if snapshot:
        task = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])[
            "ImportSnapshotTasks"][0]
        return task, task.get("SnapshotTaskDetail", {})
    task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
    return task, task


def follow(ec2, task_id: str, snapshot: bool, quiet: bool) -> dict:
    """Poll the task until it ends, showing its progress and phase; returns its last state."""
    with output.task_progress(quiet) as progress:
        bar = progress.add_task(task_id, total=100, phase="pending")
        while True:
            task, status = describe(ec2, task_id, snapshot)
            if status.get("Status") in ("completed", "deleted"):
                progress.update(bar, completed=100 if status["Status"] == "completed" else None,
                                phase="completed" if status["Status"] == "completed" else "failed")
                return task
            progress.update(bar, completed=float(status.get("Progress") or 0),
                            phase=status.get("StatusMessage") or status.get("Status", ""))
            time.sleep(POLL_SECONDS)


def _interrupted(ec2, task_id: str, snapshot: bool) -> int:
    """Ctrl-C: ask whether to cancel the task (without a terminal to ask on, cancel it)."""
    if sys.stdin.isatty():
        try:
            answer = output.stderr.input(f"\nCancel {task_id}? [y/N] (no: it goes on "
                                         "without being watched) ", markup=False)
        except (KeyboardInterrupt, EOFError):
            answer = "y"
        if answer.strip().lower() not in ("y", "yes"):
            output.stderr.print(f"{task_id} goes on; 'vmimport tasks' shows it")
            return 130
    try:
        ec2.cancel_import_task(ImportTaskId=task_id, CancelReason="interrupted in vmimport import")
    except BotoError as exc:  # e.g. it ended meanwhile
        output.stderr.print(f"{task_id} was not cancelled: {error_text(exc)}")
        return 130
    output.stderr.print(f"{task_id} cancelled")
    return 130


def _report(endpoint: Endpoint, task: dict, snapshot: bool, quiet: bool) -> int:
    ec2 = endpoint.client("ec2")
    status = task.get("SnapshotTaskDetail", {}) if snapshot else task
    image = None
    if not snapshot and task.get("ImageId"):
        images = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"]
        image = images[0] if images else None
    failed = status.get("Status") != "completed"
    found = None if snapshot else _inspection(endpoint, task["ImportTaskId"])
    if quiet:
        document = {"Task": task} if snapshot else {"Task": task, "Image": image}
        if found is not None:
            document["Inspection"] = found
        output.print_json(document)
    elif failed:
        output.stderr.print(f"[bold red]{task['ImportTaskId']} failed:[/] "
                            f"{status.get('StatusMessage', status.get('Status'))}", markup=True)
        for finding in (found or {}).get("Findings", []):
            output.stderr.print(f"  found: {finding}")
    elif snapshot:
        output.stdout.print(f"snapshot {status.get('SnapshotId')} "
                            f"({status.get('DiskImageSize', 0) / 2**20:.1f} MiB image)")
    else:
        _print_found(task, image, found)
    if failed and quiet:
        sys.stderr.write(f"{task['ImportTaskId']} failed: {status.get('StatusMessage')}\n")
    return 1 if failed else 0


def _inspection(endpoint: Endpoint, task_id: str) -> dict | None:
    """What inspection found, from vmimport's DescribeImportTaskDetail; None where the
    endpoint does not offer it (AWS itself) or inspection did not run."""
    if not endpoint.is_vmimport:
        return None
    try:
        detail = endpoint.client("vmimport").describe_import_task_detail(ImportTaskId=task_id)
    except (BotoError, BotoCoreError):
        return None
    return detail.get("Inspection")


def os_from_description(text: str | None) -> dict:
    """The OS as AWS writes it on an imported AMI that was given no description:
    'AWS-VMImport service: Linux - Ubuntu 22.04.3 LTS - 5.15.0-91-generic'."""
    prefix = "AWS-VMImport service: "
    if not text or not text.startswith(prefix):
        return {}
    family, name, version = (text[len(prefix):].split(" - ") + ["", ""])[:3]
    found = {"OsFamily": family, "OsName": name}
    found["Kernel" if family == "Linux" else "Version"] = version
    return {k: v for k, v in found.items() if v}


def _print_found(task: dict, image: dict | None, found: dict | None) -> None:
    """What inspection found and decided: vmimport's detail where the endpoint has it, else
    what the AMI's description says (as AWS writes it), and the task's decided fields."""
    found = found or os_from_description((image or {}).get("Description"))
    os_name = found.get("OsName") or " ".join(filter(None, (found.get("Distribution"),
                                                            found.get("Version"))))
    rows = [("AMI", task.get("ImageId")),
            ("OS", os_name or (image or {}).get("PlatformDetails") or task.get("Platform")),
            ("version", found.get("Version")),
            ("kernel", found.get("Kernel")),
            ("platform", task.get("Platform")),
            ("architecture", task.get("Architecture")),
            ("boot mode", task.get("BootMode") or (image or {}).get("BootMode")),
            ("license", task.get("LicenseType")),
            ("snapshots", ", ".join(d.get("SnapshotId", "?")
                                    for d in task.get("SnapshotDetails", [])))]
    for name, value in rows:
        output.stdout.print(f"{name:>12}  {value or '-'}")
