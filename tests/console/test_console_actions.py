"""What a person does in the console, in headless Chromium against a live server: upload a disk
from the page and watch it become an AMI (the task's detail shows what inspection found),
read a completed task's detail (the AMI, its devices, its snapshot's block map), cancel a
queued and a running task, export an AMI and download the file by its link, look at a
snapshot's block map, and use all of it at a phone's width."""

from __future__ import annotations

import json
import re
import urllib.request

import boto3
import pytest

from vmimport.api.models import add_own_models

from ..helpers import Server, wait_task
from .conftest import keep, sign_in, text_of


def _click(browser, selector: str) -> None:
    browser.wait_for(f"document.querySelector({json.dumps(selector)}) !== null")
    browser.click(selector)


@pytest.fixture(scope="module")
def imported(server, disks):
    """An AMI imported through the API, for the detail, export and block map tests."""
    ec2 = server.client("ec2")
    server.put_object("console-actions", "disk.vmdk", disks["vmdk"])
    task = wait_task(ec2, ec2.import_image(Description="for the console tests", DiskContainers=[
        {"UserBucket": {"S3Bucket": "console-actions", "S3Key": "disk.vmdk"}}])["ImportTaskId"])
    assert task["Status"] == "completed", task
    return task


def test_a_file_uploaded_from_the_page_becomes_an_ami(server, disks, browser, tmp_path):
    source = disks["qcow2"]
    assert source.stat().st_size > 8 << 20  # more than one part of the multipart upload
    browser.goto(server.endpoint + "/console/")
    sign_in(browser)
    browser.wait_for("document.body.dataset.loaded === 'yes'")
    browser.set_files("#import-file", source)
    browser.type("#import-bucket", "console-uploads")
    browser.click("#import-form button[type=submit]")
    browser.wait_for("document.getElementById('upload-status').textContent.includes('started')",
                     timeout=120)
    assert text_of(browser, "import-error") == ""
    # The bar ended full, and the object holds the file's bytes, parts in order.
    assert browser.evaluate("(() => { const p = document.getElementById('upload-progress');"
                            " return p.value === p.max && p.max > 0; })()")
    assert (server.buckets / "console-uploads" / source.name).read_bytes() == source.read_bytes()
    task_id = re.search(r"import-ami-[0-9a-f]+", text_of(browser, "upload-status")).group(0)
    # The new task's detail is open and follows it to its end without a reload.
    browser.wait_for("document.getElementById('detail-status')?.textContent"
                     ".startsWith('completed')", timeout=240)
    # ... with the phases it passed and what inspection found (DescribeImportTaskDetail).
    browser.wait_for("document.getElementById('detail').textContent.includes('preparing ami')"
                     " && document.getElementById('detail').textContent.includes('ext4')")
    detail = text_of(browser, "detail")
    assert task_id in detail and "validating" in detail and "Found on the boot volume" in detail
    assert "mbr" in detail and "legacy-bios" in detail
    assert "Ubuntu 22.04.3 LTS" in detail and "5.15.0-91-generic" in detail
    assert "x86_64" in detail and "legacy-bios" in detail and "QCOW2" in detail
    assert f"s3://console-uploads/{source.name}" in detail
    shot = tmp_path / "console-upload.png"
    browser.screenshot(shot, full_page=True)
    keep(shot)


def test_a_refused_import_says_why_in_its_detail(server, browser, tmp_path):
    server.put_object("console-actions", "blank.raw", b"\0" * (2 << 20))
    ec2 = server.client("ec2")
    task_id = ec2.import_image(DiskContainers=[{"UserBucket": {
        "S3Bucket": "console-actions", "S3Key": "blank.raw"}}])["ImportTaskId"]
    wait_task(ec2, task_id)
    browser.goto(server.endpoint + "/console/")
    sign_in(browser)
    _click(browser, f"button[data-task='{task_id}']")
    browser.wait_for("document.getElementById('detail-status')?.textContent"
                     ".startsWith('deleted')")
    assert "No valid partitions" in text_of(browser, "detail-status")
    # What inspection found (nothing, and why) is there too.
    browser.wait_for("document.getElementById('detail').textContent.includes('none found')")


@pytest.mark.parametrize("when", ["queued", "running"])
def test_a_task_is_cancelled_from_its_detail(tmp_path, disks, browser, when):
    # Queued: no worker, the task waits. Running: a worker converting 64 KiB a second, so the
    # cancel reaches a task in the middle of its conversion.
    if when == "queued":
        srv, disk = Server(tmp_path / "data", workers=0), disks["vmdk"]
    else:
        srv, disk = Server(tmp_path / "data", env={
            "VMIMPORT_IMPORT_MAX_BYTES_PER_SECOND": str(64 << 10)}), disks["raw"]
    srv.start()
    try:
        ec2 = srv.client("ec2")
        srv.put_object("waiting", disk.name, disk)
        task_id = ec2.import_image(DiskContainers=[{"UserBucket": {
            "S3Bucket": "waiting", "S3Key": disk.name}}])["ImportTaskId"]
        browser.goto(srv.endpoint + "/console/")
        sign_in(browser)
        _click(browser, f"button[data-task='{task_id}']")
        if when == "running":  # the worker has it: validated, now converting (slowly)
            browser.wait_for("document.getElementById('detail-status')?.textContent"
                             ".includes('validated')", timeout=120)
        _click(browser, "#cancel-task")
        browser.wait_for("document.getElementById('detail-status')?.textContent"
                         ".startsWith('deleted')", timeout=120)
        assert browser.evaluate("document.getElementById('cancel-task')") is None
        task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
        assert task["Status"] == "deleted" and "ImageId" not in task, task
        assert task["StatusMessage"] in text_of(browser, "detail-status")
        if when == "queued":
            assert "cancelled in the console" in task["StatusMessage"]
        else:
            assert "cancel" in task["StatusMessage"].lower(), task
            shot = tmp_path / "console-cancelled.png"
            browser.screenshot(shot)
            keep(shot)
    finally:
        srv.stop()


def _runs(indexes: list[int]) -> list[str]:
    """Runs of consecutive block indexes, as the block map lists them."""
    runs: list[list[int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [f"{a}" if a == b else f"{a}\u2013{b}" for a, b in runs]


def test_a_completed_tasks_detail_shows_the_ami_and_a_block_map(server, imported, browser,
                                                                 tmp_path):
    task_id, image_id = imported["ImportTaskId"], imported["ImageId"]
    snapshot_id = imported["SnapshotDetails"][0]["SnapshotId"]
    browser.goto(server.endpoint + "/console/")
    sign_in(browser)
    _click(browser, f"#tasks button[data-task='{task_id}']")
    browser.wait_for("document.getElementById('detail-devices') !== null && document"
                     ".getElementById('detail').textContent.includes('Found on the boot volume')")
    decided = browser.evaluate("""Object.fromEntries(Array.from(
        document.querySelectorAll('#detail dl.facts')[0].querySelectorAll('dd'),
        (d) => [d.dataset.field, d.textContent]))""")
    assert decided["AMI"] == image_id and decided["description"] == "for the console tests"
    assert decided["platform"] == "Linux/UNIX" and decided["architecture"] == "x86_64"
    assert decided["boot mode"] == "legacy-bios" and decided["root device"] == "/dev/sda1"
    # A description was given, so the OS comes from what inspection found, not the AMI's.
    assert decided["operating system"] == "Linux \u2014 Ubuntu 22.04.3 LTS"
    devices = text_of(browser, "detail-devices")
    assert "/dev/sda1" in devices and snapshot_id in devices
    detail = text_of(browser, "detail")
    assert "VMDK" in detail and "s3://console-actions/disk.vmdk" in detail
    # How many of the disk's blocks were shared with blocks stored already, as the API says.
    session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test",
                            region_name="us-east-1")
    add_own_models(session._session)
    shared = session.client("vmimport", endpoint_url=server.endpoint).describe_import_task_detail(
        ImportTaskId=task_id)["Disks"][0]["SharedBlocks"]
    stored = len(server.client("ebs").list_snapshot_blocks(
        SnapshotId=snapshot_id, MaxResults=10000)["Blocks"])
    assert "blocks shared" in detail and f"{shared} of {stored} (" in detail
    # A completed task offers no cancel.
    assert browser.evaluate("document.getElementById('cancel-task')") is None
    shot = tmp_path / "console-task.png"
    browser.screenshot(shot, full_page=True)
    keep(shot)
    # The snapshot's block map opens from the detail's disks; its ranges are boto3's blocks.
    listed = server.client("ebs").list_snapshot_blocks(SnapshotId=snapshot_id,
                                                       MaxResults=10000)
    assert "NextToken" not in listed
    runs = _runs([b["BlockIndex"] for b in listed["Blocks"]])
    _click(browser, f"#detail button.blockmap[data-snapshot='{snapshot_id}']")
    browser.wait_for("document.getElementById('blockmap-ranges') !== null")
    assert text_of(browser, "blockmap-ranges").startswith(
        "block ranges with data: " + ", ".join(runs[:40]))
    _click(browser, "#detail .row button:last-of-type")  # Close
    browser.wait_for("document.getElementById('detail').hidden")


def test_an_ami_is_exported_and_downloaded_by_its_link(server, imported, browser, tmp_path):
    image_id = imported["ImageId"]
    browser.goto(server.endpoint + "/console/")
    sign_in(browser)
    _click(browser, f"button.export[data-image='{image_id}']")
    browser.choose("#export-format", "VHD")
    browser.type("#export-bucket", "console-exports")
    browser.click("#export-form button[type=submit]")
    browser.wait_for("document.getElementById('detail-status')?.textContent"
                     ".startsWith('completed')", timeout=240)
    assert text_of(browser, "export-error") == ""
    _click(browser, "#detail button.get-link")
    browser.wait_for("document.querySelector('#detail a.download') !== null")
    url = browser.evaluate("document.querySelector('#detail a.download').href")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    # The link works by itself (no key, no cookie): a dynamic VHD ends with its footer.
    with urllib.request.urlopen(url, timeout=60) as reply:
        data = reply.read()
    assert data[-512:].startswith(b"conectix") and len(data) > 1 << 20
    exported = list((server.buckets / "console-exports").rglob("*.vhd"))
    assert len(exported) == 1 and exported[0].read_bytes() == data
    # A link whose signature is altered is refused.
    bad = re.sub(r"X-Amz-Signature=([0-9a-f])", lambda m: "X-Amz-Signature=" +
                 ("0" if m.group(1) != "0" else "1"), url)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=60)
    assert refused.value.code == 403


def test_a_snapshots_block_map_shows_its_stored_blocks(server, imported, browser, tmp_path):
    snapshot_id = imported["SnapshotDetails"][0]["SnapshotId"]
    ebs = server.client("ebs")
    stored, token = 0, None
    while True:
        page = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, **(
            {"NextToken": token} if token else {}))
        stored += len(page["Blocks"])
        token = page.get("NextToken")
        if not token:
            break
    browser.goto(server.endpoint + "/console/")
    sign_in(browser)
    _click(browser, f"#snapshots button.blockmap[data-snapshot='{snapshot_id}']")
    browser.wait_for("document.getElementById('blockmap-summary') !== null")
    summary = text_of(browser, "blockmap-summary")
    shown, total = map(int, re.match(r"(\d+) of (\d+) blocks", summary).groups())
    assert shown == stored and 0 < stored < total
    # Squares are painted where blocks hold data, and only there.
    painted = browser.evaluate("""(() => {
        const c = document.getElementById('blockmap-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let blue = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > d[i] + 40) blue++;
        return blue; })()""")
    assert painted > 0
    shot = tmp_path / "console-blockmap.png"
    browser.screenshot(shot)
    keep(shot)


def test_the_console_fits_a_phones_width(server, imported, browser, tmp_path):
    browser.phone()
    browser.goto(server.endpoint + "/console/")
    sign_in(browser)
    browser.wait_for("document.body.dataset.loaded === 'yes'")
    _click(browser, f"button[data-task='{imported['ImportTaskId']}']")
    browser.wait_for("document.getElementById('detail-status') !== null")
    # Nothing makes the page itself scroll sideways; wide tables scroll in their own box.
    assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert browser.evaluate("window.innerWidth") == 390
    shot = tmp_path / "console-phone.png"
    browser.screenshot(shot, full_page=True)
    keep(shot)
