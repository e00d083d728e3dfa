"""``GET /metrics``: Prometheus's text format (``prometheus_client``), for an operator's
monitoring. Requests are counted as they leave the front door (``observe``, called once per
request from ``app.py``); what lives in the database — tasks by state, jobs and worker leases,
bytes imported and stored — is read when scraped, since workers run in other processes.

No signature is asked for, so it answers only clients on ``metrics_allowed_networks``
(loopback by default; empty turns it off) and says nothing about accounts, keys or paths.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from datetime import datetime, timezone

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, \
    generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from vmimport.blockstore.manifest import BLOCK_SIZE
from vmimport.db.models import ExportTask, ImportTask, Job, Snapshot, TaskDisk
from vmimport.db.session import Database

log = logging.getLogger("vmimport.api")

# Seconds: API calls take milliseconds; S3 transfers of disk images take minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class DatabaseCollector:
    """Numbers read from the database at each scrape (one short read transaction)."""

    def __init__(self, db: Database):
        self.db = db

    def collect(self):
        tasks = GaugeMetricFamily("vmimport_tasks", "Tasks still listed (AWS keeps finished "
                                  "ones 7 days), by kind and state", labels=["kind", "state"])
        jobs = GaugeMetricFamily("vmimport_jobs", "Worker jobs by state", labels=["state"])
        leases = GaugeMetricFamily("vmimport_worker_leases", "Jobs a worker holds a live "
                                   "lease on")
        imported = GaugeMetricFamily("vmimport_imported_disk_image_bytes", "Bytes of the disk "
                                     "images of completed imports still listed")
        snapshots = GaugeMetricFamily("vmimport_snapshot_bytes", "Snapshots' guest bytes "
                                      "(virtual) and the bytes of blocks they hold (stored, "
                                      "before deduplication across snapshots)", labels=["kind"])
        blocks = GaugeMetricFamily("vmimport_snapshot_blocks", "Snapshots' 512 KiB blocks: "
                                   "all they hold (stored), and those their writes found "
                                   "stored already and shared (deduplicated)", labels=["kind"])
        now = datetime.now(timezone.utc)
        with self.db.read() as session:
            for kind, state, count in session.execute(
                    select(ImportTask.kind, ImportTask.status, func.count())
                    .group_by(ImportTask.kind, ImportTask.status)):
                tasks.add_metric([kind, state], count)
            for state, count in session.execute(
                    select(ExportTask.status, func.count()).group_by(ExportTask.status)):
                tasks.add_metric(["export", state], count)
            for state, count in session.execute(
                    select(Job.state, func.count()).group_by(Job.state)):
                jobs.add_metric([state], count)
            leases.add_metric([], session.scalar(
                select(func.count()).select_from(Job).where(
                    Job.state == "running", Job.lease_expires_at > now)) or 0)
            imported.add_metric([], float(session.scalar(
                select(func.coalesce(func.sum(TaskDisk.disk_image_size), 0))
                .join(ImportTask, TaskDisk.task_id == ImportTask.id)
                .where(ImportTask.status == "completed")) or 0))
            virtual, stored = session.execute(
                select(func.coalesce(func.sum(Snapshot.size_bytes), 0),
                       func.coalesce(func.sum(Snapshot.stored_bytes), 0))).one()
            snapshots.add_metric(["virtual"], float(virtual))
            snapshots.add_metric(["stored"], float(stored))
            blocks.add_metric(["stored"], float(stored // BLOCK_SIZE))
            blocks.add_metric(["shared"], float(session.scalar(
                select(func.coalesce(func.sum(Snapshot.shared_blocks), 0))) or 0))
        yield from (tasks, jobs, leases, imported, snapshots, blocks)


class Metrics:
    """One registry per app (tests run several apps in one process)."""

    def __init__(self, db: Database, allowed_networks: list[str]):
        self.networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self.registry = CollectorRegistry()
        # Several API processes (``api_processes``): each writes its counts to files in this
        # directory (set by ``serve`` before prometheus_client is imported), and a scrape,
        # whichever process answers it, sums them all.
        shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        own = CollectorRegistry() if shared_dir else self.registry
        if shared_dir:
            MultiProcessCollector(self.registry, shared_dir)
        self.requests = Counter("vmimport_requests", "API requests answered, by service, "
                                "action and HTTP status", ["service", "action", "status"],
                                registry=own)
        self.latency = Histogram("vmimport_request_seconds", "Time from a request's arrival "
                                 "to its answer (a streamed body or reply: to its start)",
                                 ["service", "action"], buckets=LATENCY_BUCKETS,
                                 registry=own)
        self.registry.register(DatabaseCollector(db))

    def observe(self, service: str, action: str, status: int, seconds: float) -> None:
        """One answered request (called once per request by the front door)."""
        self.requests.labels(service, action, str(status)).inc()
        self.latency.labels(service, action).observe(seconds)

    def allows(self, request: Request) -> bool:
        host = request.client.host if request.client else None
        try:
            address = ipaddress.ip_address(host) if host else None
        except ValueError:
            return False
        if address is not None and getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        return address is not None and any(address in n for n in self.networks)

    async def page(self, request: Request) -> Response:
        if not self.allows(request):  # as if there were no such page
            return PlainTextResponse("Not Found", 404, headers={"Server": "vmimport"})
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, 200, media_type=CONTENT_TYPE_LATEST,
                        headers={"Server": "vmimport", "Cache-Control": "no-store"})
