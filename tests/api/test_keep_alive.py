"""An SDK's idle connection survives a pause between calls (uvicorn's 5 s default closed it:
the AWS SDK for JavaScript v3 got "socket hang up" after a 6 s pause)."""

from __future__ import annotations

import http.client
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

pytestmark = pytest.mark.slow  # one 7 s pause


def _signed_describe_images(endpoint: str):
    request = AWSRequest(method="POST", url=endpoint + "/",
                         data=b"Action=DescribeImages&Version=2016-11-15",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(Credentials("test", "test"), "ec2", "us-east-1").add_auth(request)
    return request.prepare()


def _call(conn: http.client.HTTPConnection, endpoint: str) -> int:
    request = _signed_describe_images(endpoint)
    conn.request("POST", "/", body=request.body, headers=dict(request.headers))
    response = conn.getresponse()
    response.read()
    return response.status


def test_connection_kept_open_across_a_7_second_pause(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        assert _call(conn, server.endpoint) == 200
        first = conn.sock
        conn.auto_open = 0  # a closed connection must fail, not be silently reopened
        time.sleep(7)
        assert _call(conn, server.endpoint) == 200
        assert conn.sock is first
    finally:
        conn.close()
