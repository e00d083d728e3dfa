"""Encrypted imports: which KMS key a task uses, a data key per snapshot, and reading encrypted
snapshots back.

- ``resolve_task_key``: at the start of the job (as on AWS the key is resolved asynchronously)
  the task's KmsKeyId — key id, key ARN, alias name or alias ARN, or the account's default
  ``alias/aws/ebs`` key when only ``Encrypted=true`` was given — must name an Enabled key of the
  task's account in this region; otherwise the task fails ``ClientError: ...`` naming the key
  and the reason. The task then shows the key's ARN as its KmsKeyId.
- ``snapshot_sealing``: each snapshot gets its own data key from ``GenerateDataKey`` (encryption
  context ``{"aws:ebs:id": <snapshot id>}``); blocks are sealed with it (``BlockCipher``) and
  the manifest keeps only the wrapped data key.
- ``snapshot_cipher`` / ``snapshot_reader``: unwrap a manifest's data key (KMS Decrypt; the key
  must still be Enabled) to read an encrypted snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update

from vmimport.blockstore.crypto import BlockCipher
from vmimport.blockstore.reader import SnapshotReader
from vmimport.blockstore.store import BlockStore, Manifest, ManifestEncryption
from vmimport.config import Settings
from vmimport.db.models import ImportTask, KmsKey, Snapshot
from vmimport.db.session import Database
from vmimport.service import kms

from . import access
from .errors import ImportFailure


@dataclass(frozen=True)
class Sealing:
    """What ``write_snapshot`` needs to write one encrypted snapshot."""

    cipher: BlockCipher
    record: ManifestEncryption


def resolve_task_key(db: Database, settings: Settings, task: ImportTask) -> str:
    """The ARN of the Enabled key the encrypted task uses (recorded on the task); raises
    ``ImportFailure`` if there is none or the role may not use it."""
    ref = task.kms_key_id or kms.DEFAULT_EBS_ALIAS
    with db.write() as session:  # write: alias/aws/ebs is created on first use
        try:
            key = kms.resolve_key(session, settings, task.account_id, settings.region, ref)
            kms.require_enabled(key)
        except kms.KeyUnusable as exc:
            raise ImportFailure(f"The KMS key {ref} cannot be used to encrypt the snapshots: "
                                f"{exc.reason}") from None
        session.expunge(key)
    access.check_key(db, task, key, access.KMS_WRITE_ACTIONS)
    with db.write() as session:
        session.execute(update(ImportTask).where(ImportTask.id == task.id)
                        .values(kms_key_id=key.arn))
    return key.arn


def snapshot_sealing(db: Database, settings: Settings, task: ImportTask,
                     snapshot_id: str) -> Sealing | None:
    """A fresh data key for ``snapshot_id`` if the task is encrypted, else None."""
    if not task.encrypted:
        return None
    context = {"aws:ebs:id": snapshot_id}
    with db.write() as session:
        try:
            key = kms.resolve_key(session, settings, task.account_id, settings.region,
                                  task.kms_key_id or kms.DEFAULT_EBS_ALIAS)
            plaintext, wrapped = kms.generate_data_key(session, settings, key, context)
        except kms.KeyUnusable as exc:
            raise ImportFailure(f"The KMS key {task.kms_key_id} cannot be used to encrypt the "
                                f"snapshots: {exc.reason}") from None
        arn = key.arn
    return Sealing(BlockCipher(plaintext, snapshot_id),
                   ManifestEncryption(snapshot_id=snapshot_id, key_arn=arn, wrapped_key=wrapped))


def snapshot_cipher(db: Database, settings: Settings, manifest: Manifest) -> BlockCipher | None:
    """The cipher that opens an encrypted manifest's blocks (None for a plaintext one).
    Raises ``kms.KeyUnusable`` when the KMS key cannot unwrap the data key (e.g. disabled)."""
    enc = manifest.encryption
    if enc is None:
        return None
    _, _, _, region, account_id, _ = (enc.key_arn.split(":", 5) + [""] * 6)[:6]
    with db.read() as session:
        plaintext, key = kms.decrypt_blob(session, settings, account_id, region,
                                          enc.wrapped_key, {"aws:ebs:id": enc.snapshot_id})
        if key.arn != enc.key_arn:
            raise kms.KeyUnusable("InvalidCiphertextException", f"the data key of "
                                  f"{enc.snapshot_id} was not wrapped by {enc.key_arn}")
    return BlockCipher(plaintext, enc.snapshot_id)


def snapshot_reader(db: Database, settings: Settings, store: BlockStore,
                    manifest: Manifest) -> SnapshotReader:
    """A snapshot as a seekable file, decrypting transparently if it is encrypted."""
    try:
        cipher = snapshot_cipher(db, settings, manifest)
    except kms.KeyUnusable as exc:
        raise ImportFailure(f"the encrypted snapshot {manifest.encryption.snapshot_id} cannot "
                            f"be read: {exc.reason}") from None
    return SnapshotReader(store, manifest, cipher)


def copy_source_snapshot(db: Database, settings: Settings, store: BlockStore,
                         task: ImportTask, source: Snapshot, manifest: Manifest,
                         sealing: Sealing | None, on_progress=None) -> Manifest:
    """The manifest of a new snapshot with ``source``'s content (DiskContainer.SnapshotId).
    Plaintext to plaintext shares the blocks; anything involving encryption re-seals every
    block under the new snapshot's data key (an encrypted block is bound to its snapshot)."""
    if manifest.encryption is None and sealing is None:
        return manifest
    if manifest.encryption is not None and sealing is None:
        raise ImportFailure(f"the snapshot {source.id} is encrypted (KMS key "
                            f"{source.kms_key_id}); a copy of it must be encrypted too: import "
                            "it with Encrypted=true")
    source_cipher = None
    if manifest.encryption is not None:
        with db.read() as session:
            key = session.get(KmsKey, manifest.encryption.key_arn.rsplit("/", 1)[-1])
            if key is not None:
                session.expunge(key)
        if key is not None:
            access.check_key(db, task, key, access.KMS_READ_ACTIONS)
        try:
            source_cipher = snapshot_cipher(db, settings, manifest)
        except kms.KeyUnusable as exc:
            raise ImportFailure(f"the encrypted snapshot {source.id} cannot be read: "
                                f"{exc.reason}") from None
    out = Manifest(size_bytes=manifest.size_bytes, block_size=manifest.block_size,
                   encryption=sealing.record)
    with store.pack_writer(dedup=False) as pack:
        for index in sorted(manifest.blocks):
            data = store.read_block(manifest, index, source_cipher)
            out.blocks[index] = pack.put(sealing.cipher.seal_block(index, data))
            if on_progress is not None:
                on_progress(min(manifest.size_bytes, (index + 1) * manifest.block_size))
    return out
