"""IAM on the same endpoint (Query protocol) and the service role of the import calls: AWS's
documented vmimport set-up typed with the AWS CLI, the synchronous role check, and the role's
policies enforced (IAM semantics) before a bucket is read or a KMS key is used."""

from __future__ import annotations

import json
import os
import uuid

import botocore.serialize
import pytest
from botocore.exceptions import ClientError

from vmimport.api import query_protocol
from vmimport.api.models import service_model

from ..helpers import Server, wait_task
from ..service.test_policy import ROLE_POLICY, TRUST_POLICY

ACCOUNT = "222222222222"
CREDENTIALS = [
    {"access_key": "test", "secret_key": "test", "account_id": "000000000000"},
    {"access_key": "FRESHKEY", "secret_key": "freshsecret", "account_id": ACCOUNT},
]
ROLE_ERROR = "The service role {} provided does not exist or does not have sufficient permissions"
FORBIDDEN = ("ClientError: Disk validation failed [We do not have access to the given "
             "resource. Reason 403 Forbidden]")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A server of its own: account 222222222222 starts with no roles, and owns the bucket
    directories the tests make by hand."""
    srv = Server(tmp_path_factory.mktemp("iam") / "data",
                 env={"VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS),
                      "VMIMPORT_S3_LOCAL_BUCKET_OWNER": ACCOUNT}).start()
    yield srv
    srv.stop()


def cli(server, *args, check=True):
    return server.aws(*args, access_key="FRESHKEY", secret_key="freshsecret", check=check)


def client(server, service):
    return server.client(service, "FRESHKEY", "freshsecret")


def _error(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def _snapshot_import(ec2, bucket, key, **extra):
    return ec2.import_snapshot(DiskContainer={"Format": "raw", "UserBucket": {
        "S3Bucket": bucket, "S3Key": key}}, **extra)["ImportTaskId"]


@pytest.fixture(scope="module")
def documented_role(fresh, tmp_path_factory):
    """The set-up exactly as AWS's VM Import/Export guide shows it."""
    work = tmp_path_factory.mktemp("iam-docs")
    (work / "trust-policy.json").write_text(TRUST_POLICY)
    (work / "role-policy.json").write_text(ROLE_POLICY)
    ec2 = client(fresh, "ec2")
    code, message = _error(_snapshot_import, ec2, "disk-image-file-bucket", "disk.raw")
    assert code == "InvalidParameter"
    assert message.startswith(ROLE_ERROR.format("vmimport"))
    assert f"no role named vmimport exists in account {ACCOUNT}" in message
    role = cli(fresh, "iam", "create-role", "--role-name", "vmimport",
               "--assume-role-policy-document", f"file://{work / 'trust-policy.json'}")["Role"]
    cli(fresh, "iam", "put-role-policy", "--role-name", "vmimport", "--policy-name",
        "vmimport", "--policy-document", f"file://{work / 'role-policy.json'}")
    fresh.put_object("disk-image-file-bucket", "disk.raw", os.urandom(1 << 20))
    return role


def test_documented_setup(fresh, documented_role):
    assert documented_role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/vmimport"
    assert documented_role["RoleId"].startswith("AROA")
    assert documented_role["AssumeRolePolicyDocument"] == json.loads(TRUST_POLICY)
    got = cli(fresh, "iam", "get-role-policy", "--role-name", "vmimport", "--policy-name",
              "vmimport")
    assert got["PolicyDocument"] == json.loads(ROLE_POLICY)
    assert cli(fresh, "iam", "list-role-policies", "--role-name", "vmimport")[
        "PolicyNames"] == ["vmimport"]
    assert [r["RoleName"] for r in cli(fresh, "iam", "list-roles")["Roles"]] == ["vmimport"]
    ec2 = client(fresh, "ec2")
    done = wait_task(ec2, _snapshot_import(ec2, "disk-image-file-bucket", "disk.raw"),
                     snapshot=True)
    assert done["SnapshotTaskDetail"]["Status"] == "completed", done


def test_bucket_not_in_policy_fails_task_naming_action_and_arn(fresh, documented_role):
    fresh.put_object("another-bucket", "disk.raw", os.urandom(1 << 16))
    ec2 = client(fresh, "ec2")
    done = wait_task(ec2, _snapshot_import(ec2, "another-bucket", "disk.raw"), snapshot=True)
    message = done["SnapshotTaskDetail"]["StatusMessage"]
    assert message.startswith(FORBIDDEN), message
    assert ("the service role vmimport is not allowed s3:GetBucketLocation on "
            "arn:aws:s3:::another-bucket: no statement") in message


def test_explicit_deny_wins(fresh, documented_role):
    iam = client(fresh, "iam")
    deny = {"Version": "2012-10-17", "Statement": [{
        "Sid": "NoSecrets", "Effect": "Deny", "Action": "s3:Get*",
        "Resource": "arn:aws:s3:::disk-image-file-bucket/secret/*"}]}
    iam.put_role_policy(RoleName="vmimport", PolicyName="deny-secrets",
                        PolicyDocument=json.dumps(deny))
    try:
        fresh.put_object("disk-image-file-bucket", "secret/disk.raw", os.urandom(1 << 16))
        ec2 = client(fresh, "ec2")
        done = wait_task(ec2, _snapshot_import(ec2, "disk-image-file-bucket",
                                               "secret/disk.raw"), snapshot=True)
        message = done["SnapshotTaskDetail"]["StatusMessage"]
        assert message.startswith(FORBIDDEN)
        assert ("s3:GetObject on arn:aws:s3:::disk-image-file-bucket/secret/disk.raw: "
                "explicitly denied by policy 'deny-secrets' statement NoSecrets") in message
    finally:
        iam.delete_role_policy(RoleName="vmimport", PolicyName="deny-secrets")


def test_kms_permissions_of_the_role(fresh, documented_role):
    """The documented role-policy.json has no KMS statement: a customer key is refused (the
    account's aws/ebs key is not); adding AWS's optional KMS statement allows it."""
    ec2, kms, iam = client(fresh, "ec2"), client(fresh, "kms"), client(fresh, "iam")
    key = kms.create_key()["KeyMetadata"]
    done = wait_task(ec2, _snapshot_import(ec2, "disk-image-file-bucket", "disk.raw",
                                           Encrypted=True, KmsKeyId=key["KeyId"]),
                     snapshot=True)
    message = done["SnapshotTaskDetail"]["StatusMessage"]
    assert message.startswith(FORBIDDEN)
    assert f"not allowed kms:DescribeKey on {key['Arn']}" in message
    iam.put_role_policy(RoleName="vmimport", PolicyName="kms", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": [
            "kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt",
            "kms:GenerateDataKey*", "kms:ReEncrypt*"], "Resource": "*"}]}))
    try:
        done = wait_task(ec2, _snapshot_import(ec2, "disk-image-file-bucket", "disk.raw",
                                               Encrypted=True, KmsKeyId=key["KeyId"]),
                         snapshot=True)
        assert done["SnapshotTaskDetail"]["Status"] == "completed", done
        assert done["SnapshotTaskDetail"]["KmsKeyId"] == key["Arn"]
    finally:
        iam.delete_role_policy(RoleName="vmimport", PolicyName="kms")
    done = wait_task(ec2, _snapshot_import(ec2, "disk-image-file-bucket", "disk.raw",
                                           Encrypted=True), snapshot=True)
    assert done["SnapshotTaskDetail"]["Status"] == "completed", done


@pytest.mark.parametrize("principal, condition, why", [
    ({"Service": "ec2.amazonaws.com"}, {"StringEquals": {"sts:Externalid": "vmimport"}},
     "its trust policy does not allow vmie.amazonaws.com to sts:AssumeRole"),
    ({"Service": "vmie.amazonaws.com"}, {"StringEquals": {"sts:Externalid": "other"}},
     "its trust policy names vmie.amazonaws.com but its Condition is not met"),
])
def test_untrusting_role_refused_at_once(fresh, principal, condition, why):
    iam, ec2 = client(fresh, "iam"), client(fresh, "ec2")
    name = "role-" + uuid.uuid4().hex[:8]
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": principal,
                                                "Action": "sts:AssumeRole",
                                                "Condition": condition}]}))
    code, message = _error(ec2.import_image, RoleName=name, DiskContainers=[{
        "Format": "raw", "UserBucket": {"S3Bucket": "disk-image-file-bucket",
                                        "S3Key": "disk.raw"}}])
    assert code == "InvalidParameter"
    assert message.startswith(ROLE_ERROR.format(name)) and why in message, message


def test_custom_role_name_without_condition(fresh, documented_role):
    iam, ec2 = client(fresh, "iam"), client(fresh, "ec2")
    trust = json.loads(TRUST_POLICY)
    del trust["Statement"][0]["Condition"]
    iam.create_role(RoleName="ImportRole", AssumeRolePolicyDocument=json.dumps(trust),
                    Description="no external id condition")
    iam.put_role_policy(RoleName="ImportRole", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                "Resource": "arn:aws:s3:::disk-image-*"}]}))
    done = wait_task(ec2, _snapshot_import(ec2, "disk-image-file-bucket", "disk.raw",
                                           RoleName="importrole"), snapshot=True)
    assert done["SnapshotTaskDetail"]["Status"] == "completed", done


def test_iam_api_rules(fresh):
    iam = client(fresh, "iam")
    trust = TRUST_POLICY
    name = "r-" + uuid.uuid4().hex[:8]
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, Path="/imports/")
    assert _error(iam.create_role, RoleName=name.upper(), AssumeRolePolicyDocument=trust)[0] \
        == "EntityAlreadyExists"
    assert _error(iam.create_role, RoleName="x-" + name, AssumeRolePolicyDocument="{nope")[0] \
        == "MalformedPolicyDocument"
    assert _error(iam.create_role, RoleName="y-" + name,
                  AssumeRolePolicyDocument=ROLE_POLICY)[0] == "MalformedPolicyDocument"
    assert _error(iam.put_role_policy, RoleName=name, PolicyName="p",
                  PolicyDocument=trust)[0] == "MalformedPolicyDocument"
    assert _error(iam.get_role, RoleName="nope")[0] == "NoSuchEntity"
    assert _error(iam.get_role_policy, RoleName=name, PolicyName="nope")[0] == "NoSuchEntity"
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=ROLE_POLICY)
    assert _error(iam.delete_role, RoleName=name)[0] == "DeleteConflict"
    roles = iam.list_roles(PathPrefix="/imports/")["Roles"]
    assert [r["RoleName"] for r in roles] == [name]
    assert roles[0]["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/imports/{name}"
    new_trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(new_trust))
    assert iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"] == new_trust
    iam.delete_role_policy(RoleName=name, PolicyName="p")
    iam.delete_role(RoleName=name)
    assert _error(iam.get_role, RoleName=name)[0] == "NoSuchEntity"
    # Paging (MaxItems / Marker) through the paginator.
    for n in range(3):
        iam.create_role(RoleName=f"page-{n}-{name}", AssumeRolePolicyDocument=trust,
                        Path="/paging/")
    pages = list(iam.get_paginator("list_roles").paginate(
        PathPrefix="/paging/", PaginationConfig={"PageSize": 2}))
    assert [len(p["Roles"]) for p in pages] == [2, 1]


def test_default_account_role_and_other_accounts(server):
    """The embedded default account has a vmimport role; the others start with none."""
    role = server.client("iam").get_role(RoleName="vmimport")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "vmie.amazonaws.com"}


def test_query_protocol_parses_what_botocore_serializes():
    model = service_model("iam")
    op = model.operation_model("CreateRole")
    params = {"RoleName": "r", "AssumeRolePolicyDocument": '{"a": "b & c"}', "Path": "/p/",
              "MaxSessionDuration": 7200, "Tags": [{"Key": "k1", "Value": "v1"},
                                                   {"Key": "k2", "Value": "v2"}]}
    request = botocore.serialize.create_serializer("query").serialize_to_request(params, op)
    pairs = [(k, str(v)) for k, v in request["body"].items() if k not in ("Action", "Version")]
    assert query_protocol.parse_query(op, pairs) == params
