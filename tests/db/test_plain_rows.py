"""``read_plain``: the rows Describe* calls render, read without the ORM's bookkeeping, must
read exactly as the ORM's objects do (columns, eagerly loaded children in their order, the
model's properties), on SQLite and, in the PostgreSQL pass, on PostgreSQL."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from vmimport.db import plain_rows
from vmimport.db.models import ExportTask, ImportTask, TaskDisk
from vmimport.db.plain_rows import read_plain
from vmimport.db.session import Database

from ..helpers import fresh_database_url


@pytest.fixture
def db(tmp_path):
    url = fresh_database_url() if os.environ.get("VMIMPORT_TEST_POSTGRES_URL") else \
        f"sqlite:///{tmp_path / 'plain.db'}"
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


def _task(n: int, disks: int) -> ImportTask:
    task = ImportTask(id=f"import-ami-{n:017x}", account_id="000000000000", kind="image",
                      request_digest="d", status="completed", description=f"task {n}",
                      license_specifications=[{"LicenseConfigurationArn": f"arn:{n}"}],
                      created_at=datetime(2026, 12, 4, 10, 0, n % 60, tzinfo=timezone.utc),
                      phases=[{"phase": "stored"}])
    # written out of order: the relationship orders them by (position, member_index)
    for position in reversed(range(disks)):
        for member in (1, 0):
            task.disks.append(TaskDisk(position=position, member_index=member,
                                       format="VMDK", s3_bucket="b", s3_key=f"{n}/{position}",
                                       disk_image_size=1.5 * position, status="completed"))
    return task


def test_plain_rows_read_as_the_orm_objects(db, monkeypatch):
    monkeypatch.setattr(plain_rows, "IN_BATCH", 3)  # children read over several IN (...)s
    with db.write() as session:
        session.add_all([_task(n, disks=n % 3) for n in range(8)])
    with db.read() as session:
        orm = {t.id: t for t in session.scalars(select(ImportTask))}
        plain = read_plain(session, ImportTask, ImportTask.account_id == "000000000000",
                           order_by=[ImportTask.id])
        assert [t.id for t in plain] == sorted(orm)
        columns = [c.key for c in ImportTask.__mapper__.column_attrs
                   if c.key not in ("phases", "inspection")]
        for row in plain:
            task = orm[row.id]
            assert {k: getattr(row, k) for k in columns} == {k: getattr(task, k)
                                                              for k in columns}
            assert row.created_at.tzinfo is not None  # the column types still apply
            assert [(d.position, d.member_index, d.s3_key) for d in row.disks] == \
                [(d.position, d.member_index, d.s3_key) for d in task.disks]
            assert [(d.position, d.member_index) for d in row.disks] == sorted(
                (d.position, d.member_index) for d in row.disks)
            with pytest.raises(AttributeError):
                row.phases  # deferred: not read, and never read behind the caller's back
            with pytest.raises(AttributeError):
                row.status = "deleted"  # read-only
        assert read_plain(session, ImportTask, ImportTask.id == "import-ami-none") == []


def test_plain_rows_keep_the_models_properties(db):
    with db.write() as session:
        session.add(ExportTask(id="export-ami-00000000000000001", account_id="000000000000",
                               request_digest="d", image_id="ami-0", disk_image_format="VMDK",
                               s3_bucket="b", s3_prefix="out/"))
    with db.read() as session:
        row, = read_plain(session, ExportTask)
        assert row.object_key == "out/export-ami-00000000000000001.vmdk"
