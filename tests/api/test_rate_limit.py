"""RequestLimitExceeded: per access key, retryable by every SDK."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ..helpers import Server


@pytest.fixture
def limited(tmp_path):
    srv = Server(tmp_path / "data", workers=0,
                 env={"VMIMPORT_RATE_LIMIT_PER_SECOND": "0.5"}).start()
    yield srv
    srv.stop()


def test_request_limit_exceeded(limited):
    ec2 = limited.client()
    codes = []
    for _ in range(5):
        try:
            ec2.describe_images()
            codes.append("ok")
        except ClientError as err:
            codes.append(err.response["Error"]["Code"])
            assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "ok" in codes and "RequestLimitExceeded" in codes
