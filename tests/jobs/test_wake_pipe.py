"""The wake-up pipe between serve and its worker process, in one process: a write wakes a
waiting worker at once, and the write end closing (serve died) is reported once."""

from __future__ import annotations

import os
import threading
import time

import pytest

from vmimport.jobs import queue


@pytest.fixture
def fresh_queue_state(monkeypatch):
    """queue's module state as in a new worker process; put back afterwards."""
    for name, value in [("_wake_pipes", []), ("_wake_fd", None), ("_local_read", None),
                        ("_on_parent_gone", None), ("parent_gone", threading.Event())]:
        monkeypatch.setattr(queue, name, value)
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, queue._local_read, *queue._wake_pipes):  # the test closes write_fd
        try:
            os.close(fd)
        except OSError:
            pass


def test_a_wake_up_ends_the_wait_and_a_closed_pipe_is_reported_once(fresh_queue_state):
    read_fd, write_fd = fresh_queue_state
    gone = []
    queue.listen_for_wakes(read_fd, on_parent_gone=lambda: gone.append(1))
    os.write(write_fd, b"!")
    queue.wait_for_work(30)
    with pytest.raises(BlockingIOError):  # the wake-up was taken, not left to end a later wait
        os.read(read_fd, 1)
    assert not gone
    os.close(write_fd)
    queue.wait_for_work(30)
    assert gone == [1] and queue.parent_gone.is_set()
    started = time.monotonic()
    queue.wait_for_work(0.2)  # nothing writes any more: a plain poll, not reported again
    assert gone == [1] and time.monotonic() - started >= 0.2
