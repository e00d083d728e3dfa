"""test_s3_payloads' cases again, against a server whose buckets are kept in the object store
(SeaweedFS): every payload mode (signed aws-chunked, unsigned trailers, checksum headers and
trailers, boto3's and the AWS CLI's defaults) is verified by vmimport while the body streams to
the store, the stored bytes are the client's, and a body that fails verification, in a middle
chunk or the last, leaves no object there."""

from __future__ import annotations

import pytest

from ..helpers import Server
from .test_object_block_store import s3  # noqa: F401 - SeaweedFS with the bucket vmimport-blocks
from .test_s3_payloads import *  # noqa: F401,F403 - the same tests, collected with this server


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3):  # noqa: F811 - this module's server: buckets in the store
    srv = Server(tmp_path_factory.mktemp("sharedpayloads") / "data",
                 env=s3.blocks_env("s3://vmimport-blocks/payloads/")).start()
    yield srv
    srv.stop()


def test_the_buckets_are_in_the_store(server, bucket, s3):  # noqa: F811
    server.client("s3").put_object(Bucket=bucket, Key="here", Body=b"in the store")
    assert not (server.buckets / bucket).exists()
    assert s3.client().get_object(Bucket="vmimport-blocks", Key=f"payloads/buckets/{bucket}/here")[
        "Body"].read() == b"in the store"
