"""A live server whose block store is a bucket on a real S3-compatible server (SeaweedFS): an
import's snapshot reads back over the EBS direct APIs as qemu-img's raw, nothing of it lands in
the data dir, the AMI exports as the same disk, and once it is deregistered `vmimport gc`
empties the store."""

from __future__ import annotations

import subprocess

import pytest

from ..helpers import BIN, Server, qemu_raw_sha256, snapshot_sha256, wait_task
from ..s3server import S3Server
from .test_export_image import same_disk, wait_export


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3blocks")).start()
    server.client().create_bucket(Bucket="vmimport-blocks")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def object_backed(tmp_path_factory, s3):
    srv = Server(tmp_path_factory.mktemp("objvmimport") / "data",
                 env=s3.blocks_env("s3://vmimport-blocks/t/")).start()
    yield srv
    srv.stop()


def test_import_and_export_with_blocks_in_the_object_store(s3, object_backed, disks):
    server = object_backed
    server.put_object("images", "disk.vmdk", disks["vmdk"])
    ec2, ebs = server.client(), server.client("ebs")
    task = wait_task(ec2, ec2.import_image(DiskContainers=[{
        "Format": "vmdk", "UserBucket": {"S3Bucket": "images", "S3Key": "disk.vmdk"}}])
        ["ImportTaskId"])
    assert task["Status"] == "completed", task
    snapshot_id = task["SnapshotDetails"][0]["SnapshotId"]
    expected, size = qemu_raw_sha256(disks["vmdk"], "vmdk")
    assert snapshot_sha256(ebs, snapshot_id, size) == expected

    listed = s3.client().list_objects_v2(Bucket="vmimport-blocks", Prefix="t/")
    keys = {o["Key"] for o in listed.get("Contents", [])}
    assert f"t/manifests/{snapshot_id}" in keys
    assert any(k.startswith("t/packs/") for k in keys)
    assert not any(k.startswith("t/uploads/") for k in keys)  # every pack upload finished
    assert not (server.data_dir / "blocks").exists()  # nothing of the store on local disk

    (server.buckets / "exports").mkdir(exist_ok=True)
    export = ec2.export_image(ImageId=task["ImageId"], DiskImageFormat="RAW",
                              S3ExportLocation={"S3Bucket": "exports", "S3Prefix": "vms/"})
    done = wait_export(ec2, export["ExportImageTaskId"])
    assert done["Status"] == "completed", done
    same_disk(disks["raw"], server.buckets / "exports" / "vms" /
              f"{export['ExportImageTaskId']}.raw", "raw")

    # Deregistered with its snapshot: `vmimport gc` (no grace) deletes its packs.
    ec2.deregister_image(ImageId=task["ImageId"], DeleteAssociatedSnapshots=True)
    packs = {k for k in keys if k.startswith("t/packs/")}
    gc = subprocess.run([str(BIN / "vmimport"), "gc", "--data-dir", str(server.data_dir),
                         *(["--database-url", server.database_url]
                           if server.database_url else [])],
                        env={**server.env, "VMIMPORT_GC_LEFTOVER_GRACE_HOURS": "0"},
                        capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    assert f"removed {len(packs)} unreferenced pack(s)" in gc.stdout
    listed = s3.client().list_objects_v2(Bucket="vmimport-blocks", Prefix="t/")
    assert listed.get("Contents", []) == []


def test_an_import_whose_store_goes_away_fails_naming_it(tmp_path, disks):
    """The store stops while the server runs (a first import shows the worker had it): the
    writes are retried (botocore's standard mode), then the import fails as a ServerError that
    names the bucket and endpoint, and no secret reaches the log."""
    s3 = S3Server(tmp_path / "s3").start()
    server = None
    try:
        s3.client().create_bucket(Bucket="gone-blocks")
        server = Server(tmp_path / "data", env=s3.blocks_env("s3://gone-blocks/p/")).start()
        server.put_object("images", "disk.raw", disks["raw"])
        ec2 = server.client()
        container = {"Format": "raw", "UserBucket": {"S3Bucket": "images", "S3Key": "disk.raw"}}
        first = wait_task(ec2, ec2.import_image(DiskContainers=[container])["ImportTaskId"])
        assert first["Status"] == "completed", first
        s3.stop()
        task = wait_task(ec2, ec2.import_image(DiskContainers=[container])["ImportTaskId"],
                         timeout=180)
        assert task["Status"] == "deleted", task
        assert task["StatusMessage"].startswith(
            f"ServerError: the block store failed: the block store s3://gone-blocks/p/ at "
            f"{s3.endpoint_url}: "), task["StatusMessage"]
        assert s3.secret_key not in server.log_path.read_text(errors="replace")
    finally:
        if server is not None:
            server.stop()
        s3.stop()
