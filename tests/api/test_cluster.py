"""`scripts/cluster`: API and worker processes with separate empty data dirs (and network
namespaces, where the machine allows) sharing only one PostgreSQL and one S3-compatible store
(SeaweedFS), as on several machines. An import asked of
one API process is read and exported through another and stored once across processes; an
encrypted import (inspected) and its re-keyed CopyImage read back across processes; a
worker killed (-9) mid-import is replaced and the import completes bytes-exact with nothing
left behind after gc; a PostgreSQL restart and an object store frozen for 20 s mid-import are
survived; a bucket filled through one API process is imported through another."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path

import boto3
import pytest

from ..helpers import BIN, make_raw_disk, qemu_raw_sha256, snapshot_sha256, wait_task
from .ami_fixtures import wait_image
from .test_export_image import same_disk, wait_export

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "cluster"
MiB = 1024 * 1024


def _cluster(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "VMIMPORT_LEASE_SECONDS": "6", "VMIMPORT_HEARTBEAT_SECONDS": "1",
           "VMIMPORT_POLL_SECONDS": "0.2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(CLUSTER), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    where = tmp_path_factory.mktemp("cluster")
    try:
        # Each process in a network namespace of its own where the machine allows it.
        state = json.loads(_cluster("up", where, "--netns", "auto").stdout)
        yield state
    finally:
        if (where / "cluster.json").exists():
            _cluster("down", where)


def _client(state, api: str, service: str = "ec2"):
    keys = state["credentials"]
    return boto3.client(service, endpoint_url=state["processes"][api]["endpoint"],
                        region_name="us-east-1", aws_access_key_id=keys["access_key"],
                        aws_secret_access_key=keys["secret_key"])


def _store(state):
    s3 = state["s3"]
    return boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id=s3["access_key"], aws_secret_access_key=s3["secret_key"])


def _keys(state, folder: str) -> set[str]:
    pages = _store(state).get_paginator("list_objects_v2").paginate(
        Bucket="vmimport-blocks", Prefix=f"cluster/{folder}/")
    return {o["Key"] for p in pages for o in p.get("Contents", [])}


def _import_snapshot(ec2, key: str, fmt: str = "raw") -> str:
    return ec2.import_snapshot(DiskContainer={
        "Format": fmt, "UserBucket": {"S3Bucket": "images", "S3Key": key}})["ImportTaskId"]


def test_each_process_has_its_own_network_where_the_machine_allows(cluster):
    if not cluster.get("net"):
        pytest.skip("this machine does not allow network namespaces: the cluster is on loopback")
    own = os.readlink("/proc/self/ns/net")
    spaces = {name: os.readlink(f"/proc/{proc['pid']}/ns/net")
              for name, proc in cluster["processes"].items()}
    assert len(set(spaces.values())) == len(spaces) and own not in spaces.values(), spaces
    for name in ("api1", "api2"):  # each listens on its own address, not on loopback
        assert cluster["net"]["namespaces"][name] in cluster["processes"][name]["endpoint"]
    assert "127.0.0.1" not in cluster["database_url"] + cluster["s3"]["endpoint_url"]


def test_an_import_asked_of_one_api_is_read_and_exported_through_another(cluster, disks,
                                                                         tmp_path):
    _store(cluster).upload_file(str(disks["vmdk"]), "images", "disk.vmdk")
    one, two = _client(cluster, "api1"), _client(cluster, "api2")
    task_id = one.import_image(DiskContainers=[{
        "Format": "vmdk", "UserBucket": {"S3Bucket": "images", "S3Key": "disk.vmdk"}}]
    )["ImportTaskId"]
    task = wait_task(two, task_id, timeout=600)
    assert task["Status"] == "completed", task
    snapshot_id = task["SnapshotDetails"][0]["SnapshotId"]
    expected, size = qemu_raw_sha256(disks["vmdk"], "vmdk")
    assert snapshot_sha256(_client(cluster, "api2", "ebs"), snapshot_id, size) == expected
    for name, proc in cluster["processes"].items():  # nothing of the store on any local disk
        assert not (Path(cluster["dir"]) / name / "blocks").exists()

    packs = _keys(cluster, "packs")
    again = wait_task(one, _import_snapshot(two, "disk.vmdk", "vmdk"), snapshot=True,
                      timeout=600)
    assert again["SnapshotTaskDetail"]["Status"] == "completed", again
    assert _keys(cluster, "packs") == packs  # stored once across processes (dedup)

    export = two.export_image(ImageId=task["ImageId"], DiskImageFormat="RAW",
                              S3ExportLocation={"S3Bucket": "images", "S3Prefix": "exports/"})
    done = wait_export(one, export["ExportImageTaskId"])
    assert done["Status"] == "completed", done
    exported = tmp_path / "exported.raw"
    _store(cluster).download_file("images", f"exports/{export['ExportImageTaskId']}.raw",
                                  str(exported))
    same_disk(disks["raw"], exported, "raw")


def test_an_encrypted_import_and_its_copy_across_processes(cluster, disks):
    """A KMS key made through one API process seals an import asked of the other (inspected:
    Linux x86_64); CopyImage re-seals it under a key made through the first; both snapshots
    read back through the other process as qemu-img's raw (the KMS root key is all the
    processes share besides the database and the store)."""
    _store(cluster).upload_file(str(disks["vmdk"]), "images", "sealed.vmdk")
    one, two = _client(cluster, "api1"), _client(cluster, "api2")
    key_arn = _client(cluster, "api2", "kms").create_key(
        Description="cluster")["KeyMetadata"]["Arn"]
    task = wait_task(two, one.import_image(Encrypted=True, KmsKeyId=key_arn, DiskContainers=[{
        "Format": "vmdk", "UserBucket": {"S3Bucket": "images", "S3Key": "sealed.vmdk"}}])
        ["ImportTaskId"], timeout=600)
    assert task["Status"] == "completed", task
    assert task["Encrypted"] is True and task["KmsKeyId"] == key_arn
    assert task["Platform"] == "Linux" and task["Architecture"] == "x86_64", task
    expected, size = qemu_raw_sha256(disks["vmdk"], "vmdk")
    sealed = task["SnapshotDetails"][0]["SnapshotId"]
    assert snapshot_sha256(_client(cluster, "api2", "ebs"), sealed, size) == expected

    other_key = _client(cluster, "api1", "kms").create_key()["KeyMetadata"]["Arn"]
    copy_id = two.copy_image(Name="sealed-copy", SourceImageId=task["ImageId"],
                             SourceRegion="us-east-1", Encrypted=True,
                             KmsKeyId=other_key)["ImageId"]
    image = wait_image(one, copy_id, timeout=300)
    assert image["State"] == "available", image
    copied = image["BlockDeviceMappings"][0]["Ebs"]
    assert copied["Encrypted"] is True and copied["KmsKeyId"] == other_key
    assert snapshot_sha256(_client(cluster, "api1", "ebs"), copied["SnapshotId"],
                           size) == expected


def _wait_progress(ec2, task_id: str) -> None:
    """Until the import has stored some blocks (its progress moved), still running."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        detail = ec2.describe_import_snapshot_tasks(
            ImportTaskIds=[task_id])["ImportSnapshotTasks"][0]["SnapshotTaskDetail"]
        assert detail["Status"] != "completed", "the import finished before the test acted"
        if int(detail.get("Progress", "0") or 0) > 10:
            return
        time.sleep(0.1)
    raise AssertionError(f"no progress: {detail}")


def _big_disk(tmp_path, cluster, name: str) -> tuple[str, int]:
    raw = make_raw_disk(tmp_path / f"{name}.raw", 768 * MiB, seed=hash(name) % 1000,
                        data_fraction=0.9)
    _store(cluster).upload_file(str(raw), "images", f"{name}.raw")
    return qemu_raw_sha256(raw, "raw")


def test_a_worker_killed_mid_import_is_replaced_and_nothing_leaks(cluster, tmp_path):
    expected, size = _big_disk(tmp_path, cluster, "kill")
    ec2 = _client(cluster, "api1")
    task_id = _import_snapshot(ec2, "kill.raw")
    _wait_progress(ec2, task_id)
    for name in ("worker1", "worker2", "worker3"):  # whichever holds it: all gone at once
        os.killpg(cluster["processes"][name]["pid"], signal.SIGKILL)
    replacement = _start_worker(cluster, "worker4")
    try:
        task = wait_task(_client(cluster, "api2"), task_id, snapshot=True, timeout=900)
        detail = task["SnapshotTaskDetail"]
        assert detail["Status"] == "completed", task
        assert snapshot_sha256(_client(cluster, "api2", "ebs"), detail["SnapshotId"],
                               size) == expected
        gc = subprocess.run([str(BIN / "vmimport"), "gc", "--data-dir",
                             str(Path(cluster["dir"]) / "gc")],
                            env={**_env(cluster), "VMIMPORT_GC_LEFTOVER_GRACE_HOURS": "0"},
                            capture_output=True, text=True, timeout=300)
        assert gc.returncode == 0, gc.stderr
        assert _keys(cluster, "uploads") == set()
        uploads = _store(cluster).list_multipart_uploads(Bucket="vmimport-blocks")
        assert uploads.get("Uploads", []) == []  # the killed import's parts are reclaimed
    finally:
        os.killpg(replacement.pid, signal.SIGTERM)
        replacement.wait(timeout=30)


def _script():
    """scripts/cluster as a module: one place says how its processes are started."""
    loader = SourceFileLoader("cluster_script", str(CLUSTER))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def _env(cluster) -> dict:
    """What scripts/cluster gives its processes."""
    return {**_script().process_env(cluster), "VMIMPORT_LEASE_SECONDS": "6",
            "VMIMPORT_HEARTBEAT_SECONDS": "1", "VMIMPORT_POLL_SECONDS": "0.2",
            "PYTHONPATH": str(ROOT)}


def _start_worker(cluster, name: str) -> subprocess.Popen:
    """One more worker machine: an empty data dir (and network namespace) of its own."""
    return _script().start_process(cluster, name, ["worker"], env=_env(cluster))


def test_a_postgresql_restart_mid_import_is_survived(cluster, tmp_path):
    expected, size = _big_disk(tmp_path, cluster, "restart")
    worker = _start_worker(cluster, "worker5")  # the cluster's own may have been killed
    try:
        _import_through_a_restart(cluster, expected, size)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


def _import_through_a_restart(cluster, expected: str, size: int) -> None:
    ec2 = _client(cluster, "api2")
    task_id = _import_snapshot(ec2, "restart.raw")
    _wait_progress(ec2, task_id)
    pg = Path(cluster["pg_dir"]) / "data"
    binary = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, str(binary), "-D", str(pg), "-l", str(pg.parent / "log"), "-m",
                    "fast", "-w", "restart"],
                   check=True, capture_output=True, timeout=120)
    task = wait_task(_client(cluster, "api1"), task_id, snapshot=True, timeout=900)
    detail = task["SnapshotTaskDetail"]
    assert detail["Status"] == "completed", task
    assert snapshot_sha256(_client(cluster, "api1", "ebs"), detail["SnapshotId"],
                           size) == expected


def test_an_object_store_that_stops_answering_for_20_s_is_ridden_out(cluster, tmp_path):
    """SeaweedFS frozen (SIGSTOP) for 20 s in the middle of an import, as a store that stops
    answering does: the requests in flight wait, retries back off, and the import completes
    bytes-exact once it answers again."""
    expected, size = _big_disk(tmp_path, cluster, "stall")
    worker = _start_worker(cluster, "worker7")  # the cluster's own may have been killed
    try:
        ec2 = _client(cluster, "api1")
        task_id = _import_snapshot(ec2, "stall.raw")
        _wait_progress(ec2, task_id)
        os.kill(cluster["s3"]["pid"], signal.SIGSTOP)
        try:
            time.sleep(20)
        finally:
            os.kill(cluster["s3"]["pid"], signal.SIGCONT)
        task = wait_task(_client(cluster, "api2"), task_id, snapshot=True, timeout=900)
        detail = task["SnapshotTaskDetail"]
        assert detail["Status"] == "completed", task
        assert snapshot_sha256(_client(cluster, "api2", "ebs"), detail["SnapshotId"],
                               size) == expected
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


def test_a_bucket_filled_through_one_api_process_is_imported_through_another(cluster):
    """Buckets of vmimport's own S3 API are kept in the object store: one filled through one
    API process is imported by a task asked of another, read by a worker in a third data dir,
    and its snapshot reads back through the first."""
    s3 = _client(cluster, "api1", "s3")
    s3.create_bucket(Bucket="made-on-api1")
    data = bytes(range(256)) * (4 * MiB // 256)
    s3.put_object(Bucket="made-on-api1", Key="disk.raw", Body=data)
    ec2 = _client(cluster, "api2")
    worker = _start_worker(cluster, "worker6")  # the cluster's own may have been killed
    try:
        task = wait_task(ec2, ec2.import_snapshot(DiskContainer={"Format": "raw", "UserBucket": {
            "S3Bucket": "made-on-api1", "S3Key": "disk.raw"}})["ImportTaskId"],
            snapshot=True, timeout=300)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    detail = task["SnapshotTaskDetail"]
    assert detail["Status"] == "completed", task
    assert snapshot_sha256(_client(cluster, "api1", "ebs"), detail["SnapshotId"],
                           len(data)) == hashlib.sha256(data).hexdigest()
    assert "cluster/buckets/made-on-api1/disk.raw" in _keys(cluster, "buckets")
