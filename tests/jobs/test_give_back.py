"""A job that stops on a passing failure of the database (a lock wait run out, a statement
cancelled, a dropped connection) is given back for another attempt instead of ending its task
ServerError; any other failure, or the last attempt, still ends the task. The errors here are
real ones, raised by SQLite and PostgreSQL."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from vmimport.config import Settings
from vmimport.db.session import Database
from vmimport.jobs import queue
from vmimport.jobs.worker import JobControl
from vmimport.pipeline.job_start import give_back_if_transient

TASK = "import-ami-0123456789abcdef0"


def _raised(call) -> DBAPIError:
    with pytest.raises(DBAPIError) as err:
        call()
    return err.value


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.migrate()
    yield database
    database.dispose()


def _locked_error(db: Database, tmp_path) -> DBAPIError:
    """SQLite's own "database is locked": a write while another connection holds the lock,
    from a connection that waits only 0.1 s."""
    impatient = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}",
                              connect_args={"timeout": 0.1})
    try:
        with db.write() as session:
            session.execute(text("UPDATE jobs SET state = state"))  # holds the write lock
            with impatient.connect() as other:
                return _raised(lambda: other.execute(text("UPDATE jobs SET state = state")))
    finally:
        impatient.dispose()


def test_which_database_errors_are_transient(db, tmp_path):
    assert Database.is_transient(_locked_error(db, tmp_path))
    with db.write() as session:
        queue.enqueue(session, "import-image", TASK)

    def insert_again() -> None:
        with db.write() as session:
            session.execute(text("INSERT INTO jobs (id, kind, task_id, state, attempts, "
                                 "cancel_requested) SELECT id, kind, task_id, state, "
                                 "attempts, cancel_requested FROM jobs"))
    duplicate = _raised(insert_again)
    assert not Database.is_transient(duplicate)  # an IntegrityError: the request's fault
    with db.read() as session:
        missing = _raised(lambda: session.execute(text("SELECT * FROM no_such_table")))
    assert not Database.is_transient(missing)  # an OperationalError, but not a passing one
    assert not Database.is_transient(ValueError("not a database error"))


@pytest.mark.skipif(not os.environ.get("VMIMPORT_TEST_POSTGRES_URL"),
                    reason="the PostgreSQL half of scripts/test runs it")
def test_a_cancelled_postgresql_statement_is_transient():
    pg = Database(os.environ["VMIMPORT_TEST_POSTGRES_URL"])
    try:
        with pg.read() as session:
            session.execute(text("SET LOCAL statement_timeout = 50"))
            cancelled = _raised(lambda: session.execute(text("SELECT pg_sleep(5)")))
        assert Database.is_transient(cancelled)  # 57014 query_canceled
        with pg.read() as session:
            syntax = _raised(lambda: session.execute(text("SELEC 1")))
        assert not Database.is_transient(syntax)  # 42601
    finally:
        pg.dispose()


def _claimed(db: Database, tmp_path, owner: str = "w/0", **settings) -> JobControl:
    job = queue.claim(db, owner, 60)
    return JobControl(db, Settings(data_dir=tmp_path, **settings), job, owner, blocks=None)


def test_a_transient_failure_gives_the_job_back_at_once(db, tmp_path):
    with db.write() as session:
        queue.enqueue(session, "import-image", TASK)
    control = _claimed(db, tmp_path)
    assert queue.claim(db, "w/1", 60) is None  # leased for a minute
    with pytest.raises(queue.GivenBack, match="given back for another attempt"):
        give_back_if_transient(control, _locked_error(db, tmp_path))
    again = queue.claim(db, "w/1", 60)  # no wait for the lease to run out
    assert again is not None and again.task_id == TASK and again.attempts == 2
    # The first owner's heartbeat now finds the job gone.
    with pytest.raises(queue.LeaseLost):
        queue.heartbeat(db, control.job_id, "w/0", 60)


def test_other_failures_and_the_last_attempt_end_the_task(db, tmp_path):
    with db.write() as session:
        queue.enqueue(session, "import-image", TASK)
    control = _claimed(db, tmp_path)
    give_back_if_transient(control, RuntimeError("a bug"))  # returns: the caller ends the task
    with db.read() as session:
        missing = _raised(lambda: session.execute(text("SELECT * FROM no_such_table")))
    give_back_if_transient(control, missing)
    assert queue.claim(db, "w/1", 60) is None  # still ours
    last = JobControl(db, Settings(data_dir=tmp_path, max_attempts=1),
                      queue.Job(id=control.job_id, task_id=TASK, attempts=1), "w/0", blocks=None)
    give_back_if_transient(last, _locked_error(db, tmp_path))  # no attempt left: returns
    assert queue.claim(db, "w/1", 60) is None
