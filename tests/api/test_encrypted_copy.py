"""CopyImage with Encrypted/KmsKeyId (Packer's ami_encrypt): the copy's blocks re-sealed under
the destination key, read back unchanged through the EBS direct APIs; the call answers at once
with the image pending, a job makes it available (or failed, with a StateReason)."""

from __future__ import annotations

import json
import uuid

import pytest

from ..conftest import CREDENTIALS
from ..helpers import Server, snapshot_sha256
from .ami_fixtures import DISK_BYTES, error_code, error_of, new_ami, wait_image


def copy(ec2, image_id: str, **kwargs) -> dict:
    copy_id = ec2.copy_image(Name=f"enc-{uuid.uuid4().hex[:8]}", SourceImageId=image_id,
                             SourceRegion="us-east-1", **kwargs)["ImageId"]
    image = wait_image(ec2, copy_id)
    assert image["State"] == "available", image
    snapshot_id = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    return {"image": image, "snapshot": ec2.describe_snapshots(
        SnapshotIds=[snapshot_id])["Snapshots"][0]}


@pytest.fixture
def ami(server, ec2, tmp_path):
    return new_ami(server, ec2, tmp_path)


def test_encrypted_copy_under_the_default_and_a_named_key(server, ec2, ebs, ami):
    plain = snapshot_sha256(ebs, ami["SnapshotId"], DISK_BYTES)
    default = copy(ec2, ami["ImageId"], Encrypted=True)
    snapshot = default["snapshot"]
    assert snapshot["Encrypted"] is True and snapshot["KmsKeyId"].startswith("arn:aws:kms:")
    mapping = default["image"]["BlockDeviceMappings"][0]["Ebs"]
    assert mapping["Encrypted"] is True and mapping["KmsKeyId"] == snapshot["KmsKeyId"]
    assert snapshot_sha256(ebs, snapshot["SnapshotId"], DISK_BYTES) == plain

    kms = server.client("kms")
    key_arn = kms.create_key(Description="packer ami_encrypt")["KeyMetadata"]["Arn"]
    named = copy(ec2, ami["ImageId"], Encrypted=True, KmsKeyId=key_arn)["snapshot"]
    assert named["KmsKeyId"] == key_arn
    assert snapshot_sha256(ebs, named["SnapshotId"], DISK_BYTES) == plain

    # A copy of an encrypted image stays encrypted, under its key unless told otherwise.
    again = copy(ec2, default["image"]["ImageId"])["snapshot"]
    assert again["Encrypted"] is True and again["KmsKeyId"] == snapshot["KmsKeyId"]
    rekeyed = copy(ec2, default["image"]["ImageId"], Encrypted=True, KmsKeyId=key_arn)["snapshot"]
    assert rekeyed["KmsKeyId"] == key_arn
    assert snapshot_sha256(ebs, rekeyed["SnapshotId"], DISK_BYTES) == plain
    refused = error_of(ec2.copy_image, Name="to-plain", SourceImageId=default["image"]["ImageId"],
                       SourceRegion="us-east-1", Encrypted=False)
    assert refused["Code"] == "InvalidParameterCombination"


def test_encrypted_copy_refusals(server, ec2, ami):
    kms = server.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    assert error_code(ec2.copy_image, Name="key-alone", SourceImageId=ami["ImageId"],
                      SourceRegion="us-east-1", KmsKeyId=key_id) == "InvalidParameterDependency"
    kms.disable_key(KeyId=key_id)
    before = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    disabled = error_of(ec2.copy_image, Name="disabled-key", SourceImageId=ami["ImageId"],
                        SourceRegion="us-east-1", Encrypted=True, KmsKeyId=key_id)
    assert disabled["Code"] == "InvalidParameterValue" and key_id in disabled["Message"]
    after = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert after == before
    assert error_code(ec2.copy_image, Name="no-such-key", SourceImageId=ami["ImageId"],
                      SourceRegion="us-east-1", Encrypted=True,
                      KmsKeyId="alias/does-not-exist") == "InvalidParameterValue"


def test_encrypted_copy_is_pending_until_its_job_ends(tmp_path):
    """An API-only server and a separate worker process: with the worker stopped the copies
    stay pending; once it runs, one becomes available and the other, whose key was disabled
    in between, fails with a StateReason."""
    env = {"VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS)}
    api = Server(tmp_path / "data", env=env, workers=0).start()
    worker = Server(tmp_path / "data", env=env, command="worker", workers=1,
                    database_url=api.database_url)
    try:
        ec2, ebs, kms = api.client("ec2"), api.client("ebs"), api.client("kms")
        worker.start()
        ami = new_ami(api, ec2, tmp_path)
        worker.stop()
        plain = snapshot_sha256(ebs, ami["SnapshotId"], DISK_BYTES)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        good, doomed = (ec2.copy_image(Name=f"async-{n}", SourceImageId=ami["ImageId"],
                                       SourceRegion="us-east-1", Encrypted=True,
                                       **extra)["ImageId"]
                        for n, extra in (("good", {}), ("doomed", {"KmsKeyId": key_id})))
        for image_id in (good, doomed):
            image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
            assert image["State"] == "pending" and "StateReason" not in image
            snapshot_id = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
            assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0][
                "State"] == "pending"
        kms.disable_key(KeyId=key_id)

        worker = Server(tmp_path / "data", env=env, command="worker", workers=1,
                        database_url=api.database_url).start()
        done = wait_image(ec2, good)
        assert done["State"] == "available", done
        snapshot = ec2.describe_snapshots(SnapshotIds=[
            done["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]])["Snapshots"][0]
        assert snapshot["State"] == "completed" and snapshot["Encrypted"] is True
        assert snapshot_sha256(ebs, snapshot["SnapshotId"], DISK_BYTES) == plain

        failed = wait_image(ec2, doomed)
        assert failed["State"] == "failed", failed
        assert failed["StateReason"]["Code"] == "Client.InvalidKMSKey.InvalidState"
        assert key_id in failed["StateReason"]["Message"]
        snapshot_id = failed["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0][
            "State"] == "error"
        ec2.deregister_image(ImageId=doomed, DeleteAssociatedSnapshots=True)
    finally:
        worker.stop()
        api.stop()
