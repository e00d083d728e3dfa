"""Multi-volume imports through boto3: several DiskContainers, and a multi-disk OVA whose disks
each become a snapshot, in the descriptor's order, with their own SnapshotDetails."""

from __future__ import annotations

import uuid

from tests.hostile import make_ova

from ..helpers import qemu_convert, qemu_raw_sha256, snapshot_sha256, wait_task


def test_three_disk_ova_then_a_raw_disk(server, ec2, ebs, disks, tmp_path, guest_disk_cache):
    from tests.guest_disks import build

    data_raw = build("data-only", guest_disk_cache)
    data_vmdk = qemu_convert(data_raw, tmp_path / "data.vmdk", "vmdk", "-o",
                             "subformat=streamOptimized")
    boot = disks["vmdk"].read_bytes()
    data = data_vmdk.read_bytes()
    boot_size = qemu_raw_sha256(disks["vmdk"], "vmdk")[1]
    data_size = data_raw.stat().st_size
    # The descriptor attaches boot first although it is the last member in the tar.
    ova = make_ova([("data1.vmdk", data, data_size), ("data2.vmdk", data, data_size),
                    ("boot.vmdk", boot, boot_size)], attach=["disk3", "disk1", "disk2"])
    bucket = "ova-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "vm.ova", ova)
    server.put_object(bucket, "extra.raw", disks["raw"])
    task_id = ec2.import_image(DiskContainers=[
        {"Format": "ova", "UserBucket": {"S3Bucket": bucket, "S3Key": "vm.ova"}},
        {"Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": "extra.raw"}},
    ])["ImportTaskId"]
    task = wait_task(ec2, task_id, timeout=180)
    assert task["Status"] == "completed", task
    details = task["SnapshotDetails"]
    assert [d["DeviceName"] for d in details] == ["/dev/sda1", "/dev/sdb", "/dev/sdc", "/dev/sdd"]
    assert all(d["Status"] == "completed" for d in details)
    assert [d["Format"] for d in details] == ["VMDK", "VMDK", "VMDK", "RAW"]
    assert task["Platform"] == "Linux"  # the boot volume (first in the OVF) was inspected
    expected_boot = qemu_raw_sha256(disks["vmdk"], "vmdk")[0]
    expected_data = qemu_raw_sha256(data_vmdk, "vmdk")[0]
    assert snapshot_sha256(ebs, details[0]["SnapshotId"], boot_size) == expected_boot
    assert snapshot_sha256(ebs, details[1]["SnapshotId"], data_size) == expected_data
    image = ec2.describe_images(ImageIds=[task["ImageId"]])["Images"][0]
    assert [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]] == \
        [d["SnapshotId"] for d in details]


def test_too_many_volumes_after_ova_expansion(server, ec2, disks):
    boot = disks["vmdk"].read_bytes()
    size = qemu_raw_sha256(disks["vmdk"], "vmdk")[1]
    ova = make_ova([(f"d{n}.vmdk", boot, size) for n in range(3)])
    bucket = "ova21-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "vm.ova", ova)
    server.put_object(bucket, "d.raw", disks["raw"])
    containers = [{"Format": "ova", "UserBucket": {"S3Bucket": bucket, "S3Key": "vm.ova"}}]
    containers += [{"Format": "raw", "UserBucket": {"S3Bucket": bucket, "S3Key": "d.raw"}}] * 19
    task = wait_task(ec2, ec2.import_image(DiskContainers=containers)["ImportTaskId"])
    assert task["Status"] == "deleted"
    assert "at most 21" in task["StatusMessage"]
