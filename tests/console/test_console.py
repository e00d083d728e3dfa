"""The console in a real browser (Debian's headless Chromium) against a live server: sign in
with a key, see an imported AMI, its snapshot and task listed; open a task's detail (disks,
the AMI and what inspection found); cancel a running task from the page; a wrong secret is
refused; signing out forgets the key. Screenshots are kept in the test's tmp dir (and copied to
$VMIMPORT_TEST_SCREENSHOTS if set) for a person to look at."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ..conftest import CREDENTIALS
from ..helpers import Server, wait_task
from .browser import CHROMIUM, Browser


@pytest.fixture(autouse=True)
def chromium_installed():
    # A missing browser is a broken install step (scripts/test-packages lists it), not a skip.
    assert CHROMIUM is not None, ("chromium is not installed: scripts/setup --test installs it "
                                  "(scripts/test-packages)")


@pytest.fixture
def browser(tmp_path):
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


def _keep(path: Path) -> None:
    target = os.environ.get("VMIMPORT_TEST_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


def _sign_in(browser, secret: str) -> None:
    browser.wait_for("!document.getElementById('sign-in').hidden")
    browser.evaluate(f"""
        document.getElementById('access-key').value = 'test';
        document.getElementById('secret-key').value = {json.dumps(secret)};
        document.getElementById('sign-in').requestSubmit();""")


def test_signed_in_console_lists_an_imported_ami(server, ec2, disks, browser, tmp_path):
    server.put_object("console-test", "disk.vmdk", disks["vmdk"])
    task_id = ec2.import_image(DiskContainers=[{"Format": "vmdk", "UserBucket": {
        "S3Bucket": "console-test", "S3Key": "disk.vmdk"}}])["ImportTaskId"]
    image_id = wait_task(ec2, task_id)["ImageId"]
    browser.goto(server.endpoint + "/console/")
    _sign_in(browser, "test")
    browser.wait_for(f"document.getElementById('images').textContent.includes('{image_id}')")
    images = browser.evaluate("document.getElementById('images').textContent")
    tasks = browser.evaluate("document.getElementById('tasks').textContent")
    assert "x86_64" in images and task_id in tasks and "[object" not in tasks
    # What is shown: the tables, not the sign-in form (hidden is not overridden by CSS).
    assert browser.evaluate("document.getElementById('sign-in').offsetParent") is None
    assert browser.evaluate("document.getElementById('images').offsetParent !== null")
    assert browser.evaluate("document.getElementById('error').textContent") == ""
    # The secret stays in this tab's session storage: not in the page, not in a cookie.
    assert "test" not in browser.evaluate("document.cookie")
    assert browser.evaluate("document.getElementById('secret-key').value") == ""
    shot = tmp_path / "console-images.png"
    browser.screenshot(shot)
    _keep(shot)
    browser.evaluate("document.getElementById('sign-out').click()")
    browser.wait_for("!document.getElementById('sign-in').hidden")
    assert browser.evaluate("sessionStorage.length") == 0


def test_wrong_secret_is_refused_and_forgotten(server, browser):
    browser.goto(server.endpoint + "/console/")
    _sign_in(browser, "not-the-secret")
    browser.wait_for("document.getElementById('sign-in-error').textContent !== ''")
    error = browser.evaluate("document.getElementById('sign-in-error').textContent")
    assert "SignatureDoesNotMatch" in error or "AuthFailure" in error
    assert browser.evaluate("sessionStorage.length") == 0
    assert browser.evaluate("document.getElementById('views').hidden") is True


def _text(browser, element_id: str) -> str:
    return browser.evaluate(f"document.getElementById('{element_id}').textContent")


def _open_task(browser, task_id: str) -> None:
    """Click the task's id in the tasks table, as a person would."""
    button = f"document.querySelector('#tasks button[data-task=\"{task_id}\"]')"
    browser.wait_for(f"{button} !== null")
    browser.evaluate(f"{button}.click()")
    browser.wait_for(f"document.getElementById('detail-title').textContent.includes('{task_id}')")


def test_task_detail_shows_disks_ami_and_inspection(server, ec2, disks, browser, tmp_path):
    server.put_object("console-test", "detail.vmdk", disks["vmdk"])
    task_id = ec2.import_image(Description="for the detail view", DiskContainers=[{
        "Format": "vmdk", "UserBucket": {"S3Bucket": "console-test", "S3Key": "detail.vmdk"}}])[
        "ImportTaskId"]
    task = wait_task(ec2, task_id)
    image_id, snapshot_id = task["ImageId"], task["SnapshotDetails"][0]["SnapshotId"]
    browser.goto(server.endpoint + "/console/")
    _sign_in(browser, "test")
    _open_task(browser, task_id)
    browser.wait_for(f"document.getElementById('detail-image').textContent.includes("
                     f"'{image_id}')")
    fields = browser.evaluate("""Object.fromEntries(Array.from(
        document.querySelectorAll('#detail-fields dd'), (d) => [d.dataset.field, d.textContent]))""")
    assert fields["status"] == "completed" and fields["AMI"] == image_id
    assert fields["description"] == "for the detail view"
    assert fields["platform"] == "Linux" and fields["architecture"] == "x86_64"
    assert fields["boot mode"] == "legacy-bios"
    disks_text = _text(browser, "detail-disks")
    assert "VMDK" in disks_text and snapshot_id in disks_text
    assert "s3://console-test/detail.vmdk" in disks_text
    image_text = _text(browser, "detail-image")
    assert "Linux/UNIX" in image_text and "/dev/sda1" in image_text and snapshot_id in image_text
    # The snapshot's block map, read by the page through ListSnapshotBlocks (EBS direct API,
    # GET signed in the page), agrees with what boto3 reads.
    browser.wait_for("document.querySelector('#detail-blockmaps .blockmap') !== null")
    listed = server.client("ebs").list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=10000)
    assert "NextToken" not in listed
    indexes = [b["BlockIndex"] for b in listed["Blocks"]]
    summary = browser.evaluate("document.querySelector('.blockmap-summary').textContent")
    assert summary.startswith(f"{snapshot_id}: {len(indexes)} of 2048 blocks of 512 KiB"), summary
    full = browser.evaluate("document.querySelectorAll('.blockmap span.full').length")
    assert 0 < full < 256
    assert browser.evaluate("document.querySelector('.blockmap span').offsetHeight") > 0
    ranges = browser.evaluate("document.querySelector('.blockmap-ranges').textContent")
    assert ranges.startswith(f"block ranges with data: {indexes[0]}")
    # A completed task offers no cancel.
    assert browser.evaluate("document.getElementById('cancel-task').offsetParent") is None
    shot = tmp_path / "console-task-detail.png"
    browser.screenshot(shot)
    _keep(shot)
    browser.evaluate("document.getElementById('close-detail').click()")
    assert browser.evaluate("document.getElementById('detail').offsetParent") is None


@pytest.fixture
def slow_server(tmp_path):
    """A server converting 64 KiB a second: an import stays active long enough to cancel."""
    srv = Server(tmp_path / "slow", env={
        "VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS),
        "VMIMPORT_IMPORT_MAX_BYTES_PER_SECOND": str(64 << 10)}).start()
    yield srv
    srv.stop()


def test_cancel_a_running_task_from_its_detail(slow_server, disks, browser, tmp_path):
    ec2 = slow_server.client("ec2")
    slow_server.put_object("console-test", "slow.raw", disks["raw"])
    task_id = ec2.import_image(DiskContainers=[{"Format": "raw", "UserBucket": {
        "S3Bucket": "console-test", "S3Key": "slow.raw"}}])["ImportTaskId"]
    browser.goto(slow_server.endpoint + "/console/")
    _sign_in(browser, "test")
    _open_task(browser, task_id)
    browser.wait_for("document.getElementById('detail').dataset.status === 'active'")
    browser.wait_for("document.getElementById('cancel-task').offsetParent !== null")
    browser.evaluate("document.getElementById('cancel-task').click()")
    # The page follows the task to its end: cancelled, so no more cancel button.
    browser.wait_for("document.getElementById('detail').dataset.status === 'deleted'",
                     timeout=120)
    assert browser.evaluate("document.getElementById('cancel-task').offsetParent") is None
    assert _text(browser, "detail-error") == ""
    assert "Cancelled by the user" in _text(browser, "detail-fields")
    browser.wait_for("document.getElementById('tasks').textContent.includes('deleted')")
    shot = tmp_path / "console-cancelled.png"
    browser.screenshot(shot)
    _keep(shot)
    # The API agrees: the task ended deleted, with no AMI.
    task = wait_task(ec2, task_id)
    assert task["Status"] == "deleted" and "ImageId" not in task, task
