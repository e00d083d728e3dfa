"""The boot check (setting ``boot_check``) through the API: Linux disks built from Debian
packages (tests/boot_disks.py) are imported with ImportImage by boto3 against a live server;
the good ones pass through ``booting``/``booted`` to an AMI whose description says it booted,
each broken one ends ``deleted`` with what the console showed."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests import boot_disks
from tests.conftest import CREDENTIALS

from ..helpers import Server

pytestmark = pytest.mark.slow  # each case boots a kernel under TCG

BOOT_TIMEOUT = 1200  # generous: two boots at once under TCG on a loaded 2-core machine


@pytest.fixture(scope="module")
def boot_cache(tmp_path_factory) -> Path:
    missing = [t for t in boot_disks.TOOLS
               if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:  # fail, not skip: a skip would hide a broken install step
        pytest.fail(f"boot fixture tools missing (scripts/setup --test installs them): "
                    f"{', '.join(missing)}")
    cache = os.environ.get("VMIMPORT_TEST_DISK_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("boot-disks")


@pytest.fixture(scope="module")
def boot_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("boot") / "data", env={
        "VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS), "VMIMPORT_BOOT_CHECK": "true",
        "VMIMPORT_BOOT_CHECK_SECONDS": "600"}).start()
    yield srv
    srv.stop()


def _start(server, ec2, cache, name, **params) -> str:
    bucket = "boot-" + uuid.uuid4().hex[:8]
    server.put_object(bucket, "disk.raw", boot_disks.build(name, cache))
    return ec2.import_image(DiskContainers=[
        {"Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.raw"}}],
        **params)["ImportTaskId"]


def _follow(ec2, task_ids: list[str]) -> tuple[dict, dict]:
    """Wait for every task to end; return their last descriptions and the messages seen."""
    seen = {task_id: [] for task_id in task_ids}
    done: dict[str, dict] = {}
    deadline = time.monotonic() + BOOT_TIMEOUT
    while len(done) < len(task_ids):
        assert time.monotonic() < deadline, f"tasks still running: {set(task_ids) - set(done)}"
        for task in ec2.describe_import_image_tasks(
                ImportTaskIds=[t for t in task_ids if t not in done])["ImportImageTasks"]:
            message = task.get("StatusMessage")
            if message and (not seen[task["ImportTaskId"]]
                            or seen[task["ImportTaskId"]][-1] != message):
                seen[task["ImportTaskId"]].append(message)
            if task["Status"] in ("completed", "deleted"):
                done[task["ImportTaskId"]] = task
        time.sleep(0.3)
    return done, seen


@pytest.fixture(scope="module")
def boot_results(boot_server, boot_cache):
    ec2 = boot_server.client("ec2")
    boot_disks.build_all(boot_cache)
    started = {name: _start(boot_server, ec2, boot_cache, name) for name in boot_disks.CASES}
    started["boot-uefi-as-bios"] = _start(boot_server, ec2, boot_cache, "boot-uefi",
                                          BootMode="legacy-bios")
    done, seen = _follow(ec2, list(started.values()))
    return ec2, {name: (done[tid], seen[tid]) for name, tid in started.items()}


@pytest.mark.parametrize("name", ["boot-bios", "boot-uefi"])
def test_a_bootable_image_passes_booting_and_says_so(boot_server, boot_results, name):
    ec2, results = boot_results
    task, seen = results[name]
    # On failure, the server's log says why (a ServerError names only the job).
    assert task["Status"] == "completed", (task.get("StatusMessage"), boot_server.log_tail(80))
    assert "booting" in seen, seen  # "booted" and "preparing ami" last too little to poll
    assert task["BootMode"] == ("uefi" if name == "boot-uefi" else "legacy-bios")
    image = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"][0]
    assert "booted (the guest printed vmimport-boot-check init reached" in image["Description"]


@pytest.mark.parametrize("name", [n for n, why in boot_disks.CASES.items() if why])
def test_a_broken_image_fails_booting_with_what_was_seen(boot_results, name):
    _, results = boot_results
    task, seen = results[name]
    assert task["Status"] == "deleted"
    message = task["StatusMessage"]
    assert message.startswith("ClientError: Unable to boot the image [booting] "), message
    assert boot_disks.CASES[name] in message
    assert "booting" in seen and "booted" not in seen


def test_a_uefi_only_image_forced_to_bios_is_refused(boot_results):
    _, results = boot_results
    task, _ = results["boot-uefi-as-bios"]
    assert task["Status"] == "deleted"
    assert task["StatusMessage"].startswith("ClientError: No bootable partition found"), \
        task["StatusMessage"]
    assert "legacy" in task["StatusMessage"].lower()
