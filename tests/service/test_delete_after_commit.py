"""A snapshot's manifest is deleted only once the transaction that deleted its row committed:
a commit that fails leaves the snapshot whole (row and manifest)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from vmimport.blockstore.manifest import Manifest
from vmimport.db.models import Snapshot
from vmimport.service.context import Context
from vmimport.service.images import delete_snapshot

from .conftest import ACCOUNT


def _snapshot(ctx: Context, snapshot_id: str) -> None:
    now = datetime.now(timezone.utc)
    with ctx.db.write() as session:
        session.add(Snapshot(id=snapshot_id, account_id=ACCOUNT, state="completed",
                             volume_size=1, size_bytes=1 << 20, stored_bytes=0,
                             encrypted=False, started_at=now, completed_at=now))
    ctx.blocks.write_manifest(snapshot_id, Manifest(size_bytes=1 << 20))


def test_a_failed_commit_keeps_the_manifest(ctx):
    _snapshot(ctx, "snap-0123456789abcdef0")

    def fail(session):
        raise RuntimeError("the database went away at commit")

    event.listen(Session, "before_commit", fail)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            delete_snapshot(ctx, {"SnapshotId": "snap-0123456789abcdef0"})
    finally:
        event.remove(Session, "before_commit", fail)
    assert ctx.blocks.has_manifest("snap-0123456789abcdef0")
    with ctx.db.read() as session:
        assert session.get(Snapshot, "snap-0123456789abcdef0") is not None
    # ... and once the commit goes through, both go.
    delete_snapshot(ctx, {"SnapshotId": "snap-0123456789abcdef0"})
    assert not ctx.blocks.has_manifest("snap-0123456789abcdef0")
