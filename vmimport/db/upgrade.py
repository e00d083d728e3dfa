"""``python -m vmimport.db.upgrade``: the schema brought to the newest revision in a process of
its own (``Database.migrate_in_child``), so that the long-running server never imports Alembic.
The database URL comes in the environment (``VMIMPORT_MIGRATE_URL``), never on the command
line, where ``ps`` would show its password."""

from __future__ import annotations

import os

from vmimport.db.session import Database
from vmimport.logs import configure


def main() -> None:
    level, log_format, verbose = os.environ.get("VMIMPORT_MIGRATE_LOG", "info text 0").split()
    configure(level, log_format, verbose == "1")
    db = Database(os.environ["VMIMPORT_MIGRATE_URL"])
    try:
        db.migrate()
    finally:
        db.dispose()


if __name__ == "__main__":
    main()
