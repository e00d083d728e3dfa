"""Fixtures: one live server for the whole session (most tests share it and only touch their own
resources), fresh servers where a test needs its own configuration."""

from __future__ import annotations

from pathlib import Path

import json

import pytest

from .helpers import Server, make_raw_disk, qemu_convert


# The default account, a second account, and a key that may only call Describe*.
CREDENTIALS = [
    {"access_key": "test", "secret_key": "test", "account_id": "000000000000"},
    {"access_key": "OTHERKEY", "secret_key": "othersecret", "account_id": "111111111111"},
    {"access_key": "READONLY", "secret_key": "readonlysecret", "account_id": "000000000000",
     "actions": ["Describe*"]},
]


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    srv = Server(tmp_path_factory.mktemp("server") / "data", env={
        "VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS)}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def ec2(server):
    return server.client("ec2")


@pytest.fixture(scope="session")
def ebs(server):
    return server.client("ebs")


@pytest.fixture(scope="session")
def disks(tmp_path_factory) -> dict[str, Path]:
    """A small guest disk as raw, and rendered by qemu-img as stream-optimized VMDK."""
    root = tmp_path_factory.mktemp("disks")
    raw = make_raw_disk(root / "disk.raw", 24 * 1024 * 1024 + 512 * 3, seed=7)
    vmdk = qemu_convert(raw, root / "disk.vmdk", "vmdk", "-o", "subformat=streamOptimized")
    qcow2 = qemu_convert(raw, root / "disk.qcow2", "qcow2")
    return {"raw": raw, "vmdk": vmdk, "qcow2": qcow2}
