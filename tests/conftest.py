"""Fixtures: one live server for the whole session (most tests share it and only touch their own
resources), fresh servers where a test needs its own configuration."""

from __future__ import annotations

from pathlib import Path

import json
import os

import pytest

from .guest_disks import build as build_guest_disk
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
def guest_disk_cache(tmp_path_factory) -> Path:
    """Where tests/guest_disks.py builds its fixtures (VMIMPORT_TEST_DISK_CACHE keeps them
    between runs)."""
    cached = os.environ.get("VMIMPORT_TEST_DISK_CACHE")
    return Path(cached) if cached else tmp_path_factory.mktemp("guest-disks")


@pytest.fixture(scope="session")
def disks(tmp_path_factory, guest_disk_cache) -> dict[str, Path]:
    """A bootable Linux guest disk (so imports pass inspection) followed by 30 MiB of mixed
    random / text / zero regions beyond its partitions, as raw and rendered by qemu-img."""
    root = tmp_path_factory.mktemp("disks")
    boot = build_guest_disk("ubuntu2204-ext4-mbr-bios", guest_disk_cache)
    mixed = make_raw_disk(root / "mixed.raw", 30 * 1024 * 1024 + 512 * 3, seed=7)
    raw = root / "disk.raw"
    with open(raw, "wb") as out:
        for part in (boot, mixed):
            with open(part, "rb") as f:
                while chunk := f.read(4 << 20):
                    if chunk.count(0) == len(chunk):
                        out.seek(len(chunk), os.SEEK_CUR)  # keep it sparse
                    else:
                        out.write(chunk)
        out.truncate(boot.stat().st_size + mixed.stat().st_size)
    vmdk = qemu_convert(raw, root / "disk.vmdk", "vmdk", "-o", "subformat=streamOptimized")
    qcow2 = qemu_convert(raw, root / "disk.qcow2", "qcow2")
    return {"raw": raw, "vmdk": vmdk, "qcow2": qcow2}
