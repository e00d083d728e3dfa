"""The front door's own answers, in process: a full disk, and the access log."""

from __future__ import annotations

import errno
import logging
import sqlite3

import boto3
import pytest
import sqlalchemy.exc
from botocore.config import Config
from botocore.exceptions import ClientError

from vmimport.api import actions
from vmimport.service.errors import ApiError


def _client(endpoint, service="ec2"):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 1}))


def _database_full(ctx, params):
    orig = sqlite3.OperationalError("database or disk is full")
    raise sqlalchemy.exc.OperationalError("INSERT INTO tags ...", {}, orig)


def _blocks_full(ctx, params):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failure", [_database_full, _blocks_full])
def test_a_full_disk_answers_503_and_recovers(app_server, monkeypatch, failure):
    ec2 = _client(app_server())
    monkeypatch.setitem(actions.EC2_ACTIONS, "DescribeRegions", failure)
    with pytest.raises(ClientError) as err:
        ec2.describe_regions()
    assert err.value.response["Error"]["Code"] == "Unavailable"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "no space left" in err.value.response["Error"]["Message"]
    monkeypatch.setitem(actions.EC2_ACTIONS, "DescribeRegions", lambda ctx, params: {"Regions": []})
    assert ec2.describe_regions()["Regions"] == []


def test_other_failures_are_internal_errors(app_server, monkeypatch):
    ec2 = _client(app_server())
    monkeypatch.setitem(actions.EC2_ACTIONS, "DescribeRegions",
                        lambda ctx, params: 1 / 0)
    with pytest.raises(ClientError) as err:
        ec2.describe_regions()
    assert err.value.response["Error"]["Code"] == "InternalError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_one_access_log_line_per_request_with_service_action_and_key(app_server, caplog,
                                                                   monkeypatch):
    endpoint = app_server()  # its database has no tables: the handlers here need none
    monkeypatch.setitem(actions.EC2_ACTIONS, "DescribeImages", lambda ctx, params: {"Images": []})
    monkeypatch.setitem(actions.KMS_ACTIONS, "ListKeys", lambda ctx, params: {"Keys": []})

    def no_role(ctx, params):
        raise ApiError("NoSuchEntity", "The role with name nope cannot be found.", 404)
    monkeypatch.setitem(actions.IAM_ACTIONS, "GetRole", no_role)
    with caplog.at_level(logging.INFO, logger="vmimport.api"):
        _client(endpoint).describe_images(Owners=["self"])
        _client(endpoint, "kms").list_keys()
        with pytest.raises(ClientError):
            _client(endpoint, "iam").get_role(RoleName="nope")
    lines = [r.getMessage() for r in caplog.records if r.name == "vmimport.api"]
    assert [line.split()[0] for line in lines] == ["ec2:DescribeImages", "kms:ListKeys",
                                                   "iam:GetRole"], lines
    assert all(line.split()[2] == "test" for line in lines)
    assert [line.split()[3] for line in lines] == ["200", "200", "404"]


def test_one_server_header(server):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert [v for k, v in response.getheaders() if k.lower() == "server"] == ["vmimport"]
