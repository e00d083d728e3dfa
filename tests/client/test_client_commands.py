"""`vmimport import/export/tasks/images/snapshots` run as a user runs them: subprocesses
against a live server, judged by exit status and output."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from ..helpers import BIN, wait_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vmimport(server, *args: str, key: str = "test", secret: str = "test",
             timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_DEFAULT_REGION", None)
    return subprocess.run([str(BIN / "vmimport"), *args, "--endpoint-url", server.endpoint],
                          env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def imported(server, disks):
    """A local VMDK imported in one command: uploaded through S3, converted, inspected."""
    proc = vmimport(server, "import", str(disks["vmdk"]), "--bucket", "cli-uploads",
                    "--description", "from the CLI", "--tag", "made-by=cli-test",
                    "--output", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_import_of_a_local_file_ends_with_an_ami(server, imported, ec2):
    task, image = imported["Task"], imported["Image"]
    assert task["Status"] == "completed" and task["ImageId"].startswith("ami-")
    assert image["ImageId"] == task["ImageId"] and task["Platform"] == "Linux"
    # The upload went through the S3 API into the named bucket, under the file's name.
    assert (server.buckets / "cli-uploads" / "disk.vmdk").stat().st_size > 0
    assert task["Description"] == "from the CLI"
    tags = ec2.describe_import_image_tasks(ImportTaskIds=[task["ImportTaskId"]])[
        "ImportImageTasks"][0].get("Tags", [])
    assert {"Key": "made-by", "Value": "cli-test"} in tags


def test_import_prints_what_inspection_found(server, disks):
    proc = vmimport(server, "import", "s3://cli-uploads/disk.vmdk", "--format", "vmdk")
    assert proc.returncode == 0, proc.stderr
    lines = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1)
                 for line in proc.stdout.splitlines())
    assert lines["AMI"].startswith("ami-")
    assert lines["architecture"] == "x86_64" and lines["platform"] == "Linux"
    assert lines["boot mode"] == "legacy-bios"
    assert "import-ami-" in proc.stderr  # the task id, beside the progress


def test_failing_import_exits_non_zero_with_the_status_message(server, tmp_path):
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"\0" * (2 << 20))
    proc = vmimport(server, "import", str(blank), "--bucket", "cli-uploads")
    assert proc.returncode == 1
    assert "failed: ClientError: No valid partitions" in " ".join(proc.stderr.split())
    assert proc.stdout == ""


def test_refused_request_exits_non_zero_saying_why(server, disks):
    proc = vmimport(server, "import", "s3://cli-uploads/disk.vmdk", "--role-name", "nobody")
    assert proc.returncode == 1
    assert "InvalidParameter" in proc.stderr and "nobody" in proc.stderr


def test_no_wait_returns_the_task_id_at_once(server, ec2):
    proc = vmimport(server, "import", "s3://cli-uploads/disk.vmdk", "--no-wait")
    assert proc.returncode == 0, proc.stderr
    task_id = proc.stdout.strip()
    assert task_id.startswith("import-ami-")
    assert wait_task(ec2, task_id)["Status"] == "completed"


def test_snapshot_import(server):
    proc = vmimport(server, "import", "s3://cli-uploads/disk.vmdk", "--snapshot",
                    "--output", "json")
    assert proc.returncode == 0, proc.stderr
    detail = json.loads(proc.stdout)["Task"]["SnapshotTaskDetail"]
    assert detail["Status"] == "completed" and detail["SnapshotId"].startswith("snap-")


def test_listings_show_the_imported_resources(server, imported):
    task, image = imported["Task"], imported["Image"]
    proc = vmimport(server, "tasks", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    ids = [t["ImportTaskId"] for t in json.loads(proc.stdout)["ImportImageTasks"]]
    assert task["ImportTaskId"] in ids
    proc = vmimport(server, "images")
    assert proc.returncode == 0 and image["ImageId"] in proc.stdout
    proc = vmimport(server, "snapshots", "--output", "json")
    snapshot_id = task["SnapshotDetails"][0]["SnapshotId"]
    assert snapshot_id in [s["SnapshotId"] for s in json.loads(proc.stdout)]


def test_listings_are_per_account(server, imported):
    proc = vmimport(server, "images", "--output", "json", key="OTHERKEY", secret="othersecret")
    assert proc.returncode == 0, proc.stderr
    assert imported["Image"]["ImageId"] not in proc.stdout


def test_export_downloads_the_image(server, imported, tmp_path):
    target = tmp_path / "out.vmdk"
    proc = vmimport(server, "export", imported["Image"]["ImageId"], str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes()[:4] == b"KDMV"  # a VMDK sparse extent's magic
    exported = list((server.buckets / "vmimport-exports").rglob("*.vmdk"))
    assert exported == []  # downloaded, then removed from the bucket (no --keep)


def test_export_of_an_unknown_image_fails_saying_so(server, tmp_path):
    proc = vmimport(server, "export", "ami-0123456789abcdef0", str(tmp_path / "x.raw"))
    assert proc.returncode == 1 and "ami-0123456789abcdef0" in proc.stderr


def test_version_and_help_have_no_markup():
    env = {**os.environ, "PYTHONPATH": ROOT}
    version = subprocess.run([str(BIN / "vmimport"), "--version"], env=env,
                             capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("vmimport ")
    for command in ([], ["migrate"], ["gc"], ["import"]):
        text = subprocess.run([str(BIN / "vmimport"), *command, "--help"], env=env,
                              capture_output=True, text=True).stdout
        assert text.startswith("usage: vmimport") and "``" not in text, command
        if command in (["migrate"], ["gc"]):
            assert "--workers" not in text and "--verbose" in text
