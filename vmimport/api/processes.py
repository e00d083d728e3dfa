"""``serve`` with several API processes (``api_processes``): one listening socket, made here,
and that many children forked from this process, each answering on it with an app of its own
(the kernel hands each new connection to one of them). One process's handlers share one
interpreter lock; several use every core.

Forked, not spawned: the children share what this process loaded before (botocore's models,
frozen out of the garbage collector's reach) page for page, and inherit the worker wake pipe
and the shared rate limiter. This process answers nothing itself: it starts the children, starts
another when one dies, and stops them all on SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Callable

log = logging.getLogger("vmimport")

# A child that dies this soon after it started is taken for one that cannot start (a port,
# a database, a configuration it refuses): the server stops instead of starting it again
# and again.
MIN_LIFETIME = 2.0
STOP_SECONDS = 20.0
POLL_SECONDS = 0.2


def serve_forked(processes: int, sock: socket.socket,
                 run_child: Callable[[socket.socket], None],
                 on_started: Callable[[], None] | None = None) -> int | None:
    """Run ``run_child(sock)`` in ``processes`` forked children until a signal; returns the
    signal that stopped them (None if a child could not start: that is logged).
    ``on_started`` runs here once they are all forked."""
    received: list[int] = []
    previous = {s: signal.signal(s, lambda caught, _frame: received.append(caught))
                for s in (signal.SIGTERM, signal.SIGINT)}
    children: dict[int, float] = {}  # pid -> when it started
    try:
        for _ in range(processes):
            children[_fork(sock, run_child)] = time.monotonic()
        if on_started is not None:
            on_started()
        while not received:
            time.sleep(POLL_SECONDS)
            for pid, started in list(children.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done or received:
                    continue
                del children[pid]
                code = os.waitstatus_to_exitcode(status)
                if time.monotonic() - started < MIN_LIFETIME:
                    log.error("API process %d exited with %s within %g s of its start; "
                              "stopping the server", pid, code, MIN_LIFETIME)
                    return None
                log.error("API process %d exited with %s; started another", pid, code)
                children[_fork(sock, run_child)] = time.monotonic()
        return received[0]
    finally:
        _stop(children)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _fork(sock: socket.socket, run_child: Callable[[socket.socket], None]) -> int:
    pid = os.fork()
    if pid:
        log.info("API process %d started", pid)
        return pid
    code = 1
    try:  # the child: never returns into the parent's code
        term_when_parent_dies()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # uvicorn takes them over while it serves
        run_child(sock)
        code = 0
    except BaseException:
        log.exception("API process %d failed", os.getpid())
    finally:
        logging.shutdown()
        os._exit(code)


def term_when_parent_dies() -> None:
    """SIGTERM when the parent dies (Linux), so no child outlives a killed server."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(children: dict[int, float]) -> None:
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_SECONDS
    waiting = set(children)
    while waiting:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                waiting.discard(pid)
        if waiting and time.monotonic() > deadline:
            for pid in waiting:
                log.warning("API process %d did not stop within %g s; killed", pid,
                            STOP_SECONDS)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            return
        if waiting:
            time.sleep(0.05)
