"""Claiming a job on SQLite: an idle worker's claim does not queue up behind other writers."""

from __future__ import annotations

import threading

from sqlalchemy import text

from vmimport.db.session import Database
from vmimport.jobs import queue


def _claim_in_thread(db: Database) -> tuple[threading.Thread, list]:
    result = []
    thread = threading.Thread(target=lambda: result.append(queue.claim(db, "w/0", 60)),
                              daemon=True)
    thread.start()
    return thread, result


def test_a_claim_with_nothing_to_claim_does_not_wait_for_the_write_lock(tmp_path):
    """Every idle worker thread claims when an enqueue wakes them; all but one find nothing.
    Those must not take SQLite's write lock (BEGIN IMMEDIATE), or the running import's
    writes and the API's wait behind them."""
    db = Database(f"sqlite:///{tmp_path / 'queue.db'}")
    db.migrate()
    with db.write() as session:  # another writer holds the lock meanwhile (busy timeout 30 s)
        session.execute(text("UPDATE jobs SET state = state"))  # BEGIN IMMEDIATE happens here
        thread, result = _claim_in_thread(db)
        thread.join(5)
        assert not thread.is_alive(), "the claim waited for the write lock"
        assert result == [None]
        queue.enqueue(session, "import-image", "import-ami-0123456789abcdef0")
    # A queued job is still claimed, once.
    job = queue.claim(db, "w/0", 60)
    assert job is not None and job.task_id == "import-ami-0123456789abcdef0"
    assert job.lease_owner == "w/0" and job.attempts == 1
    assert queue.claim(db, "w/1", 60) is None
