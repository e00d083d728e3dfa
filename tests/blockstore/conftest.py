"""A real S3 server (SeaweedFS) with one bucket (``BUCKET`` of ``object_bucket``) for the
object-store block store, started once per test module that asks for ``s3``."""

from __future__ import annotations

import pytest

from ..s3server import S3Server
from .object_bucket import BUCKET


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()
