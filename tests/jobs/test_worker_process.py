"""`vmimport serve` converts in a child worker process (not in threads of the API process):
an enqueued job wakes it at once, a worker process that dies is started again, and it does
not outlive serve."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from ..helpers import Server, wait_task


def _import(srv: Server, key: str = "disk.raw") -> str:
    return srv.client().import_image(DiskContainers=[
        {"Format": "raw", "UserBucket": {"S3Bucket": "bkt", "S3Key": key}}])["ImportTaskId"]


def _worker_processes(srv: Server, timeout: float = 30) -> list[psutil.Process]:
    """serve's `vmimport worker` children, once one has started."""
    deadline = time.monotonic() + timeout
    while True:
        children = [p for p in psutil.Process(srv.proc.pid).children()
                    if "worker" in p.cmdline()]
        if children or time.monotonic() > deadline:
            return children
        time.sleep(0.1)


@pytest.fixture
def slow_polling(tmp_path, disks):
    """serve with an hour between database polls: only the wake-up pipe can start a job (or
    end a worker thread's sleep) within the tests' waits, however slow the machine."""
    srv = Server(tmp_path / "data", env={"VMIMPORT_POLL_SECONDS": "3600"}).start()
    srv.put_object("bkt", "disk.raw", disks["raw"])
    yield srv
    srv.stop()


def test_imports_run_in_a_worker_process_woken_at_once(slow_polling):
    srv = slow_polling
    (worker,) = _worker_processes(srv)
    time.sleep(2)  # the worker is idle, asleep until the next poll an hour away
    task = wait_task(srv.client(), _import(srv), timeout=60)  # not left for the next poll
    assert task["Status"] == "completed", task
    log = srv.log_tail(200)
    assert f"claimed by {os.uname().nodename}:{worker.pid}:" in log  # the child, not serve


def test_a_dead_worker_process_is_replaced(slow_polling):
    srv = slow_polling
    (worker,) = _worker_processes(srv)
    worker.kill()
    worker.wait(10)
    deadline = time.monotonic() + 30
    while not (replaced := [p for p in _worker_processes(srv, 1) if p.pid != worker.pid]):
        assert time.monotonic() < deadline, srv.log_tail()
        time.sleep(0.2)
    assert "exited with -9; started another" in srv.log_tail(200)
    time.sleep(2)  # let the new one get to sleep on its pipe
    task = wait_task(srv.client(), _import(srv), timeout=60)
    assert task["Status"] == "completed", task
    assert f":{replaced[0].pid}:" in srv.log_tail(200)


def test_the_worker_process_does_not_outlive_serve(slow_polling):
    srv = slow_polling
    (worker,) = _worker_processes(srv)
    os.kill(srv.proc.pid, signal.SIGKILL)  # serve alone, not its process group
    srv.proc.wait(10)
    gone, alive = psutil.wait_procs([worker], timeout=20)
    assert worker in gone, "the worker process kept running after serve was killed"


def test_serve_stops_at_once_though_its_workers_poll_rarely(slow_polling):
    srv = slow_polling
    (worker,) = _worker_processes(srv)
    time.sleep(2)  # the worker threads are asleep until the next poll an hour away
    os.killpg(srv.proc.pid, signal.SIGTERM)  # as a service manager stops it
    assert srv.proc.wait(30) == -signal.SIGTERM  # serve ends as the signal would end it
    gone, _ = psutil.wait_procs([worker], timeout=10)
    assert worker in gone
    assert "did not stop within" not in srv.log_tail(200)  # not killed after serve's grace


def test_serve_stopped_alone_stops_its_worker_process_before_it_exits(slow_polling):
    """SIGTERM to serve only (not its group): serve stops the worker process and waits for
    it, so when serve is gone its worker is gone too, and serve ends as SIGTERM ends it."""
    srv = slow_polling
    (worker,) = _worker_processes(srv)
    time.sleep(2)
    os.kill(srv.proc.pid, signal.SIGTERM)
    assert srv.proc.wait(30) == -signal.SIGTERM
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, \
        "serve exited before its worker process did"
    assert "exited with" not in srv.log_tail(200)  # stopped, not mourned and restarted


def test_a_stopped_worker_process_stops_at_once_and_is_replaced(slow_polling):
    srv = slow_polling
    (worker,) = _worker_processes(srv)
    time.sleep(2)  # its threads are asleep until the next poll an hour away
    worker.terminate()  # SIGTERM to the worker alone: serve lives on
    worker.wait(15)  # its threads did not wait out the poll (its exit status goes to serve)
    deadline = time.monotonic() + 30
    while not [p for p in _worker_processes(srv, 1) if p.pid != worker.pid]:
        assert time.monotonic() < deadline, srv.log_tail()
        time.sleep(0.2)


@pytest.mark.parametrize("niceness", [None, "0", "7"])
def test_the_worker_process_runs_below_the_api(tmp_path, niceness):
    """Polling stays fast while imports keep the cores busy: serve's worker process is niced
    `worker_niceness` (default 5) below serve."""
    env = {} if niceness is None else {"VMIMPORT_WORKER_NICENESS": niceness}
    srv = Server(tmp_path / "data", env=env).start()
    try:
        (worker,) = _worker_processes(srv)
        want = psutil.Process(srv.proc.pid).nice() + int(niceness or 5)
        deadline = time.monotonic() + 30  # it renices itself once it has read its settings
        while worker.nice() != want and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.nice() == want, srv.log_tail()
    finally:
        srv.stop()
