"""A large database for the API bench without importing 100,000 disks: the import tasks (with
their disks) and the AMIs (with their block device mappings) that real imports left are
copied, under new ids, until each table holds ``rows`` of them. The copies reference the
same snapshots, so every call renders them as it renders real ones."""

from __future__ import annotations

from sqlalchemy import create_engine, func, insert, select

from vmimport.db.ids import new_id
from vmimport.db.models import BlockDeviceMapping, Image, ImportTask, TaskDisk

BATCH = 2000  # rows per INSERT: well within both databases' parameter limits


def grow(database_url: str, rows: int) -> dict:
    """Copy tasks and images until each table holds ``rows``; returns the counts after."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            _copy(connection, ImportTask, TaskDisk, "task_id", "import-image-task", rows)
            _copy(connection, Image, BlockDeviceMapping, "image_id", "image", rows)
            counts = {"tasks": connection.scalar(select(func.count()).select_from(ImportTask)),
                      "images": connection.scalar(select(func.count()).select_from(Image))}
        if engine.dialect.name == "postgresql":
            # What autovacuum would do within the minute: without statistics of the grown
            # tables the planner takes them for small and sorts them whole.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql("ANALYZE")
        return counts
    finally:
        engine.dispose()


def _copy(connection, parent, child, link: str, kind: str, rows: int) -> None:
    """Copies of ``parent``'s rows (and their ``child`` rows, joined by ``link``) up to
    ``rows`` parents."""
    parents = [dict(r._mapping) for r in connection.execute(select(parent.__table__))]
    if not parents or len(parents) >= rows:
        return
    children: dict[str, list[dict]] = {}
    for r in connection.execute(select(child.__table__)):
        values = dict(r._mapping)
        values.pop("id")  # autoincrement
        children.setdefault(values[link], []).append(values)
    wanted = rows - len(parents)
    new_parents, new_children = [], []
    for n in range(wanted):
        source = parents[n % len(parents)]
        copy = {**source, "id": new_id(kind)}
        if "name" in copy and parent is Image:
            copy["name"] = f"{source['name']}-copy-{n}"  # AMI names are unique per account
        new_parents.append(copy)
        new_children += [{**c, link: copy["id"]} for c in children.get(source["id"], [])]
        if len(new_parents) >= BATCH:
            _flush(connection, parent, child, new_parents, new_children)
    _flush(connection, parent, child, new_parents, new_children)


def _flush(connection, parent, child, parents: list[dict], children: list[dict]) -> None:
    if parents:
        connection.execute(insert(parent.__table__), parents)
    for start in range(0, len(children), BATCH):
        connection.execute(insert(child.__table__), children[start:start + BATCH])
    parents.clear()
    children.clear()
