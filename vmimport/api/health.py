"""``GET /health``: whether this server answers and can reach its database — for load
balancers, monitors and people. No signature is needed, so it says nothing secret: no paths,
URLs, counts or account data."""

from __future__ import annotations

import logging

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


async def health(request: Request, db: Database) -> JSONResponse:
    reachable = await run_in_threadpool(_database_reachable, db)
    # 503 when the database is gone: a balancer then stops sending requests this server
    # could not answer.
    return JSONResponse({"status": "ok" if reachable else "unavailable", "version": __version__,
                         "database": "reachable" if reachable else "unreachable"},
                        200 if reachable else 503,
                        headers={"Server": "vmimport", "Cache-Control": "no-store"})
