"""``GET /health`` (also ``/_health``): whether this server answers and can reach its database;
``GET /_ready``: and its block store too — for load balancers, monitors and people. No
signature is needed, so they say nothing secret: no paths, URLs, counts or account data."""

from __future__ import annotations

import logging
import os

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from vmimport import __version__
from vmimport.db.session import Database

log = logging.getLogger("vmimport.api")


def _database_reachable(db: Database) -> bool:
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"; the log says which
        log.warning("health check: the database is not reachable", exc_info=True)
        return False


def _block_store_reachable(blocks) -> bool:
    try:
        location = getattr(blocks, "location", "")
        if location and "://" not in location:  # a directory: it must be one, and writable
            return os.path.isdir(location) and os.access(location, os.W_OK)
        # An object store: asking for a manifest no snapshot has reaches it (or raises).
        blocks.has_manifest("snap-00000000000000000")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"; the log says which
        log.warning("readiness check: the block store is not reachable", exc_info=True)
        return False


async def ready(request: Request, db: Database, blocks) -> JSONResponse:
    database = await run_in_threadpool(_database_reachable, db)
    store = await run_in_threadpool(_block_store_reachable, blocks)
    return JSONResponse({"status": "ready" if database and store else "unavailable",
                         "version": __version__,
                         "database": "reachable" if database else "unreachable",
                         "block_store": "reachable" if store else "unreachable"},
                        200 if database and store else 503,
                        headers={"Server": "vmimport", "Cache-Control": "no-store"})


async def health(request: Request, db: Database) -> JSONResponse:
    reachable = await run_in_threadpool(_database_reachable, db)
    # 503 when the database is gone: a balancer then stops sending requests this server
    # could not answer.
    return JSONResponse({"status": "ok" if reachable else "unavailable", "version": __version__,
                         "database": "reachable" if reachable else "unreachable"},
                        200 if reachable else 503,
                        headers={"Server": "vmimport", "Cache-Control": "no-store"})
