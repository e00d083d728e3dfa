"""The schema's head revision as the server knows it without Alembic (``HEAD_REVISION``) is
Alembic's; a server starts on a new database (migrated in a child process) and on one already
at the head (no child); the process that asked never imports Alembic."""

from __future__ import annotations

import subprocess
import sys

from alembic.config import Config
from alembic.script import ScriptDirectory

from vmimport.db.session import HEAD_REVISION, MIGRATIONS_DIR, Database

from .helpers import Server


def test_head_revision_is_alembics_head():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


def test_a_server_migrates_a_new_database_in_a_child_and_then_needs_none(tmp_path):
    server = Server(tmp_path / "data", workers=0).start()
    try:
        assert server.client().describe_images(Owners=["self"])["Images"] == []
        url = server.database_url or f"sqlite:///{server.data_dir / 'vmimport.db'}"
        db = Database(url)
        try:
            assert db.revision() == HEAD_REVISION
        finally:
            db.dispose()
        log = server.log_path.read_text()
        assert "Running upgrade 0012 -> 0013" in log  # the child's lines reach the same log
    finally:
        server.stop()
    again = Server(tmp_path / "data", port=server.port, workers=0,
                   database_url=server.database_url).start()
    try:
        assert again.client().describe_images(Owners=["self"])["Images"] == []
        assert again.log_path.read_text().count("Running upgrade 0012 -> 0013") == 1
    finally:
        again.stop()


def test_migrating_in_a_child_leaves_alembic_out_of_the_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    probe = ("import sys; from vmimport.db.session import Database; db = Database(sys.argv[1]); "
             "db.migrate_in_child(); print(db.revision(), 'alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [HEAD_REVISION, "False"]
