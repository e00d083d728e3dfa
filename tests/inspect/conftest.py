"""Guest disks for the inspection tests: built once per session (or once ever, when
VMIMPORT_TEST_DISK_CACHE names a directory that outlives the session)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests import guest_disks

TOOLS = ("sfdisk", "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "mkfs.vfat", "mcopy", "mkntfs", "wimlib-imagex",
         "hivexregedit", "grub-mkimage", "pvcreate", "losetup", "ldmtool")


@pytest.fixture(scope="session")
def guest_disk_dir(tmp_path_factory) -> Path:
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:  # fail, not skip: a skip would hide a broken install step
        pytest.fail(f"fixture tools missing (scripts/setup --test installs them): {', '.join(missing)}")
    cache = os.environ.get("VMIMPORT_TEST_DISK_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("guest_disks")


@pytest.fixture(scope="session")
def guest_disks_built(guest_disk_dir) -> dict[str, Path]:
    started = time.monotonic()
    built = guest_disks.build_all(guest_disk_dir)
    print(f"\nguest disks: {len(built)} ready in {time.monotonic() - started:.1f} s ({guest_disk_dir})")
    return built
