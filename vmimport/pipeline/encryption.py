"""Encrypted imports, as the pipeline sees them: the task's key (resolved once per job through
``service.snapshot_keys``, the task's role checked, its ARN recorded on the task), reading an
encrypted snapshot back, and copying a snapshot under a new data key.

Key failures are ``snapshot_keys.SnapshotKeyError``s; ``run_import`` turns them into the task's
``ClientError`` in one place.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import update

from vmimport.blockstore.interface import BlockStore
from vmimport.blockstore.manifest import Manifest
from vmimport.blockstore.reader import SnapshotReader
from vmimport.blockstore.writer import reseal_snapshot
from vmimport.config import Settings
from vmimport.db.models import ImportTask, Snapshot
from vmimport.db.session import Database
from vmimport.service import snapshot_keys
from vmimport.service.snapshot_keys import Sealing, TaskKey

from . import access
from .errors import ImportFailure


def task_key(db: Database, settings: Settings, task: ImportTask) -> TaskKey | None:
    """The key an encrypted task seals its snapshots under (None if the task is not
    encrypted); the task then shows its ARN as KmsKeyId."""
    if not task.encrypted:
        return None
    key = snapshot_keys.resolve_task_key(db, settings, task.account_id, task.kms_key_id,
                                         access.role_authorizer(db, task))
    with db.write() as session:
        session.execute(update(ImportTask).where(ImportTask.id == task.id)
                        .values(kms_key_id=key.arn))
    task.kms_key_id = key.arn
    return key


def snapshot_reader(db: Database, settings: Settings, store: BlockStore, task: ImportTask,
                    manifest: Manifest) -> SnapshotReader:
    """A snapshot of the task's account as a seekable file, decrypted if it is encrypted."""
    cipher = snapshot_keys.snapshot_cipher(db, settings, manifest, task.account_id)
    return SnapshotReader(store, manifest, cipher)


def copy_source_snapshot(db: Database, settings: Settings, store: BlockStore,
                         task: ImportTask, source: Snapshot, manifest: Manifest,
                         sealing: Sealing | None, on_progress=None) -> Manifest:
    """The manifest of a new snapshot with ``source``'s content (DiskContainer.SnapshotId).
    Plaintext to plaintext shares the blocks; anything involving encryption re-seals every
    block under the new snapshot's data key (an encrypted block is bound to its snapshot)."""
    if manifest.encryption is None and sealing is None:
        return dataclasses.replace(manifest, shared_blocks=len(manifest.blocks))
    if manifest.encryption is not None and sealing is None:
        raise ImportFailure(f"the snapshot {source.id} is encrypted (KMS key "
                            f"{source.kms_key_id}); a copy of it must be encrypted too: import "
                            "it with Encrypted=true")
    source_cipher = snapshot_keys.snapshot_cipher(db, settings, manifest, task.account_id,
                                                  access.role_authorizer(db, task))
    return reseal_snapshot(store, manifest, source_cipher, sealing.cipher, sealing.record,
                           on_progress)
