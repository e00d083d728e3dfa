"""Crash leftovers of the file block store: reclaimed when their writer is gone (worker start)
or old (gc), never while a writer holds them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from vmimport.blockstore.file_store import BLOCK_SIZE, FileBlockStore

DAY = 86400


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(directory, name: str, age: float = 0, size: int = 4096):
    path = directory / name
    path.write_bytes(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_worker_start_reclaims_only_its_hosts_dead_writers(tmp_path):
    store = FileBlockStore(tmp_path)
    host = socket.gethostname()
    dead = _leftover(store.packs_dir, f".partial-{'a' * 32}-{_dead_pid()}@{host}")
    dead_tmp = _leftover(store.manifests_dir, f".tmp-abcdefgh-{_dead_pid()}@{host}")
    alive = _leftover(store.packs_dir, f".partial-{'b' * 32}-{os.getpid()}@{host}")
    elsewhere = _leftover(store.packs_dir, f".partial-{'c' * 32}-{_dead_pid()}@elsewhere",
                          age=2 * DAY)
    unowned = _leftover(store.packs_dir, f".partial-{'d' * 32}", age=2 * DAY)  # older names
    report = store.reclaim_own_leftovers()
    assert (report.removed, report.bytes_removed) == (2, 2 * 4096)
    assert not dead.exists() and not dead_tmp.exists()
    assert alive.exists() and elsewhere.exists() and unowned.exists()


def test_gc_removes_old_leftovers_but_not_one_being_written(tmp_path):
    store = FileBlockStore(tmp_path)
    old = _leftover(store.packs_dir, f".partial-{'c' * 32}-123@elsewhere", age=2 * DAY,
                    size=BLOCK_SIZE)
    young = _leftover(store.packs_dir, f".partial-{'e' * 32}-123@elsewhere", age=60)
    with store.pack_writer() as pack:
        pack.put_blocks([[(0, memoryview(b"\1" * BLOCK_SIZE))]])
        writing, = [p for p in store.packs_dir.iterdir() if p.name.startswith(".partial-")
                    and p not in (old, young)]
        then = time.time() - 2 * DAY  # looks abandoned by age, but its writer holds it
        os.utime(writing, (then, then))
        report = store.collect_garbage(leftover_grace_seconds=DAY)
        assert writing.exists(), "a pack being written was reclaimed"
    assert report.leftovers.removed == 1 and report.leftovers.bytes_removed == BLOCK_SIZE
    assert not old.exists() and young.exists()
    assert (store.packs_dir / writing.name.split("-")[1]).exists()  # published whole
