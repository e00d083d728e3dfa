"""STS on the front door: GetCallerIdentity, GetSessionToken, AssumeRole, and temporary
credentials honoured (and refused when wrong or expired) by every API, with boto3 and with
the AWS CLI's role_arn profiles."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlalchemy import update

from vmimport.api.models import add_own_models
from vmimport.db.models import TemporaryCredential
from vmimport.db.session import Database

from ..helpers import BIN

OWNER, OTHER = "000000000000", "111111111111"
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


def client(server, service: str, credentials: dict, token: str | None = "issued"):
    """A boto3 client signing with temporary credentials (``token=None``: without the token,
    another string: that token instead of the issued one)."""
    return boto3.client(
        service, endpoint_url=server.endpoint, region_name="us-east-1", config=NO_RETRIES,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"] if token == "issued" else token)


def error(call, **kwargs) -> dict:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]


def make_role(server, trusted: str, actions: list[str]) -> str:
    """A role of the default account that ``trusted`` may assume, allowed ``actions``."""
    iam = server.client("iam")
    name = "sts-test-" + uuid.uuid4().hex[:8]
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": trusted}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="allowed", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    return arn


def test_get_caller_identity_of_configured_keys(server):
    identity = server.client("sts").get_caller_identity()
    assert (identity["Account"], identity["Arn"], identity["UserId"]) == (
        OWNER, f"arn:aws:iam::{OWNER}:root", OWNER)
    # No permission is needed for it: a Describe*-only key may ask too.
    assert server.client("sts", "READONLY", "readonlysecret").get_caller_identity()[
        "Account"] == OWNER
    assert server.aws("sts", "get-caller-identity", access_key="OTHERKEY",
                      secret_key="othersecret")["Account"] == OTHER


def test_session_token_has_its_keys_rights(server):
    credentials = server.client("sts", "READONLY", "readonlysecret").get_session_token(
        DurationSeconds=900)["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA") and len(credentials["AccessKeyId"]) == 20
    assert len(credentials["SecretAccessKey"]) == 40 and credentials["SessionToken"]
    assert credentials["Expiration"] > datetime.now(timezone.utc) + timedelta(seconds=800)
    ec2 = client(server, "ec2", credentials)
    assert "Images" in ec2.describe_images(Owners=["self"])
    assert error(ec2.import_image, DiskContainers=[{"Url": "https://example.invalid/d.raw"}])[
        "Code"] == "UnauthorizedOperation"
    assert client(server, "sts", credentials).get_caller_identity()["Account"] == OWNER
    assert error(client(server, "sts", credentials).get_session_token)["Code"] == "AccessDenied"
    # The key alone, or with another token, is no credential.
    assert error(client(server, "ec2", credentials, token=None).describe_images)[
        "Code"] == "AuthFailure"
    wrong = error(client(server, "ec2", credentials, token="x" * 40).describe_images)
    assert wrong["Code"] == "AuthFailure" and "security token" in wrong["Message"]
    assert error(client(server, "iam", credentials, token="x" * 40).list_roles)[
        "Code"] == "InvalidClientTokenId"


def test_assumed_role_is_bound_by_its_policies(server, ec2):
    role_arn = make_role(server, f"arn:aws:iam::{OTHER}:root",
                         ["ec2:Describe*", "kms:ListKeys"])
    other_sts = server.client("sts", "OTHERKEY", "othersecret")
    answer = other_sts.assume_role(RoleArn=role_arn, RoleSessionName="ci-job")
    credentials = answer["Credentials"]
    role_name = role_arn.rsplit("/", 1)[-1]
    assert answer["AssumedRoleUser"]["Arn"] == \
        f"arn:aws:sts::{OWNER}:assumed-role/{role_name}/ci-job"
    identity = client(server, "sts", credentials).get_caller_identity()
    assert identity["Account"] == OWNER and identity["Arn"] == answer["AssumedRoleUser"]["Arn"]
    assert identity["UserId"].endswith(":ci-job")

    role_ec2 = client(server, "ec2", credentials)
    role_ec2.describe_images(Owners=["self"])  # the role's account, not the caller's
    denied = error(role_ec2.deregister_image, ImageId="ami-0123456789abcdef0")
    assert denied["Code"] == "UnauthorizedOperation"
    assert "DeregisterImage" in denied["Message"] and "assumed-role" in denied["Message"]
    assert error(role_ec2.describe_images, DryRun=True)["Code"] == "DryRunOperation"
    assert error(role_ec2.deregister_image, ImageId="ami-0123456789abcdef0", DryRun=True)[
        "Code"] == "UnauthorizedOperation"
    assert "KeyCount" not in client(server, "kms", credentials).list_keys()
    assert error(client(server, "kms", credentials).create_key)["Code"] == \
        "AccessDeniedException"
    role_iam = client(server, "iam", credentials)
    assert error(role_iam.list_roles)["Code"] == "AccessDenied"
    # A policy added to the role counts for sessions already issued.
    server.client("iam").put_role_policy(
        RoleName=role_name, PolicyName="more", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}]}))
    assert "Roles" in role_iam.list_roles()
    # Not trusted, or no such role: the same refusal.
    for sts, arn in ((server.client("sts"), role_arn),
                     (other_sts, f"arn:aws:iam::{OWNER}:role/no-such-role")):
        refused = error(sts.assume_role, RoleArn=arn, RoleSessionName="s1")
        assert refused["Code"] == "AccessDenied" and "sts:AssumeRole" in refused["Message"]
    assert error(other_sts.assume_role, RoleArn=role_arn, RoleSessionName="s1",
                 DurationSeconds=7200)["Code"] == "ValidationError"
    assert error(other_sts.assume_role, RoleArn=role_arn, RoleSessionName="s1",
                 Policy="{}")["Code"] == "ValidationError"


def _vmimport(server, credentials: dict | None = None):
    """A boto3 client of vmimport's own calls, signing with ``credentials`` (temporary) or
    with the default long-term key."""
    session = boto3.Session(region_name="us-east-1", **({
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"]} if credentials else {
        "aws_access_key_id": "test", "aws_secret_access_key": "test"}))
    add_own_models(session._session)
    return session.client("vmimport", endpoint_url=server.endpoint, config=NO_RETRIES)


def test_end_session_forgets_temporary_credentials_at_once(server):
    # A Describe*-only key's session may end itself (no permission needed to sign out).
    session = server.client("sts", "READONLY", "readonlysecret").get_session_token(
        DurationSeconds=900)["Credentials"]
    role = server.client("sts").assume_role(
        RoleArn=make_role(server, OWNER, ["ec2:Describe*"]), RoleSessionName="leaving")[
        "Credentials"]
    other = server.client("sts").get_session_token()["Credentials"]
    for credentials in (session, role):
        ec2 = client(server, "ec2", credentials)
        ec2.describe_images(Owners=["self"])
        assert _vmimport(server, credentials).end_session()["AccessKeyId"] == \
            credentials["AccessKeyId"]
        assert error(ec2.describe_images)["Code"] == "AuthFailure"
        assert error(client(server, "sts", credentials).get_caller_identity)[
            "Code"] == "InvalidClientTokenId"
        assert error(_vmimport(server, credentials).end_session)["Code"] == \
            "UnrecognizedClientException"
    # Only the signing session ends; a long-term key is not ended this way.
    assert client(server, "sts", other).get_caller_identity()["Account"] == OWNER
    refused = error(_vmimport(server).end_session)
    assert refused["Code"] == "ValidationException" and "long-term key test" in \
        refused["Message"]
    assert server.client("sts").get_caller_identity()["Account"] == OWNER


def test_expired_credentials_are_refused(server):
    role_arn = make_role(server, OWNER, ["ec2:*", "iam:*", "kms:*"])
    credentials = server.client("sts").assume_role(
        RoleArn=role_arn, RoleSessionName="expiring")["Credentials"]
    client(server, "ec2", credentials).describe_images(Owners=["self"])
    db = Database(server.database_url or f"sqlite:///{server.data_dir / 'vmimport.db'}")
    try:
        with db.write() as session:
            session.execute(update(TemporaryCredential).where(
                TemporaryCredential.access_key_id == credentials["AccessKeyId"]).values(
                expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    finally:
        db.dispose()
    expired = error(client(server, "ec2", credentials).describe_images)
    assert expired["Code"] == "AuthFailure"
    assert expired["Message"] == "The security token included in the request is expired"
    assert error(client(server, "iam", credentials).list_roles)["Code"] == "ExpiredToken"
    assert error(client(server, "sts", credentials).get_caller_identity)["Code"] == "ExpiredToken"
    assert error(client(server, "kms", credentials).list_keys)["Code"] == \
        "ExpiredTokenException"


def test_role_profiles_of_boto3_and_the_aws_cli(server, tmp_path, monkeypatch):
    role_arn = make_role(server, f"arn:aws:iam::{OTHER}:root", ["ec2:Describe*"])
    config = tmp_path / "config"
    config.write_text(
        "[profile source]\n"
        "aws_access_key_id = OTHERKEY\naws_secret_access_key = othersecret\n"
        f"region = us-east-1\nendpoint_url = {server.endpoint}\n"
        "[profile deployer]\n"
        f"role_arn = {role_arn}\nsource_profile = source\nrole_session_name = cli\n"
        f"region = us-east-1\nendpoint_url = {server.endpoint}\n")
    env = {**os.environ, "AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "deployer",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_MAX_ATTEMPTS": "1"}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        env.pop(name, None)
    run = subprocess.run([str(BIN / "aws"), "--output", "json", "sts", "get-caller-identity"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["Arn"].endswith(f":assumed-role/{role_arn.rsplit('/', 1)[-1]}/cli")
    run = subprocess.run([str(BIN / "aws"), "--output", "json", "ec2", "describe-regions"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([str(BIN / "aws"), "ec2", "deregister-image", "--image-id",
                          "ami-0123456789abcdef0"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "UnauthorizedOperation" in run.stderr

    # boto3's AssumeRoleProvider, from the same profile.
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    session = boto3.Session(profile_name="deployer")
    ec2 = session.client("ec2", config=NO_RETRIES)
    assert ec2.describe_availability_zones()["AvailabilityZones"]
    identity = session.client("sts", config=NO_RETRIES).get_caller_identity()
    assert identity["Account"] == OWNER and ":assumed-role/" in identity["Arn"]
