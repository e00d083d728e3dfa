"""``serve`` with several API processes on one port (``api_processes``; the default, 0, is one
per core): what is shared (the request rate per key, /metrics, the worker's wake-up), and
that the parent keeps them running and stops them all."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from vmimport.api.key_limits import SharedRateLimiter
from vmimport.config import MAX_AUTO_API_PROCESSES, Settings

from ..helpers import Server, make_raw_disk, wait_task


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:  # a thread that just ended
            pass
    return found


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _api_processes(server: Server) -> set[int]:
    """The serve process's live children that are API processes (not its worker process)."""
    return {c for c in _children(server.proc.pid) if (argv := _argv(c)) and b"serve" in argv}


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def _use_the_bucket(limiter: SharedRateLimiter, key: str, answers) -> None:
    answers.put([limiter.allow(key) for _ in range(2)])


def test_one_rate_bucket_per_key_whichever_process_asks():
    limiter = SharedRateLimiter(rate=1.0)  # bursts of 2, refilled at 1 a second
    fork = multiprocessing.get_context("fork")
    answers = fork.Queue()
    child = fork.Process(target=_use_the_bucket, args=(limiter, "AKIDSHARED", answers))
    child.start()
    assert answers.get(timeout=60) == [True, True]
    child.join(60)
    assert child.exitcode == 0
    # The other process spent this key's burst: this one is refused, another key is not.
    assert limiter.allow("AKIDSHARED") is False
    assert limiter.allow("AKIDOTHER") is True


def test_a_full_table_gives_a_slot_to_the_key_idle_longest():
    limiter = SharedRateLimiter(rate=1.0)
    limiter.SLOTS, limiter.PROBES = 1, 1  # every key wants the one slot
    assert [limiter.allow("first") for _ in range(3)] == [True, True, False]
    assert limiter.allow("second") is True  # took the slot (with a full bucket)
    assert limiter.allow("first") is True  # and so did "first" again: never a wrong refusal


def test_the_default_is_one_process_per_core():
    assert Settings().api_processes == 0
    cores = len(os.sched_getaffinity(0))
    assert Settings().api_process_count() == min(cores, MAX_AUTO_API_PROCESSES)
    assert Settings(api_processes=3).api_process_count() == 3


@pytest.fixture
def two_processes(tmp_path):
    started = []

    def start(**env) -> Server:
        srv = Server(tmp_path / f"data{len(started)}", workers=1,
                     env={"VMIMPORT_API_PROCESSES": "2", **env}).start()
        started.append(srv)
        return srv
    yield start
    for srv in started:
        srv.stop()


def _scrape(endpoint: str) -> dict:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_two_processes_share_the_rate_and_metrics(two_processes):
    server = two_processes(VMIMPORT_RATE_LIMIT_PER_SECOND="0.5")
    api = _wait_for(lambda: len(_api_processes(server)) == 2 and _api_processes(server))
    assert len(_children(server.proc.pid) - api) == 1  # and the worker process

    # Calls on fresh connections, all at once: the kernel hands them to either process, and
    # the key's one bucket (a burst of 1, then 1 every 2 s) decides, whichever answers. The
    # bound on what passes grows with the time the calls took, so a slow machine only
    # loosens it; a bucket per process would let each process's burst through besides.
    def call(_):
        try:
            server.client().describe_regions()
            return "ok"
        except ClientError as err:
            return err.response["Error"]["Code"]

    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(call, range(12)))
    elapsed = time.monotonic() - started
    assert set(codes) == {"ok", "RequestLimitExceeded"}
    assert codes.count("ok") <= 1 + elapsed * 0.5

    # /metrics counts every process's requests, whichever process answers the scrape.
    key = ("vmimport_requests_total", (("action", "DescribeRegions"), ("service", "ec2"),
                                       ("status", "200")))
    # (refused before the action is read)
    refused = ("vmimport_requests_total", (("action", "?"), ("service", "ec2"),
                                           ("status", "503")))
    # (the SDK may retry a throttled call: the log has every attempt)
    attempts = server.log_path.read_text().count(" ec2:? ")
    assert attempts >= codes.count("RequestLimitExceeded")
    for _ in range(4):
        samples = _scrape(server.endpoint)
        assert samples[key] == codes.count("ok")
        assert samples[refused] == attempts


def test_a_dead_api_process_is_replaced_and_sigterm_stops_all(two_processes, tmp_path):
    server = two_processes()
    api = _wait_for(lambda: len(_api_processes(server)) == 2 and _api_processes(server))
    # An import asked of either process reaches the worker (woken through the pipe both
    # inherited).
    make_raw_disk(tmp_path / "disk.raw", 8 * 1024 * 1024)
    server.put_object("procs", "disk.raw", tmp_path / "disk.raw")
    ec2 = server.client()
    task = wait_task(ec2, ec2.import_image(DiskContainers=[{
        "Format": "raw", "UserBucket": {"S3Bucket": "procs", "S3Key": "disk.raw"}}])[
        "ImportTaskId"])
    assert task["Status"] == "deleted"  # run, and refused: the disk has no partition table
    assert task["StatusMessage"].startswith("ClientError")
    time.sleep(2.5)  # past the time a process must live not to be taken for one that cannot
    victim = min(api)
    os.kill(victim, signal.SIGKILL)
    replaced = _wait_for(lambda: (now := _api_processes(server)) and len(now) == 2
                         and victim not in now and now)
    assert replaced - api  # a new one
    assert server.client().describe_regions()["ResponseMetadata"]["HTTPStatusCode"] == 200
    everyone = _children(server.proc.pid)
    os.kill(server.proc.pid, signal.SIGTERM)  # the parent alone, not its group
    assert server.proc.wait(timeout=60) == -signal.SIGTERM
    for pid in everyone:
        _wait_for(lambda: not Path(f"/proc/{pid}").exists()
                  or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2])
