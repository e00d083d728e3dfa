"""Worker threads: claim a job, keep its lease alive while the pipeline runs, finish it.

``serve`` runs a few of these next to the API; ``vmimport worker`` runs them alone, on this or
another machine sharing the database and the block store.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Callable

from vmimport.blockstore.backends import open_block_store
from vmimport.blockstore.interface import BlockStore
from vmimport.config import Settings
from vmimport.db.session import Database

from . import queue

log = logging.getLogger("vmimport.worker")


class JobControl:
    """Handed to the pipeline: where it reports progress and learns it must stop."""

    def __init__(self, db: Database, settings: Settings, job: "queue.Job", owner: str,
                 blocks: BlockStore):
        self.db = db
        self.settings = settings
        self.blocks = blocks
        self.job_id = job.id
        self.task_id = job.task_id
        self.attempt = job.attempts
        self.owner = owner
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                      name=f"heartbeat-{job.id}")

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                if queue.heartbeat(self.db, self.job_id, self.owner, self.settings.lease_seconds):
                    self.cancel_requested.set()
            except queue.LeaseLost:
                self.lease_lost.set()
                return
            except Exception:  # a database hiccup: try again at the next beat
                log.exception("heartbeat of job %s failed", self.job_id)

    def __enter__(self):
        self._beat.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._beat.join()


Handler = Callable[[JobControl], None]


class WorkerPool:
    def __init__(self, db: Database, settings: Settings, handlers: dict[str, Handler],
                 threads: int | None = None):
        self.db = db
        self.settings = settings
        self.handlers = handlers
        self.threads = settings.workers if threads is None else threads
        self.blocks = open_block_store(settings)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def start(self) -> None:
        for n in range(self.threads):
            t = threading.Thread(target=self._loop, args=(f"{self.identity}/{n}",),
                                 daemon=True, name=f"worker-{n}")
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        queue.notify_workers()
        for t in self._threads:
            t.join(timeout)

    def wait(self) -> None:
        for t in self._threads:
            while t.is_alive():
                t.join(1.0)

    def _loop(self, owner: str) -> None:
        while not self._stop.is_set():
            try:
                job = queue.claim(self.db, owner, self.settings.lease_seconds,
                                  list(self.handlers))
            except Exception:
                log.exception("claiming a job failed")
                job = None
            if job is None:
                queue.wait_for_work(self.settings.poll_seconds)
                continue
            self.run_one(job, owner)

    def run_one(self, job, owner: str) -> None:
        log.info("job %s (%s, task %s) claimed by %s, attempt %s",
                 job.id, job.kind, job.task_id, owner, job.attempts)
        with JobControl(self.db, self.settings, job, owner, self.blocks) as control:
            try:
                self.handlers[job.kind](control)
            except queue.LeaseLost:
                log.warning("job %s was taken over by another worker; dropped it", job.id)
            except queue.GivenBack as back:
                log.warning("%s", back)
            except Exception:
                # Handlers turn every failure into a task state; reaching here is a bug.
                log.exception("job %s crashed", job.id)
