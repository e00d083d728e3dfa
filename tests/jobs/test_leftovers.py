"""Crash leftovers (issue 16 item 6): the partial packs of an import killed with its worker are
reclaimed when a worker starts on that host again, and ``vmimport gc`` reclaims and reports
old ones of writers it cannot check."""

from __future__ import annotations

import os
import subprocess
import time

from ..helpers import BIN, Server, wait_task

SIZE = 96 << 20


def _partials(data_dir) -> set[str]:
    return {p.name for p in (data_dir / "blocks" / "packs").iterdir()
            if p.name.startswith(".partial-")}


def _worker(api: Server) -> Server:
    # 32 MiB/s: the volume takes about 3 s, time enough to kill the worker in the middle.
    return Server(api.data_dir, port=api.port, workers=1, database_url=api.database_url,
                  command="worker",
                  env={"VMIMPORT_IMPORT_MAX_BYTES_PER_SECOND": str(32 << 20)}).start()


def _gc(server: Server) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "vmimport"), "gc", "--data-dir", str(server.data_dir),
                           *(["--database-url", server.database_url]
                             if server.database_url else [])],
                          capture_output=True, text=True, timeout=120)


def test_killed_imports_partials_are_reclaimed_at_restart_and_old_ones_by_gc(tmp_path):
    api = Server(tmp_path / "data", workers=0).start()
    try:
        _kill_and_restart(api, tmp_path)
        _gc_old_foreign_partial(api)
    finally:
        api.stop()


def _kill_and_restart(api: Server, tmp_path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(SIZE))
    api.put_object("bkt", "disk.raw", disk)
    ec2 = api.client()
    first = _worker(api)
    second = None
    try:
        task_id = ec2.import_snapshot(DiskContainer={  # no guest to inspect: a snapshot
            "Format": "raw", "UserBucket": {"S3Bucket": "bkt", "S3Key": "disk.raw"}})[
            "ImportTaskId"]
        deadline = time.monotonic() + 60
        while not _partials(api.data_dir):
            assert time.monotonic() < deadline, "the import never started writing"
            time.sleep(0.02)
        first.kill()
        killed = _partials(api.data_dir)
        assert killed, "the killed import left no partial pack (nothing to test)"
        second = _worker(api)
        deadline = time.monotonic() + 30
        while killed & _partials(api.data_dir):
            assert time.monotonic() < deadline, f"not reclaimed: {killed}"
            time.sleep(0.05)
        assert "reclaimed" in second.log_tail(200)
        done = wait_task(ec2, task_id, timeout=120, snapshot=True)
        assert done["SnapshotTaskDetail"]["Status"] == "completed", done
    finally:
        first.stop()
        if second:
            second.stop()
    assert _partials(api.data_dir) == set()


def _gc_old_foreign_partial(api: Server) -> None:
    # A partial pack of a writer on another host: gc cannot ask that host, so age decides.
    packs = api.data_dir / "blocks" / "packs"
    foreign = packs / f".partial-{'f' * 32}-4242@another-host"
    foreign.write_bytes(b"\1" * 8192)
    gc = _gc(api)
    assert gc.returncode == 0, gc.stderr
    assert "removed 0 leftover(s)" in gc.stdout and foreign.exists()
    then = time.time() - 2 * 86400
    os.utime(foreign, (then, then))
    gc = _gc(api)
    assert "removed 1 leftover(s) of unfinished writes" in gc.stdout, gc.stdout
    assert not foreign.exists()
