"""Every guest fixture of tests/guest_disks.py imported through ImportImage in two formats:
accepted disks show what inspection decided (on the task and on the AMI), refused ones end
`deleted` with AWS's message class first and then what vmimport found."""

from __future__ import annotations

import uuid

import pytest

from tests.guest_disks import ACCEPTED, EXPECTED, REFUSED, build

from ..helpers import qemu_convert, wait_task

pytestmark = pytest.mark.slow  # many imports; `-m 'not slow'` skips them

FORMATS = {"raw": None, "vmdk": ("vmdk", "-o", "subformat=streamOptimized"),
           "vhd": ("vpc",)}


def _start(server, ec2, cache, tmp_path, name, fmt, **params) -> str:
    raw = build(name, cache)
    path = raw if fmt == "raw" else qemu_convert(raw, tmp_path / f"{name}.{fmt}", *FORMATS[fmt])
    bucket = "insp-" + uuid.uuid4().hex[:8]
    server.put_object(bucket, f"disk.{fmt}", path)
    return ec2.import_image(DiskContainers=[
        {"Format": fmt, "UserBucket": {"S3Bucket": bucket, "S3Key": f"disk.{fmt}"}}],
        **params)["ImportTaskId"]


def _import(server, ec2, cache, tmp_path, name, fmt, **params):
    return wait_task(ec2, _start(server, ec2, cache, tmp_path, name, fmt, **params), timeout=120)


CASES = [(n, f) for n in ACCEPTED for f in ("raw", "vmdk")] + \
        [(n, f) for n in REFUSED for f in ("raw", "vhd")]


@pytest.fixture(scope="module")
def imported(server, ec2, guest_disk_cache, tmp_path_factory):
    """All fixtures submitted at once (the workers import them concurrently), then awaited."""
    tmp = tmp_path_factory.mktemp("inspection-imports")
    started = {case: _start(server, ec2, guest_disk_cache, tmp, *case) for case in CASES}
    return {case: wait_task(ec2, task_id, timeout=300) for case, task_id in started.items()}


@pytest.mark.parametrize("fmt", ["raw", "vmdk"])
@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_guest(imported, ec2, name, fmt):
    expected = EXPECTED[name]
    task = imported[name, fmt]
    assert task["Status"] == "completed", task
    assert task["Platform"] == expected.os_family
    assert task["Architecture"] == expected.architecture
    assert task["BootMode"] == expected.boot_mode
    assert task["LicenseType"] == expected.license_type
    assert task["UsageOperation"] == expected.usage_operation
    image = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"][0]
    assert image["Architecture"] == expected.architecture
    assert image["BootMode"] == expected.boot_mode
    assert image["PlatformDetails"] == expected.platform_details
    assert image["UsageOperation"] == expected.usage_operation
    assert image.get("Platform") == ("windows" if expected.os_family == "Windows" else None)
    assert image["Description"].startswith(f"AWS-VMImport service: {expected.os_family} - ")


@pytest.mark.parametrize("fmt", ["raw", "vhd"])
@pytest.mark.parametrize("name", REFUSED)
def test_refused_guest(imported, name, fmt):
    task = imported[name, fmt]
    assert task["Status"] == "deleted", task
    assert task["StatusMessage"].startswith("ClientError: " + EXPECTED[name].refusal), \
        task["StatusMessage"]
    assert "ImageId" not in task


def test_user_values_that_contradict_the_disk(server, ec2, guest_disk_cache, tmp_path):
    task = _import(server, ec2, guest_disk_cache, tmp_path, "ubuntu2204-ext4-mbr-bios", "raw",
                   Platform="Windows")
    assert task["Status"] == "deleted"
    assert "Windows" in task["StatusMessage"] and "Linux" in task["StatusMessage"]
    task = _import(server, ec2, guest_disk_cache, tmp_path, "ubuntu2204-ext4-mbr-bios", "raw",
                   BootMode="uefi")
    assert task["Status"] == "deleted"
    assert task["StatusMessage"].startswith("ClientError: No bootable partition found")
    task = _import(server, ec2, guest_disk_cache, tmp_path, "debian12-btrfs-gpt-hybrid", "raw",
                   BootMode="uefi")
    assert task["Status"] == "completed" and task["BootMode"] == "uefi"
    task = _import(server, ec2, guest_disk_cache, tmp_path, "win10-ntfs-mbr-bios", "raw",
                   LicenseType="AWS")
    assert task["Status"] == "deleted"


def test_volume_group_spanning_two_disks(server, ec2, guest_disk_cache, tmp_path):
    """RHEL with its root LV spread over a PV on disk 1 and a whole-disk PV on disk 2 (made by
    lvm2): imported as two DiskContainers it is Linux; the boot disk alone is refused, naming the
    physical volume that is on another disk."""
    from tests.guest_disks_lvm import build_two_disks

    first, second = build_two_disks(guest_disk_cache)
    bucket = "insp-" + uuid.uuid4().hex[:8]
    server.put_object(bucket, "disk1.vmdk", qemu_convert(first, tmp_path / "disk1.vmdk", *FORMATS["vmdk"]))
    server.put_object(bucket, "disk2.raw", second)
    both = ec2.import_image(DiskContainers=[
        {"Format": "vmdk", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk1.vmdk"}},
        {"Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk2.raw"}}])["ImportTaskId"]
    alone = ec2.import_image(DiskContainers=[
        {"Format": "vmdk", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk1.vmdk"}}])["ImportTaskId"]
    task = wait_task(ec2, both, timeout=300)
    assert task["Status"] == "completed", task
    assert (task["Platform"], task["Architecture"], task["BootMode"]) == ("Linux", "x86_64", "uefi")
    image = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"][0]
    assert image["Description"] == ("AWS-VMImport service: Linux - Red Hat Enterprise Linux 9.3 (Plow) - "
                                    "5.14.0-362.8.1.el9_3.x86_64")
    assert len(image["BlockDeviceMappings"]) == 2
    task = wait_task(ec2, alone, timeout=300)
    assert task["Status"] == "deleted"
    assert task["StatusMessage"].startswith("ClientError: Unknown OS / Missing OS files."), task["StatusMessage"]
    assert "logical volume rhel/root uses physical volume pv1, which is not on this disk" in task["StatusMessage"]
