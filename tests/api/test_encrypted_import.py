"""Encrypted imports: the key in all four forms or the default EBS key, resolved asynchronously;
blocks sealed at rest (no plaintext anywhere in the data dir) and read back transparently;
tampering detected; a key of another account, a disabled key and the like refused."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from vmimport.blockstore.file_store import FileBlockStore

from ..helpers import snapshot_sha256, wait_task

MARKER = b"VMIMPORT-ENCRYPTION-TEST-MARKER-" + uuid.uuid4().hex.encode()


@pytest.fixture(scope="module")
def marked_disk(disks, tmp_path_factory) -> tuple[Path, str, int]:
    """The bootable test disk with a distinctive marker written near its end."""
    path = tmp_path_factory.mktemp("enc") / "marked.raw"
    shutil.copyfile(disks["raw"], path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - 3 * 1024 * 1024)
        f.write(MARKER * (65536 // len(MARKER)))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, digest, size


def _files_at_rest(data_dir: Path):
    """Every file vmimport itself wrote (the user's source buckets excluded)."""
    buckets = data_dir / "buckets"
    for path in data_dir.rglob("*"):
        if path.is_file() and buckets not in path.parents:
            yield path


def _import_image(ec2, bucket, **extra):
    return ec2.import_image(DiskContainers=[{"Format": "raw", "UserBucket": {
        "S3Bucket": bucket, "S3Key": "disk.raw"}}], **extra)["ImportTaskId"]


def _import_snapshot(ec2, bucket, **extra):
    return ec2.import_snapshot(DiskContainer={"Format": "raw", "UserBucket": {
        "S3Bucket": bucket, "S3Key": "disk.raw"}}, **extra)["ImportTaskId"]


@pytest.fixture(scope="module")
def small_bucket(server):
    bucket = "enc-small-" + uuid.uuid4().hex[:6]
    data = (b"small encrypted disk " * 40000)[:1 << 20]
    server.put_object(bucket, "disk.raw", data)
    return bucket, hashlib.sha256(data).hexdigest(), len(data)


@pytest.fixture(scope="module")
def customer_key(server):
    key = server.aws("kms", "create-key", "--description", "vmimport test")["KeyMetadata"]
    alias = "alias/enc-" + uuid.uuid4().hex[:8]
    server.aws("kms", "create-alias", "--alias-name", alias, "--target-key-id", key["KeyId"])
    return key, alias


def test_encrypted_image_reads_back_and_leaves_no_plaintext(server, ec2, ebs, marked_disk,
                                                            customer_key):
    path, digest, size = marked_disk
    key, alias = customer_key
    bucket = "enc-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.raw", path)
    task_id = _import_image(ec2, bucket, Encrypted=True, KmsKeyId=alias)
    done = wait_task(ec2, task_id, timeout=300)
    assert done["Status"] == "completed", done
    assert done["Encrypted"] is True and done["KmsKeyId"] == key["Arn"]
    snapshot_id = done["SnapshotDetails"][0]["SnapshotId"]
    snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert snapshot["Encrypted"] is True and snapshot["KmsKeyId"] == key["Arn"]
    image = ec2.describe_images(ImageIds=[done["ImageId"]])["Images"][0]
    mapping = image["BlockDeviceMappings"][0]["Ebs"]
    assert mapping["Encrypted"] is True and mapping["KmsKeyId"] == key["Arn"]
    assert snapshot_sha256(ebs, snapshot_id, size) == digest
    # The marker is in the user's bucket (so the scan can see it) and nowhere else.
    assert MARKER in (server.buckets / bucket / "disk.raw").read_bytes()
    leaks = [p for p in _files_at_rest(server.data_dir) if MARKER in p.read_bytes()]
    assert not leaks, leaks


def test_default_key_and_all_four_key_forms(server, ec2, ebs, small_bucket, customer_key):
    bucket, digest, size = small_bucket
    key, alias = customer_key
    default = server.client("kms").describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]
    alias_arn = f"arn:aws:kms:us-east-1:000000000000:{alias}"
    for ref, expected in ((None, default), (key["KeyId"], key["Arn"]), (key["Arn"], key["Arn"]),
                          (alias, key["Arn"]), (alias_arn, key["Arn"])):
        extra = {"KmsKeyId": ref} if ref else {}
        task = wait_task(ec2, _import_snapshot(ec2, bucket, Encrypted=True, **extra),
                         snapshot=True)
        detail = task["SnapshotTaskDetail"]
        assert detail["Status"] == "completed", (ref, detail)
        assert detail["Encrypted"] is True and detail["KmsKeyId"] == expected
        snap = ec2.describe_snapshots(SnapshotIds=[detail["SnapshotId"]])["Snapshots"][0]
        assert snap["Encrypted"] and snap["KmsKeyId"] == expected
        assert snapshot_sha256(ebs, detail["SnapshotId"], size) == digest


def test_unusable_keys_fail_the_task_asynchronously(server, ec2, small_bucket):
    bucket, _, _ = small_bucket
    kms = server.client("kms")
    disabled = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=disabled["KeyId"])
    doomed = kms.create_key()["KeyMetadata"]
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    foreign = server.client("kms", "OTHERKEY", "othersecret").create_key()["KeyMetadata"]
    unknown = str(uuid.uuid4())
    cases = [
        ("alias/does-not-exist", "alias/does-not-exist", "is not found"),
        (unknown, unknown, "does not exist"),
        (disabled["KeyId"], disabled["Arn"], "is disabled"),
        (doomed["Arn"], doomed["Arn"], "is pending deletion"),
        (foreign["Arn"], foreign["Arn"], "belongs to account 111111111111"),
        (disabled["Arn"].replace("us-east-1", "eu-west-1"), "eu-west-1",
         "not in us-east-1"),
    ]
    tasks = [(_import_image(ec2, bucket, Encrypted=True, KmsKeyId=ref), ref, name, why)
             for ref, name, why in cases]
    for task_id, ref, name, why in tasks:
        done = wait_task(ec2, task_id)
        message = done["StatusMessage"]
        assert done["Status"] == "deleted", done
        assert message.startswith(f"ClientError: The KMS key {ref} cannot be used"), message
        assert name in message and why in message, message


def test_key_of_one_account_unusable_by_another(server, small_bucket, customer_key):
    bucket, _, _ = small_bucket
    key, _ = customer_key
    other = server.client("ec2", "OTHERKEY", "othersecret")
    iam = server.client("iam", "OTHERKEY", "othersecret")
    _ensure_role(iam)
    server.put_object(bucket, "disk.raw", (server.buckets / bucket / "disk.raw").read_bytes())
    done = wait_task(other, _import_snapshot(other, bucket, Encrypted=True,
                                             KmsKeyId=key["Arn"]), snapshot=True)
    message = done["SnapshotTaskDetail"]["StatusMessage"]
    assert "belongs to account 000000000000, not to 111111111111" in message, message
    done = wait_task(other, _import_snapshot(other, bucket, Encrypted=True,
                                             KmsKeyId=key["KeyId"]), snapshot=True)
    assert "does not exist" in done["SnapshotTaskDetail"]["StatusMessage"]


def _ensure_role(iam):
    from ..service.test_policy import TRUST_POLICY
    try:
        iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument=TRUST_POLICY)
    except ClientError as err:
        assert err.response["Error"]["Code"] == "EntityAlreadyExists"
    iam.put_role_policy(RoleName="vmimport", PolicyName="read-all", PolicyDocument=(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": '
        '["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "kms:*"], '
        '"Resource": "*"}]}'))


def _encrypted_snapshot(ec2, bucket, **extra) -> str:
    done = wait_task(ec2, _import_snapshot(ec2, bucket, Encrypted=True, **extra),
                     snapshot=True)
    assert done["SnapshotTaskDetail"]["Status"] == "completed", done
    return done["SnapshotTaskDetail"]["SnapshotId"]


def test_disabled_key_makes_snapshot_unreadable(server, ec2, ebs, small_bucket):
    bucket, digest, size = small_bucket
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    snapshot_id = _encrypted_snapshot(ec2, bucket, KmsKeyId=key["KeyId"])
    block = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"][0]
    kms.disable_key(KeyId=key["KeyId"])
    with pytest.raises(ClientError) as err:
        ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=block["BlockIndex"],
                               BlockToken=block["BlockToken"])
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "is disabled" in err.value.response["Error"]["Message"]
    kms.enable_key(KeyId=key["KeyId"])
    assert snapshot_sha256(ebs, snapshot_id, size) == digest


def test_tampered_block_is_detected_not_returned(server, ec2, ebs, small_bucket):
    bucket, _, _ = small_bucket
    snapshot_id = _encrypted_snapshot(ec2, bucket)
    block = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"][0]
    token = block["BlockToken"]
    store = FileBlockStore(server.data_dir / "blocks")
    ref = store.read_manifest(snapshot_id).blocks[block["BlockIndex"]]
    assert ref.digest == token
    with open(store.pack_path(ref), "r+b") as pack:
        pack.seek(ref.offset + ref.length // 2)
        byte = pack.read(1)[0]
        pack.seek(-1, 1)
        pack.write(bytes([byte ^ 0x01]))
    with pytest.raises(ClientError) as err:
        ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=block["BlockIndex"],
                               BlockToken=token)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert f"block {block['BlockIndex']} of {snapshot_id} cannot be returned" in \
        err.value.response["Error"]["Message"]


def test_snapshot_source_of_an_encrypted_snapshot(server, ec2, ebs, marked_disk):
    """DiskContainer.SnapshotId naming an encrypted snapshot: inspected and copied through
    transparent decryption, re-sealed under the new snapshot's own data key."""
    path, digest, size = marked_disk
    bucket = "enc-src-" + uuid.uuid4().hex[:6]
    server.put_object(bucket, "disk.raw", path)
    source = _encrypted_snapshot(ec2, bucket)
    done = wait_task(ec2, ec2.import_image(DiskContainers=[{"SnapshotId": source}],
                                           Encrypted=True)["ImportTaskId"], timeout=300)
    assert done["Status"] == "completed", done
    copy = done["SnapshotDetails"][0]["SnapshotId"]
    assert copy != source and snapshot_sha256(ebs, copy, size) == digest
    plain = wait_task(ec2, ec2.import_image(DiskContainers=[{"SnapshotId": source}])[
        "ImportTaskId"])
    assert plain["Status"] == "deleted"
    assert "must be encrypted too" in plain["StatusMessage"], plain


def test_readme_cli_command(server, ec2, small_bucket, customer_key):
    bucket, _, _ = small_bucket
    key, alias = customer_key
    task = server.aws("ec2", "import-snapshot", "--encrypted", "--kms-key-id", alias,
                      "--disk-container",
                      f"Format=raw,UserBucket={{S3Bucket={bucket},S3Key=disk.raw}}")
    done = wait_task(ec2, task["ImportTaskId"], snapshot=True)
    assert done["SnapshotTaskDetail"]["KmsKeyId"] == key["Arn"], done
    task = server.aws("ec2", "import-image", "--encrypted", "--kms-key-id", alias,
                      "--disk-containers",
                      f"Format=raw,UserBucket={{S3Bucket={bucket},S3Key=disk.raw}}")
    assert task["Encrypted"] is True and task["KmsKeyId"] == alias
